"""test_memory_limits — unbounded allocation (issue 9, class 3).

Every command computes the memory it will need before any large allocation and refuses a request
above the machine's available memory (MemAvailable) or above --max-memory, exit 1, with a message
giving the byte count and the flag that lowers it; nothing is written and no input changes. A
bounded memory's budget above what a run can feed it is capped (a note on stderr). Text read with -f
is limited (1 GiB, or --max-memory), so /dev/zero is refused instead of read for ever. Each refused
case runs under `ulimit -v` (8 GiB), so a regression fails instead of swapping (not in the sanitizer
build, whose shadow memory needs the address space: there they run without it, said below).

Then the reported memory is held to the measured one: `perplexity -t 1` at several chunk lengths
prints the bytes it allocated; the growth of the child's peak RSS (ru_maxrss) between the smallest
and each larger size must equal the growth of the reported bytes within 10% + 2 MiB (the page cache
of the mapped model and libraries does not depend on the size)."""
import hashlib
import json
import os
import subprocess
import tempfile

from checks import check, finish

BIN = os.environ["MSRNN_BIN"]
SRC = os.environ["MSRNN_SOURCE_DIR"]
MODEL = os.path.join(SRC, "models", "default.gguf")
SANITIZED = os.environ.get("MSRNN_SANITIZED") == "1"
ULIMIT = "ulimit -v %d" % (8 << 20)  # KiB: 8 GiB


def run(args, limit=True):
    if limit and not SANITIZED:
        cmd = ULIMIT + " && exec " + " ".join("'%s'" % a for a in [BIN, *args])
        return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=600)
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=600)


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


if SANITIZED:
    print("note: sanitizer build: the refused cases run without `ulimit -v` (shadow memory)")

