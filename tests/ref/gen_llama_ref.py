"""gen_llama_ref — random-weight Llama models and their float64 PyTorch reference logits.

Written from the architecture definition in shared/docs/METHODS.md §0, not from msrnn's C:
  x = token_embd[t]; per layer  x += W_o Attn(RoPE(W_q h), RoPE(W_k h), W_v h),  h = RMSNorm(x)·w_attn
                                x += W_down(silu(W_gate h) ⊙ W_up h),           h = RMSNorm(x)·w_ffn
  logits = W_out RMSNorm(x)·w_out_norm   (W_out = token_embd when output.weight is absent)
  RMSNorm(x) = x / sqrt(mean(x²) + eps); RoPE rotates adjacent pairs (x[2i], x[2i+1]) by
  pos·base^(-2i/d); causal softmax(q·k/sqrt(d)); query head h reads kv head h // (H/H_kv).

Usage: gen_llama_ref.py OUT_DIR   — writes OUT_DIR/llama/{NAME.gguf, NAME.ref, MANIFEST.tsv}.

The same float32 master weights of a shape are written in each weight type; the reference for a
file is computed (float64) from the weights dequantised exactly as stored (ggufpy.add_tensor), so
it is the answer a correct engine computing in exact arithmetic would give. Norm weights stay f32,
as llama.cpp keeps them. Quant blocks run along ne[0] (the input dim), so Q8_0/Q4_0 need every
quantised matrix's input dim to be a multiple of 32. Two ways are used here: shape gqa64 has
FFN 1056 (33 blocks, not a multiple of 64) so every matrix, ffn_down included, is quantised; shape
gqa48 has FFN 344 (not a multiple of 32), so its quantised files keep ffn_down in F16 (a
mixed-type file, as llama.cpp's quantiser produces when a row does not fit the block size).

Q8_0/Q4_0 files also get "decode-sim" references (the decode section below): msrnn's decode path
rounds every quantised matmul's input to Q8_0 blocks, and q8_0_act does the same from its spec.
msrnn's f32 activations differ from these float64 ones by ~1e-7, so now and then one of them
rounds the other way (a boundary flip); the flip changes that token's logits by ~1e-2 and, through
the KV cache, every later token's too. Hence the isolated decode chunks: each one starts from the
plain (prompt-path) cache, so a flip stays inside its chunk and the others can be held tightly.

NAME.ref, little-endian:
  char magic[4] = "MREF"; u32 version = 2; u32 n_tokens; u32 n_vocab; u32 n_gen;
  u32 n_steps                          0 for float weight types; > 0 for Q8_0/Q4_0 files, which
                                       carry the decode section below
  i32 tokens[n_tokens]                 the prompt (tokens[0] = BOS)
  f32 logits[n_tokens][n_vocab]        reference logits after each prompt token
  i32 gen[n_gen]                       greedy continuation: gen[0] = argmax(logits[n_tokens-1]),
                                       gen[i] = argmax after feeding gen[i-1]
  f32 margin[n_gen]                    top1 - top2 of the reference logits that chose gen[i]
  decode section, only when n_steps > 0. "decode-sim" is the same float64 forward, but every
  matmul whose weight is Q8_0/Q4_0 first rounds its input, per token, to Q8_0 blocks (q8_0_act);
  matmuls with f32/f16 weights see their input unrounded. That is what msrnn's decode path (fewer
  than DECODE_BELOW tokens in one eval call) computes; its prompt path computes the plain forward.
  f32 sim_logits[n_tokens][n_vocab]    decode-sim over the whole prompt
  i32 step_start[n_steps]; i32 step_len[n_steps]
                                       isolated decode chunks: the prompt's positions from
                                       DECODE_BELOW on, cut into chunks of 1..DECODE_BELOW-1
  f32 step_logits[sum(step_len)][n_vocab]
                                       for each chunk: the plain forward of tokens[:start] (the
                                       prompt path), then decode-sim of tokens[start:start+len]
                                       fed as one call
  i32 cont_gen[n_gen]; f32 cont_logits[n_gen][n_vocab]
                                       greedy continuation after the plain prompt, decoding one
                                       token at a time with decode-sim: cont_gen[i] =
                                       argmax(cont_logits[i]); cont_logits[0] = logits[n_tokens-1]

MANIFEST.tsv: one line per model (after '#' comment lines), tab-separated:
  name  type  n_tokens  n_gen  sim_act  sim_kvf16  description
  type is the weight type of the file's matrices (test_llama_ref.c maps it to a tolerance);
  sim_act / sim_kvf16 are the max |logit error| / max|ref logit| this reference shows when it
  itself takes the shortcuts llama.cpp takes on the CPU: sim_act rounds every matmul input to the
  weight type's "vec_dot_type" (Q8_0 blocks for Q8_0/Q4_0 weights, f16 for F16, bf16 for BF16,
  nothing for F32); sim_kvf16 rounds K and V (the kv_f16 cache) and, as llama.cpp's f16 attention
  products do, q and the attention probabilities to f16. They show what a correct engine taking
  those shortcuts may deviate by: they justify the tolerances, they do not set them.
"""
import os
import struct
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ggufpy as G  # noqa: E402

