"""test_infini_cli — `infini` files and `msrnn convert --to infini` from the command line (issue 10).

A tiny llama model (init-model, models/default.gguf's vocabulary) and an infini model made from it
by `convert --to infini --segment 4`:

1. convert: the output's keys (infini.* in place of llama.*, infini.segment_length,
   infini.memory_rule), a β of zeros (f32, one per query head) per layer, every other tensor
   byte-identical to the input's; the same command writes the same bytes; with a segment that
   covers the whole text, generate prints exactly what the llama model prints.
2. Refused, exit 1 and nothing written at -o: an input that is not a llama model (the infini file),
   an output folder that does not exist. Refused with usage errors (exit 2): --to other than
   infini, --rule other than linear/delta, --segment 0, a missing -m.
3. Broken infini files (gguf_tiny copies of the good one) exit 1 in generate with a message naming
   what is wrong: blk.0.attn_mem_gate missing, or of the wrong shape; infini.segment_length 0 or
   missing; infini.memory_rule unknown.
4. The infini model runs in generate, passkey (1K tokens: its memory is bounded; the llama refuses),
   perplexity (a text of several segments, its context far beyond the model's 64 tokens) and
   bench --depth, whose state bytes are the same at every depth;
   a bounded-cache flag (--kv window) on it exits 2 naming the memory.
5. `train --init` from the infini file keeps it infini; the gates move by about lr × 10 in AdamW's first
   step, and by lr × 1000 with --own-lr-scale 1000.
"""
import json
import os
import struct
import subprocess
import tempfile

import gguf_tiny
from gguf_tiny import set_key
from checks import check, finish

BIN = os.environ["MSRNN_BIN"]
SHARED = os.environ["MSRNN_SHARED"]
SRC = os.environ.get("MSRNN_SOURCE_DIR", ".")
VOCAB = os.path.join(SRC, "models", "default.gguf")
BOOK = os.path.join(SHARED, "data", "gutenberg", "pg55.txt")
SHAPE = ["--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--ffn", "128", "--ctx", "64"]


def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, errors="replace", timeout=600)


def tail(r):
    return r.stderr[-400:]


