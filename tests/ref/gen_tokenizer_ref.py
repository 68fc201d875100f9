"""gen_tokenizer_ref.py — reference token ids from SentencePiece for tests/test_tokenizer.py.

Run as `/usr/bin/python3 gen_tokenizer_ref.py REF_DIR` (tests/ref/generate.sh does). Writes into
REF_DIR/tokenizer/:

  <vocab>-vocab.gguf (also REF_DIR/llama2-vocab.gguf, REF_DIR/gut8k-vocab.gguf): vocabulary-only GGUF
      files built with ggufpy.add_spm_vocab (tokenizer keys exactly as SentencePiece reports them).
  <vocab>/<book>.whole.txt.gz: the ids of each whole book (all 58) as one string, no BOS.
  <vocab>/<book>.lines.txt.gz: the ids of each line of each validation book, one output line per line.
  tricky.hex: awkward inputs, one per line as hex bytes (empty, spaces, newlines, tabs, digits, emoji,
      CJK, combining marks, control characters, malformed UTF-8, long words...).
  <vocab>/tricky.txt: their ids.
  variants: the Llama 2 model with some pieces turned UNUSED or USER_DEFINED, with add_dummy_prefix
      off, and the 8k model without byte fallback (byte pieces become control pieces): GGUF files
      <variant>-vocab.gguf and ids <variant>/tricky.txt and <variant>/<book>.lines.txt.gz for one book.
  manifest.json: what was generated (cases, books, ids), read by the test.

The text format is the one tests/tool_tokenize prints: one line per encoded item, ids separated by
single spaces. Encoding whole books is slow in SentencePiece (about 0.4 MB/s), so books are encoded
in parallel and results are cached under REF_DIR/tokenizer keyed by the hashes of this script, the
model, the book and the SentencePiece version.

Everything here comes from SentencePiece (Debian's python3-sentencepiece 0.1.97), never from msrnn.
"""
import gzip
import hashlib
import json
import multiprocessing as mp
import os
import random
import struct
import sys
import time

import sentencepiece as spm

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ggufpy  # noqa: E402

SHARED = os.environ.get("MSRNN_SHARED") or os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared"))
BOOKS = os.path.join(SHARED, "data", "gutenberg")
MODELS = {
    "llama2": os.path.join(SHARED, "data", "tokenizers", "llama2", "tokenizer.model"),
    "gut8k": os.path.join(SHARED, "data", "tokenizers", "gutenberg8k", "gut8k.model"),
}
VARIANT_BOOK = "pg23.txt"  # the book whose lines the variant models encode (short, validation)

# ---- a minimal protobuf reader/writer for ModelProto (sentencepiece_model.proto) ----------------


def _varint(b, i):
    r = s = 0
    while True:
        c = b[i]
        i += 1
        r |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return r, i


def _put_varint(v):
    out = bytearray()
    while True:
        c = v & 0x7F
        v >>= 7
        if v:
            out.append(c | 0x80)
        else:
            out.append(c)
            return bytes(out)


def pb_parse(b):
    """[(field, wiretype, value)]: value is int for varints, bytes otherwise."""
    i, out = 0, []
    while i < len(b):
        key, i = _varint(b, i)
        f, w = key >> 3, key & 7
        if w == 0:
            v, i = _varint(b, i)
        elif w == 1:
            v, i = b[i:i + 8], i + 8
        elif w == 5:
            v, i = b[i:i + 4], i + 4
        elif w == 2:
            n, i = _varint(b, i)
            v, i = b[i:i + n], i + n
        else:
            raise ValueError(f"protobuf wire type {w}")
        out.append((f, w, v))
    return out


def pb_build(fields):
    out = bytearray()
    for f, w, v in fields:
        out += _put_varint(f << 3 | w)
        if w == 0:
            out += _put_varint(v)
        elif w == 2:
            out += _put_varint(len(v)) + v
        else:
            out += v
    return bytes(out)


def pb_set(fields, field, wire, value):
    """Replace (or append) a scalar field."""
    fields = [x for x in fields if x[0] != field]
    return fields + [(field, wire, value)]


