"""gen_infini_ref — float64 PyTorch reference of Infini-attention models (METHODS.md §2, file format §6).

Written from the specification, not from msrnn's C. Per layer, the sequence is cut into segments of N
tokens counted from its first token (the last may be partial); for segment s, with q, k, v the
segment's projections BEFORE RoPE:
  sigma(x) = ELU(x) + 1
  A_dot  = causal softmax(RoPE(q)·RoPE(k)/sqrt(d)) v within the segment only, RoPE positions
           restarting at 0 in each segment; query head h reads kv head h // (H/H_kv)
  A_mem  = sigma(q) M_s / (sigma(q)·z_s + 1e-6)      (M, z of kv head h // (H/H_kv))
  A      = sigmoid(beta_h) A_mem + (1 - sigmoid(beta_h)) A_dot, and A = A_dot while s = 0
  then   M_{s+1} = M_s + sigma(k)^T u, z_{s+1} = z_s + sum_t sigma(k_t),
         u = v (linear) or v - sigma(k) M_s / (sigma(k)·z_s + 1e-6) (delta); M_0 = 0, z_0 = 0
  out    = W_o concat_h(A_h); the rest of the block is Llama's (RMSNorm, SwiGLU, head).
Everything in float64 (torch), gradients by autograd through every segment (no detaching).

Self-checks (any failure raises): with one segment covering the input the model equals an independent
plain Llama forward (1e-12); with beta = -inf it equals an independent segment-local attention
forward (a block-diagonal causal mask over the whole sequence, positions restarting per segment;
1e-12); autograd equals a central finite difference along a random direction of every tensor (1e-6
of the gradient's norm).

Usage: gen_infini_ref.py OUT_DIR — writes OUT_DIR/infini/{NAME.gguf, NAME_local.gguf, NAME_llama.gguf,
NAME.ref, MANIFEST.tsv}. NAME_local.gguf is NAME.gguf with every beta = -inf; NAME_llama.gguf holds the
same Llama weights as a `llama` model (for the one-segment comparison).

NAME.ref, little-endian:
  char magic[4] = "INFR"; u32 version = 1; u32 T (tokens of the inference sequence); u32 n_vocab;
  u32 B; u32 Tt (training rows of Tt + 1 tokens); u32 n_tensors; u32 segment; u32 rule (0 linear,
  1 delta)
  i32 tokens[T]                 tokens[0] = BOS
  f64 logits[T][n_vocab]        NAME.gguf on tokens
  f64 logits_local[T][n_vocab]  NAME_local.gguf (beta = -inf) on tokens
  i32 train_tokens[B][Tt + 1]
  f64 loss                      mean cross-entropy of the B·Tt targets
  n_tensors × {char name[48]; u64 n}   every parameter, in GGUF order
  f64 grads[...]                their gradients of loss, in that order
MANIFEST.tsv: '#' comment lines, then per model: name  T  segment  rule  description.
"""
import math
import os
import struct
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ggufpy as G  # noqa: E402

torch.set_num_threads(2)
HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("MSRNN_SHARED", os.path.join(HERE, "..", "..", "..", "shared"))
TOK_GUT8K = os.path.join(SHARED, "data", "tokenizers", "gutenberg8k", "gut8k.model")
EPS_MEM = 1e-6

# T = 4 whole segments and a partial one; odd head counts; MHA and GQA; both rules
MODELS = [
    dict(name="inf_h4x2_linear", dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn=96, segment=8,
         rule=0, T=37, B=2, Tt=27, seed=501),
    dict(name="inf_h3x3_delta", dim=48, n_layers=2, n_heads=3, n_kv_heads=3, ffn=80, segment=8,
         rule=1, T=37, B=2, Tt=27, seed=502),
    dict(name="inf_h6x2_delta", dim=96, n_layers=3, n_heads=6, n_kv_heads=2, ffn=128, segment=7,
         rule=1, T=40, B=1, Tt=30, seed=503),
    dict(name="inf_h5x1_linear", dim=80, n_layers=2, n_heads=5, n_kv_heads=1, ffn=96, segment=6,
         rule=0, T=33, B=2, Tt=25, seed=504),
]
ROPE_BASE, NORM_EPS, N_CTX = 10000.0, 1e-5, 64


