#!/usr/bin/python3
"""make-models.py — random-weight Llama models in the shapes of llama2.c's TinyStories checkpoints, for speed.

Speed depends on a model's shape and weight type, not on what it learned, so the benchmark models are random:
  stories15M   dim 288, 6 layers, 6 heads (head dim 48), FFN 768, vocab 32000
  stories110M  dim 768, 12 layers, 12 heads (head dim 64), FFN 2048, vocab 32000
both with context 1024 (so pp512 + tg128 fits), the Llama 2 SentencePiece tokenizer, an untied output head
(as llama.cpp's convert-llama2c writes them), and every llama.cpp metadata key a llama model needs. Each shape
is written as f32, f16 and q8_0 (matrices in that type, norm gains always f32) from the same f32 draw, to
bench/out/models/<name>-<type>.gguf. Existing files are kept unless --force.

The scales are chosen so greedy decoding is a fair correctness check, not a degenerate one: matrices have
std 0.6 / sqrt(dim) (0.035 for stories15M, 0.022 for stories110M: attention scores of a few units and block
outputs of the order of the residual, so the context matters and the output is not one repeated token, yet
attention is not so sharp that a rounding difference flips which position it picks), norm gains are
1 + N(0, 0.1), and the final norm gain is about 5 so that logits spread over a few units (std ~3).
`--check` runs llama.cpp's greedy decoder (bench/llama.cpp/build/llamacpp-greedy) on each file and prints
the distinct-token count and the smallest top-2 logit margins.

usage: /usr/bin/python3 bench/make-models.py [--only stories15M] [--types f32,f16,q8_0] [--force] [--check]
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "ref"))
import ggufpy as g  # noqa: E402

SHAPES = {
    # name: (dim, n_layers, n_heads, n_kv_heads, ffn_dim, vocab, n_ctx)
    "stories15M": (288, 6, 6, 6, 768, 32000, 1024),
    "stories110M": (768, 12, 12, 12, 2048, 32000, 1024),
}
FILE_TYPE = {"f32": 0, "f16": 1, "q8_0": 7}  # general.file_type: LLAMA_FTYPE_ALL_F32 / MOSTLY_F16 / MOSTLY_Q8_0
MATRIX_GAIN = 0.6  # matrix std = MATRIX_GAIN / sqrt(dim)
EMBD_STD = 0.5
OUTPUT_NORM_GAIN = 5.0
TOKENIZER = os.path.join(ROOT, "..", "shared", "data", "tokenizers", "llama2", "tokenizer.model")
OUT_DIR = os.path.join(ROOT, "bench", "out", "models")
GREEDY = os.path.join(ROOT, "bench", "llama.cpp", "build", "llamacpp-greedy")
CHECK_PROMPT = "Once upon a time, there was a little girl named Lily. She loved to play outside"


def draw_weights(name):
    """One f32 draw per shape (seeded by the name), shared by every type written from it."""
    dim, n_layers, n_heads, n_kv, ffn, vocab, _ = SHAPES[name]
    hd = dim // n_heads
    rng = np.random.default_rng(sum(map(ord, name)))

    def mat(rows, cols, std=MATRIX_GAIN / np.sqrt(dim)):
        return rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(std)

    def gain(n, mean=1.0):
        return (mean * (1 + 0.1 * rng.standard_normal(n))).astype(np.float32)

    w = {"token_embd.weight": mat(vocab, dim, EMBD_STD)}
    for i in range(n_layers):
        b = f"blk.{i}."
        w[b + "attn_norm.weight"] = gain(dim)
        w[b + "attn_q.weight"] = mat(n_heads * hd, dim)  # (H*d, D)
        w[b + "attn_k.weight"] = mat(n_kv * hd, dim)  # (H_kv*d, D)
        w[b + "attn_v.weight"] = mat(n_kv * hd, dim)  # (H_kv*d, D)
        w[b + "attn_output.weight"] = mat(dim, n_heads * hd)  # (D, H*d)
        w[b + "ffn_norm.weight"] = gain(dim)
        w[b + "ffn_gate.weight"] = mat(ffn, dim)  # (F, D)
        w[b + "ffn_up.weight"] = mat(ffn, dim)  # (F, D)
        w[b + "ffn_down.weight"] = mat(dim, ffn)  # (D, F)
    w["output_norm.weight"] = gain(dim, OUTPUT_NORM_GAIN)
    w["output.weight"] = mat(vocab, dim)  # (V, D)
    return w


def write_model(name, ttype, weights, path):
    dim, n_layers, n_heads, n_kv, ffn, vocab, n_ctx = SHAPES[name]
    w = g.GGUFWriter()
    w.add("general.architecture", g.STR, "llama")
    w.add("general.name", g.STR, f"{name} (random weights, msrnn bench)")
    w.add("general.file_type", g.U32, FILE_TYPE[ttype])
    w.add("llama.context_length", g.U32, n_ctx)
    w.add("llama.embedding_length", g.U32, dim)
    w.add("llama.block_count", g.U32, n_layers)
    w.add("llama.feed_forward_length", g.U32, ffn)
    w.add("llama.attention.head_count", g.U32, n_heads)
    w.add("llama.attention.head_count_kv", g.U32, n_kv)
    w.add("llama.rope.freq_base", g.F32, 10000.0)
    w.add("llama.attention.layer_norm_rms_epsilon", g.F32, 1e-5)
    w.add("llama.rope.dimension_count", g.U32, dim // n_heads)
    w.add("llama.vocab_size", g.U32, vocab)
    sp = g.add_spm_vocab(w, TOKENIZER)
    assert sp.get_piece_size() == vocab, f"{TOKENIZER}: {sp.get_piece_size()} pieces, expected {vocab}"
    for tname, arr in weights.items():
        w.add_tensor(tname, arr, g.T_F32 if arr.ndim == 1 else g.TYPE_NAMES[ttype])
    tmp = path + ".tmp"
    w.write(tmp)
    os.replace(tmp, path)


def check(path, n=64):
    """Greedy-decode with llama.cpp and summarise how decisive the choices were."""
    if not os.access(GREEDY, os.X_OK):
        print(f"  (no {GREEDY}: run bench/setup-llamacpp.sh for --check)")
        return None
    r = subprocess.run([GREEDY, "-m", path, "-p", CHECK_PROMPT, "-n", str(n), "-t", "2"],
                       capture_output=True, text=True, check=True)
    res = json.loads(r.stdout)
    ids, margins = res["ids"], sorted(res["margins"])
    print(f"  {os.path.basename(path)}: {len(set(ids))} distinct of {len(ids)} greedy tokens, "
          f"top-2 margin min {margins[0]:.3f}, 2nd {margins[1]:.3f}, median {margins[len(margins) // 2]:.3f}")
    print(f"    ids[:24] {ids[:24]}")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated shape names (default: all)")
    ap.add_argument("--types", default="f32,f16,q8_0")
    ap.add_argument("--force", action="store_true", help="rewrite files that exist")
    ap.add_argument("--check", action="store_true", help="greedy-decode each file with llama.cpp")
    ap.add_argument("--out", default=OUT_DIR)
    a = ap.parse_args()
    names = a.only.split(",") if a.only else list(SHAPES)
    types = a.types.split(",")
    os.makedirs(a.out, exist_ok=True)
    for name in names:
        if name not in SHAPES:
            sys.exit(f"make-models: unknown shape {name!r} (have {', '.join(SHAPES)})")
        paths = {t: os.path.join(a.out, f"{name}-{t}.gguf") for t in types}
        todo = [t for t in types if a.force or not os.path.exists(paths[t])]
        weights = draw_weights(name) if todo else None
        for t in types:
            if t in todo:
                write_model(name, t, weights, paths[t])
                print(f"wrote {paths[t]} ({os.path.getsize(paths[t]) / 1e6:.1f} MB)")
            if a.check:
                check(paths[t])
        del weights


if __name__ == "__main__":
    main()