def model_types(model_bytes):
    """The SentencePiece piece types (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte)."""
    types = []
    for f, _, v in pb_parse(model_bytes):
        if f == 1:
            t = 1
            for ff, _, vv in pb_parse(v):
                if ff == 3:
                    t = vv
            types.append(t)
    return types


def modify_model(model_bytes, piece_types=None, normalizer=None, trainer=None):
    """A copy of a ModelProto with piece types (index → type), normalizer/trainer fields changed."""
    out, idx = [], 0
    for f, w, v in pb_parse(model_bytes):
        if f == 1:
            if piece_types and idx in piece_types:
                v = pb_build(pb_set(pb_parse(v), 3, 0, piece_types[idx]))
            idx += 1
        elif f == 3 and normalizer:
            sub = pb_parse(v)
            for k, val in normalizer.items():
                sub = pb_set(sub, k, 0, val)
            v = pb_build(sub)
        elif f == 2 and trainer:
            sub = pb_parse(v)
            for k, val in trainer.items():
                sub = pb_set(sub, k, 0, val)
            v = pb_build(sub)
        out.append((f, w, v))
    return pb_build(out)


# ---- the variants ---------------------------------------------------------------------------------


def variants():
    """name → (base vocab, model bytes, add_space_prefix)."""
    llama = open(MODELS["llama2"], "rb").read()
    gut = open(MODELS["gut8k"], "rb").read()
    sp = spm.SentencePieceProcessor(model_proto=llama)
    normal = [i for i in range(sp.get_piece_size())
              if not (sp.is_byte(i) or sp.is_control(i) or sp.is_unknown(i))]
    rng = random.Random(1234)
    # UNUSED: frequent short pieces (so they form and must be split back) and a random sample.
    common = ["▁the", "ing", "▁a", "er", "▁and", "ed", "▁of", "on", "▁to", "es", "in", "▁th", "he",
              "▁w", "or", "an", "at", "en", "ou", "▁s", "is", "▁b", "▁he", "it", "▁in", "re"]
    unused = {sp.piece_to_id(p): 5 for p in common}
    unused.update({i: 5 for i in rng.sample(normal, 1500)})
    # USER_DEFINED: matched greedily in the text and never merged.
    userdef_pieces = ["▁the", "ing", "he", "▁and▁", "▁of", "th", "ab", "▁", "e", "<", "Th", "ll",
                      "ation", "▁was", "▁said", ",", "▁I", "ou"]
    userdef = {}
    for p in userdef_pieces:
        i = sp.piece_to_id(p)
        if i != sp.unk_id():
            userdef[i] = 4
    userdef.update({i: 4 for i in rng.sample(normal, 300)})
    gsp = spm.SentencePieceProcessor(model_proto=gut)
    gbytes = {i: 3 for i in range(gsp.get_piece_size()) if gsp.is_byte(i)}
    return {
        "llama2-unused": ("llama2", modify_model(llama, piece_types=unused), True),
        "llama2-userdef": ("llama2", modify_model(llama, piece_types=userdef), True),
        "llama2-noprefix": ("llama2", modify_model(llama, normalizer={3: 0}), False),
        "gut8k-nobytes": ("gut8k", modify_model(gut, piece_types=gbytes, trainer={35: 0}), True),
    }


def write_vocab_gguf(model_bytes, path, add_space_prefix=True):
    """A vocabulary-only GGUF; token types are taken from the model itself (add_spm_vocab has no
    user-defined type)."""
    tmp = path + ".model"
    with open(tmp, "wb") as f:
        f.write(model_bytes)
    w = ggufpy.GGUFWriter()
    w.add("general.architecture", ggufpy.STR, "llama")
    ggufpy.add_spm_vocab(w, tmp)
    os.remove(tmp)
    types = model_types(model_bytes)
    w.kv = [(k, t, (ggufpy.I32, types) if k == "tokenizer.ggml.token_type" else v) for k, t, v in w.kv]
    w.add("tokenizer.ggml.add_space_prefix", ggufpy.BOOL, bool(add_space_prefix))
    w.write(path)


