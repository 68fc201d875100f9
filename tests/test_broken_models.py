"""test_broken_models — a model with parts missing or broken never runs silently (issue 9, class 5).

From one tiny correct model (init-model, L = 4 layers, f32, a 400-piece vocabulary from
tokenizer-train), tests/gguf_tiny.py makes broken copies:

1. llama.block_count patched to each of 1..L-1: the layers beyond it are tensors the model does not
   use. generate, perplexity, bench and train --init warn on stderr, naming the first of them and
   their count, and run; with --strict each exits 1 with that message and writes nothing.
   The same for an extra tensor of a name msrnn does not know.
2. NaN (or infinity) written over a whole tensor, for tensors all over the model: perplexity and
   generate exit 1 with "non-finite logits" (not "ppl nan" with 0); train --init exits 1 naming the
   tensor, before the first step.
3. Tokenizer keys removed (all of them, or only tokenizer.ggml.model): init-model --vocab-from and
   train --tokenizer exit 1 saying the file has no tokenizer and write nothing; train --init from a
   model without one exits 1 the same way.

Every failing case leaves its inputs byte-identical (sha256) and its output folder empty (no model,
checkpoint, log, plot or .tmp-*). Controls: the correct model runs every command, with and without
--strict, without a warning.
"""
import hashlib
import math
import os
import struct
import subprocess
import tempfile

import gguf_tiny
from checks import check, finish

BIN = os.environ["MSRNN_BIN"]
SHARED = os.environ["MSRNN_SHARED"]
BOOK = os.path.join(SHARED, "data", "gutenberg", "pg55.txt")
L = 4
SHAPE = ["--dim", "64", "--layers", str(L), "--heads", "2", "--ffn", "128"]
TRAIN = ["-c", "32", "--batch", "2", "--steps", "1", "-t", "1"]


def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, errors="replace", timeout=300)


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def tail(r):
    return r.stderr[-500:]