torch.set_num_threads(2)
HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("MSRNN_SHARED", os.path.join(HERE, "..", "..", "..", "shared"))
TOK_GUT8K = os.path.join(SHARED, "data", "tokenizers", "gutenberg8k", "gut8k.model")
TOK_LLAMA2 = os.path.join(SHARED, "data", "tokenizers", "llama2", "tokenizer.model")

PROMPT = (
    "Dorothy lived in the midst of the great Kansas prairies, with Uncle Henry, who was a "
    "farmer, and Aunt Em, who was the farmer's wife. Their house was small, for the lumber to "
    "build it had to be carried by wagon many miles. There were four walls, a floor and a roof, "
    "which made one room; and this room contained a rusty looking cookstove, a cupboard for the "
    "dishes, a table, three or four chairs, and the beds. Uncle Henry and Aunt Em had a big bed "
    "in one corner, and Dorothy a little bed in another corner. There was no garret at all, and "
    "no cellar--except a small hole dug in the ground, called a cyclone cellar, where the family "
    "could go in case one of those great whirlwinds arose, mighty enough to crush any building "
    "in its path. In 1900, 42% of it cost $3.75!"
)

# name, shape, weight types, prompt length
SHAPES = [
    # MHA, head dim 32, tied output, FFN 200 (not a multiple of 32): f32 only. eps 1e-4 on
    # embeddings of rms 0.12 (mean x² 0.014), so an engine ignoring the eps key shows.
    dict(name="mha32_tied", dim=128, n_layers=2, n_heads=4, n_kv_heads=4, ffn=200, tok="gut8k",
         tied=True, rope_base=10000.0, eps=1e-4, n_tokens=120, types=["f32"]),
    # GQA 4/2 (h // 2 differs from h % 2), head dim 48, untied, rope base 500000, FFN 344:
    # quantised files keep ffn_down (input dim 344) in F16.
    dict(name="gqa48_untied", dim=192, n_layers=3, n_heads=4, n_kv_heads=2, ffn=344, tok="gut8k",
         tied=False, rope_base=500000.0, eps=1e-6, n_tokens=150, types=["f32", "q8_0", "q4_0"]),
    # GQA 6/2 (group 3), head dim 64, untied, FFN 1056 = 33 blocks: every type, fully quantised.
    dict(name="gqa64", dim=384, n_layers=4, n_heads=6, n_kv_heads=2, ffn=1056, tok="gut8k",
         tied=False, rope_base=10000.0, eps=1e-5, n_tokens=200,
         types=["f32", "f16", "bf16", "q8_0", "q4_0"]),
    # MHA 3 heads of 64, tied, Llama 2 vocabulary (32000), FFN 416 = 13 blocks: every type.
    dict(name="mha64_llama2", dim=192, n_layers=2, n_heads=3, n_kv_heads=3, ffn=416, tok="llama2",
         tied=True, rope_base=10000.0, eps=1e-5, n_tokens=100,
         types=["f32", "f16", "bf16", "q8_0", "q4_0"]),
]
N_GEN = 64
N_CTX = 512
# Sizes (cycled) of the isolated decode chunks stored with quantised files: all below DECODE_BELOW.
STEP_SIZES = [1, 7, 2, 5, 3, 6, 4]


# ---- random master weights (float32, PyTorch [out, in] order) -------------------------------------

