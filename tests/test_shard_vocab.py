"""test_shard_vocab — token shards carry their vocabulary's identity, and `train` refuses ids of
another vocabulary before the first step (issue 9, class 4).

Three vocabularies come from `msrnn tokenizer-train` on small texts: A (400 pieces), B (500 pieces,
the same text: another size) and C (400 pieces of another book: the same size, other pieces). Each
tokenizes the same text into a shard (version 2: the header holds spm_vocab_hash, which must equal
the FNV-1a 64 that train/shard.h documents, computed here from the GGUF keys).

A model on A is trained three ways — --init (a model from init-model), --tokenizer (a new model)
and --resume (a checkpoint) — with B's and C's shards as --train and as --val. Every such run must
exit 1 with a message naming the shard and both values (sizes, or both hashes), leave the inputs
byte-identical (sha256) and leave nothing in the output folder (no model, checkpoint, log, plot or
.tmp-*). Controls: A's shards train in all three ways; a version 1 shard (no hash) is still read,
checked by size only.
"""
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile

import gguf_tiny
from checks import check, finish

BIN = os.environ["MSRNN_BIN"]
SHARED = os.environ["MSRNN_SHARED"]
BOOKS = os.path.join(SHARED, "data", "gutenberg")
SHAPE = ["--dim", "64", "--layers", "2", "--heads", "2", "--ffn", "128"]
RUN = ["-c", "64", "--batch", "2", "--steps", "2", "-t", "1", "--eval-batches", "1"]


def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=300)


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def header(path):
    d = open(path, "rb").read(64)
    version, width, vocab, bos = struct.unpack_from("<4I", d, 8)
    return dict(version=version, vocab=vocab, hash=struct.unpack_from("<Q", d, 48)[0], pad=d[56:64])