# ---- tricky strings -------------------------------------------------------------------------------


def tricky_cases():
    s = [
        "", " ", "  ", "   ", " a", "a ", "  a  b  ", "a  b", "\n", "\n\n", "a\nb", " \n ", "\t", "a\tb",
        "\t\tx", "\r\n", "\r", "a\rb", "\x0b\x0c", "Hello world", "Hello, World! How's it going?",
        "hello", "HELLO", "The quick brown fox jumps over the lazy dog.",
        "12345678901234567890", "3.14159", "1,000,000", "2023-11-27", "0", "00", "a1b2c3", "x²+y³",
        "😀", "😀👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇩🇪", "你好世界", "日本語のテキスト", "한국어 텍스트", "Привет, мир",
        "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก", "Ελληνικά", "e\u0301", "n\u0303o",
        "Z\u0351\u0352\u0353a\u0354\u0355l\u0356g\u0357o", "\u00e9\u00e8\u00ea\u00eb", "ﬁ ﬂ", "Ａ１",
        "\x00", "a\x00b", "\x01\x02\x03\x7f", "\x1b[31mred\x1b[0m", "\ufeffBOM", "a\u00a0b",
        "a\u2003b", "a\u200bb", "\u200e\u200f", "\U0010ffff", "\ue000", "\ufffd", "\ufffd\ufffd",
        "▁", "▁▁", " ▁ ", "a▁b", "<s>", "</s>", "<unk>", "<0x41>", "<pad>", "‘quotes’ “double” — … •",
        "_italics_ [Illustration]", "Mr. & Mrs. Smith's \"dog\" (Fido)", "http://example.com/a?b=c&d",
        "a" * 5000, "Supercalifragilisticexpialidocious" * 20, "9" * 1000, " " * 1000, "\n" * 300,
        "ab " * 700, "é" * 500, "😀" * 300, "the " * 1000, "▁" * 200,
    ]
    cases = [x.encode("utf-8") for x in s]
    cases += [
        b"\xff", b"a\xffb", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xed\xbf\xbf",
        b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xfe\xfe\xff\xff",
        b"\xe2\x82", b"abc\xe2", b"abc\xe2\x96", b"\xf0\x9f\x98", b"\x80", b"\x80\x80\xbf",
        b"\xc3", b"\xc3(", b"a\xe2\x96\x81b\xe2\x96", b" \xff ", b"\xff" * 100, b"caf\xe9",
    ]
    rng = random.Random(42)
    for n in (1, 2, 3, 5, 8, 16, 64, 256):  # random bytes
        for _ in range(4):
            cases.append(bytes(rng.randrange(256) for _ in range(n)))
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x3040, 0x30FF),
              (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF), (0x0300, 0x036F), (0x2000, 0x206F)]
    for _ in range(60):  # random code points from mixed scripts, spaces and newlines
        out = []
        for _ in range(rng.randrange(1, 80)):
            r = rng.random()
            if r < 0.15:
                out.append(" ")
            elif r < 0.18:
                out.append("\n")
            else:
                lo, hi = rng.choice(ranges)
                out.append(chr(rng.randint(lo, hi)))
        cases.append("".join(out).encode("utf-8"))
    return cases


# ---- generation -----------------------------------------------------------------------------------

_SP = {}


def _init_worker(models):
    for name, proto in models.items():
        _SP[name] = spm.SentencePieceProcessor(model_proto=proto)


def ids_line(ids):
    return " ".join(map(str, ids)) + "\n"