def make_weights(cfg, n_vocab, seed):
    rng = np.random.default_rng(seed)
    D, F = cfg["dim"], cfg["ffn"]
    d = D // cfg["n_heads"]
    Dkv = cfg["n_kv_heads"] * d

    def mat(out, inp, gain):  # std gain/sqrt(in): an input of rms 1 gives outputs of rms ~gain
        return (rng.standard_normal((out, inp)) * gain / np.sqrt(inp)).astype(np.float32)

    def norm(n):  # around 1, with noise, so a misplaced norm weight shows
        return (1.0 + 0.15 * rng.standard_normal(n)).astype(np.float32)

    w = {}
    # Logits should be informative, neither flat nor saturated: std ~2-3. Tied, they are
    # token_embd · RMSNorm(x) (rms ~1), so token_embd gets std 0.12 (logit std 0.12·sqrt(D));
    # untied, output.weight has gain 3 and token_embd std 0.5.
    w["token_embd.weight"] = (rng.standard_normal((n_vocab, D)) * (0.12 if cfg["tied"] else 0.5)
                              ).astype(np.float32)
    for l in range(cfg["n_layers"]):
        p = f"blk.{l}."
        w[p + "attn_norm.weight"] = norm(D)
        w[p + "attn_q.weight"] = mat(D, D, 1.3)  # scores q·k/sqrt(d) of std ~gain² ≈ 1.7
        w[p + "attn_k.weight"] = mat(Dkv, D, 1.3)
        w[p + "attn_v.weight"] = mat(Dkv, D, 1.0)
        w[p + "attn_output.weight"] = mat(D, D, 0.5)
        w[p + "ffn_norm.weight"] = norm(D)
        w[p + "ffn_gate.weight"] = mat(F, D, 1.5)
        w[p + "ffn_up.weight"] = mat(F, D, 1.0)
        w[p + "ffn_down.weight"] = mat(D, F, 0.8)
    w["output_norm.weight"] = norm(D)
    if not cfg["tied"]:
        w["output.weight"] = mat(n_vocab, D, 3.0)
    return w


def write_gguf(path, cfg, w, wtype, tok_path):
    """Writes the model; returns (dequantised weights as float64 tensors, per-matrix type names)."""
    d = cfg["dim"] // cfg["n_heads"]
    g = G.GGUFWriter()
    g.add("general.architecture", G.STR, "llama")
    g.add("general.name", G.STR, cfg["name"] + "-" + wtype)
    g.add("llama.context_length", G.U32, N_CTX)
    g.add("llama.embedding_length", G.U32, cfg["dim"])
    g.add("llama.block_count", G.U32, cfg["n_layers"])
    g.add("llama.feed_forward_length", G.U32, cfg["ffn"])
    g.add("llama.attention.head_count", G.U32, cfg["n_heads"])
    g.add("llama.attention.head_count_kv", G.U32, cfg["n_kv_heads"])
    g.add("llama.rope.freq_base", G.F32, cfg["rope_base"])
    g.add("llama.attention.layer_norm_rms_epsilon", G.F32, cfg["eps"])
    g.add("llama.rope.dimension_count", G.U32, d)
    g.add("llama.vocab_size", G.U32, w["token_embd.weight"].shape[0])
    G.add_spm_vocab(g, tok_path)
    deq, types = {}, {}
    for name, a in w.items():
        t = wtype
        if a.ndim == 1:
            t = "f32"  # norm weights stay f32
        elif t in ("q8_0", "q4_0") and a.shape[1] % 32:
            t = "f16"  # input dim not a multiple of the 32-element block
        types[name] = t
        deq[name] = torch.from_numpy(g.add_tensor(name, a, G.TYPE_NAMES[t]).astype(np.float64))
    g.write(path)
    return deq, types


# ---- the reference forward (float64) -------------------------------------------------------------

def round_f16(x):
    return x.to(torch.float16).to(x.dtype)


def round_bf16(x):  # round to nearest even on the top 16 bits of the f32
    return torch.from_numpy(G.dequantize(G.f32_to_bf16_bits(x.numpy()).tobytes(), G.T_BF16,
                                         x.shape).astype(np.float64))


