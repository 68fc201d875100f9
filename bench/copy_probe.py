#!/usr/bin/python3
"""copy_probe.py — does a model copy across a distance? (issue 10: passkey retrieval is a copy, and an
Infini model must copy through its compressive memory once the first copy is segments behind.)

    bench/copy_probe.py MODEL.gguf [MODEL2.gguf ...] [--distances 0,100,400,1500] [--trials 12]

Each trial: BOS, 12 random words (from bench/copy_curriculum.py's kind of vocabulary: the lower-case
words of the first 12 train books seen >= 5 times), '.', F tokens of the passkey filler ("The grass is
green. ..."), the same 12 words again and '.'. Printed per distance F: the mean NLL (nats) of the
first copy's tokens and of the second copy's, each copy's first token left out. A model that copies
scores the second copy far below the first; one that does not scores them alike. Per-token NLL comes
from tests/tool_nll (the public API, full cache for a Llama file, the model's own memory otherwise),
each trial one chunk. Words and keys are drawn with seed 77, so every model sees the same texts.
"""
import argparse
import collections
import os
import random
import re
import struct
import subprocess
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
ap = argparse.ArgumentParser()
ap.add_argument("models", nargs="+")
ap.add_argument("--distances", default="0,100,400,1500")
ap.add_argument("--trials", type=int, default=12)
ap.add_argument("--msrnn", default=os.path.join(root, "build", "msrnn"))
ap.add_argument("--tool-nll", default=os.path.join(root, "build", "tests", "tool_nll"))
ap.add_argument("--vocab", default=os.path.join(root, "models", "default.gguf"))
ap.add_argument("--shared", default=os.path.join(root, "..", "shared"))
a = ap.parse_args()

data = os.path.join(a.shared, "data", "gutenberg")
rows = [l.split("\t") for l in open(os.path.join(data, "MANIFEST.tsv")).read().splitlines()[1:]]
counts = collections.Counter()
for f in [r[0] for r in rows if r[6] == "train"][:12]:
    counts.update(re.findall(r"[a-z]+", open(os.path.join(data, f), encoding="utf-8", errors="replace").read().lower()))
vocab = sorted(w for w, c in counts.items() if c >= 5)
rng = random.Random(77)


def tok(text):
    out = subprocess.run([a.msrnn, "tokenize", "-m", a.vocab, "-p", text, "--no-bos", "--ids"],
                         capture_output=True, text=True, check=True).stdout
    return [int(x) for x in out.split()]


filler = tok(" The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.")
dot = tok(".")
cases = {}
for F in [int(x) for x in a.distances.split(",")]:
    cases[F] = []
    for _ in range(a.trials):
        s = tok(" " + " ".join(rng.choice(vocab) for _ in range(12)))
        fill = (filler * (F // len(filler) + 1))[:F]
        ids = [1] + s + dot + fill + s + dot
        second = 1 + len(s) + len(dot) + len(fill)
        cases[F].append((ids, (1, 1 + len(s)), (second, second + len(s))))

print("| model | " + " | ".join(f"F = {F}: first / second" for F in cases) + " |")
print("|---|" + "---:|" * len(cases))
with tempfile.TemporaryDirectory() as tmp:
    ids_path, nll_path = os.path.join(tmp, "ids.bin"), os.path.join(tmp, "nll.bin")
    for m in a.models:
        row = []
        for F, cs in cases.items():
            s1 = s2 = n1 = n2 = 0
            for ids, first, second in cs:
                open(ids_path, "wb").write(struct.pack(f"<{len(ids)}i", *ids))
                r = subprocess.run([a.tool_nll, m, ids_path, str(len(ids)), nll_path], capture_output=True, text=True)
                if r.returncode != 0:
                    raise SystemExit(f"copy_probe: {a.tool_nll} failed on {m}: {r.stderr.strip() or r.stdout.strip()}")
                raw = open(nll_path, "rb").read()
                nll = struct.unpack(f"<{len(raw) // 8}d", raw)  # nll[t - 1]: -log p(ids[t] | ids[:t])
                for t in range(first[0] + 1, first[1]):
                    s1, n1 = s1 + nll[t - 1], n1 + 1
                for t in range(second[0] + 1, second[1]):
                    s2, n2 = s2 + nll[t - 1], n2 + 1
            row.append(f"{s1 / n1:.2f} / {s2 / n2:.2f}")
        print(f"| {m} | " + " | ".join(row) + " |", flush=True)
