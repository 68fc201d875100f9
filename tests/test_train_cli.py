"""test_train_cli — `msrnn train` as a user meets it.

  * resume is exact: a run stopped with --stop-after and continued with --resume, and a run stopped
    by SIGINT (Ctrl-C) and resumed, give the same per-step losses, gradient norms and validation
    losses as an uninterrupted run, and a byte-identical final model;
  * a config file gives the same run as the same flags;
  * the log (CSV) and the plot (SVG) are well-formed and hold every step;
  * the final model is a plain llama GGUF that `msrnn perplexity` runs, its matrices f16 with --f16;
  * bad flags, bad values, missing files, a missing checkpoint: exit 2 or 1 with a message naming
    the problem, and no final model written.

A tiny model (dim 64) with the vocabulary of ../shared/models/gutenberg-ref.gguf on a shard of two
validation books, so the whole test takes seconds."""
import csv
import os
import signal
import subprocess
import tempfile
import xml.etree.ElementTree as ET

from checks import check, finish

BIN = os.environ["MSRNN_BIN"]
SHARED = os.environ["MSRNN_SHARED"]
VOCAB = os.path.join(SHARED, "models", "gutenberg-ref.gguf")
BOOKS = [os.path.join(SHARED, "data", "gutenberg", b) for b in ("pg55.txt", "pg23.txt")]


def run(*args, timeout=600):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout)


def log_rows(path):
    with open(path) as f:
        return [(r["step"], r["loss"], r["lr"], r["grad_norm"], r["val_loss"]) for r in csv.DictReader(f)]


def same_file(a, b):
    with open(a, "rb") as f, open(b, "rb") as g:
        return f.read() == g.read()


