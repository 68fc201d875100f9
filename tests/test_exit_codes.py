"""test_exit_codes — every command follows one exit-status table (issue 9, class 10):

    0    success (also `train --stop-after N`: a planned stop after a checkpoint)
    1    runtime failure: a file missing, unreadable or malformed, memory that cannot be had
    2    bad usage: a flag's value out of range or inconsistent with another
    130  `train` interrupted by Ctrl-C (SIGINT) after writing a clean checkpoint (128 + signal)

Each row below is a command and the status it must give; the same inconsistent memory options
(a sink budget not above its sinks) are tried through every command that takes them, since they used
to give 1 in one place and 2 in another. The allocation failure runs under `ulimit -v` (not in the
sanitizer build, whose shadow memory needs the address space)."""
import os
import signal
import subprocess
import tempfile
import time

from checks import check, finish

BIN = os.environ["MSRNN_BIN"]
SRC = os.environ["MSRNN_SOURCE_DIR"]
SHARED = os.environ["MSRNN_SHARED"]
MODEL = os.path.join(SRC, "models", "default.gguf")
BOOK = os.path.join(SHARED, "data", "gutenberg", "pg55.txt")
SANITIZED = os.environ.get("MSRNN_SANITIZED") == "1"


def run(args, shell_prefix=None):
    if shell_prefix:
        cmd = shell_prefix + " && exec " + " ".join(f"'{a}'" for a in [BIN, *args])
        return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=600)
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=600)


with tempfile.TemporaryDirectory() as tmp:
    broken = os.path.join(tmp, "broken.gguf")
    with open(MODEL, "rb") as f:
        open(broken, "wb").write(f.read(4000))
    ppl = ["perplexity", "-f", BOOK, "--ctx", "64", "--max-chunks", "1", "-t", "1"]
    rows = [
        # usage: inconsistent memory options, through every command that takes them
        (2, ["generate", "-m", MODEL, "-p", "Hi", "-n", "2", "--kv", "sink", "--kv-size", "4"]),
        (2, ["generate", "-m", MODEL, "-p", "Hi", "-n", "2", "--kv", "sink", "--kv-size", "8",
             "--kv-sinks", "8"]),
        (2, ["perplexity", "-m", MODEL, *ppl[1:], "--kv", "sink", "--kv-size", "3"]),
        (2, ["perplexity", "-m", MODEL, *ppl[1:], "--sweep", "3", "--policies", "sink"]),
        (2, ["perplexity", "-m", MODEL, *ppl[1:], "--sweep", "16", "--policies", "nosuch"]),
        (2, ["bench", "-m", MODEL, "-p", "8", "-n", "2", "-r", "1", "--kv", "sink", "--kv-size",
             "2"]),
        (2, ["generate", "-m", MODEL, "-p", "Hi", "-n", "2", "--kv", "nosuch", "--kv-size", "8"]),
        (2, ["generate", "-m", MODEL, "-p", "Hi", "-n", "2", "--kv", "tova"]),
        (2, ["generate", "-m", MODEL, "-p", "Hi", "-n", "-3"]),
        # runtime failures: files
        (1, ["generate", "-m", os.path.join(tmp, "absent.gguf"), "-p", "Hi", "-n", "2"]),
        (1, ["generate", "-m", broken, "-p", "Hi", "-n", "2"]),
        (1, ["perplexity", "-m", MODEL, "-f", os.path.join(tmp, "absent.txt")]),
        (1, ["info", broken]),
        # success
        (0, ["generate", "-m", MODEL, "-p", "Hi", "-n", "2", "--kv", "sink", "--kv-size", "8"]),
    ]
    for want, args in rows:
        r = run(args)
        check(r.returncode == want,
              f"{' '.join(args)}: exit {r.returncode}, expected {want}: {r.stderr.strip()[-300:]}")

    # memory that cannot be had: a full cache of 4M tokens (24 GB) under a 2 GB address space
    if not SANITIZED:
        # (generate sizes its cache for the tokens it feeds: -n makes them 4M; the request is
        # refused before allocating, tests/test_memory_limits.py holds the details)
        args = ["generate", "-m", MODEL, "-p", "Hi", "-n", "4000000", "-c", "4000010", "-t", "1",
                "--max-memory", "2G"]
        r = run(args, shell_prefix="ulimit -v 2000000")
        check(r.returncode == 1 and "bytes" in r.stderr,
              f"allocation failure: exit {r.returncode}, expected 1: {r.stderr.strip()[-300:]}")

    # train: a planned stop exits 0, Ctrl-C after a checkpoint exits 130, a missing shard 1
    shard = os.path.join(tmp, "t.bin")
    r = run(["tokenize-corpus", "-m", MODEL, "-o", shard, BOOK])
    check(r.returncode == 0, f"tokenize-corpus: {r.stderr}")
    common = ["train", "--tokenizer", MODEL, "--dim", "64", "--layers", "2", "--heads", "2",
              "--ffn", "128", "-c", "64", "--batch", "2", "--eval-every", "0", "-t", "1",
              "--train", shard]
    r = run([*common, "--steps", "4", "--stop-after", "2", "-o", os.path.join(tmp, "a.gguf")])
    check(r.returncode == 0, f"train --stop-after: exit {r.returncode}: {r.stderr[-300:]}")
    r = run([*common, "--steps", "4", "--train", os.path.join(tmp, "absent.bin"), "-o",
             os.path.join(tmp, "b.gguf")])
    check(r.returncode == 1, f"train with a missing shard: exit {r.returncode}")
    p = subprocess.Popen([BIN, *common, "--steps", "100000", "--ckpt-every", "1000", "-o",
                          os.path.join(tmp, "c.gguf")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    err = ""
    while time.time() < deadline:  # wait for the first step, then interrupt
        line = p.stderr.readline()
        err += line
        if "step 1/" in line or "step 2/" in line or not line:
            break
    p.send_signal(signal.SIGINT)
    out, rest = p.communicate(timeout=300)
    check(p.returncode == 130, f"train interrupted by SIGINT: exit {p.returncode}, expected 130: "
                               f"{(err + rest)[-300:]}")
    check(os.path.exists(os.path.join(tmp, "c.gguf.ckpt.gguf")),
          "the interrupted run left its checkpoint")

    left = [f for f in os.listdir(tmp) if f.endswith(".init.gguf") or ".tmp-" in f]
    check(not left, f"train runs (stopped, failed, interrupted) left files behind: {left}")

finish("test_exit_codes")