def _job(args):
    vocab, book, mode, out = args
    with open(os.path.join(BOOKS, book), encoding="utf-8") as f:
        text = f.read()
    sp = _SP[vocab]
    if mode == "whole":
        body = ids_line(sp.encode(text))
        n_items = 1
    else:
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        body = "".join(ids_line(x) for x in sp.encode(lines))
        n_items = len(lines)
    tmp = out + ".tmp"
    with gzip.open(tmp, "wb", compresslevel=3) as f:
        f.write(body.encode())
    os.replace(tmp, out)
    return out, n_items


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_tokenizer_ref.py REF_DIR")
    t0 = time.time()
    ref = os.path.abspath(sys.argv[1])
    root = os.path.join(ref, "tokenizer")
    os.makedirs(root, exist_ok=True)
    script_hash = sha256(open(__file__, "rb").read() + spm.__version__.encode())

    manifest = [line.rstrip("\n").split("\t") for line in open(os.path.join(BOOKS, "MANIFEST.tsv"))]
    header, rows = manifest[0], manifest[1:]
    col = {c: i for i, c in enumerate(header)}
    books = [r[col["file"]] for r in rows]
    validation = [r[col["file"]] for r in rows if r[col["split"]] == "validation"]
    book_hash = {r[col["file"]]: r[col["sha256"]] for r in rows}
    book_size = {b: os.path.getsize(os.path.join(BOOKS, b)) for b in books}

    models = {name: open(path, "rb").read() for name, path in MODELS.items()}
    var = variants()
    all_models = dict(models)
    all_models.update({name: proto for name, (_, proto, _) in var.items()})

    # vocabulary GGUF files
    for name, proto in models.items():
        path = os.path.join(root, f"{name}-vocab.gguf")
        write_vocab_gguf(proto, path)
        with open(path, "rb") as src, open(os.path.join(ref, f"{name}-vocab.gguf"), "wb") as dst:
            dst.write(src.read())
    for name, (_, proto, prefix) in var.items():
        write_vocab_gguf(proto, os.path.join(root, f"{name}-vocab.gguf"), prefix)

    # tricky strings (all models, including the variants)
    cases = tricky_cases()
    with open(os.path.join(root, "tricky.hex"), "w") as f:
        f.writelines(c.hex() + "\n" for c in cases)
    for name, proto in all_models.items():
        sp = spm.SentencePieceProcessor(model_proto=proto)
        os.makedirs(os.path.join(root, name), exist_ok=True)
        with open(os.path.join(root, name, "tricky.txt"), "w") as f:
            f.writelines(ids_line(sp.encode(c)) for c in cases)

    # books, in parallel, cached by content
    cache_path = os.path.join(root, "cache.json")
    try:
        cache = json.load(open(cache_path))
    except (OSError, ValueError):
        cache = {}
    jobs, keys = [], {}
    plan = [(v, b, "whole") for v in models for b in books]
    plan += [(v, b, "lines") for v in models for b in validation]
    plan += [(v, VARIANT_BOOK, "lines") for v in var]
    for vocab, book, mode in plan:
        out = os.path.join(root, vocab, f"{book[:-4]}.{mode}.txt.gz")
        key = sha256((script_hash + sha256(all_models[vocab]) + book_hash[book] + mode).encode())
        keys[out] = key
        if cache.get(out) == key and os.path.exists(out):
            continue
        jobs.append((vocab, book, mode, out))
    jobs.sort(key=lambda j: -book_size[j[1]] * (3 if j[2] == "whole" else 1))
    n_items = {}
    if jobs:
        with mp.Pool(os.cpu_count() or 1, initializer=_init_worker, initargs=(all_models,)) as pool:
            for out, n in pool.imap_unordered(_job, jobs):
                n_items[out] = n
                cache[out] = keys[out]
                with open(cache_path + ".tmp", "w") as f:
                    json.dump(cache, f)
                os.replace(cache_path + ".tmp", cache_path)

    info = {
        "sentencepiece": spm.__version__,
        "vocabs": {name: f"{name}-vocab.gguf" for name in all_models},
        "books": books,
        "validation": validation,
        "variant_book": VARIANT_BOOK,
        "variants": sorted(var),
        "n_tricky": len(cases),
    }
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(f"gen_tokenizer_ref: {len(all_models)} vocabularies, {len(cases)} tricky strings, "
          f"{len(jobs)} of {len(plan)} book encodings computed ({len(plan) - len(jobs)} cached), "
          f"{time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