with tempfile.TemporaryDirectory() as d:
    P = lambda name: os.path.join(d, name)  # noqa: E731
    r = run("tokenize-corpus", "-m", VOCAB, "-o", P("data.bin"), *BOOKS)
    check(r.returncode == 0, f"tokenize-corpus: {r.stderr}")
    r = run("init-model", "--vocab-from", VOCAB, "-o", P("init.gguf"), "--dim", "64", "--layers", "2",
            "--heads", "4", "--kv-heads", "2", "--ffn", "128", "--ctx", "256", "--seed", "3")
    check(r.returncode == 0, f"init-model: {r.stderr}")
    common = ["--train", P("data.bin"), "--val", P("data.bin"), "--ctx", "64", "--batch", "3", "--accum", "2",
              "--steps", "14", "--warmup", "3", "--lr", "3e-3", "--lr-min", "3e-4", "--eval-every", "4",
              "--eval-batches", "2", "--ckpt-every", "5", "-t", "2"]

    # 1. uninterrupted reference run
    r = run("train", "--init", P("init.gguf"), *common, "-o", P("a.gguf"), "--json")
    check(r.returncode == 0, f"train: {r.stderr}")
    ref = log_rows(P("a.gguf.log.csv"))
    check(len(ref) == 14 and [int(x[0]) for x in ref] == list(range(1, 15)), f"log has steps 1..14: {ref}")
    check(float(ref[-1][1]) < float(ref[0][1]) - 0.5, f"the loss falls: {ref[0][1]} -> {ref[-1][1]}")
    check(sum(1 for x in ref if x[4]) == 4, "validation at steps 4, 8, 12 and the last")
    check('"steps": 14' in r.stdout and '"stopped": false' in r.stdout, f"json summary: {r.stdout}")

    # 2. --stop-after then --resume: identical losses and a byte-identical model
    r = run("train", "--init", P("init.gguf"), *common, "-o", P("b.gguf"), "--stop-after", "7")
    check(r.returncode == 0 and "stopped at step 7" in r.stderr, f"stop-after: {r.returncode} {r.stderr[-500:]}")
    check(not os.path.exists(P("b.gguf")), "a stopped run writes no final model")
    check(len(log_rows(P("b.gguf.log.csv"))) == 7, "the stopped run logged 7 steps")
    r = run("train", *common, "-o", P("b.gguf"), "--resume")
    check(r.returncode == 0 and "resuming at step 7" in r.stderr, f"resume: {r.returncode} {r.stderr[-500:]}")
    check(log_rows(P("b.gguf.log.csv")) == ref, "resumed log equals the uninterrupted one")
    check(os.path.exists(P("b.gguf")) and same_file(P("a.gguf"), P("b.gguf")), "resumed model is byte-identical")

    # 3. Ctrl-C: a checkpoint, exit 0, and an exact resume
    long = [x if x != "14" else "40" for x in common]
    r = run("train", "--init", P("init.gguf"), *long, "-o", P("c.gguf"))
    check(r.returncode == 0, f"train 40: {r.stderr[-300:]}")
    ref40 = log_rows(P("c.gguf.log.csv"))
    p = subprocess.Popen([BIN, "train", "--init", P("init.gguf"), *long, "-o", P("e.gguf")],
                         stderr=subprocess.PIPE, text=True)
    lines = []
    for line in p.stderr:  # wait for the second step, then interrupt
        lines.append(line)
        if line.startswith("step 2/"):
            p.send_signal(signal.SIGINT)
            break
    rest = p.stderr.read()
    rc = p.wait(timeout=120)
    check(rc == 130 and "stopped at step" in rest, f"SIGINT: rc {rc} (130 expected), {rest[-400:]}")
    stopped_at = len(log_rows(P("e.gguf.log.csv")))
    check(2 <= stopped_at < 40, f"stopped after step 2 and before the end (at {stopped_at})")
    r = run("train", *long, "-o", P("e.gguf"), "--resume")
    check(r.returncode == 0, f"resume after SIGINT: {r.stderr[-300:]}")
    check(log_rows(P("e.gguf.log.csv")) == ref40, "log after Ctrl-C + resume equals the uninterrupted one")
    check(same_file(P("c.gguf"), P("e.gguf")), "model after Ctrl-C + resume is byte-identical")

    # 4. a config file gives the same run as flags (flags still override it)
    with open(P("run.conf"), "w") as f:
        f.write("# the same run as the flags\nctx = 64\nbatch = 3\naccum = 2\nsteps = 14\nwarmup = 3\n"
                "lr = 3e-3  # peak\nlr-min = 3e-4\neval-every = 4\neval-batches = 2\nckpt-every = 5\n")
    r = run("train", "--config", P("run.conf"), "--init", P("init.gguf"), "--train", P("data.bin"), "--val",
            P("data.bin"), "-o", P("f.gguf"), "-t", "2")
    check(r.returncode == 0 and log_rows(P("f.gguf.log.csv")) == ref, f"config file run: {r.stderr[-300:]}")

    # 5. the plot and the final model
    svg = ET.parse(P("a.gguf.loss.svg")).getroot()
    lines_svg = [e for e in svg.iter() if e.tag.endswith("polyline")]
    check(len(lines_svg) == 2 and len(lines_svg[0].get("points").split()) == 14, "SVG: train line of 14 points")
    check(len(lines_svg[1].get("points").split()) == 4, "SVG: validation line of 4 points")
    r = run("perplexity", "-m", P("a.gguf"), "-f", BOOKS[0], "-c", "64", "--max-chunks", "2", "--json")
    check(r.returncode == 0 and '"ppl"' in r.stdout, f"perplexity on the trained model: {r.stderr[-300:]}")
    r = run("train", "--init", P("init.gguf"), *common, "-o", P("h.gguf"), "--f16", "--steps", "2")
    info = run("info", P("h.gguf")).stdout
    check(r.returncode == 0 and "f16" in info.lower(), f"--f16 final model: {info[-500:]}")

    # 6. bad input
    for args, rc_want, needle in [
        (["--init", P("init.gguf"), *common, "-o", P("x.gguf"), "--bogus"], 2, "--bogus"),
        (["--init", P("init.gguf"), *common, "-o", P("x.gguf"), "--lr", "-1"], 2, "--lr"),
        (["--init", P("init.gguf"), *common, "-o", P("x.gguf"), "--batch", "zero"], 2, "--batch"),
        (["--init", P("init.gguf"), "-o", P("x.gguf")], 2, "--train"),
        (["--init", P("init.gguf"), "--tokenizer", VOCAB, *common, "-o", P("x.gguf")], 2, "--tokenizer"),
        (["--init", P("missing.gguf"), *common, "-o", P("x.gguf")], 1, "missing.gguf"),
        (["--init", P("init.gguf"), *common, "--train", P("nope.bin"), "-o", P("x.gguf")], 1, "nope.bin"),
        (["--init", P("init.gguf"), *common, "-o", P("x.gguf"), "--ctx", "512"], 1, "context"),
        ([*common, "-o", P("x.gguf"), "--resume"], 1, "x.gguf.ckpt.gguf"),
        (["--init", P("init.gguf"), *common, "-o", P("nodir/x.gguf")], 1, "nodir/x.gguf"),
        (["--init", P("init.gguf"), *common, "-o", P("x.gguf"), "--log", P("nodir/log.csv")], 1, "nodir/log.csv"),
        (["--config", P("missing.conf"), "--init", P("init.gguf"), *common, "-o", P("x.gguf")], 1, "missing.conf"),
    ]:
        r = run("train", *args)
        check(r.returncode == rc_want and needle in r.stderr,
              f"{args[-3:]}: rc {r.returncode} (want {rc_want}), stderr {r.stderr[-300:]!r}")
    with open(P("bad.conf"), "w") as f:
        f.write("ctx = 64\nfrobnicate = 3\n")
    r = run("train", "--config", P("bad.conf"), "--init", P("init.gguf"), "--train", P("data.bin"), "-o", P("x.gguf"))
    check(r.returncode == 2 and "frobnicate" in r.stderr and "bad.conf:2" in r.stderr, f"bad config: {r.stderr}")
    check(not os.path.exists(P("x.gguf")), "no final model after a failure")

finish("test_train_cli")