with tempfile.TemporaryDirectory() as tmp:
    text = os.path.join(tmp, "text.txt")
    words = "the quick brown fox jumps over a lazy dog and then more words follow".split()
    with open(text, "w") as f:
        f.write(" ".join(words[(i * 7) % len(words)] for i in range(3000)))
    big = os.path.join(tmp, "big.txt")  # 2 MB: over a --max-memory of 1M
    with open(big, "w") as f:
        f.write("a " * 1000000)
    shard = os.path.join(tmp, "train.bin")
    subprocess.run([BIN, "tokenize-corpus", "-m", MODEL, "-o", shard, text], check=True,
                   capture_output=True)
    inputs = [MODEL, text, big, shard]
    before = {p: digest(p) for p in inputs}
    out = os.path.join(tmp, "out.gguf")
    outputs = [out, out + ".ckpt.gguf", out + ".log.csv", out + ".loss.svg"]
    m = ["-m", MODEL]
    gen = ["generate", *m, "-p", "Hi", "--temp", "0"]
    ppl = ["perplexity", *m, "-f", text, "-t", "1"]
    shape = ["--dim", "8192", "--layers", "16", "--heads", "64", "--ffn", "22016"]

    # (name, args, flag the message must name)
    refused = [
        ("generate huge -c", gen + ["-n", "100000000", "-c", "200000000"], "-c/--ctx-size"),
        ("generate huge --kv-size", gen + ["-n", "100000000", "--kv", "window", "--kv-size",
                                           "16000000"], "--kv-size"),
        ("generate --max-memory below need", gen + ["-n", "8", "--max-memory", "100K"],
         "-c/--ctx-size"),
        ("generate huge -b under --max-memory", gen + ["-n", "60000", "-c", "65536", "-b", "65536",
                                                       "--max-memory", "64MiB"], "-b/--batch-size"),
        ("perplexity huge -c", ppl + ["-c", "200000000"], "-c/--ctx-size"),
        ("perplexity huge --kv-size", ppl + ["-c", "16000000", "--kv", "tova", "--kv-size",
                                             "16000000"], "--kv-size"),
        ("perplexity huge -b", ppl + ["-c", "65536", "-b", "65536", "--max-memory", "0.1G"],
         "-b/--batch-size"),
        ("perplexity --max-memory below need", ppl + ["-c", "64", "--max-memory", "1MiB"],
         "-c/--ctx-size"),
        ("bench huge --depth", ["bench", *m, "--depth", "60000000", "-n", "1"], "-c/--ctx-size"),
        ("bench --max-memory below need", ["bench", *m, "-p", "64", "-n", "4", "--max-memory",
                                           "10K"], "-c/--ctx-size"),
        ("init-model huge shape", ["init-model", "--vocab-from", MODEL, "-o", out, *shape],
         "--dim"),
        ("init-model --max-memory below need", ["init-model", "--vocab-from", MODEL, "-o", out,
                                                "--max-memory", "1M"], "--dim"),
        ("train huge shape", ["train", "--train", shard, "-o", out, "--tokenizer", MODEL,
                              "--steps", "1", *shape], "--dim"),
        ("train 4096 wide", ["train", "--train", shard, "-o", out, "--tokenizer", MODEL,
                             "--steps", "1", "--dim", "4096", "--layers", "32", "--heads", "32",
                             "--ffn", "11008"], "--dim"),
        ("train huge --batch", ["train", "--train", shard, "-o", out, "--init", MODEL,
                                "--batch", "65536", "--ctx", "256", "--steps", "1"], "--batch"),
        ("train --max-memory below need", ["train", "--train", shard, "-o", out, "--init", MODEL,
                                           "--steps", "1", "--max-memory", "10MB"], "--batch"),
        ("generate -f /dev/zero", ["generate", *m, "-f", "/dev/zero", "-n", "1"], "/dev/zero"),
        ("generate -f /dev/zero under --max-memory", ["generate", *m, "-f", "/dev/zero", "-n", "1",
                                                      "--max-memory", "16M"], "/dev/zero"),
        ("generate -f over the limit", ["generate", *m, "-f", big, "-n", "1", "--max-memory",
                                        "1M"], big),
        ("perplexity -f over the limit", ["perplexity", *m, "-f", big, "--max-memory", "1M"], big),
        ("tokenize -f /dev/zero", ["tokenize", *m, "-f", "/dev/zero"], "/dev/zero"),
    ]
    for name, args, flag in refused:
        r = run(args)
        err = r.stderr
        check(r.returncode == 1, "%s: exit 1, got %d (%s)" % (name, r.returncode, err[-300:]))
        check(flag in err, "%s: the message names %s: %s" % (name, flag, err[-300:]))
        check("bytes" in err and any(c.isdigit() for c in err),
              "%s: the message gives the byte count: %s" % (name, err[-300:]))
        check(not any(os.path.exists(p) for p in outputs), "%s: no output file left" % name)
        check(not [f for f in os.listdir(tmp) if ".tmp-" in f], "%s: no temporary file" % name)
    check(all(digest(p) == before[p] for p in inputs), "the inputs are unchanged")

    # bad values of --max-memory are usage errors
    for v in ["0", "-5", "12X", "G", "1.5Q"]:
        r = run(gen + ["-n", "1", "--max-memory", v], limit=False)
        check(r.returncode == 2 and "--max-memory" in r.stderr,
              "--max-memory %s: exit 2 naming the flag, got %d" % (v, r.returncode))

    # controls: a normal request succeeds, also under a --max-memory above its need
    for extra in [[], ["--max-memory", "1GiB"], ["--max-memory", "512M"]]:
        r = run(gen + ["-n", "4"] + extra)
        check(r.returncode == 0, "generate %s succeeds: %s" % (extra, r.stderr[-300:]))
    r = run(gen + ["-n", "4", "-c", "1000000"])
    check(r.returncode == 0 and "note: -c 1000000" in r.stderr,
          "generate -c 1000000 for 5 tokens: sized for what it feeds (%s)" % r.stderr[-300:])
    # a budget above the chunk is capped: the same perplexity as the full cache
    full = run(ppl + ["-c", "64", "--json", "--max-chunks", "4"])
    win = run(ppl + ["-c", "64", "--json", "--max-chunks", "4", "--kv", "window", "--kv-size",
                     "500000", "--max-memory", "64M"])
    check(full.returncode == 0 and win.returncode == 0, "perplexity controls succeed")
    if full.returncode == 0 and win.returncode == 0:
        jf, jw = json.loads(full.stdout), json.loads(win.stdout)
        check("note: --kv-size 500000" in win.stderr, "the capped budget is noted")
        check(jf["ppl"] == jw["ppl"], "window k=500000 capped at 64 equals full: %g %g" %
              (jf["ppl"], jw["ppl"]))
        check(jw["allocated_bytes"] < 2 * jf["allocated_bytes"],
              "the capped window allocates about what full does: %d vs %d" %
              (jw["allocated_bytes"], jf["allocated_bytes"]))
    r = run(["init-model", "--vocab-from", MODEL, "-o", out, "--dim", "64", "--layers", "1",
             "--heads", "2", "--ffn", "128", "--max-memory", "100M"])
    check(r.returncode == 0 and os.path.exists(out), "a small init-model under --max-memory")
    if os.path.exists(out):
        os.unlink(out)

    # the reported memory equals the allocated: RSS growth against reported growth
    # each run in its own Python process, whose only child is msrnn: ru_maxrss of its children
    # is then msrnn's own peak
    PROBE = ("import resource, subprocess, sys\n"
             "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
             "print(r.stdout)\n")

    def measured(ctx):
        r = subprocess.run(["/usr/bin/python3", "-c", PROBE, BIN, *ppl, "-c", str(ctx), "--json",
                            "--max-chunks", "1"], capture_output=True, text=True, timeout=600)
        head, body = r.stdout.split("\n", 1)
        rc, rss = map(int, head.split())
        check(rc == 0, "perplexity -c %d runs" % ctx)
        return json.loads(body)["allocated_bytes"] if rc == 0 else 0, rss * 1024, 0
    if SANITIZED:
        print("note: sanitizer build: RSS against reported bytes skipped (shadow memory)")
    else:
        base_rep, base_rss, _ = measured(64)
        for ctx in [1024, 2048, 4096]:
            rep, rss, _ = measured(ctx)
            d_rep, d_rss = rep - base_rep, rss - base_rss
            tol = 0.10 * d_rep + (2 << 20)
            print("perplexity -c %d: reported %d bytes (+%d), peak RSS +%d" % (ctx, rep, d_rep,
                                                                              d_rss))
            check(abs(d_rss - d_rep) <= tol,
                  "-c %d: RSS growth %d vs reported growth %d (tolerance %d)" %
                  (ctx, d_rss, d_rep, tol))

finish("test_memory_limits")
