"""test_memoryformer_cli — MemoryFormer through the command-line tool (METHODS.md §4, §6).

1. `init-model --arch memoryformer` writes the §6 layout: the keys (hash_bits, block_hash_bits,
   weighting, temperature, layer_norm_epsilon, feed_forward_length = K·τ₂), the tensors with their
   3-D shapes (attn_qkv_table [3D, 2^τ, K], ffn_mem1_table [K·τ₂, 2^τ, K], ffn_mem2_table [D, 2^τ₂,
   K]), biases present by default and absent with --no-bias, tables f16 with --type f16 and f32 with
   --type q8_0 (dense matrices q8_0); `info` prints the keys; `generate`, `perplexity` run it, also
   with a bounded cache (--kv sink); greedy text is the same whatever the thread count.
2. `train --init` on a MemoryFormer: the loss falls over 12 steps on a book; the checkpoint resumes;
   the trained file opens and generates. tool_mf_buckets (bench/mf-buckets) counts every token once
   per chunk of every table, and refuses a llama model.
3. Bad input → exit 1 naming the key or tensor, nothing else crashes: hash_bits 0 and 17, a
   block_hash_bits of 17, an unknown weighting, a temperature of 0, a table of the wrong shape
   (another τ), a table of a block type (q8_0), a missing table, head_count_kv ≠ head_count,
   embedding_length not a multiple of τ, feed_forward_length ≠ K·τ₂; the optional keys' defaults;
   bad init-model flags → exit 2, impossible shapes → exit 1, nothing written.
"""
import json
import os
import struct
import subprocess
import tempfile

import numpy as np

import gguf_tiny
from gguf_tiny import set_key, tensors
from checks import check, finish

BIN = os.environ["MSRNN_BIN"]
SHARED = os.environ["MSRNN_SHARED"]
SRC = os.environ.get("MSRNN_SOURCE_DIR", ".")
VOCAB = os.path.join(SRC, "models", "default.gguf")
BOOK = os.path.join(SHARED, "data", "gutenberg", "pg55.txt")
D, LAYERS, H = 32, 2, 2
SHAPE = ["--dim", str(D), "--layers", str(LAYERS), "--heads", str(H), "--ctx", "128"]


def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, errors="replace", timeout=600)


def tail(r):
    return r.stderr[-400:]


def u32(v):
    return gguf_tiny.GGUF_U32, struct.pack("<I", v)


def f32(v):
    return gguf_tiny.GGUF_F32, struct.pack("<f", v)


def sstr(s):
    b = s.encode()
    return gguf_tiny.GGUF_STR, struct.pack("<Q", len(b)) + b


