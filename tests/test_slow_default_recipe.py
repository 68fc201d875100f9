"""test_slow_default_recipe — models/train-default.sh still reproduces the committed models/default.gguf.

Retraining the default model takes over an hour, so this checks the recipe's deterministic parts from their
start, with the code as it is now:
  1. `msrnn tokenizer-train --vocab 4096 --manifest MANIFEST --split train` (the script's first step) learns
     the vocabulary inside models/default.gguf: the validation split tokenized with the new vocabulary and
     with the model's own is byte-identical as a token shard (same pieces, scores, types and merges
     in effect, over 4.1 MB of text).
  2. `msrnn train --config models/default.conf` from that vocabulary and the train split repeats the
     committed training log models/default.train-log.csv: the first N_STEPS steps' loss, learning rate and
     gradient norm are equal as printed (6 and 5 significant digits). Training is bit-reproducible across
     thread counts; the printed digits also agree between the gcc -O3 build and the clang sanitizer build.
"""
import csv
import os
import subprocess
import sys
import tempfile

from checks import check, finish

BIN = os.environ["MSRNN_BIN"]
SHARED = os.environ["MSRNN_SHARED"]
SOURCE = os.environ["MSRNN_SOURCE_DIR"]
MANIFEST = os.path.join(SHARED, "data", "gutenberg", "MANIFEST.tsv")
MODEL = os.path.join(SOURCE, "models", "default.gguf")
CONF = os.path.join(SOURCE, "models", "default.conf")
LOG = os.path.join(SOURCE, "models", "default.train-log.csv")
N_STEPS = 2


def run(*args):
    r = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=1500)
    if r.returncode != 0:
        print(f"FAIL: msrnn {' '.join(args)}: rc {r.returncode}\n{r.stderr[-2000:]}")
        sys.exit(1)
    return r


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


with tempfile.TemporaryDirectory() as d:
    P = lambda name: os.path.join(d, name)  # noqa: E731
    run("tokenizer-train", "--vocab", "4096", "--manifest", MANIFEST, "--split", "train", "-o", P("tok.gguf"))
    for name, vocab in (("new.bin", P("tok.gguf")), ("model.bin", MODEL)):
        run("tokenize-corpus", "-m", vocab, "--manifest", MANIFEST, "--split", "validation", "-o", P(name))
    with open(P("new.bin"), "rb") as f, open(P("model.bin"), "rb") as g:
        a, b = f.read(), g.read()
    check(len(a) > 2_000_000 and a == b,
          f"validation shard: retrained vocabulary {len(a)} bytes vs the model's {len(b)} bytes, equal: {a == b}")

    run("tokenize-corpus", "-m", P("tok.gguf"), "--manifest", MANIFEST, "--split", "train", "-o", P("train.bin"))
    run("train", "--config", CONF, "--tokenizer", P("tok.gguf"), "--train", P("train.bin"), "--val", P("new.bin"),
        "-o", P("m.gguf"), "--stop-after", str(N_STEPS), "--eval-every", "0", "-t", "2")
    got, want = rows(P("m.gguf.log.csv")), rows(LOG)[:N_STEPS]
    check(len(got) == N_STEPS, f"{len(got)} log rows, want {N_STEPS}")
    for g, w in zip(got, want):
        for k in ("step", "loss", "lr", "grad_norm"):
            check(g[k] == w[k], f"step {w['step']} {k}: {g[k]} now, {w[k]} in the committed log")
    print(f"  steps 1..{N_STEPS}: " + "; ".join(f"loss {g['loss']} norm {g['grad_norm']}" for g in got))

finish("test_slow_default_recipe")
