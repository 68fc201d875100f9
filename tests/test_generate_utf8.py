"""test_generate_utf8 — `msrnn generate` writes valid UTF-8 whatever the model samples.

A SentencePiece model spells a character it has no piece for in byte tokens (<0xE2> <0x82> <0xAC>),
and a sampler can pick a byte token that starts a character and then one that does not go on with
it. The text `generate` prints must be the bytes of the prompt and of the generated pieces joined
and then decoded the way Unicode §3.9 recommends: each maximal ill-formed subpart becomes one U+FFFD
and a character split between byte tokens comes out whole. The reference here is Python's
bytes.decode("utf-8", "replace"), which follows that rule, applied to pieces read straight from the
GGUF's vocabulary (not through msrnn). The --json "text" field must decode to the same string.

Runs: prompts with ill-formed and cut-off bytes, chosen and random (greedy, one token), and hot samplings (temperature
5, no truncation) whose byte tokens land at random, from fixed seeds."""
import json
import os
import random
import subprocess

import gguf_tiny
from checks import check, finish

BIN = os.environ["MSRNN_BIN"]
SRC = os.environ["MSRNN_SOURCE_DIR"]
MODEL = os.path.join(SRC, "models", "default.gguf")

g = gguf_tiny.read(MODEL)
tokens = gguf_tiny.value(g, "tokenizer.ggml.tokens")
types = gguf_tiny.value(g, "tokenizer.ggml.token_type")
CONTROL, BYTE = 3, 6


BOS = gguf_tiny.value(g, "tokenizer.ggml.bos_token_id")


def piece_bytes(prev, i):
    """the bytes token i stands for after token prev: a piece that follows BOS (here a BOS the hot
    sampler picked) drops the leading space of SentencePiece's dummy prefix"""
    if types[i] == CONTROL:
        return b""
    if types[i] == BYTE:
        return bytes([int(tokens[i][3:5], 16)])  # "<0xNN>"
    s = tokens[i].replace("\u2581".encode(), b" ")
    return s[1:] if prev == BOS and s.startswith(b" ") else s


def run(prompt, extra):
    args = [BIN, "generate", "-m", MODEL, "-p", prompt, "-t", "1", "--ignore-eos", *extra]
    plain = subprocess.run(args, capture_output=True, timeout=300)
    js = subprocess.run(args + ["--json"], capture_output=True, timeout=300)
    return plain, js


def expect(prompt, extra, what):
    plain, js = run(prompt, extra)
    check(plain.returncode == 0 and js.returncode == 0,
          f"{what}: exit {plain.returncode}/{js.returncode}: {plain.stderr[-300:]!r}")
    if plain.returncode or js.returncode:
        return 0
    out = json.loads(js.stdout)
    ids = out["ids"]
    seq = out["prompt_ids"] + ids
    gen = b"".join(piece_bytes(seq[len(seq) - len(ids) + k - 1], i) for k, i in enumerate(ids))
    want = (prompt + gen).decode("utf-8", "replace") + "\n"
    try:
        got = plain.stdout.decode("utf-8")  # strict: invalid UTF-8 fails here
    except UnicodeDecodeError as e:
        check(False, f"{what}: stdout is not UTF-8 ({e}): {plain.stdout[:80]!r}")
        return 0
    check(got == want, f"{what}: stdout {got[:120]!r} != reference {want[:120]!r}")
    text = out["text"]
    check(text == gen.decode("utf-8", "replace"), f"{what}: --json text {text[:80]!r}")
    return sum(types[i] == BYTE for i in ids)


# ill-formed and cut-off prompts: the prompt is echoed through the same decoder
for p in [b"A\xe2\x82B\xff", b"x\xc0\xaf", b"x\xe0\x80\xaf", b"x\xed\xa0\x80", b"x\xf4\x90\x80\x80",
          b"x\xf0\x90\x80", b"x\xf8\x88\x80\x80\x80", b"x\x80\x80", b"x\xe2\x82", b"x\xf0\x9f\x98\x80",
          b"caf\xc3\xa9 \xe2\x82\xac"]:
    expect(p, ["-n", "1", "--temp", "0"], f"prompt {p!r}")
# random bytes, mostly from the ranges that lead or continue multi-byte characters (no NUL: argv)
rng = random.Random(7)
for _ in range(24):
    p = bytes(rng.choice([rng.randrange(0x80, 0x100), rng.randrange(0xC0, 0xF8),
                          rng.randrange(0x80, 0xC0), rng.randrange(1, 0x80)])
              for _ in range(rng.randrange(1, 24)))
    expect(p, ["-n", "1", "--temp", "0"], f"prompt {p!r}")

# hot sampling: byte tokens chosen at random, sometimes a character's start alone
hot = ["--temp", "5", "--top-k", "0", "--top-p", "1", "--min-p", "0"]
n_bytes = 0
for seed in range(1, 5):
    n_bytes += expect(b"Hi", ["-n", "200", "-s", str(seed), *hot], f"seed {seed}")
check(n_bytes >= 10, f"the hot runs sampled {n_bytes} byte tokens: too few to test the decoder")

finish("test_generate_utf8")
