"""test_cli_temporaries — a failed command leaves nothing new, and the temporary file of a killed
write is removed by the next run that writes the same target (issue 9, class 2).

  * killed: `tokenize-corpus` over the train split is killed with SIGKILL while its output's
    temporary ("OUT.tmp-XXXXXX") exists; the next run writing OUT removes it, says so on stderr, and
    writes OUT.
  * every writer (GGUF models and vocabularies, token shards, JSON, SVG, CSV logs, checkpoints) is
    given stale temporaries of its targets (made old, as a killed run's are): after the command each
    is gone and the target written. Temporaries that are not stale stay: one held under flock by a
    live process (a concurrent writer), one younger than two seconds, and files that only look alike
    (another target's, a wrong suffix length).
  * generated failures of each command (a missing or malformed input, a vocabulary too small, a
    learning-rate floor above the rate, a context past what a shard holds, an interrupted config)
    exit non-zero and leave the folder exactly as it was."""
import fcntl
import os
import signal
import subprocess
import tempfile
import time

from checks import check, finish

BIN = os.environ["MSRNN_BIN"]
SHARED = os.environ["MSRNN_SHARED"]
MANIFEST = os.path.join(SHARED, "data", "gutenberg", "MANIFEST.tsv")
BOOK = os.path.join(SHARED, "data", "gutenberg", "pg55.txt")
SHAPE = ["--dim", "32", "--layers", "1", "--heads", "2", "--ffn", "64"]
TRAIN = ["-c", "32", "--batch", "1", "--steps", "2", "--eval-every", "0", "-t", "1"]


def run(args, timeout=600):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout)


def listing(d):
    return sorted(os.listdir(d))


def stale(path, n=1 << 16, age=60, suffix="AbC123"):
    name = f"{path}.tmp-{suffix}"
    with open(name, "wb") as f:
        f.write(b"\0" * n)
    t = time.time() - age
    os.utime(name, (t, t))
    return name


