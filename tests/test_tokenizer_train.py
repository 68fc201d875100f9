"""test_tokenizer_train — `msrnn tokenizer-train` learns the BPE vocabulary its rules define, and that
vocabulary tokenizes as the learned merges say, in msrnn and in llama.cpp.

  1. layout of a vocabulary trained on three books: <unk>/<s>/</s>, the 256 byte pieces, the merges with
     scores 0, -1, -2, ..., then the alphabet (chosen by the coverage rule, recounted here); unique pieces,
     "▁" only first, no digit or control character in a longer piece, the GGUF keys llama.cpp reads;
  2. an independent, naive Python BPE written from the rules in src/text/bpe_train.c's header (count,
     pick the best pair, replace, repeat) learns the same merges, pieces, alphabet and scores on a small
     text with digits, runs of spaces, rare characters, U+FFFD and "<s>", in three variants;
  3. msrnn's tokenizer with a trained vocabulary gives exactly the ids of applying the learned merges in
     order (done here in Python) on whole books and awkward strings, and decode(encode(x)) == x;
  4. determinism: 1 or 2 threads, files in another order: byte-identical files;
  5. llama.cpp (node-llama-cpp 3.21.1) tokenizes book excerpts and awkward strings to the same ids
     (through a model made with `msrnn init-model --vocab-from`); fails, never skips, without node;
  6. bad input: exit 2 for bad usage, 1 for missing/empty files and impossible sizes, a message naming
     the flag or file, and no output file left behind.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter

BIN = os.environ["MSRNN_BIN"]
SHARED = os.environ["MSRNN_SHARED"]
BUILD = os.environ["MSRNN_BUILD_DIR"]
SOURCE = os.environ.get("MSRNN_SOURCE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BOOKS = os.path.join(SHARED, "data", "gutenberg")
MANIFEST = os.path.join(BOOKS, "MANIFEST.tsv")
TOOL = os.path.join(BUILD, "tests", "tool_tokenize")
NODE_MODULES = os.path.join(SOURCE, "node_modules")
PKG = os.path.join(NODE_MODULES, "node-llama-cpp")
PKG_VERSION = "3.21.1"
NPM_HINT = (f"run in {SOURCE}: npm i -E --ignore-scripts --omit=optional "
            f"node-llama-cpp@{PKG_VERSION} @node-llama-cpp/linux-x64@{PKG_VERSION}")

SP = "\u2581"
RESERVED = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
TRAIN_BOOKS = ["pg55.txt", "pg23.txt", "pg1260.txt"]  # 1.46 MB: Oz, Douglass, Jane Eyre
OTHER_BOOK = "pg16.txt"  # Peter Pan, not trained on

failures = []
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        failures.append(what)
        print("FAIL:", what, flush=True)
    return cond


def fail_now(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def run(*args, timeout=600):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout)


def train(out, *args, merges=True):
    """Train; returns (merges list, stderr). Fails the test at once if the trainer fails."""
    extra = ["--merges", out + ".merges"] if merges else []
    r = run("tokenizer-train", "-o", out, *extra, *args)
    if r.returncode != 0:
        fail_now(f"tokenizer-train {' '.join(args)} exited {r.returncode}: {r.stderr}")
    if not merges:
        return None, r.stderr
    with open(out + ".merges", encoding="utf-8") as f:
        return [tuple(line.rstrip("\n").split(" ")) for line in f], r.stderr


# ---- a GGUF metadata reader (written from the GGUF v3 specification) -------------------------------------------

def read_gguf(path):
    d = open(path, "rb").read()
    if d[:4] != b"GGUF":
        fail_now(f"{path}: not a GGUF file")
    _, n_tensors, n_kv = struct.unpack_from("<IQQ", d, 4)
    o = 24
    scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
              12: "<d"}

    def value(t, o):
        if t == 8:
            n, = struct.unpack_from("<Q", d, o)
            return d[o + 8:o + 8 + n].decode("utf-8"), o + 8 + n
        if t == 9:
            et, n = struct.unpack_from("<IQ", d, o)
            o += 12
            if et in scalar:
                fmt = "<" + scalar[et][1] * n
                return list(struct.unpack_from(fmt, d, o)), o + struct.calcsize(fmt)
            out = []
            for _ in range(n):
                v, o = value(et, o)
                out.append(v)
            return out, o
        v, = struct.unpack_from(scalar[t], d, o)
        return v, o + struct.calcsize(scalar[t])

    kv, types = {}, {}
    for _ in range(n_kv):
        key, o = value(8, o)
        t, = struct.unpack_from("<I", d, o)
        kv[key], o = value(t, o + 4)
        types[key] = t
    return kv, types, n_tensors


# ---- the rules, naively (from the header comment of src/text/bpe_train.c) -----------------------------------------

def normalize(text):
    return SP + text.replace(" ", SP) if text else ""


def never_merges(c, split_digits):
    return ord(c) < 0x20 or ord(c) == 0x7F or (split_digits and "0" <= c <= "9")


def choose_alphabet(texts, coverage):
    count = Counter()
    for t in texts:
        count.update(normalize(t))
    total = sum(count.values())
    alphabet, taken = [], 0
    for c in sorted(count, key=lambda c: (-count[c], ord(c))):
        if c == "\0":
            continue
        if taken / total >= coverage:
            break
        taken += count[c]
        alphabet.append(c)
    if SP not in alphabet:
        alphabet.append(SP)
    return alphabet


def naive_bpe(texts, vocab_size, coverage=0.9995, split_digits=True, ws_pieces=False, max_chars=16):
    """Rules 1-5 with a full recount per merge. Returns (alphabet, merges, number of dropped pairs)."""
    alphabet = choose_alphabet(texts, coverage)
    mergeable = {c for c in alphabet if not never_merges(c, split_digits)}
    runs = Counter()  # maximal runs of mergeable characters (no word splitting here)
    for t in texts:
        run_ = []
        for c in normalize(t) + "\0":
            if c in mergeable:
                run_.append(c)
                continue
            if len(run_) > 1:
                runs[tuple(run_)] += 1
            run_ = []
    words, counts = [list(r) for r in runs], list(runs.values())

    def valid(piece):
        if len(piece) > max_chars:
            return False
        if ws_pieces and set(piece) == {SP}:
            return True
        return SP not in piece[1:]

    pieces, merges, dropped = set(RESERVED), [], set()
    while len(merges) < vocab_size - len(RESERVED) - len(alphabet):
        pair_count = Counter()
        for w, n in zip(words, counts):
            for a, b in zip(w, w[1:]):
                if (a, b) not in dropped and valid(a + b):
                    pair_count[a, b] += n
        if not pair_count:
            break
        best = min(pair_count, key=lambda p: (-pair_count[p], len(p[0] + p[1]), (p[0] + p[1]).encode(),
                                              len(p[0].encode())))
        piece = best[0] + best[1]
        if piece in pieces:
            dropped.add(best)
            continue
        pieces.add(piece)
        merges.append(best)
        for w in words:
            i = 0
            while i < len(w) - 1:
                if w[i] == best[0] and w[i + 1] == best[1]:
                    w[i:i + 2] = [piece]
                i += 1
    return alphabet, merges, len(dropped)


def bpe_encode(text, merges, piece_id, split_digits=True):
    """Apply the merges in the order learned (lowest rank first, leftmost first) to each word; a symbol that
    is no piece becomes its UTF-8 bytes. Words: cut at characters that never merge or are no piece, and before
    a "▁" that follows another character (no piece spans those). Ids without BOS."""
    rank = {m: i for i, m in enumerate(merges)}
    cache = {}

    def word(w):
        if w not in cache:
            sy = list(w)
            while True:
                best = min(((rank[sy[i], sy[i + 1]], i) for i in range(len(sy) - 1)
                            if (sy[i], sy[i + 1]) in rank), default=None)
                if best is None:
                    break
                i = best[1]
                sy[i:i + 2] = [sy[i] + sy[i + 1]]
            cache[w] = sy
        return cache[w]

    symbols, cur = [], ""
    for c in normalize(text):
        if c not in piece_id or never_merges(c, split_digits):
            symbols += word(cur) + [c] if cur else [c]
            cur = ""
        elif c == SP and cur and cur[-1] != SP:
            symbols += word(cur)
            cur = c
        else:
            cur += c
    if cur:
        symbols += word(cur)
    ids = []
    for s in symbols:
        ids += [piece_id[s]] if s in piece_id else [3 + b for b in s.encode()]
    return ids


# ---- helpers around the C side -----------------------------------------------------------------------------------

def msrnn_ids(vocab, texts, tmp):
    """ids (no BOS) for each text, through tests/tool_tokenize (hex mode: any bytes)."""
    path = os.path.join(tmp, "texts.hex")
    with open(path, "w") as f:
        for t in texts:
            f.write((t if isinstance(t, bytes) else t.encode()).hex() + "\n")
    r = subprocess.run([TOOL, vocab, "hex", path], capture_output=True, text=True)
    if r.returncode != 0:
        fail_now(f"tool_tokenize {vocab} hex exited {r.returncode}: {r.stderr}")
    return [[int(x) for x in line.split()] for line in r.stdout.split("\n")[:len(texts)]]


def msrnn_ids_whole(vocab, path):
    r = subprocess.run([TOOL, vocab, "whole", path], capture_output=True, text=True)
    if r.returncode != 0:
        fail_now(f"tool_tokenize {vocab} whole {path} exited {r.returncode}: {r.stderr}")
    return [int(x) for x in r.stdout.split()]


def first_difference(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def compare_ids(label, got, want, pieces):
    if got == want:
        return check(True, label)
    i = first_difference(got, want)
    show = lambda ids: [pieces[x] for x in ids[max(0, i - 3):i + 4]]
    return check(False, f"{label}: {len(got)} ids vs {len(want)}; first difference at {i}: "
                        f"msrnn {show(got)}, merges in order {show(want)}")


AWKWARD = [
    "Hello world", "", " ", "  ", "   leading spaces", "trailing spaces   ", "a  b   c    d", "\n", "\n\n\nx\n",
    "line one\nline two\r\nline three\n", "tab\tseparated\tvalues", "In 1984, 3.14159 and 2,000,000 (No. 42)",
    "007 0 00 1234567890", "café naïve déjà vu — “quoted” ‘single’ …", "Ærøskøbing, Œuvre, ß, ÿ",
    "日本語のテキスト", "Здравствуй, мир", "Ελληνικά", "emoji 😀🎉 and ZWJ 👨‍👩‍👧", "a\u0301 combining",
    "<s> </s> <unk> <0x41> literal specials", "▁ a literal lower block ▁▁x", "\u00a0no-break\u00a0space",
    "\x01\x02 control \x7f", "CHAPTER I.\n\nThe Cyclone", "“Well,” said he, “I’m—I’m not sure.”",
    "so--so---so ____ ****", "Mr. and Mrs. Dursley, of number four, Privet Drive",
]


def check_layout(vocab, merges, books_text):
    kv, types, n_tensors = read_gguf(vocab)
    tokens, scores, ttypes = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.scores"], kv["tokenizer.ggml.token_type"]
    n_merges = len(merges)
    alphabet = choose_alphabet(books_text, 0.9995)
    check(len(tokens) == 1000 == len(scores) == len(ttypes), f"layout: {len(tokens)} tokens, expected 1000")
    check(tokens[:259] == RESERVED, f"layout: reserved pieces {tokens[:6]}...")
    check(ttypes[:259] == [2, 3, 3] + [6] * 256 and set(ttypes[259:]) == {1}, "layout: token types")
    check(all(s == 0 for s in scores[:259]), "layout: special and byte scores are 0")
    check(len(set(tokens)) == len(tokens), f"layout: {len(tokens) - len(set(tokens))} duplicate pieces")
    check(tokens[259 + n_merges:] == alphabet,
          f"layout: alphabet {tokens[259 + n_merges:][:12]}... expected {alphabet[:12]}... (coverage rule)")
    check(len(alphabet) + n_merges + 259 == 1000, f"layout: {n_merges} merges + {len(alphabet)} characters")
    check(scores[259:] == [float(-k) for k in range(len(tokens) - 259)],
          f"layout: scores {scores[259:265]}... expected 0, -1, -2, ... strictly decreasing")
    merged = tokens[259:259 + n_merges]
    check(all(SP not in p[1:] for p in merged), f"layout: '▁' inside {[p for p in merged if SP in p[1:]][:5]}")
    check(all(not any(never_merges(c, True) for c in p) for p in merged),
          f"layout: digits/controls merged: {[p for p in merged if any(never_merges(c, True) for c in p)][:5]}")
    check(all(2 <= len(p) <= 16 for p in merged), "layout: merged pieces have 2..16 characters")
    known = set(alphabet)
    for k, (a, b) in enumerate(merges):
        if not check(a in known and b in known and a + b == merged[k],
                     f"layout: merge {k} ({a!r}, {b!r}) -> {merged[k]!r} is not two earlier pieces"):
            break
        known.add(a + b)
    check(SP in alphabet and "\n" in alphabet and "e" in alphabet, "layout: '▁', newline and 'e' are pieces")
    want = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
            "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.add_bos_token": True,
            "tokenizer.ggml.add_eos_token": False, "tokenizer.ggml.add_space_prefix": True}
    for k, v in want.items():
        check(kv.get(k) == v, f"layout: {k} = {kv.get(k)!r}, expected {v!r}")
    check(types["tokenizer.ggml.scores"] == 9 and types["tokenizer.ggml.bos_token_id"] == 4,
          "layout: GGUF types of the keys")
    check("general.name" in kv and "general.architecture" not in kv and n_tensors == 0,
          "layout: a vocabulary-only file (general.name, no architecture, no tensors)")
    return tokens


def small_text():
    """A small training text that exercises every rule: digits, runs of spaces, newlines, punctuation,
    characters below the coverage cut, U+FFFD from malformed bytes, and "<s>" (a reserved piece)."""
    with open(os.path.join(BOOKS, "pg23.txt"), encoding="utf-8") as f:
        book = f.read()[:14000]
    extra = ("In 1984 there were 365 days, 24 hours and 7 days a week.\n" * 5
             + "    indented  text   with    runs  of     spaces\n" * 8
             + "café naïve — “quoted” ‘single’ déjà vu\n" * 6
             + "<s>hello</s>\n<s>world</s>\n" * 12 + "(x\t<s>)\n" * 4
             + "rare: 日本 😀 ☃ \x01\n")
    raw = (book + extra).encode() + b"x\xffy \xff\xfe\n" * 15  # lone bytes: one U+FFFD each
    return raw, raw.decode("utf-8", errors="replace")


def test_naive(tmp):
    raw, text = small_text()
    path = os.path.join(tmp, "small.txt")
    with open(path, "wb") as f:
        f.write(raw)
    for flags, kw in [([], {}), (["--whitespace-pieces"], {"ws_pieces": True}),
                      (["--no-split-digits", "--coverage", "0.999"], {"split_digits": False, "coverage": 0.999})]:
        label = f"naive BPE {' '.join(flags) or '(defaults)'}"
        out = os.path.join(tmp, "small.gguf")
        merges, _ = train(out, "--vocab", "700", *flags, path)
        tokens = read_gguf(out)[0]["tokenizer.ggml.tokens"]
        t0 = time.time()
        alphabet, want, n_dropped = naive_bpe([text], 700, **kw)
        check(merges == want, f"{label}: merges differ at {first_difference(merges, want)} "
                              f"(C {merges[first_difference(merges, want)] if merges != want else ''} vs "
                              f"Python {want[first_difference(merges, want)] if merges != want else ''})")
        check(tokens == RESERVED + [a + b for a, b in want] + alphabet, f"{label}: pieces differ")
        check(n_dropped > 0, f"{label}: no pair was dropped as a duplicate: the rule went untested")
        check("\ufffd" in alphabet and any(p.startswith("<s>") for p in tokens[259:]) and "<s>" not in tokens[259:],
              f"{label}: U+FFFD a character, pieces longer than '<s>' learned but '<s>' never a normal piece")
        ids = msrnn_ids(out, [raw], tmp)[0]
        pid = {p: i for i, p in enumerate(tokens) if i >= 259}
        compare_ids(f"{label}: encoding the training text", ids,
                    bpe_encode(text, want, pid, kw.get("split_digits", True)), tokens)
        print(f"  {label}: {len(want)} merges ({n_dropped} duplicates dropped), {len(alphabet)} characters; "
              f"Python {time.time() - t0:.1f} s", flush=True)


def test_encoding(tmp, vocab, merges, tokens, books, label, split_digits=True):
    pid = {p: i for i, p in enumerate(tokens) if i >= 259}
    for book in books:
        path = os.path.join(BOOKS, book)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        compare_ids(f"{label}: {book} whole", msrnn_ids_whole(vocab, path), bpe_encode(text, merges, pid, split_digits),
                    tokens)
    got = msrnn_ids(vocab, AWKWARD, tmp)
    for t, g in zip(AWKWARD, got):
        compare_ids(f"{label}: {t[:20]!r}", g, bpe_encode(t, merges, pid, split_digits), tokens)


def test_roundtrip(tmp, vocab, books):
    awk = os.path.join(tmp, "awkward.txt")
    with open(awk, "w", encoding="utf-8") as f:
        # (a literal "▁" decodes as a space, as in SentencePiece: left out here)
        f.write("\n".join(t for t in AWKWARD if "\n" not in t and "\r" not in t and SP not in t))
    for path in [os.path.join(BOOKS, b) for b in books] + [awk]:
        r = subprocess.run([TOOL, vocab, "roundtrip", path], capture_output=True, text=True)
        check(r.returncode == 0 and "0 mismatches" in r.stdout,
              f"roundtrip {os.path.basename(path)}: exit {r.returncode}: {r.stdout[-600:]} {r.stderr[-300:]}")


def check_node():
    node = shutil.which("node")
    if not node:
        fail_now("node is not on PATH; the llama.cpp parity check needs node >= 20 and node-llama-cpp")
    try:
        with open(os.path.join(PKG, "package.json")) as f:
            found = json.load(f)["version"]
    except OSError:
        fail_now(f"node-llama-cpp is not installed in {NODE_MODULES}; {NPM_HINT}")
    if found != PKG_VERSION:
        fail_now(f"{PKG} is version {found}, expected {PKG_VERSION}; {NPM_HINT}")
    return node


def test_llamacpp(tmp, node, vocab, label):
    model = os.path.join(tmp, "model.gguf")
    r = run("init-model", "--vocab-from", vocab, "-o", model, "--dim", "64", "--layers", "1", "--heads", "2",
            "--kv-heads", "1", "--ffn", "128", "--ctx", "256")
    if r.returncode != 0:
        fail_now(f"init-model --vocab-from {vocab}: {r.stderr}")
    texts = list(AWKWARD)
    for book in ("pg1260.txt", OTHER_BOOK, "pg2701.txt"):
        with open(os.path.join(BOOKS, book), encoding="utf-8") as f:
            whole = f.read()
        texts += [whole[k:k + 3000] for k in (5000, len(whole) // 2)]
    texts.append("".join(chr(c) for c in range(0x20, 0x250)))  # Latin blocks: most need byte fallback
    tpath = os.path.join(tmp, "texts.json")
    with open(tpath, "w") as f:
        json.dump(texts, f)
    r = subprocess.run([node, os.path.join(SOURCE, "tests", "llamacpp_tokenize.mjs"), "--pkg", PKG, "--model", model,
                        "--texts", tpath], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        fail_now(f"node llamacpp_tokenize.mjs exited {r.returncode}: {r.stderr[-2000:]}")
    peer = json.loads(r.stdout)["ids"]
    ours = msrnn_ids(model, texts, tmp)
    tokens = read_gguf(vocab)[0]["tokenizer.ggml.tokens"]
    same = 0
    for t, a, b in zip(texts, ours, peer):
        if a == b:
            same += 1
            continue
        i = first_difference(a, b)
        check(False, f"llama.cpp {label}: {t[:24]!r}: ids differ at {i}: msrnn {[tokens[x] for x in a[i:i + 4]]}, "
                     f"llama.cpp {[tokens[x] for x in b[i:i + 4]]}")
    check(len(peer) == len(texts), f"llama.cpp {label}: {len(peer)} results for {len(texts)} texts")
    print(f"  llama.cpp {label}: {same}/{len(texts)} texts give identical ids ({sum(map(len, ours))} ids)",
          flush=True)


def test_errors(tmp):
    book = os.path.join(BOOKS, "pg55.txt")
    out = os.path.join(tmp, "err.gguf")
    empty = os.path.join(tmp, "empty.txt")
    open(empty, "w").close()
    tiny = os.path.join(tmp, "tiny.txt")
    with open(tiny, "w") as f:
        f.write("hello hello world\n")
    cases = [
        (["--vocab", "1000", "-o", out, os.path.join(tmp, "missing.txt")], 1, ["missing.txt"]),
        (["--vocab", "300", "-o", out, book], 1, ["--vocab 300", "too small", "at least"]),
        (["--vocab", "100", "-o", out, book], 2, ["--vocab"]),
        (["--vocab", "abc", "-o", out, book], 2, ["--vocab", "abc"]),
        (["--vocab", "1000", "-o", out, "--bogus", book], 2, ["--bogus"]),
        (["--vocab", "1000", "-o", out, empty], 1, ["no text"]),
        (["--vocab", "1000", "-o", out, empty, empty], 1, ["no text"]),
        (["--vocab", "5000", "-o", out, tiny], 1, ["--vocab 5000", "too large", "at most"]),
        (["--vocab", "1000", "-o", out], 2, ["no input"]),
        (["--vocab", "1000", book], 2, ["-o"]),
        (["-o", out, book], 2, ["--vocab"]),
        (["--vocab", "1000", "-o", out, "--manifest", MANIFEST], 2, ["--split"]),
        (["--vocab", "1000", "-o", out, "--manifest", MANIFEST, "--split", "nosuch"], 2, ["nosuch"]),
        (["--vocab", "1000", "-o", out, "--coverage", "1.5", book], 2, ["--coverage"]),
        (["--vocab", "1000", "-o", out, "--max-chars", "0", book], 2, ["--max-chars"]),
        (["--vocab", "1000", "-o", out, "-t", "0", book], 2, ["-t"]),
        (["--vocab", "1000", "-o", os.path.join(tmp, "no", "such", "dir.gguf"), book], 1, ["dir.gguf"]),
    ]
    for args, code, words in cases:
        r = run("tokenizer-train", *args)
        missing = [w for w in words if w not in r.stderr]
        check(r.returncode == code and not missing and not os.path.exists(out),
              f"errors: {' '.join(a.replace(tmp, '') for a in args)}: exit {r.returncode} (expected {code}), "
              f"message {r.stderr.strip()[-300:]!r} lacks {missing}; output left: {os.path.exists(out)}")
    leftovers = [n for n in os.listdir(tmp) if n.startswith("err.gguf")]
    check(not leftovers, f"errors: files left behind: {leftovers}")
    # An existing output survives a failed run (the write is atomic and happens last).
    with open(out, "wb") as f:
        f.write(b"keep")
    r = run("tokenizer-train", "--vocab", "300", "-o", out, book)
    check(r.returncode == 1 and open(out, "rb").read() == b"keep", "errors: a failed run replaced the old output")
    os.remove(out)


def main():
    t_start = time.time()
    for path in (BIN, TOOL):
        if not os.path.exists(path):
            fail_now(f"{path} is missing (build msrnn and tests/tool_tokenize)")
    node = check_node()
    with tempfile.TemporaryDirectory() as tmp:
        books = [os.path.join(BOOKS, b) for b in TRAIN_BOOKS]
        texts = []
        for b in books:
            with open(b, encoding="utf-8") as f:
                texts.append(f.read())

        # 1, 4: layout; determinism across threads and file order
        a = os.path.join(tmp, "a.gguf")
        merges, log = train(a, "--vocab", "1000", "-t", "2", *books)
        tokens = check_layout(a, merges, texts)
        b = os.path.join(tmp, "b.gguf")
        train(b, "--vocab", "1000", "-t", "1", *books[::-1], merges=False)
        check(open(a, "rb").read() == open(b, "rb").read(), "determinism: 1 thread + reversed file order differ")
        train(b, "--vocab", "1000", "-t", "2", *books, merges=False)
        check(open(a, "rb").read() == open(b, "rb").read(), "determinism: two identical runs differ")
        print(f"  layout and determinism: {len(merges)} merges; {log.strip().splitlines()[0]}", flush=True)

        # 2: the naive reference on a small text
        test_naive(tmp)

        # 3: encoding equals merges in order; round trip
        test_encoding(tmp, a, merges, tokens, TRAIN_BOOKS + [OTHER_BOOK], "3 books, 1000")
        test_roundtrip(tmp, a, TRAIN_BOOKS + [OTHER_BOOK])

        # A bigger vocabulary from the manifest's train split (3M characters), with whitespace pieces.
        c = os.path.join(tmp, "c.gguf")
        merges_c, log = train(c, "--vocab", "4096", "--whitespace-pieces", "--manifest", MANIFEST, "--split", "train",
                              "--max-chars", "3000000")
        n_texts = int(log.split(" texts,")[0].split()[-1])
        n_chars = int(log.split(" characters,")[0].split()[-1])
        check(n_chars == 3000000 + n_texts, f"--max-chars 3000000: {n_chars} characters counted over {n_texts} texts")
        tokens_c = read_gguf(c)[0]["tokenizer.ggml.tokens"]
        check(len(tokens_c) == 4096 and len(set(tokens_c)) == 4096, "4096 vocabulary: size and unique pieces")
        check(any(set(p) == {SP} and len(p) > 1 for p in tokens_c), "--whitespace-pieces: no '▁▁' piece learned")
        test_encoding(tmp, c, merges_c, tokens_c, ["pg55.txt", OTHER_BOOK], "train split, 4096")

        # 5: llama.cpp
        test_llamacpp(tmp, node, a, "3 books, 1000")
        test_llamacpp(tmp, node, c, "train split, 4096")

        # 6: bad input
        test_errors(tmp)

    if failures:
        print(f"FAIL: {len(failures)} of {checks} checks failed")
        sys.exit(1)
    print(f"OK: {checks} checks in {time.time() - t_start:.1f} s")


if __name__ == "__main__":
    main()
