#!/usr/bin/python3
"""copy_curriculum.py — text that can only be predicted by copying, to teach a model induction
(issue 10: passkey retrieval is a copy, and msrnn's models cannot copy yet).

    copy_curriculum.py --mode spread --seed 5 --lines 60000 -o copy.txt   # the 2026-12-07 run 1 data
    copy_curriculum.py --mode dense  --seed 5 --lines 200000 -o copy.txt  # run 2
    msrnn tokenize-corpus -m models/default.gguf -o copy.bin copy.txt

Words come from the first 12 train books of ../shared/data/gutenberg (lower-cased, seen >= 5 times).
spread: 20% book paragraphs; else 6-49 random words (0-2 five-digit numbers among them), a period, 0-29
        random filler words, the same words again.
dense:  4-19 random words (half the lines with a five-digit number among them), then the same words
        again at once: about half of every line is predictable only by copying.
"""
import argparse
import collections
import os
import random
import re

ap = argparse.ArgumentParser()
ap.add_argument("--mode", choices=["spread", "dense"], required=True)
ap.add_argument("--seed", type=int, required=True)
ap.add_argument("--lines", type=int, required=True)
ap.add_argument("-o", "--output", required=True)
ap.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
a = ap.parse_args()

rng = random.Random(a.seed)
data = os.path.join(a.shared, "data", "gutenberg")
rows = [l.split("\t") for l in open(os.path.join(data, "MANIFEST.tsv")).read().splitlines()[1:]]
words, paras = collections.Counter(), []
for f in [r[0] for r in rows if r[6] == "train"][:12]:
    t = open(os.path.join(data, f), encoding="utf-8", errors="replace").read()
    words.update(re.findall(r"[a-z]+", t.lower()))
    paras += [p.replace("\n", " ") for p in t.split("\n\n") if len(p) > 200]
vocab = [w for w, c in words.items() if c >= 5]


def num():
    return str(rng.randrange(10000, 100000))


out = []
for _ in range(a.lines):
    if a.mode == "spread":
        if rng.random() < 0.2:
            out.append(rng.choice(paras))
            continue
        seq = [rng.choice(vocab) for _ in range(rng.randrange(6, 50))]
        for _ in range(rng.randrange(0, 3)):
            seq.insert(rng.randrange(len(seq) + 1), num())
        s = " ".join(seq)
        filler = " ".join(rng.choice(vocab) for _ in range(rng.randrange(0, 30)))
        out.append(f"{s}. {filler}. {s}.")
    else:
        seq = [rng.choice(vocab) for _ in range(rng.randrange(4, 20))]
        if rng.random() < 0.5:
            seq.insert(rng.randrange(len(seq) + 1), num())
        s = " ".join(seq)
        out.append(f"{s}. {s}.")
tmp = a.output + ".tmp"
open(tmp, "w").write("\n".join(out) + "\n")
os.replace(tmp, a.output)
