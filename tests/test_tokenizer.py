"""test_tokenizer — msrnn's SentencePiece tokenizer must give exactly SentencePiece's ids.

Drives tests/tool_tokenize (built from tests/tool_tokenize.c) against the references that
tests/ref/gen_tokenizer_ref.py wrote with SentencePiece 0.1.97 into $MSRNN_REF_DIR/tokenizer:
  - awkward strings (spaces, newlines, digits, emoji, CJK, combining marks, control characters,
    malformed UTF-8...) for both vocabularies and four variants (unused pieces, user-defined pieces,
    no space prefix, no byte fallback);
  - every line of the validation books and every whole book, for Llama 2 and the 8k model;
  - decode(encode(text)) == text for lines and whole books;
  - clear errors for broken vocabularies (wrong model, arrays of different lengths, bad ids).
Under the sanitizers (MSRNN_SANITIZED=1) only the smaller books are encoded whole.
"""
import concurrent.futures as cf
import gzip
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

SOURCE = os.environ.get("MSRNN_SOURCE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(SOURCE, "tests", "ref"))
import ggufpy  # noqa: E402

BUILD = os.environ["MSRNN_BUILD_DIR"]
REF = os.path.join(os.environ["MSRNN_REF_DIR"], "tokenizer")
SHARED = os.environ["MSRNN_SHARED"]
BOOKS = os.path.join(SHARED, "data", "gutenberg")
TOOL = os.path.join(BUILD, "tests", "tool_tokenize")
SANITIZED = os.environ.get("MSRNN_SANITIZED") == "1"

failures = []
checked = {"items": 0, "ids": 0, "runs": 0}
lock = threading.Lock()


def count(**kw):
    with lock:
        for k, v in kw.items():
            checked[k] += v


def run_tool(vocab, mode, path):
    gguf = os.path.join(REF, f"{vocab}-vocab.gguf")
    p = subprocess.run([TOOL, gguf, mode, path], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


def first_difference(name, got, want):
    g, w = got.decode().split("\n"), want.decode().split("\n")
    if len(g) != len(w):
        msg = f"{len(g) - 1} output lines, expected {len(w) - 1}"
    else:
        msg = "outputs differ"
    for i, (a, b) in enumerate(zip(g, w)):
        if a != b:
            ga, wb = a.split(), b.split()
            j = next((k for k, (x, y) in enumerate(zip(ga, wb)) if x != y), min(len(ga), len(wb)))
            lo = max(0, j - 8)
            return (f"{name}: {msg}; first difference in line {i + 1} at id {j} "
                    f"({len(ga)} ids, expected {len(wb)}):\n"
                    f"    got      ...{' '.join(ga[lo:j + 8])}\n"
                    f"    expected ...{' '.join(wb[lo:j + 8])}")
    return f"{name}: {msg}"


def compare(name, vocab, mode, path, want):
    rc, got, err = run_tool(vocab, mode, path)
    count(runs=1)
    if rc != 0:
        return f"{name}: tool_tokenize exited {rc}: {err.strip()}"
    if got != want:
        return first_difference(name, got, want)
    count(items=want.count(b"\n"), ids=len(want.split()))
    return None


def gz(path):
    with gzip.open(path, "rb") as f:
        return f.read()


def check_errors():
    """Broken vocabularies are refused with a message naming the key."""
    base = ggufpy.GGUFWriter()
    ggufpy.add_spm_vocab(base, os.path.join(SHARED, "data", "tokenizers", "gutenberg8k", "gut8k.model"))
    kv = {k: (t, v) for k, t, v in base.kv}

    def variant(changes):
        w = ggufpy.GGUFWriter()
        for k, (t, v) in kv.items():
            if k in changes:
                if changes[k] is None:
                    continue
                t, v = changes[k]
            w.add(k, t, v)
        return w

    tokens = kv["tokenizer.ggml.tokens"][1][1]
    scores = kv["tokenizer.ggml.scores"][1][1]
    types = kv["tokenizer.ggml.token_type"][1][1]
    bad_byte = list(tokens)
    bad_byte[types.index(6)] = "<0xZZ>"
    cases = [
        ({"tokenizer.ggml.model": (ggufpy.STR, "gpt2")}, "unsupported", ["tokenizer.ggml.model", "gpt2"]),
        ({"tokenizer.ggml.scores": (ggufpy.ARR, (ggufpy.F32, scores[:-1]))}, "malformed",
         ["tokenizer.ggml.scores", str(len(scores) - 1), str(len(scores))]),
        ({"tokenizer.ggml.token_type": (ggufpy.ARR, (ggufpy.I32, types[:10]))}, "malformed",
         ["tokenizer.ggml.token_type", "10"]),
        ({"tokenizer.ggml.token_type": (ggufpy.ARR, (ggufpy.I32, [9] + types[1:]))}, "malformed",
         ["tokenizer.ggml.token_type", "type 9"]),
        ({"tokenizer.ggml.bos_token_id": (ggufpy.U32, len(tokens))}, "malformed",
         ["tokenizer.ggml.bos_token_id", str(len(tokens))]),
        ({"tokenizer.ggml.tokens": None}, "malformed", ["tokenizer.ggml.tokens"]),
        ({"tokenizer.ggml.scores": (ggufpy.ARR, (ggufpy.I32, [0] * len(scores)))}, "malformed",
         ["tokenizer.ggml.scores", "float32"]),
        ({"tokenizer.ggml.tokens": (ggufpy.ARR, (ggufpy.STR, bad_byte))}, "malformed", ["<0xZZ>", "<0xNN>"]),
    ]
    text = os.path.join(BOOKS, "pg23.txt")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (changes, status, words) in enumerate(cases):
            path = os.path.join(tmp, f"bad{i}.gguf")
            variant(changes).write(path)
            p = subprocess.run([TOOL, path, "whole", text], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            err = p.stderr.decode(errors="replace")
            missing = [w for w in words + [status] if w not in err]
            count(runs=1)
            if p.returncode != 1 or p.stdout or missing:
                failures.append(f"broken vocabulary {i} ({', '.join(changes)}): exit {p.returncode}, "
                                f"message {err.strip()!r} lacks {missing}")


def main():
    t0 = time.time()
    if not os.path.exists(TOOL):
        sys.exit(f"FAIL: {TOOL} is missing (build the tool_tokenize target)")
    manifest_path = os.path.join(REF, "manifest.json")
    if not os.path.exists(manifest_path):
        sys.exit(f"FAIL: {manifest_path} is missing (run tests/ref/generate.sh)")
    m = json.load(open(manifest_path))
    main_vocabs = ["llama2", "gut8k"]
    books = m["books"]
    if SANITIZED:  # the three smallest books
        books = sorted(books, key=lambda b: os.path.getsize(os.path.join(BOOKS, b)))[:3]

    jobs = []  # (name, vocab, mode, path, expected-bytes loader)
    tricky = os.path.join(REF, "tricky.hex")
    for v in m["vocabs"]:
        jobs.append((f"{v} tricky strings", v, "hex", tricky, os.path.join(REF, v, "tricky.txt")))
    for v in main_vocabs:
        for b in m["validation"]:
            jobs.append((f"{v} lines of {b}", v, "lines", os.path.join(BOOKS, b),
                         os.path.join(REF, v, f"{b[:-4]}.lines.txt.gz")))
        for b in books:
            jobs.append((f"{v} whole {b}", v, "whole", os.path.join(BOOKS, b),
                         os.path.join(REF, v, f"{b[:-4]}.whole.txt.gz")))
    vb = m["variant_book"]
    for v in m["variants"]:
        jobs.append((f"{v} lines of {vb}", v, "lines", os.path.join(BOOKS, vb),
                     os.path.join(REF, v, f"{vb[:-4]}.lines.txt.gz")))

    def one(job):
        name, v, mode, path, ref = job
        want = gz(ref) if ref.endswith(".gz") else open(ref, "rb").read()
        return compare(name, v, mode, path, want)

    with cf.ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        for err in pool.map(one, jobs):
            if err:
                failures.append(err)

    # decode(encode(x)) == x for lines and whole books
    rt_books = m["validation"][:1] if SANITIZED else m["validation"]
    rt_jobs = [(v, b) for v in main_vocabs + ["llama2-noprefix", "llama2-userdef", "llama2-unused"]
               for b in (rt_books if v in main_vocabs else [vb])]

    def roundtrip(job):
        v, b = job
        rc, out, err = run_tool(v, "roundtrip", os.path.join(BOOKS, b))
        count(runs=1)
        if rc != 0:
            return f"{v} roundtrip {b}: exit {rc}: {err.strip()} {out.decode(errors='replace')[:2000]}"
        return None

    with cf.ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        for err in pool.map(roundtrip, rt_jobs):
            if err:
                failures.append(err)

    check_errors()

    if not SANITIZED:
        big = max(m["books"], key=lambda b: os.path.getsize(os.path.join(BOOKS, b)))
        rc, out, _ = run_tool("llama2", "bench", os.path.join(BOOKS, big))
        if rc == 0:
            print(f"speed ({big}, llama2): {out.decode().strip()}")

    summary = (f"{checked['items']} encodings ({checked['ids']} ids) compared with SentencePiece "
               f"{m['sentencepiece']} over {len(m['vocabs'])} vocabularies, {len(books)} whole books each, "
               f"{len(rt_jobs)} round trips, {checked['runs']} tool runs, {time.time() - t0:.1f} s")
    if failures:
        for f in failures:
            print("FAIL", f)
        print(f"test_tokenizer: FAILED {len(failures)} checks; {summary}")
        sys.exit(1)
    print(f"test_tokenizer: OK: {summary}")


if __name__ == "__main__":
    main()