def make_weights(cfg, n_vocab, rng):
    D, F, H, Hkv = cfg["dim"], cfg["ffn"], cfg["n_heads"], cfg["n_kv_heads"]
    d = D // H

    def mat(out, inp, gain):
        return (rng.standard_normal((out, inp)) * gain / np.sqrt(inp)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.15 * rng.standard_normal(n)).astype(np.float32)

    w = {"token_embd.weight": (rng.standard_normal((n_vocab, D)) * 0.5).astype(np.float32)}
    for l in range(cfg["n_layers"]):
        p = f"blk.{l}."
        w[p + "attn_norm.weight"] = norm(D)
        w[p + "attn_q.weight"] = mat(H * d, D, 1.5)
        w[p + "attn_k.weight"] = mat(Hkv * d, D, 1.5)
        w[p + "attn_v.weight"] = mat(Hkv * d, D, 1.0)
        w[p + "attn_output.weight"] = mat(D, H * d, 0.5)
        w[p + "attn_mem_gate"] = rng.standard_normal(H).astype(np.float32)
        w[p + "ffn_norm.weight"] = norm(D)
        w[p + "ffn_gate.weight"] = mat(F, D, 1.5)
        w[p + "ffn_up.weight"] = mat(F, D, 1.0)
        w[p + "ffn_down.weight"] = mat(D, F, 0.8)
    w["output_norm.weight"] = norm(D)
    w["output.weight"] = mat(n_vocab, D, 1.0)
    return w


def write_gguf(path, cfg, w, arch, beta=None):
    g = G.GGUFWriter()
    g.add("general.architecture", G.STR, arch)
    g.add("general.name", G.STR, cfg["name"])
    a = arch
    g.add(a + ".context_length", G.U32, N_CTX)
    g.add(a + ".embedding_length", G.U32, cfg["dim"])
    g.add(a + ".block_count", G.U32, cfg["n_layers"])
    g.add(a + ".feed_forward_length", G.U32, cfg["ffn"])
    g.add(a + ".attention.head_count", G.U32, cfg["n_heads"])
    g.add(a + ".attention.head_count_kv", G.U32, cfg["n_kv_heads"])
    g.add(a + ".rope.freq_base", G.F32, ROPE_BASE)
    g.add(a + ".attention.layer_norm_rms_epsilon", G.F32, NORM_EPS)
    if arch == "infini":
        g.add("infini.segment_length", G.U32, cfg["segment"])
        g.add("infini.memory_rule", G.STR, ["linear", "delta"][cfg["rule"]])
    G.add_spm_vocab(g, TOK_GUT8K)
    for name, t in w.items():
        if name.endswith("attn_mem_gate"):
            if arch != "infini":
                continue
            if beta is not None:
                t = np.full_like(t, beta)
        g.add_tensor(name, t, G.T_F32)
    g.write(path)


# ---- the reference (float64 torch) ------------------------------------------------------------

def rmsnorm(x, w):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + NORM_EPS) * w