with tempfile.TemporaryDirectory() as d:
    os.chdir(d)
    with open(BOOK, encoding="utf-8") as f:
        text = f.read()[:40000]
    with open("book.txt", "w", encoding="utf-8") as f:
        f.write(text)
    for args in (["tokenizer-train", "--vocab", "400", "-o", "tok.gguf", "book.txt"],
                 ["tokenize-corpus", "-m", "tok.gguf", "-o", "train.bin", "book.txt"],
                 ["init-model", "--vocab-from", "tok.gguf", "-o", "m.gguf", *SHAPE, "--ctx", "64"]):
        r = run(args)
        check(r.returncode == 0, f"setup {args[0]}: {r.stderr}")

    # 1. a write killed for real
    p = subprocess.Popen([BIN, "tokenize-corpus", "-m", "tok.gguf", "--manifest", MANIFEST, "--split",
                          "train", "-o", "big.bin", "-t", "1"], stderr=subprocess.PIPE)
    tmp = []
    for _ in range(1200):
        tmp = [x for x in os.listdir(d) if x.startswith("big.bin.tmp-")]
        if tmp or p.poll() is not None:
            break
        time.sleep(0.05)
    check(len(tmp) == 1 and p.poll() is None, f"the writer's temporary appears while it runs: {tmp}")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    left = [x for x in os.listdir(d) if x.startswith("big.bin")]
    check(left == tmp and not os.path.exists("big.bin"), f"SIGKILL leaves only the temporary: {left}")
    time.sleep(2.1)  # stale temporaries are at least two seconds old
    r = run(["tokenize-corpus", "-m", "tok.gguf", "-o", "big.bin", "book.txt"])
    left = [x for x in os.listdir(d) if x.startswith("big.bin")]
    check(r.returncode == 0 and left == ["big.bin"], f"the next run removes it: {left} {r.stderr}")
    os.remove("big.bin")

    # 2. every writer removes its targets' stale temporaries, and only those
    writers = [
        (["init-model", "--vocab-from", "tok.gguf", *SHAPE, "-o", "w.gguf"], ["w.gguf"]),
        (["tokenizer-train", "--vocab", "400", "book.txt", "-o", "w.gguf", "--merges", "w.txt"],
         ["w.gguf", "w.txt"]),
        (["tokenize-corpus", "-m", "tok.gguf", "book.txt", "-o", "w.bin"], ["w.bin"]),
        (["perplexity", "-m", "m.gguf", "-f", "book.txt", "--ctx", "32", "--max-chunks", "1", "--sweep",
          "16", "-t", "1", "--out", "w.json", "--plot", "w.svg"], ["w.json", "w.svg"]),
        (["train", "--init", "m.gguf", "--train", "train.bin", *TRAIN, "-o", "w.gguf"],
         ["w.gguf", "w.gguf.ckpt.gguf", "w.gguf.log.csv", "w.gguf.loss.svg"]),
    ]
    for args, targets in writers:
        label = args[0]
        old = [stale(t, suffix=s) for t in targets for s in ("AbC123", "x9Y8z7")]
        young = stale(targets[0], suffix="Young1", age=0)
        held = stale(targets[0], suffix="Held01")
        alike = [stale(targets[0], suffix="short"), stale("other.gguf")]
        with open(held, "rb") as h:
            fcntl.flock(h, fcntl.LOCK_EX)  # a live writer's lock
            r = run(args)
            check(r.returncode == 0, f"{label}: {r.stderr.strip()[-400:]}")
            for t in targets:
                check(os.path.exists(t), f"{label}: wrote {t}")
            for o in old:
                check(not os.path.exists(o), f"{label}: removed the stale {o}")
            for keep in (young, held, *alike):
                check(os.path.exists(keep), f"{label}: kept {keep}")
            if label == "perplexity":
                check("removed 2 temporary files of w.json left by a killed run" in r.stderr,
                      f"{label}: says what it removed: {r.stderr.strip()[-400:]}")
        for x in os.listdir(d):
            if x.startswith(("w.", "other.gguf")):
                os.remove(x)

    # 3. failures leave nothing
    with open("bad.gguf", "wb") as f:
        f.write(b"GGUF\3\0\0\0" + b"\xff" * 40)
    with open("bad.bin", "wb") as f:
        f.write(b"MSRNNTOK" + b"\0" * 10)
    with open("bad.conf", "w") as f:
        f.write("lr = 1e-3\nsteps = many\n")
    failures = [
        ["init-model", "--vocab-from", "bad.gguf", "-o", "o.gguf"],
        ["init-model", "--vocab-from", "missing.gguf", "-o", "o.gguf"],
        ["tokenizer-train", "--vocab", "300", "book.txt", "-o", "o.gguf"],  # too small
        ["tokenizer-train", "--vocab", "400", "book.txt", "missing.txt", "-o", "o.gguf"],
        ["tokenize-corpus", "-m", "bad.gguf", "book.txt", "-o", "o.bin"],
        ["tokenize-corpus", "-m", "tok.gguf", "book.txt", "missing.txt", "-o", "o.bin"],
        ["perplexity", "-m", "bad.gguf", "-f", "book.txt", "--sweep", "16", "--out", "o.json"],
        ["perplexity", "-m", "m.gguf", "-f", "missing.txt", "--sweep", "16", "--out", "o.json"],
    ]
    for tr in (["--train", "bad.bin"], ["--train", "missing.bin"], ["--train", "train.bin", "--val", "bad.bin"],
               ["--train", "train.bin", "--lr-min", "1"], ["--train", "train.bin", "-c", "200000"],
               ["--train", "train.bin", "--config", "bad.conf"]):
        for start in (["--init", "m.gguf"], ["--tokenizer", "tok.gguf", *SHAPE], ["--init", "bad.gguf"]):
            failures.append(["train", *start, *TRAIN, *tr, "-o", "o.gguf"])
    for args in failures:
        before = listing(d)
        r = run(args)
        check(r.returncode != 0, f"{' '.join(args)}: fails (exit {r.returncode})")
        check(listing(d) == before,
              f"{' '.join(args)}: leaves nothing new: {sorted(set(listing(d)) - set(before))}")
    print(f"  {len(failures)} failing commands")

finish("test_cli_temporaries")
