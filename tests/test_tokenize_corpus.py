"""test_tokenize_corpus — `msrnn tokenize-corpus` writes the token shard SentencePiece would.

1. The validation split of ../shared/data/gutenberg/MANIFEST.tsv, tokenized with
   ../shared/models/gutenberg-ref.gguf, equals id for id BOS (1) + sentencepiece 0.1.97's encoding
   of each whole book with the same vocabulary (gutenberg8k/gut8k.model, whose own normalizer
   settings — add_dummy_prefix, no extra-whitespace removal — apply), books in manifest order; the
   header holds magic, version 2, 2 bytes per id, vocabulary 8192, BOS 1, the exact numbers of
   tokens, documents (6) and text bytes, and the vocabulary hash train/shard.h documents (computed
   here from the model's keys by tests/gguf_tiny.py); the file is exactly 64 + 2 * tokens bytes.
2. A small manifest of its own (columns in another order, a file in a subfolder, CRLF and blank
   lines, a book with malformed UTF-8, an empty file) plus files on the command line: the documents
   come in manifest order, then argument order; one thread and two give the same bytes.
3. Bad usage exits 2 and runtime failures exit 1, each with a message naming the flag or file, and
   none leaves an output (or a temporary) file behind; a failed run keeps an existing output intact.
"""
import os
import struct
import subprocess
import sys
import tempfile
from array import array

import sentencepiece as spm

import gguf_tiny
from checks import check, finish

BIN = os.environ["MSRNN_BIN"]
SHARED = os.environ["MSRNN_SHARED"]
MODEL = os.path.join(SHARED, "models", "gutenberg-ref.gguf")
SP_MODEL = os.path.join(SHARED, "data", "tokenizers", "gutenberg8k", "gut8k.model")
BOOKS = os.path.join(SHARED, "data", "gutenberg")
MANIFEST = os.path.join(BOOKS, "MANIFEST.tsv")


def run(*args):
    return subprocess.run([BIN, "tokenize-corpus", *args], capture_output=True, text=True, timeout=600)


def read_shard(path):
    data = open(path, "rb").read()
    magic = data[:8]
    version, width, vocab, bos, n_tokens, n_docs, n_bytes = struct.unpack_from("<4I3Q", data, 8)
    ids = array("H" if width == 2 else "I")
    ids.frombytes(data[64:])
    if sys.byteorder != "little":
        ids.byteswap()
    return dict(magic=magic, version=version, width=width, vocab=vocab, bos=bos, n_tokens=n_tokens,
                n_docs=n_docs, n_bytes=n_bytes, size=len(data), pad=data[56:64],
                hash=struct.unpack_from("<Q", data, 48)[0], ids=ids)


def first_mismatch(got, want):
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return i
    return min(len(got), len(want))


sp = spm.SentencePieceProcessor(model_file=SP_MODEL)


def expected_ids(paths):
    """BOS + sentencepiece's ids for each whole file (bytes in, so malformed UTF-8 is its business)."""
    out = []
    for p in paths:
        out.append(sp.bos_id())
        out.extend(sp.encode(open(p, "rb").read()))
    return out


def leftovers(d, keep=()):
    return sorted(f for f in os.listdir(d) if f not in keep)