def rope(x, pos, d):
    """x [T, heads, d]; rotate adjacent pairs by pos·base^(-2i/d)."""
    inv = ROPE_BASE ** (-2.0 * torch.arange(d // 2, dtype=torch.float64) / d)
    ang = pos.to(torch.float64)[:, None] * inv[None, :]
    c, s = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = a * c - b * s
    out[..., 1::2] = a * s + b * c
    return out


def sigma(x):
    return torch.nn.functional.elu(x) + 1.0


def infini_attention(cfg, P, l, n):
    """n [T, D] -> [T, D]: the segment loop of METHODS.md §2."""
    H, Hkv, D = cfg["n_heads"], cfg["n_kv_heads"], cfg["dim"]
    d, grp, N = D // H, H // Hkv, cfg["segment"]
    p = f"blk.{l}."
    T = n.shape[0]
    q = (n @ P[p + "attn_q.weight"].T).view(T, H, d)
    k = (n @ P[p + "attn_k.weight"].T).view(T, Hkv, d)
    v = (n @ P[p + "attn_v.weight"].T).view(T, Hkv, d)
    gate = torch.sigmoid(P[p + "attn_mem_gate"])
    M = [torch.zeros(d, d, dtype=torch.float64) for _ in range(Hkv)]
    z = [torch.zeros(d, dtype=torch.float64) for _ in range(Hkv)]
    outs = []
    for s, t0 in enumerate(range(0, T, N)):
        t1 = min(T, t0 + N)
        L = t1 - t0
        qs, ks, vs = q[t0:t1], k[t0:t1], v[t0:t1]
        pos = torch.arange(L)
        qr, kr = rope(qs, pos, d), rope(ks, pos, d)
        mask = torch.ones(L, L, dtype=torch.bool).tril()
        heads = []
        for h in range(H):
            g = h // grp
            sc = (qr[:, h] @ kr[:, g].T) / math.sqrt(d)
            sc = sc.masked_fill(~mask, float("-inf"))
            a_dot = torch.softmax(sc, -1) @ vs[:, g]
            if s == 0:
                heads.append(a_dot)
                continue
            sq = sigma(qs[:, h])
            a_mem = (sq @ M[g]) / (sq @ z[g] + EPS_MEM)[:, None]
            heads.append(gate[h] * a_mem + (1 - gate[h]) * a_dot)
        outs.append(torch.stack(heads, 1).reshape(L, H * d))
        for g in range(Hkv):
            sk = sigma(ks[:, g])
            u = vs[:, g]
            if cfg["rule"] == 1:
                u = u - (sk @ M[g]) / (sk @ z[g] + EPS_MEM)[:, None]
            M[g] = M[g] + sk.T @ u
            z[g] = z[g] + sk.sum(0)
    return torch.cat(outs, 0) @ P[p + "attn_output.weight"].T


def masked_attention(cfg, P, l, n, block):
    """Independent check forms: one softmax over the whole sequence with a causal mask, restricted to
    each token's block of `block` tokens, positions restarting per block (block >= T: plain Llama)."""
    H, Hkv, D = cfg["n_heads"], cfg["n_kv_heads"], cfg["dim"]
    d, grp = D // H, H // Hkv
    p = f"blk.{l}."
    T = n.shape[0]
    idx = torch.arange(T)
    pos = idx % block
    q = rope((n @ P[p + "attn_q.weight"].T).view(T, H, d), pos, d)
    k = rope((n @ P[p + "attn_k.weight"].T).view(T, Hkv, d), pos, d)
    v = (n @ P[p + "attn_v.weight"].T).view(T, Hkv, d)
    allowed = (idx[None, :] <= idx[:, None]) & (idx[None, :] // block == idx[:, None] // block)
    heads = []
    for h in range(H):
        sc = (q[:, h] @ k[:, h // grp].T) / math.sqrt(d)
        heads.append(torch.softmax(sc.masked_fill(~allowed, float("-inf")), -1) @ v[:, h // grp])
    return torch.stack(heads, 1).reshape(T, H * d) @ P[p + "attn_output.weight"].T


def forward(cfg, P, tokens, attn):
    x = P["token_embd.weight"][tokens]
    for l in range(cfg["n_layers"]):
        p = f"blk.{l}."
        x = x + attn(cfg, P, l, rmsnorm(x, P[p + "attn_norm.weight"]))
        nn = rmsnorm(x, P[p + "ffn_norm.weight"])
        f = torch.nn.functional.silu(nn @ P[p + "ffn_gate.weight"].T) * (nn @ P[p + "ffn_up.weight"].T)
        x = x + f @ P[p + "ffn_down.weight"].T
    return rmsnorm(x, P["output_norm.weight"]) @ P["output.weight"].T


def loss_of(cfg, P, rows):
    total = 0
    for r in rows:
        lg = forward(cfg, P, torch.tensor(r[:-1]), infini_attention)
        total = total + torch.nn.functional.cross_entropy(lg, torch.tensor(r[1:]), reduction="sum")
    return total / (len(rows) * (len(rows[0]) - 1))


def main(out_dir):
    out = os.path.join(out_dir, "infini")
    os.makedirs(out, exist_ok=True)
    manifest = ["# name\tT\tsegment\trule\tdescription (gen_infini_ref.py)"]
    for cfg in MODELS:
        rng = np.random.default_rng(cfg["seed"])
        n_vocab = 8192
        w = make_weights(cfg, n_vocab, rng)
        name = cfg["name"]
        write_gguf(os.path.join(out, name + ".gguf"), cfg, w, "infini")
        write_gguf(os.path.join(out, name + "_local.gguf"), cfg, w, "infini", beta=-np.inf)
        write_gguf(os.path.join(out, name + "_llama.gguf"), cfg, w, "llama")
        P = {k: torch.tensor(v.astype(np.float64)) for k, v in w.items()}
        T = cfg["T"]
        tokens = [1] + [int(t) for t in rng.integers(3, n_vocab, T - 1)]
        tt = torch.tensor(tokens)
        with torch.no_grad():
            logits = forward(cfg, P, tt, infini_attention)
            Pl = dict(P)
            for l in range(cfg["n_layers"]):
                Pl[f"blk.{l}.attn_mem_gate"] = torch.full_like(P[f"blk.{l}.attn_mem_gate"], -math.inf)
            local = forward(cfg, Pl, tt, infini_attention)
            # self-checks against the independent masked forms
            local2 = forward(cfg, P, tt, lambda c, P_, l, n: masked_attention(c, P_, l, n, c["segment"]))
            e_local = (local - local2).abs().max().item() / local2.abs().max().item()
            one = dict(cfg, segment=T)
            e_one = (forward(one, P, tt, infini_attention) -
                     forward(one, P, tt, lambda c, P_, l, n: masked_attention(c, P_, l, n, 10 ** 9))
                     ).abs().max().item()
            assert e_local < 1e-12, f"{name}: beta=-inf vs segment-local attention {e_local}"
            assert e_one < 1e-12, f"{name}: one segment vs plain llama {e_one}"
            e_mem = (logits - local).abs().max().item() / logits.abs().max().item()
            assert e_mem > 1e-2, f"{name}: the memory changes nothing ({e_mem})"
        rows = [[1] + [int(t) for t in rng.integers(3, n_vocab, cfg["Tt"])] for _ in range(cfg["B"])]
        Pg = {k: v.clone().requires_grad_(True) for k, v in P.items()}
        loss = loss_of(cfg, Pg, rows)
        loss.backward()
        names = list(w.keys())
        # autograd against a central difference along a random direction of each tensor
        for nm in names:
            dirn = torch.tensor(rng.standard_normal(P[nm].shape))
            g = Pg[nm].grad
            h = 1e-5
            with torch.no_grad():
                Pp = dict(P)
                Pp[nm] = P[nm] + h * dirn
                lp = loss_of(cfg, Pp, rows)
                Pp[nm] = P[nm] - h * dirn
                lm = loss_of(cfg, Pp, rows)
            fd = ((lp - lm) / (2 * h)).item()
            an = (g * dirn).sum().item()
            scale = g.norm().item() * dirn.norm().item() / math.sqrt(dirn.numel())
            assert abs(fd - an) <= 1e-6 * max(scale, 1e-12) + 1e-10, \
                f"{name}: autograd vs finite difference on {nm}: {an} vs {fd}"
            if nm.endswith("attn_mem_gate") or nm == "blk.0.attn_q.weight":
                assert g.abs().max().item() > 0, f"{name}: no gradient reaches {nm}"
        with open(os.path.join(out, name + ".ref"), "wb") as f:
            f.write(b"INFR" + struct.pack("<8I", 1, T, n_vocab, cfg["B"], cfg["Tt"], len(names),
                                          cfg["segment"], cfg["rule"]))
            f.write(np.asarray(tokens, dtype="<i4").tobytes())
            f.write(logits.numpy().astype("<f8").tobytes())
            f.write(local.numpy().astype("<f8").tobytes())
            f.write(np.asarray(rows, dtype="<i4").tobytes())
            f.write(struct.pack("<d", loss.item()))
            for nm in names:
                f.write(nm.encode().ljust(48, b"\0") + struct.pack("<Q", w[nm].size))
            for nm in names:
                f.write(Pg[nm].grad.numpy().astype("<f8").ravel().tobytes())
        desc = (f"D {cfg['dim']} L {cfg['n_layers']} H {cfg['n_heads']}/{cfg['n_kv_heads']}; "
                f"memory changes logits by {e_mem:.3g} rel.; self-checks local {e_local:.1e} one {e_one:.1e}")
        manifest.append(f"{name}\t{T}\t{cfg['segment']}\t{cfg['rule']}\t{desc}")
        print(f"{name}: T {T}, segment {cfg['segment']}, rule {['linear', 'delta'][cfg['rule']]}, "
              f"loss {loss.item():.6f}; {desc}")
    with open(os.path.join(out, "MANIFEST.tsv"), "w") as f:
        f.write("\n".join(manifest) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