def q8_0_act(x, stats=None):
    """Rounds the last dim of x to Q8_0 blocks and back, as a matmul input is quantised for the
    integer dot products of the decode path (and llama.cpp's vec_dot_type): per block of 32, in
    float32, amax = max|x|, d = amax/127, id = 1/d (0 if d == 0), q = roundf(x*id) rounding half
    away from zero; the block stores fp16(d), so the value used is q * float(fp16(d)). The float32
    steps are numpy's IEEE float32 ops; the rounding itself is done in float64, where t + 0.5 is
    exact (in float32, 0.49999997 + 0.5 would round up to 1). stats, a dict, counts the elements
    rounded ("n") and those whose x*id was exactly halfway ("ties"), where half-away and
    half-even rounding differ (for even floor)."""
    shp = x.shape
    xf = x.numpy().astype(np.float32).reshape(-1, 32)
    amax = np.abs(xf).max(axis=1, keepdims=True)
    d = amax / np.float32(127.0)
    safe = np.where(d != 0, d, np.float32(1.0))
    inv = np.where(d != 0, np.float32(1.0) / safe, np.float32(0.0)).astype(np.float32)
    t = (xf * inv).astype(np.float64)  # the float32 product, exactly
    q = np.trunc(t + np.copysign(0.5, t))  # C roundf
    if stats is not None:
        stats["n"] = stats.get("n", 0) + t.size
        stats["ties"] = stats.get("ties", 0) + int(np.count_nonzero(np.abs(t - np.trunc(t)) == 0.5))
    deq = q * d.astype(np.float16).astype(np.float64)
    return torch.from_numpy(deq.reshape(shp))


# msrnn's matmuls with fewer than this many tokens in one eval call (the decode path) dot Q8_0/Q4_0
# weights against Q8_0-rounded activations; larger ones use f32 activations (sgemm).
DECODE_BELOW = 8
QUANT = ("q8_0", "q4_0")