with tempfile.TemporaryDirectory() as tmp:
    ins = os.path.join(tmp, "in")
    os.mkdir(ins)
    P = lambda name: os.path.join(ins, name)  # noqa: E731
    text = open(os.path.join(BOOKS, "pg55.txt"), "rb").read()[:60000]
    other = open(os.path.join(BOOKS, "pg1232.txt"), "rb").read()[:60000]
    open(P("a.txt"), "wb").write(text)
    open(P("c.txt"), "wb").write(other)

    # ---- vocabularies and their shards ----------------------------------------------------------
    vocabs = {"A": ("400", "a.txt"), "B": ("500", "a.txt"), "C": ("400", "c.txt")}
    for name, (n, src) in vocabs.items():
        r = run("tokenizer-train", "--vocab", n, "-o", P(f"tok{name}.gguf"), P(src), "-t", "1")
        check(r.returncode == 0, f"tokenizer-train {name}: {r.stderr}")
        for part, lo, hi in (("train", 0, 45000), ("val", 45000, 60000)):
            open(P(f"{part}.txt"), "wb").write(text[lo:hi])
            r = run("tokenize-corpus", "-m", P(f"tok{name}.gguf"), "-o", P(f"{part}{name}.bin"),
                    P(f"{part}.txt"), "-t", "1")
            check(r.returncode == 0, f"tokenize-corpus {name} {part}: {r.stderr}")
    hashes = {}
    for name, (n, _) in vocabs.items():
        h = header(P(f"train{name}.bin"))
        want = gguf_tiny.vocab_hash(gguf_tiny.read(P(f"tok{name}.gguf")))
        check(h["version"] == 2 and h["vocab"] == int(n) and h["pad"] == bytes(8),
              f"shard {name}: version {h['version']}, vocab {h['vocab']}, padding {h['pad']!r}")
        check(h["hash"] == want, f"shard {name}: hash {h['hash']:016x}, shard.h's recipe gives {want:016x}")
        check(header(P(f"val{name}.bin"))["hash"] == want, f"val shard {name}: hash")
        hashes[name] = h["hash"]
    check(len(set(hashes.values())) == 3, f"three vocabularies, three hashes: {hashes}")
    check(header(P("trainA.bin"))["vocab"] == header(P("trainC.bin"))["vocab"], "A and C: same size")

    # ---- the models on vocabulary A ------------------------------------------------------------
    r = run("init-model", "--vocab-from", P("tokA.gguf"), "-o", P("modelA.gguf"), *SHAPE, "--ctx", "64")
    check(r.returncode == 0, f"init-model: {r.stderr}")
    r = run("train", "--init", P("modelA.gguf"), "--train", P("trainA.bin"), "-o", P("runA.gguf"),
            "--ckpt", P("ckptA.gguf"), *RUN, "--stop-after", "1")
    check(r.returncode == 0 and os.path.exists(P("ckptA.gguf")), f"checkpoint for --resume: {r.stderr}")
    for f in os.listdir(ins):  # keep only the checkpoint of that run
        if f.startswith("runA.gguf"):
            os.unlink(P(f))
    # a version 1 copy of A's shards: no hash (bytes 48..63 zero)
    for part in ("train", "val"):
        b = bytearray(open(P(f"{part}A.bin"), "rb").read())
        b[8:12] = struct.pack("<I", 1)
        b[48:64] = bytes(16)
        open(P(f"{part}A1.bin"), "wb").write(bytes(b))

    inputs = sorted(os.listdir(ins))
    before = {f: sha(P(f)) for f in inputs}
    cases = 0

    def attempt(mode, train, val, out):
        """train in `mode` (init, tokenizer, resume) on shards train and val, output in out/."""
        args = ["train", "--train", P(train), "--val", P(val), "-o", os.path.join(out, "m.gguf"), *RUN]
        if mode == "init":
            args += ["--init", P("modelA.gguf")]
        elif mode == "tokenizer":
            args += ["--tokenizer", P("tokA.gguf"), *SHAPE]
        else:
            ck = os.path.join(out, "ck.gguf")
            shutil.copyfile(P("ckptA.gguf"), ck)
            args += ["--resume", "--ckpt", ck]
        return run(*args)

    # ---- every mismatch is refused --------------------------------------------------------------
    for mode in ("init", "tokenizer", "resume"):
        for other_vocab in ("B", "C"):
            for role in ("train", "val"):
                cases += 1
                train = f"train{other_vocab}.bin" if role == "train" else "trainA.bin"
                val = f"val{other_vocab}.bin" if role == "val" else "valA.bin"
                bad = train if role == "train" else val
                out = os.path.join(tmp, f"out{cases}")
                os.mkdir(out)
                ck_sha = sha(P("ckptA.gguf"))
                r = attempt(mode, train, val, out)
                what = f"{mode}, {role} shard of vocabulary {other_vocab}"
                check(r.returncode == 1, f"{what}: rc {r.returncode}, {r.stderr[-400:]}")
                check(bad in r.stderr, f"{what}: message does not name {bad}: {r.stderr[-400:]}")
                if other_vocab == "B":
                    check("500" in r.stderr and "400" in r.stderr,
                          f"{what}: message lacks both sizes: {r.stderr[-400:]}")
                else:
                    check(f"{hashes['C']:016x}" in r.stderr and f"{hashes['A']:016x}" in r.stderr,
                          f"{what}: message lacks both hashes: {r.stderr[-400:]}")
                check("step 1" not in r.stderr, f"{what}: a step ran: {r.stderr[-400:]}")
                left = sorted(os.listdir(out))
                if mode == "resume":
                    check(sha(os.path.join(out, "ck.gguf")) == ck_sha, f"{what}: checkpoint changed")
                    left.remove("ck.gguf")
                check(left == [], f"{what}: left behind {left}")
                check(sorted(os.listdir(ins)) == inputs, f"{what}: input folder now {os.listdir(ins)}")

    # ---- controls: the matching vocabulary trains, in every mode; version 1 shards still read ----
    for mode in ("init", "tokenizer", "resume"):
        for suffix in ("", "1"):
            cases += 1
            out = os.path.join(tmp, f"out{cases}")
            os.mkdir(out)
            r = attempt(mode, f"trainA{suffix}.bin", f"valA{suffix}.bin", out)
            what = f"control {mode}, A's shards{' (version 1)' if suffix else ''}"
            check(r.returncode == 0, f"{what}: rc {r.returncode}, {r.stderr[-400:]}")
            check(os.path.exists(os.path.join(out, "m.gguf")), f"{what}: no model written")
            check("val " in r.stderr, f"{what}: no validation loss: {r.stderr[-300:]}")
    # a version 1 shard is checked by size only: another size is still refused
    out = os.path.join(tmp, "out-v1")
    os.mkdir(out)
    r = run("train", "--init", P("modelA.gguf"), "--train", P("trainA1.bin"), "--val", P("valB.bin"),
            "-o", os.path.join(out, "m.gguf"), *RUN)
    check(r.returncode == 1 and "valB.bin" in r.stderr and os.listdir(out) == [],
          f"version 1 train shard with a val shard of another size: rc {r.returncode}, {r.stderr[-300:]}")

    after = {f: sha(P(f)) for f in inputs}
    check(before == after, f"inputs changed: {[f for f in inputs if before[f] != after[f]]}")

finish("test_shard_vocab")