with tempfile.TemporaryDirectory() as tmp:
    ins = os.path.join(tmp, "in")
    os.mkdir(ins)
    P = lambda name: os.path.join(ins, name)  # noqa: E731
    open(P("text.txt"), "wb").write(open(BOOK, "rb").read()[:40000])
    r = run("tokenizer-train", "--vocab", "400", "-o", P("tok.gguf"), P("text.txt"), "-t", "1")
    check(r.returncode == 0, f"tokenizer-train: {tail(r)}")
    r = run("tokenize-corpus", "-m", P("tok.gguf"), "-o", P("train.bin"), P("text.txt"), "-t", "1")
    check(r.returncode == 0, f"tokenize-corpus: {tail(r)}")
    r = run("init-model", "--vocab-from", P("tok.gguf"), "-o", P("good.gguf"), *SHAPE, "--ctx", "64",
            "--seed", "3")
    check(r.returncode == 0, f"init-model: {tail(r)}")
    open(P("short.txt"), "wb").write(open(BOOK, "rb").read()[:3000])
    good = gguf_tiny.read(P("good.gguf"))
    names = [t["name"] for t in good["tensors"]]

    n_out = 0

    def outdir():
        global n_out
        n_out += 1
        d = os.path.join(tmp, f"out{n_out}")
        os.mkdir(d)
        return d

    def commands(model, out):
        """Every command that loads a model, as (name, argv)."""
        return [
            ("generate", ["generate", "-m", model, "-p", "Once upon a time", "-n", "4", "-t", "1"]),
            ("perplexity", ["perplexity", "-m", model, "-f", P("short.txt"), "--ctx", "32", "-t", "1",
                            "--max-chunks", "4"]),
            ("bench", ["bench", "-m", model, "-p", "8", "-n", "2", "-r", "1", "-t", "1"]),
            ("train", ["train", "--init", model, "--train", P("train.bin"), "-o",
                       os.path.join(out, "m.gguf"), *TRAIN]),
        ]

    def expect_failure(what, argv, rc, needles, out):
        before = {f: sha(P(f)) for f in os.listdir(ins)}
        r = run(*argv)
        check(r.returncode == rc, f"{what}: rc {r.returncode}, expected {rc}: {tail(r)}")
        for n in needles:
            check(n in r.stderr, f"{what}: message lacks '{n}': {tail(r)}")
        check("step 1" not in r.stderr, f"{what}: a training step ran")
        check(os.listdir(out) == [], f"{what}: left behind {os.listdir(out)}")
        after = {f: sha(P(f)) for f in os.listdir(ins)}
        check(before == after, f"{what}: the input folder changed")
        return r

    # ---- controls: the correct model, with and without --strict ------------------------------------
    for strict in ([], ["--strict"]):
        out = outdir()
        for name, argv in commands(P("good.gguf"), out):
            r = run(*argv, *strict)
            what = f"control {name} {' '.join(strict)}"
            check(r.returncode == 0, f"{what}: rc {r.returncode}: {tail(r)}")
            check("does not use" not in r.stderr and "non-finite" not in r.stderr,
                  f"{what}: spurious warning: {tail(r)}")
        r = run("perplexity", "-m", P("good.gguf"), "-f", P("short.txt"), "--ctx", "32", "-t", "1",
                "--max-chunks", "4", *strict)
        check("nan" not in r.stdout.lower(), f"control perplexity: {r.stdout}")
    # a checkpoint's AdamW moments are not unused tensors
    out = outdir()
    r = run("train", "--init", P("good.gguf"), "--train", P("train.bin"), "-o", os.path.join(out, "m.gguf"),
            *TRAIN, "--strict")
    ck = os.path.join(out, "m.gguf.ckpt.gguf")
    check(r.returncode == 0 and os.path.exists(ck), f"checkpoint: {tail(r)}")
    r = run("generate", "-m", ck, "-p", "Once", "-n", "2", "-t", "1", "--strict")
    check(r.returncode == 0 and "does not use" not in r.stderr, f"generate --strict on a checkpoint: {tail(r)}")

    # ---- 1. block_count lowered: unused layers; an unknown tensor -----------------------------------
    broken = {}
    for k in range(1, L):
        g = gguf_tiny.read(P("good.gguf"))
        for kv in g["kvs"]:
            if kv[0] == "llama.block_count":
                kv[2] = struct.pack("<I", k)
        unused = [n for n in names if n.startswith("blk.") and int(n.split(".")[1]) >= k]
        broken[f"blocks{k}.gguf"] = (g, unused)
    g = gguf_tiny.read(P("good.gguf"))
    g["tensors"].insert(3, dict(name="blk.0.mystery.weight", ne=[64], type=0,
                                data=struct.pack("<64f", *([1.0] * 64))))
    broken["extra.gguf"] = (g, ["blk.0.mystery.weight"])
    for fname, (g, _) in broken.items():
        gguf_tiny.write(P(fname), g)
    check(gguf_tiny.value(gguf_tiny.read(P("blocks1.gguf")), "llama.block_count") == 1, "patched block_count")

    for fname, (g, unused) in broken.items():
        count = f"{len(unused)} tensor"
        for name, argv in commands(P(fname), outdir()):
            what = f"{fname} {name}"
            r = run(*argv)
            check(r.returncode == 0, f"{what} (no --strict): rc {r.returncode}: {tail(r)}")
            check("warning" in r.stderr and unused[0] in r.stderr and count in r.stderr and fname in r.stderr,
                  f"{what}: no warning naming {unused[0]} and '{count}': {tail(r)}")
            if len(unused) > 4:
                check(f"and {len(unused) - 4} more" in r.stderr, f"{what}: no count of the rest: {tail(r)}")
            out = outdir()
            argv = [a if not a.startswith(tmp + "/out") else os.path.join(out, "m.gguf") for a in argv]
            expect_failure(f"{what} --strict", argv + ["--strict"], 1, [unused[0], count, fname], out)

    # ---- 2. non-finite weights ------------------------------------------------------------------------
    poisoned = ["token_embd.weight", "blk.0.attn_norm.weight", "blk.0.attn_q.weight",
                "blk.1.attn_k.weight", f"blk.{L - 1}.ffn_down.weight", f"blk.{L - 2}.ffn_gate.weight",
                "output_norm.weight"]
    if "output.weight" in names:
        poisoned.append("output.weight")
    for i, tname in enumerate(poisoned):
        g = gguf_tiny.read(P("good.gguf"))
        t = next(t for t in g["tensors"] if t["name"] == tname)
        check(t["type"] == 0, f"{tname} is f32")
        n = math.prod(t["ne"])
        bad = float("inf") if tname == "output_norm.weight" else float("nan")
        t["data"] = struct.pack(f"<{n}f", *([bad] * n)) + t["data"][4 * n:]
        fname = f"nan{i}.gguf"
        gguf_tiny.write(P(fname), g)
        out = outdir()
        expect_failure(f"{tname} perplexity", ["perplexity", "-m", P(fname), "-f", P("short.txt"), "--ctx",
                                               "32", "-t", "1", "--max-chunks", "4"], 1, ["non-finite logits"], out)
        r = expect_failure(f"{tname} generate", ["generate", "-m", P(fname), "-p", "Once upon a time", "-n", "4",
                                                 "-t", "1"], 1, ["non-finite logits at token"], out)
        expect_failure(f"{tname} train", ["train", "--init", P(fname), "--train", P("train.bin"), "-o",
                                          os.path.join(out, "m.gguf"), *TRAIN], 1, [tname, "non-finite"], out)

    # ---- 3. no tokenizer -------------------------------------------------------------------------------
    for fname, drop in (("notok.gguf", lambda k: k.startswith("tokenizer.")),
                        ("nomodel.gguf", lambda k: k == "tokenizer.ggml.model")):
        for src, dst in (("good.gguf", fname), ("tok.gguf", "vocab-" + fname)):
            g = gguf_tiny.read(P(src))
            g["kvs"] = [kv for kv in g["kvs"] if not drop(kv[0])]
            gguf_tiny.write(P(dst), g)
        out = outdir()
        expect_failure(f"init-model --vocab-from {fname}",
                       ["init-model", "--vocab-from", P(fname), "-o", os.path.join(out, "m.gguf"), *SHAPE],
                       1, [fname, "has no tokenizer"], out)
        expect_failure(f"init-model --vocab-from vocab-{fname}",
                       ["init-model", "--vocab-from", P("vocab-" + fname), "-o", os.path.join(out, "m.gguf"),
                        *SHAPE], 1, ["vocab-" + fname, "has no tokenizer"], out)
        expect_failure(f"train --tokenizer vocab-{fname}",
                       ["train", "--tokenizer", P("vocab-" + fname), "--train", P("train.bin"), "-o",
                        os.path.join(out, "m.gguf"), *SHAPE, *TRAIN], 1, ["vocab-" + fname, "has no tokenizer"], out)
        expect_failure(f"train --init {fname}",
                       ["train", "--init", P(fname), "--train", P("train.bin"), "-o", os.path.join(out, "m.gguf"),
                        *TRAIN], 1, [fname, "has no tokenizer"], out)

finish("test_broken_models")