with tempfile.TemporaryDirectory() as tmp:
    P = lambda name: os.path.join(tmp, name)  # noqa: E731
    r = run("init-model", "--vocab-from", VOCAB, "-o", P("llama.gguf"), *SHAPE, "--std", "0.3", "--seed", "5")
    check(r.returncode == 0, f"init-model: {tail(r)}")
    r = run("convert", "--to", "infini", "--segment", "4", "-m", P("llama.gguf"), "-o", P("inf.gguf"))
    check(r.returncode == 0, f"convert: {tail(r)}")
    r2 = run("convert", "--to", "infini", "--segment", "4", "-m", P("llama.gguf"), "-o", P("inf2.gguf"))
    check(r2.returncode == 0 and open(P("inf.gguf"), "rb").read() == open(P("inf2.gguf"), "rb").read(),
          "convert twice writes the same bytes")

    # 1. what convert wrote
    src, dst = gguf_tiny.read(P("llama.gguf")), gguf_tiny.read(P("inf.gguf"))
    check(gguf_tiny.value(dst, "general.architecture") == b"infini", "general.architecture infini")
    check(gguf_tiny.value(dst, "infini.segment_length") == 4, "infini.segment_length 4")
    check(gguf_tiny.value(dst, "infini.memory_rule") == b"linear", "infini.memory_rule linear")
    check(not any(k.startswith("llama.") for k, _, _ in dst["kvs"]), "no llama.* key left")
    for k, _, _ in src["kvs"]:
        if k.startswith("llama."):
            want = "infini." + k[6:]
            check(gguf_tiny.value(dst, want) == gguf_tiny.value(src, k), f"{want} = {k}")
        elif k != "general.architecture":
            check(gguf_tiny.value(dst, k) == gguf_tiny.value(src, k), f"{k} copied")
    st = {t["name"]: t for t in src["tensors"]}
    for t in dst["tensors"]:
        if t["name"].endswith("attn_mem_gate"):
            check(t["type"] == 0 and t["ne"] == [4] and t["data"][:16] == bytes(16),
                  f"{t['name']}: 4 f32 zeros")
        else:
            s = st.get(t["name"])
            check(s is not None and s["ne"] == t["ne"] and s["type"] == t["type"] and
                  s["data"].rstrip(b"\0") == t["data"].rstrip(b"\0"), f"{t['name']} copied")
    check(sum(t["name"].endswith("attn_mem_gate") for t in dst["tensors"]) == 2, "one gate per layer")
    r = run("info", P("inf.gguf"))
    check(r.returncode == 0 and "infini.segment_length" in r.stdout and "infini.memory_rule" in r.stdout,
          "info prints the method's keys")
    r = run("convert", "--to", "infini", "--segment", "64", "--rule", "delta", "-m", P("llama.gguf"),
            "-o", P("one.gguf"))
    check(r.returncode == 0 and gguf_tiny.value(gguf_tiny.read(P("one.gguf")), "infini.memory_rule") == b"delta",
          f"convert --rule delta: {tail(r)}")
    gen = ["-p", "It was a dark and stormy night", "-n", "20", "--temp", "0", "-t", "1"]
    a, b = run("generate", "-m", P("llama.gguf"), *gen), run("generate", "-m", P("one.gguf"), *gen)
    check(a.returncode == 0 and b.returncode == 0 and a.stdout == b.stdout and len(a.stdout) > 10,
          f"one segment over the text: generate prints what llama prints ({a.stdout!r} vs {b.stdout!r})")

    # 2. refusals
    for args, code, what in [
        (["--to", "infini", "-m", P("inf.gguf"), "-o", P("out.gguf")], 1, "llama"),
        (["--to", "infini", "-m", P("llama.gguf"), "-o", P("nodir/out.gguf")], 1, "nodir"),
        (["--to", "dijiang2", "-m", P("llama.gguf"), "-o", P("out.gguf")], 2, "--to"),
        (["--to", "infini", "--rule", "cubic", "-m", P("llama.gguf"), "-o", P("out.gguf")], 2, "--rule"),
        (["--to", "infini", "--segment", "0", "-m", P("llama.gguf"), "-o", P("out.gguf")], 2, "--segment"),
        (["--to", "infini", "-o", P("out.gguf")], 2, "-m"),
    ]:
        r = run("convert", *args)
        check(r.returncode == code and what in r.stderr,
              f"convert {' '.join(args[:4])}: exit {r.returncode} (want {code}), message names {what!r}: {tail(r)}")
        check(not os.path.exists(P("out.gguf")) and not os.path.exists(P("nodir")),
              f"convert {' '.join(args[:4])}: nothing written")
    check(not [f for f in os.listdir(tmp) if ".tmp-" in f], "no temporary files left")

    # 3. broken infini files
    def broken(name, edit):
        g = gguf_tiny.read(P("inf.gguf"))
        edit(g)
        gguf_tiny.write(P(name), g)
        return P(name)

    cases = [
        ("no_gate.gguf", lambda g: g.update(tensors=[t for t in g["tensors"] if t["name"] != "blk.0.attn_mem_gate"]),
         "blk.0.attn_mem_gate"),
        ("gate_shape.gguf", lambda g: [t.update(ne=[5], data=bytes(32)) for t in g["tensors"]
                                       if t["name"] == "blk.0.attn_mem_gate"], "blk.0.attn_mem_gate"),
        ("segment0.gguf", lambda g: set_key(g, "infini.segment_length", gguf_tiny.GGUF_U32, struct.pack("<I", 0)),
         "infini.segment_length"),
        ("no_segment.gguf", lambda g: g.update(kvs=[kv for kv in g["kvs"] if kv[0] != "infini.segment_length"]),
         "infini.segment_length"),
        ("rule.gguf", lambda g: set_key(g, "infini.memory_rule", gguf_tiny.GGUF_STR, struct.pack("<Q", 9) + b"quadratic"),
         "infini.memory_rule"),
    ]
    for name, edit, what in cases:
        path = broken(name, edit)
        r = run("generate", "-m", path, *gen)
        check(r.returncode == 1 and what in r.stderr, f"{name}: exit {r.returncode}, names {what}: {tail(r)}")

    # 4. the infini model runs
    text = open(BOOK, encoding="utf-8", errors="replace").read()[:6000]
    open(P("text.txt"), "w").write(text)
    r = run("perplexity", "-m", P("inf.gguf"), "-f", P("text.txt"), "--ctx", "1024", "-t", "2")
    check(r.returncode == 0 and "ppl" in (r.stdout + r.stderr).lower(), f"perplexity on infini: {tail(r)}")
    r = run("bench", "-m", P("inf.gguf"), "-p", "0", "-n", "8", "-r", "1", "--depth", "16,256,1024",
            "-t", "1", "--json")
    try:
        rows = json.loads(r.stdout)["depths"] if r.returncode == 0 else []
    except (ValueError, KeyError):
        rows = []
    check(len(rows) == 3, f"bench --depth on infini: {tail(r)} {r.stdout[:300]}")
    check(len({x["session_bytes"] for x in rows}) == 1 and all(x["tg_tps"] > 0 for x in rows),
          f"bench --depth: session bytes the same at every depth {[x.get('session_bytes') for x in rows]}")
    check(all(x["memory_bytes"] <= rows[0]["session_bytes"] for x in rows),
          "bench --depth: the memory's bytes within the session's")
    check(json.loads(r.stdout)["memory"] == "infini" if rows else False, "bench names the memory infini")
    r = run("generate", "-m", P("inf.gguf"), "--kv", "window", "--kv-size", "8", *gen)
    check(r.returncode == 2 and "memory" in r.stderr, f"--kv window on infini: exit {r.returncode}: {tail(r)}")
    # generate likewise: 150 tokens past the 64-token context, no -c needed (msrnn_memory_is_bounded
    # answers for the model's parts, whatever the memory's name)
    r = run("generate", "-m", P("inf.gguf"), "-p", "hi", "-n", "150", "--temp", "0", "--ignore-eos", "--json",
            "-t", "1")
    ids = json.loads(r.stdout).get("ids", []) if r.returncode == 0 else []
    check(len(ids) == 150, f"generate 150 tokens past infini's context of 64: {len(ids)} ids, {tail(r)}")
    # passkey: infini's own memory is bounded, so lengths far beyond its 64-token context run (the
    # llama it came from, with the full cache, refuses them)
    r = run("passkey", "-m", P("inf.gguf"), "--lengths", "1K", "--depths", "0,100", "--trials", "1", "--json",
            "-t", "2")
    pk = json.loads(r.stdout) if r.returncode == 0 else {}
    check(r.returncode == 0 and pk.get("description") == "infini's own",
          f"passkey on infini at 1K (context 64): exit {r.returncode}, {pk.get('description')}: {tail(r)}")
    r = run("passkey", "-m", P("llama.gguf"), "--lengths", "1K", "--depths", "0", "--trials", "1", "-t", "2")
    check(r.returncode == 2 and "full cache holds 64" in r.stderr, f"passkey on llama at 1K: {tail(r)}")

    # 5. training from the infini file: the gates' own learning-rate multiplier (default 10, no decay)
    r = run("tokenize-corpus", "-m", P("llama.gguf"), "-o", P("train.bin"), P("text.txt"), "-t", "1")
    check(r.returncode == 0, f"tokenize-corpus: {tail(r)}")
    moved = {}
    for scale in (None, "1000"):
        out = P(f"trained{scale}.gguf")
        extra = ["--own-lr-scale", scale] if scale else []
        r = run("train", "--init", P("inf.gguf"), "--train", P("train.bin"), "-c", "32", "--batch", "2",
                "--steps", "1", "--warmup", "0", "--lr", "1e-4", "--lr-min", "1e-4", "-t", "1", "-o", out, *extra)
        check(r.returncode == 0, f"train --init infini {' '.join(extra)}: {tail(r)}")
        if r.returncode == 0:
            g = gguf_tiny.read(out)
            beta = [struct.unpack("<4f", t["data"][:16]) for t in g["tensors"] if t["name"].endswith("attn_mem_gate")]
            moved[scale] = max(abs(b) for row in beta for b in row)
            check(gguf_tiny.value(g, "general.architecture") == b"infini" and
                  gguf_tiny.value(g, "infini.segment_length") == 4, "the trained model is still infini, segment 4")
    if len(moved) == 2:
        # AdamW's first step moves every parameter by about lr × its multiplier
        check(0.5e-3 < moved[None] < 2e-3, f"gates moved {moved[None]:.3g} at the default 10 × lr 1e-4")
        check(0.05 < moved["1000"] < 0.2, f"gates moved {moved['1000']:.3g} at --own-lr-scale 1000")

finish("test_infini_cli")