with tempfile.TemporaryDirectory() as d:
    # ---- 1. the validation split, against sentencepiece ------------------------------------------
    rows = [line.rstrip("\n").split("\t") for line in open(MANIFEST, encoding="utf-8")]
    col = {c: i for i, c in enumerate(rows[0])}
    books = [os.path.join(BOOKS, r[col["file"]]) for r in rows[1:] if r[col["split"]] == "validation"]
    out = os.path.join(d, "val.bin")
    r = run("-m", MODEL, "-o", out, "--manifest", MANIFEST, "--split", "validation", "-t", "2")
    check(r.returncode == 0, f"validation split: rc {r.returncode}, {r.stderr!r}")
    check("6 files" in r.stderr and "tokens" in r.stderr, f"summary line: {r.stderr!r}")
    s = read_shard(out)
    want = expected_ids(books)
    n_bytes = sum(os.path.getsize(b) for b in books)
    check(s["magic"] == b"MSRNNTOK" and s["version"] == 2 and s["width"] == 2, f"header {s['magic']!r} "
          f"v{s['version']} width {s['width']}")
    check(s["vocab"] == sp.get_piece_size() == 8192 and s["bos"] == sp.bos_id() == 1,
          f"vocab {s['vocab']}, bos {s['bos']}")
    check(s["pad"] == bytes(8), "padding is zero")
    want_hash = gguf_tiny.vocab_hash(gguf_tiny.read(MODEL))
    check(s["hash"] == want_hash, f"vocabulary hash {s['hash']:016x}, expected {want_hash:016x}")
    check(s["n_docs"] == len(books) == 6, f"n_docs {s['n_docs']}, expected {len(books)}")
    check(s["n_bytes"] == n_bytes, f"n_bytes {s['n_bytes']}, expected {n_bytes}")
    check(s["n_tokens"] == len(want) == len(s["ids"]), f"n_tokens {s['n_tokens']}, {len(s['ids'])} ids "
          f"in the file, sentencepiece gives {len(want)}")
    check(s["size"] == 64 + 2 * len(want), f"file size {s['size']}")
    got = s["ids"].tolist()
    if got != want:
        i = first_mismatch(got, want)
        check(False, f"validation ids differ from sentencepiece's at index {i}: got {got[i:i + 8]}, "
              f"expected {want[i:i + 8]}")
    else:
        check(True, "")
    check(got.count(1) == 6, f"BOS appears {got.count(1)} times, expected once per book")
    print(f"validation split: {len(books)} books, {n_bytes} bytes, {len(got)} ids "
          f"({'equal to' if got == want else 'DIFFERENT from'} sentencepiece's {len(want)})")

    # ---- 2. a manifest of our own, plus files on the command line ---------------------------------
    os.makedirs(os.path.join(d, "corpus", "sub"))
    texts = {
        "sub/one.txt": b"Hello world.\n  Two  spaces, tabs\there.\n",
        "two.txt": b"not in the split\n",
        "three.txt": b"caf\xe9 \xff\xfe broken \xe2\x96 UTF-8 \xf0\x9f\x98\x80 ok\n",
        "empty.txt": b"",
    }
    for name, body in texts.items():
        with open(os.path.join(d, "corpus", name), "wb") as f:
            f.write(body)
    extra = os.path.join(d, "extra.txt")
    with open(extra, "wb") as f:
        f.write(open(books[0], "rb").read()[:20000])
    mine = os.path.join(d, "corpus", "list.tsv")
    with open(mine, "wb") as f:
        f.write(b"split\tnotes\tfile\n"
                b"a\tfirst\tsub/one.txt\r\n"
                b"b\tskipped\ttwo.txt\n"
                b"\n"
                b"a\tmalformed\tthree.txt\n"
                b"a\tnothing\tempty.txt\n")
    order = [os.path.join(d, "corpus", n) for n in ("sub/one.txt", "three.txt", "empty.txt")] + [extra, books[1]]
    outs = []
    for t in ("1", "2"):
        o = os.path.join(d, f"mine{t}.bin")
        r = run("-m", MODEL, "-o", o, "--manifest", mine, "--split", "a", extra, books[1], "-t", t)
        check(r.returncode == 0, f"own manifest, -t {t}: rc {r.returncode}, {r.stderr!r}")
        outs.append(o)
    s = read_shard(outs[0])
    want = expected_ids(order)
    got = s["ids"].tolist()
    check(got == want, f"own manifest: ids differ at {first_mismatch(got, want)} ({len(got)} vs {len(want)})")
    check(s["n_docs"] == 5 and s["n_bytes"] == sum(os.path.getsize(p) for p in order),
          f"own manifest header: docs {s['n_docs']}, bytes {s['n_bytes']}")
    check(open(outs[0], "rb").read() == open(outs[1], "rb").read(), "-t 1 and -t 2 differ")

    # ---- 3. errors ---------------------------------------------------------------------------------
    e = os.path.join(d, "errors")
    os.makedirs(e)
    o = os.path.join(e, "out.bin")
    no_split = os.path.join(d, "nosplit.tsv")
    with open(no_split, "w") as f:
        f.write("file\ttitle\npg55.txt\tx\n")
    missing_row = os.path.join(d, "corpus", "missing.tsv")
    with open(missing_row, "w") as f:
        f.write("file\tsplit\nsub/one.txt\tx\nnot-there.txt\tx\n")
    not_gguf = os.path.join(d, "corpus", "two.txt")
    cases = [
        (["-o", o, books[0]], 2, ["-m"]),
        (["-m", MODEL, books[0]], 2, ["-o"]),
        (["-m", MODEL, "-o", o, "--manifest", MANIFEST, "--split", "nosuch"], 2,
         ["--split", "nosuch", "'validation'", "MANIFEST.tsv"]),
        (["-m", MODEL, "-o", o, "--split", "train"], 2, ["--manifest"]),
        (["-m", MODEL, "-o", o, "--manifest", MANIFEST], 2, ["--split"]),
        (["-m", MODEL, "-o", o], 2, ["no input"]),
        (["-m", MODEL, "-o", o, "-t", "zero", books[0]], 2, ["-t"]),
        (["-m", MODEL, "-o", o, "--bogus", books[0]], 2, ["--bogus"]),
        (["-m", MODEL, "-o", o, books[0], os.path.join(d, "absent.txt")], 1, ["absent.txt", "cannot open"]),
        (["-m", MODEL, "-o", o, "--manifest", missing_row, "--split", "x"], 1, ["not-there.txt"]),
        (["-m", MODEL, "-o", o, "--manifest", no_split, "--split", "train"], 1, ["nosplit.tsv", "'split'"]),
        (["-m", MODEL, "-o", o, "--manifest", os.path.join(d, "nope.tsv"), "--split", "a"], 1, ["nope.tsv"]),
        (["-m", not_gguf, "-o", o, books[0]], 1, ["two.txt"]),
        (["-m", MODEL, "-o", o, os.path.join(d, "corpus", "empty.txt")], 1, ["at least 2"]),
        (["-m", MODEL, "-o", os.path.join(d, "no-such-dir", "out.bin"), books[0]], 1, ["no-such-dir"]),
    ]
    for args, rc, needles in cases:
        r = run(*args)
        ok = r.returncode == rc and all(n in r.stderr for n in needles)
        check(ok, f"{args}: rc {r.returncode} (expected {rc}), stderr {r.stderr!r} should name {needles}")
        check(leftovers(e) == [], f"{args}: left {leftovers(e)} behind")
    # a failed run leaves an existing output as it was
    with open(o, "wb") as f:
        f.write(b"previous contents")
    r = run("-m", MODEL, "-o", o, books[0], os.path.join(d, "absent.txt"))
    check(r.returncode == 1 and open(o, "rb").read() == b"previous contents" and leftovers(e) == ["out.bin"],
          f"failed run over an existing output: rc {r.returncode}, left {leftovers(e)}")

finish("test_tokenize_corpus")