def main():
    tmp = tempfile.mkdtemp(prefix="msrnn-mf-")
    P = lambda n: os.path.join(tmp, n)  # noqa: E731
    gen = ["-p", "It was a dark and stormy night", "-n", "16", "--temp", "0", "--ignore-eos"]

    # 1. init-model
    r = run("init-model", "--vocab-from", VOCAB, "--arch", "memoryformer", *SHAPE, "--hash-bits", "4",
            "--seed", "3", "-o", P("mf.gguf"))
    check(r.returncode == 0, f"init-model --arch memoryformer: {tail(r)}")
    g = gguf_tiny.read(P("mf.gguf"))
    K, tau, tau2 = D // 4, 4, 6
    want_keys = {"memoryformer.hash_bits": 4, "memoryformer.block_hash_bits": 6,
                 "memoryformer.weighting": b"paper", "memoryformer.feed_forward_length": K * tau2,
                 "memoryformer.attention.head_count_kv": H}
    for k, v in want_keys.items():
        check(gguf_tiny.value(g, k) == v, f"{k} = {gguf_tiny.value(g, k)!r}, want {v!r}")
    check(abs(gguf_tiny.value(g, "memoryformer.temperature") - 1) < 1e-7, "temperature 1")
    t = tensors(g)
    shapes = {"blk.0.attn_qkv_table": [3 * D, 2 ** tau, K], "blk.1.ffn_mem1_table": [K * tau2, 2 ** tau, K],
              "blk.1.ffn_mem2_table": [D, 2 ** tau2, K], "blk.0.attn_qkv_bias": [3 * D],
              "blk.0.ffn_mem1_bias": [K * tau2], "blk.0.ffn_mem2_bias": [D], "blk.0.ffn_ln.weight": [K * tau2],
              "blk.0.ffn_ln.bias": [K * tau2]}
    for name, ne in shapes.items():
        check(name in t and t[name]["ne"] == ne and t[name]["type"] == 0,
              f"{name}: {t.get(name, {}).get('ne')} type {t.get(name, {}).get('type')}, want {ne} f32")
    check(not any(n.startswith("blk.0.attn_q.") or n.startswith("blk.0.attn_output") or "ffn_gate" in n
                  for n in t), "no dense projection in a block")
    r = run("init-model", "--vocab-from", VOCAB, "--arch", "memoryformer", *SHAPE, "--hash-bits", "8",
            "--block-hash-bits", "9", "--weighting", "code", "--no-bias", "--type", "f16", "-o", P("mf8.gguf"))
    check(r.returncode == 0, f"init-model τ 8 code f16: {tail(r)}")
    if r.returncode == 0:
        g8 = gguf_tiny.read(P("mf8.gguf"))
        t8 = tensors(g8)
        check(not any(n.endswith("_bias") for n in t8), "--no-bias: no bias tensors")
        check(t8["blk.0.attn_qkv_table"]["ne"] == [3 * D, 256, D // 8] and t8["blk.0.attn_qkv_table"]["type"] == 1,
              f"τ 8 qkv table {t8['blk.0.attn_qkv_table']['ne']} type {t8['blk.0.attn_qkv_table']['type']}")
        check(t8["blk.0.ffn_mem2_table"]["ne"] == [D, 512, D // 8], "τ₂ 9: mem2 table [D, 512, K]")
        check(gguf_tiny.value(g8, "memoryformer.weighting") == b"code", "weighting code")
    r = run("init-model", "--vocab-from", VOCAB, "--arch", "memoryformer", *SHAPE, "--hash-bits", "4",
            "--type", "q8_0", "-o", P("mfq8.gguf"))
    check(r.returncode == 0, f"init-model q8_0: {tail(r)}")
    if r.returncode == 0:
        tq = tensors(gguf_tiny.read(P("mfq8.gguf")))
        check(tq["blk.0.attn_qkv_table"]["type"] == 0 and tq["token_embd.weight"]["type"] == 8,
              "q8_0: tables f32, dense matrices q8_0")
    r = run("info", P("mf.gguf"))
    check(r.returncode == 0 and "memoryformer.hash_bits" in r.stdout and "memoryformer.weighting" in r.stdout,
          f"info prints the keys: {r.stdout[-300:]}{tail(r)}")
    outs = []
    for f in ("mf.gguf", "mf8.gguf", "mfq8.gguf"):
        for threads in ("1", "2"):
            r = run("generate", "-m", P(f), *gen, "-t", threads)
            check(r.returncode == 0 and len(r.stdout) > 10, f"generate on {f} -t {threads}: {tail(r)}")
            outs.append(r.stdout)
    check(outs[0] == outs[1] and outs[2] == outs[3] and outs[4] == outs[5],
          "greedy text independent of the thread count")
    r = run("generate", "-m", P("mf.gguf"), *gen, "-t", "1", "--kv", "sink", "--kv-size", "8")
    check(r.returncode == 0 and len(r.stdout) > 10, f"generate with --kv sink: {tail(r)}")
    text = open(BOOK, encoding="utf-8", errors="replace").read()[:6000]
    open(P("text.txt"), "w").write(text)
    r = run("perplexity", "-m", P("mf.gguf"), "-f", P("text.txt"), "--ctx", "128", "-t", "2", "--json")
    try:
        pp = json.loads(r.stdout) if r.returncode == 0 else {}
    except ValueError:
        pp = {}
    check(pp.get("ppl", 0) > 1 and pp.get("n_tokens", 0) > 500, f"perplexity: {r.stdout[:200]} {tail(r)}")

    # 2. train --init, resume
    r = run("tokenize-corpus", "-m", VOCAB, "-o", P("book.bin"), BOOK)
    check(r.returncode == 0, f"tokenize-corpus: {tail(r)}")
    targs = ["train", "--init", P("mf.gguf"), "--train", P("book.bin"), "-o", P("trained.gguf"), "--ctx", "64",
             "--batch", "2", "--steps", "12", "--warmup", "2", "--lr", "6e-3", "--eval-every", "0",
             "--ckpt-every", "6", "-t", "2", "--json"]
    r = run(*targs)
    check(r.returncode == 0, f"train a MemoryFormer: {tail(r)}")
    try:
        log = open(P("trained.gguf") + ".log.csv").read().split("\n")[1:]
        losses = [float(line.split(",")[1]) for line in log if line]
    except (OSError, ValueError, IndexError):
        losses = []
    check(len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3]) - 0.3,
          f"the loss falls over 12 steps: {losses}")
    r = run("generate", "-m", P("trained.gguf"), *gen, "-t", "1")
    check(r.returncode == 0 and len(r.stdout) > 10, f"generate on the trained MemoryFormer: {tail(r)}")
    if os.path.exists(P("trained.gguf")):
        os.remove(P("trained.gguf"))
    r = run(*(targs[:targs.index("--steps")] + ["--resume", "-t", "2"]))
    check(r.returncode == 0 and os.path.exists(P("trained.gguf")), f"train --resume: {tail(r)}")

    # bucket counts (bench/mf-buckets' tool): every chunk of every memory layer counts each token once
    tool = os.path.join(os.environ.get("MSRNN_BUILD_DIR", os.path.join(SRC, "build")), "tests", "tool_mf_buckets")
    r = subprocess.run([tool, P("mf.gguf"), P("book.bin"), "600", "128", P("counts.tsv"), "2"], capture_output=True,
                       text=True, timeout=600)
    sums, rows = {}, {}
    if r.returncode == 0:
        for line in open(P("counts.tsv")):
            if line.startswith("#"):
                continue
            layer, which, chunk, _, count = line.split("\t")
            key = (layer, which, chunk)
            sums[key] = sums.get(key, 0) + int(count)
            rows[key] = rows.get(key, 0) + 1
    want_rows = {"qkv": 2 ** tau, "mem1": 2 ** tau, "mem2": 2 ** tau2}
    check(r.returncode == 0 and len(sums) == LAYERS * 3 * K and set(sums.values()) == {600}
          and all(rows[k] == want_rows[k[1]] for k in rows),
          f"tool_mf_buckets: {len(sums)} (layer, table, chunk) sums {sorted(set(sums.values()))[:5]}: {r.stderr[-300:]}")
    r = subprocess.run([tool, VOCAB, P("book.bin"), "100", "64", P("c2.tsv")],
                       capture_output=True, text=True, timeout=600)
    check(r.returncode == 1 and "not a memoryformer" in r.stderr, f"tool_mf_buckets on a llama model: {r.stderr}")

    # 3. broken files
    def broken(name, edit, base="mf.gguf"):
        gb = gguf_tiny.read(P(base))
        edit(gb)
        gguf_tiny.write(P(name), gb)
        return P(name)

    def drop(name):
        return lambda gb: gb.update(tensors=[x for x in gb["tensors"] if x["name"] != name])

    def drop_key(key):
        return lambda gb: gb.update(kvs=[kv for kv in gb["kvs"] if kv[0] != key])

    def retable(name, ne, ttype=0):
        def edit(gb):
            for x in gb["tensors"]:
                if x["name"] == name:
                    n = int(np.prod(ne))
                    x.update(ne=ne, type=ttype,
                             data=np.full(n, 0.1, "<f4").tobytes() if ttype == 0 else bytes(n // 32 * 34))
        return edit

    cases = [
        ("bits0.gguf", lambda gb: set_key(gb, "memoryformer.hash_bits", *u32(0)), "memoryformer.hash_bits"),
        ("bits17.gguf", lambda gb: set_key(gb, "memoryformer.hash_bits", *u32(17)), "memoryformer.hash_bits"),
        ("bits2_17.gguf", lambda gb: set_key(gb, "memoryformer.block_hash_bits", *u32(17)),
         "memoryformer.block_hash_bits"),
        ("nobits.gguf", drop_key("memoryformer.hash_bits"), "memoryformer.hash_bits"),
        ("weighting.gguf", lambda gb: set_key(gb, "memoryformer.weighting", *sstr("papers")),
         "memoryformer.weighting"),
        ("noweighting.gguf", drop_key("memoryformer.weighting"), "memoryformer.weighting"),
        ("temp0.gguf", lambda gb: set_key(gb, "memoryformer.temperature", *f32(0.0)), "memoryformer.temperature"),
        ("tau8.gguf", lambda gb: (set_key(gb, "memoryformer.hash_bits", *u32(8)),
                                  drop_key("memoryformer.feed_forward_length")(gb)), "blk.0.attn_qkv_table"),
        ("qkv_shape.gguf", retable("blk.1.attn_qkv_table", [3 * D, 32, K]), "blk.1.attn_qkv_table"),
        ("qkv_2d.gguf", retable("blk.0.attn_qkv_table", [3 * D, 16 * K]), "blk.0.attn_qkv_table"),
        ("mem2_shape.gguf", retable("blk.0.ffn_mem2_table", [D, 2 ** tau, K]), "blk.0.ffn_mem2_table"),
        ("q8_table.gguf", retable("blk.0.ffn_mem1_table", [K * tau2, 2 ** tau, K], 8), "blk.0.ffn_mem1_table"),
        ("no_table.gguf", drop("blk.1.ffn_mem1_table"), "blk.1.ffn_mem1_table"),
        ("no_ln.gguf", drop("blk.0.ffn_ln.bias"), "blk.0.ffn_ln.bias"),
        ("gqa.gguf", lambda gb: set_key(gb, "memoryformer.attention.head_count_kv", *u32(1)), "head_count_kv"),
        ("ffn.gguf", lambda gb: set_key(gb, "memoryformer.feed_forward_length", *u32(K * tau2 + 1)),
         "feed_forward_length"),
        ("dim.gguf", lambda gb: set_key(gb, "memoryformer.hash_bits", *u32(5)), "hash_bits"),
    ]
    for name, edit, what in cases:
        path = broken(name, edit)
        r = run("generate", "-m", path, *gen, "-t", "1")
        check(r.returncode == 1 and what in r.stderr, f"{name}: exit {r.returncode} (want 1), names {what}: {tail(r)}")
    # the optional keys' defaults: block_hash_bits τ + 2, temperature 1, LayerNorm ε 1e-5, K·τ₂
    ref = run("generate", "-m", P("mf.gguf"), *gen, "-t", "1")
    for key in ("memoryformer.block_hash_bits", "memoryformer.temperature",
                "memoryformer.attention.layer_norm_epsilon", "memoryformer.feed_forward_length"):
        r = run("generate", "-m", broken("nokey.gguf", drop_key(key)), *gen, "-t", "1")
        check(r.returncode == 0 and r.stdout == ref.stdout, f"{key} absent: its default, the same text: {tail(r)}")
    # the other weighting runs, and changes the model
    r = run("generate", "-m", broken("code.gguf", lambda gb: set_key(gb, "memoryformer.weighting", *sstr("code"))),
            *gen, "-t", "1")
    check(r.returncode == 0 and r.stdout != ref.stdout, f"weighting code runs, other text: {tail(r)}")
    for args, what in [(["--hash-bits", "17"], "--hash-bits"), (["--hash-bits", "0"], "--hash-bits"),
                       (["--weighting", "cod"], "--weighting"), (["--temperature", "0"], "--temperature"),
                       (["--block-hash-bits", "x"], "--block-hash-bits")]:
        r = run("init-model", "--vocab-from", VOCAB, "--arch", "memoryformer", *SHAPE, *args, "-o", P("bad.gguf"))
        check(r.returncode == 2 and what in r.stderr and not os.path.exists(P("bad.gguf")),
              f"init-model {' '.join(args)}: exit {r.returncode} (want 2): {tail(r)}")
    for args, what in [(["--hash-bits", "5"], "multiple"), (["--kv-heads", "1"], "kv heads")]:
        r = run("init-model", "--vocab-from", VOCAB, "--arch", "memoryformer", *SHAPE, *args, "-o", P("bad.gguf"))
        check(r.returncode == 1 and what in r.stderr and not os.path.exists(P("bad.gguf")),
              f"init-model {' '.join(args)}: exit {r.returncode} (want 1), names {what!r}: {tail(r)}")
    finish("test_memoryformer_cli")


if __name__ == "__main__":
    main()