class Reference:
    """sim_act: round every matmul input to its weight's vec_dot_type (as llama.cpp does).
    decode_sim: round only the inputs of Q8_0/Q4_0 weights, to Q8_0 blocks (msrnn's decode path;
    the inputs of f16 weights, as gqa48's quantised files keep ffn_down, stay unrounded)."""

    def __init__(self, cfg, w, types, sim_act=False, kv_f16=False, decode_sim=False):
        self.cfg, self.w, self.types = cfg, w, types
        self.round_now, self.decode_sim, self.stats = sim_act or decode_sim, decode_sim, {}
        self.D, self.H, self.Hkv = cfg["dim"], cfg["n_heads"], cfg["n_kv_heads"]
        self.d = self.D // self.H
        self.kv_f16 = kv_f16
        self.out_name = "token_embd.weight" if cfg["tied"] else "output.weight"
        i = torch.arange(self.d // 2, dtype=torch.float64)
        self.inv_freq = cfg["rope_base"] ** (-2.0 * i / self.d)  # base^(-2i/d)
        self.cache = [[None, None] for _ in range(cfg["n_layers"])]
        self.n_past = 0

    def fork(self, n, **mode):
        """A new Reference (of the given mode) that has seen this one's first n tokens."""
        r = Reference(self.cfg, self.w, self.types, **mode)
        r.cache = [[k[:n], v[:n]] for k, v in self.cache]
        r.n_past = n
        return r

    def linear(self, x, name):  # x [T, in] @ W[out, in]^T
        if self.round_now:
            t = self.types[name]
            if t in QUANT:
                x = q8_0_act(x, self.stats)
            elif t in ("f16", "bf16") and not self.decode_sim:
                x = (round_f16 if t == "f16" else round_bf16)(x)
        return x @ self.w[name].T

    def rmsnorm(self, x, name):
        return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + self.cfg["eps"]) * self.w[name]

    def rope(self, x, pos):  # x [T, heads, d]; rotate adjacent pairs (x[2i], x[2i+1])
        ang = pos[:, None].to(torch.float64) * self.inv_freq[None, :]  # [T, d/2]
        c, s = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = torch.empty_like(x)
        out[..., 0::2] = x0 * c - x1 * s
        out[..., 1::2] = x0 * s + x1 * c
        return out

    def forward(self, tokens):
        """Feed tokens after those already seen; returns logits [T, n_vocab] (float64)."""
        T = len(tokens)
        pos = torch.arange(self.n_past, self.n_past + T)
        x = self.w["token_embd.weight"][torch.tensor(tokens, dtype=torch.long)]
        g = self.H // self.Hkv
        for l in range(self.cfg["n_layers"]):
            p = f"blk.{l}."
            h = self.rmsnorm(x, p + "attn_norm.weight")
            q = self.rope(self.linear(h, p + "attn_q.weight").view(T, self.H, self.d), pos)
            k = self.rope(self.linear(h, p + "attn_k.weight").view(T, self.Hkv, self.d), pos)
            v = self.linear(h, p + "attn_v.weight").view(T, self.Hkv, self.d)
            if self.kv_f16:
                q, k, v = round_f16(q), round_f16(k), round_f16(v)
            kc, vc = self.cache[l]
            kc = k if kc is None else torch.cat([kc, k])
            vc = v if vc is None else torch.cat([vc, v])
            self.cache[l] = [kc, vc]
            S = kc.shape[0]
            kh = kc[:, torch.arange(self.H) // g, :]  # query head h reads kv head h // g
            vh = vc[:, torch.arange(self.H) // g, :]
            scores = torch.einsum("thd,shd->hts", q, kh) / np.sqrt(self.d)
            mask = torch.arange(S)[None, :] > pos[:, None]  # key position > query position
            scores = scores.masked_fill(mask[None], float("-inf"))
            att = torch.softmax(scores, dim=-1)
            if self.kv_f16:
                att = round_f16(att)
            o = torch.einsum("hts,shd->thd", att, vh).reshape(T, self.D)
            x = x + self.linear(o, p + "attn_output.weight")
            h = self.rmsnorm(x, p + "ffn_norm.weight")
            a = self.linear(h, p + "ffn_gate.weight")
            u = self.linear(h, p + "ffn_up.weight")
            x = x + self.linear(torch.nn.functional.silu(a) * u, p + "ffn_down.weight")
        self.n_past += T
        h = self.rmsnorm(x, "output_norm.weight")
        return self.linear(h, self.out_name)


def greedy(ref, prompt_logits, n_gen, rows=None):
    """Greedy continuation; rows, a list, receives the logits that chose each token."""
    gen, margin = [], []
    last = prompt_logits[-1]
    for i in range(n_gen):
        top = torch.topk(last, 2).values
        t = int(torch.argmax(last))
        gen.append(t)
        margin.append(float(top[0] - top[1]))
        if rows is not None:
            rows.append(last)
        if i + 1 < n_gen:
            last = ref.forward([t])[-1]
    return gen, margin


def decode_steps(ref, tokens):
    """Isolated decode chunks: (starts, lens, logits) where each chunk of STEP_SIZES (cycled) from
    position DECODE_BELOW on is fed with decode-sim after the plain forward of what precedes it.
    ref: the plain Reference after forward(tokens)."""
    starts, lens, out = [], [], []
    p, k = DECODE_BELOW, 0
    while p < len(tokens):
        n = min(STEP_SIZES[k % len(STEP_SIZES)], len(tokens) - p)
        out.append(ref.fork(p, decode_sim=True).forward(tokens[p:p + n]))
        starts.append(p)
        lens.append(n)
        p, k = p + n, k + 1
    return starts, lens, torch.cat(out)


def write_ref(path, tokens, logits, gen, margin, dec=None):
    """dec: None, or (sim_logits, step_start, step_len, step_logits, cont_gen, cont_logits)."""
    T, V = logits.shape

    def f32(a):
        return np.ascontiguousarray(a.numpy() if torch.is_tensor(a) else a, dtype="<f4").tobytes()

    def i32(a):
        return np.asarray(a, dtype="<i4").tobytes()

    with open(path, "wb") as f:
        f.write(b"MREF" + struct.pack("<IIIII", 2, T, V, len(gen), len(dec[1]) if dec else 0))
        f.write(i32(tokens) + f32(logits) + i32(gen) + f32(margin))
        if dec:
            sim_logits, starts, lens, step_logits, cont_gen, cont_logits = dec
            assert sim_logits.shape == (T, V) and step_logits.shape == (sum(lens), V)
            assert len(cont_gen) == len(gen) and cont_logits.shape == (len(gen), V)
            f.write(f32(sim_logits) + i32(starts) + i32(lens) + f32(step_logits) + i32(cont_gen)
                    + f32(cont_logits))


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


def prompt_tokens(sp, n_tokens, n_vocab, seed):
    """BOS + the prompt text, then a few ids from the ends of the vocabulary and random ones, so
    that the last rows of token_embd / output are exercised; exactly n_tokens ids."""
    ids = [sp.bos_id()] + sp.encode(PROMPT)
    rng = np.random.default_rng(seed)
    tail = [n_vocab - 1, 3, n_vocab - 2] + list(rng.integers(3, n_vocab, 8))
    ids = ids[: n_tokens - len(tail)] + tail
    assert len(ids) == n_tokens, (len(ids), n_tokens)
    return [int(t) for t in ids]


def main():
    out = os.path.join(sys.argv[1] if len(sys.argv) > 1 else ".", "llama")
    os.makedirs(out, exist_ok=True)
    t_start = time.time()
    rows = []
    import sentencepiece as spm

    for si, cfg in enumerate(SHAPES):
        tok_path = TOK_GUT8K if cfg["tok"] == "gut8k" else TOK_LLAMA2
        sp = spm.SentencePieceProcessor(model_file=tok_path)
        n_vocab = sp.get_piece_size()
        master = make_weights(cfg, n_vocab, seed=1000 + si)
        tokens = prompt_tokens(sp, cfg["n_tokens"], n_vocab, seed=2000 + si)
        for wtype in cfg["types"]:
            name = f"{cfg['name']}_{wtype}"
            deq, types = write_gguf(os.path.join(out, name + ".gguf"), cfg, master, wtype, tok_path)
            with torch.no_grad():
                ref = Reference(cfg, deq, types)
                logits = ref.forward(tokens)
                dec, extra = None, ""
                if wtype in QUANT:  # the decode section, forked from the plain prompt's cache
                    sref = Reference(cfg, deq, types, decode_sim=True)
                    sim_logits = sref.forward(tokens)
                    starts, lens, step_logits = decode_steps(ref, tokens)
                    cont, after = [], ref.fork(len(tokens), decode_sim=True)
                    cont_gen, _ = greedy(after, logits, N_GEN, cont)
                    dec = (sim_logits, starts, lens, step_logits, cont_gen, torch.stack(cont))
                gen, margin = greedy(ref, logits, N_GEN)
                if dec:
                    n_agree = next((i for i in range(N_GEN) if cont_gen[i] != gen[i]), N_GEN)
                    extra = (f"; decode-sim vs ref {rel_err(sim_logits, logits):.2e}, "
                             f"{sref.stats['ties']} exact .5 ties in {sref.stats['n']} rounded "
                             f"activations, {len(starts)} decode chunks, continuation = ref's for "
                             f"{n_agree} steps")
                # What llama.cpp's shortcuts cost: rounded matmul inputs, an f16 KV cache.
                sim_act = 0.0
                if wtype != "f32":
                    sim_act = rel_err(Reference(cfg, deq, types, sim_act=True).forward(tokens), logits)
                sim_kv = rel_err(Reference(cfg, deq, types, kv_f16=True).forward(tokens), logits)
            write_ref(os.path.join(out, name + ".ref"), tokens, logits, gen, margin, dec)
            scale = float(logits.abs().max())
            p = torch.softmax(logits, dim=-1)
            ent = float(-(p * torch.log(p.clamp_min(1e-300))).sum(-1).mean())
            mixed = sorted({t for t in types.values() if t not in ("f32", wtype)})
            desc = (f"D{cfg['dim']} L{cfg['n_layers']} H{cfg['n_heads']}/{cfg['n_kv_heads']} "
                    f"d{cfg['dim'] // cfg['n_heads']} F{cfg['ffn']} V{n_vocab} "
                    f"{'tied' if cfg['tied'] else 'untied'} base{cfg['rope_base']:g} eps{cfg['eps']:g}"
                    + (f" ffn_down:{','.join(mixed)}" if mixed else ""))
            rows.append((name, wtype, len(tokens), N_GEN, sim_act, sim_kv, desc))
            print(f"{name:22s} {desc}: max|logit| {scale:.2f} std {float(logits.std()):.2f} "
                  f"entropy {ent:.2f} nats, min margin {min(margin):.3g}, "
                  f"sim act {sim_act:.2e} kvf16 {sim_kv:.2e}{extra}", flush=True)
    with open(os.path.join(out, "MANIFEST.tsv"), "w") as f:
        f.write("# written by tests/ref/gen_llama_ref.py; read by tests/test_llama_ref.c\n")
        f.write("# name\ttype\tn_tokens\tn_gen\tsim_act\tsim_kvf16\tdescription\n")
        for r in rows:
            f.write(f"{r[0]}\t{r[1]}\t{r[2]}\t{r[3]}\t{r[4]:.3e}\t{r[5]:.3e}\t{r[6]}\n")
    print(f"gen_llama_ref: {len(rows)} models in {time.time() - t_start:.1f} s -> {out}")


if __name__ == "__main__":
    main()
