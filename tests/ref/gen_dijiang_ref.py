"""gen_dijiang_ref — float64 PyTorch reference of DiJiang models (METHODS.md §3, file format §6).

Written from the specification, not from msrnn's C. Per layer, with xn the attention block's
RMSNormed input, q = W_q xn, k = W_k xn, v = W_v xn, RoPE (Llama's adjacent pairs, absolute
positions 0..T-1) on q and k, and for each query head h (kv head h // (H/H_kv)):
  phi(x) = softmax over the m features of x·P      (P = blk.L.attn_feat, d × m; no 1/sqrt(d))
  o_t    = sum_{s<=t} gamma_h^(t-s) (phi(q_t)·phi(k_s)) v_s
           computed in this NAIVE O(T²) masked form: one T × T matrix per head,
           (phi(q) phi(k)^T) ⊙ D, D[t][s] = gamma_h^(t-s) for s <= t, else 0
  GN(o)  = per head (H groups of d channels) (o - mean) / sqrt(var + eps) · w + b, population
           variance, eps = dijiang.attention.group_norm_epsilon, w and b per channel of H·d
  out    = W_o( silu(W_G xn) ⊙ GN(o) )
The rest of the block is Llama's (RMSNorm, SwiGLU FFN, output norm, head; tied to token_embd when
output.weight is absent). Everything in float64 (torch), gradients by autograd.

Self-checks (any failure raises): the naive form equals an independent float64 recurrent loop
(S_t = gamma S_{t-1} + phi(k_t)^T v_t, o_t = phi(q_t) S_t, one token at a time) within 1e-12 of
max |logit|; autograd equals a central difference (fourth order for gamma, whose powers up to
gamma^150 have large higher derivatives) along a random direction of every tensor, P and gamma
included (1e-6 of the gradient's norm); the decay and the GroupNorm epsilon each change the logits
(so that a test sees an engine that ignores them); T and Tt cross several 64-token chunks and end
in a partial one.

P (attn_feat) is fixed in msrnn (never trained): the .ref marks it 1 and stores exact zeros.
gamma (attn_decay) is frozen unless `train --unfreeze attn_decay`: the .ref marks it 2 and stores its
true gradient; the C test expects 0 while it is frozen and this gradient once it is unfrozen.

Models: MHA and GQA; m = d (P from `convert`'s DCT · diag(Phi^-1(Halton)) formula), m = d/2 and
m = 2d (P random N(0, 1/d)); gamma varied per head (0.5 .. 1 - 1e-3, 1 - 1e-3 in every layer of
the role "ref" models); GroupNorm weights 1 ± 0.15 N(0,1), biases 0.1 N(0,1); tied and untied
heads. "dj_stream" (role "stream") is the tiny model of the C stability test (D 32, d = m = 16,
H 2 / H_kv 1, a vocabulary of 256 ids and no tokenizer, so that 2^20 single-token calls are
quick), with gamma = float32(1 - 1e-6) in one head of each layer. The other models carry the
gutenberg8k tokenizer and 8192 ids.

For the stream model, also the logits after STREAM_SHORT = 2^14 and STREAM_TOKENS = 2^20 random
tokens, computed in float64 in the chunked form (independent of the naive one: per head a state S
carried across chunks of STREAM_CHUNK tokens, o = diag(gamma^(i+1)) phi(Q) S + ((phi(Q) phi(K)^T)
⊙ D) V, S <- gamma^c S + (diag(gamma^(c-1-j)) phi(K))^T V, the sequence fed through all layers
block by block to keep the memory small); self-check: on the T tokens of the .ref, in chunks of 24
and blocks of 100, it gives the naive form's last logits (1e-12).

Usage: gen_dijiang_ref.py OUT_DIR — writes OUT_DIR/dijiang/{NAME.gguf, NAME.ref, MANIFEST.tsv}
and, for the stream model, NAME.stream.

NAME.ref, little-endian:
  char magic[4] = "DJRF"; u32 version = 1; u32 T (tokens of the inference sequence); u32 n_vocab;
  u32 B; u32 Tt (training rows of Tt + 1 tokens); u32 n_tensors; u32 m (feature count)
  i32 tokens[T]                 tokens[0] = BOS
  f64 logits[T][n_vocab]        NAME.gguf on tokens
  i32 train_tokens[B][Tt + 1]
  f64 loss                      mean cross-entropy of the B·Tt targets
  n_tensors × {char name[48]; u64 n; u32 frozen; u32 zero}   every parameter, in GGUF order
                                (frozen: 0 trained, 1 fixed, 2 optional)
  f64 grads[...]                their gradients of loss, in that order (0 for the fixed ones)
NAME.stream (role "stream" only), little-endian:
  char magic[4] = "DJST"; u32 version = 1; u32 N; u32 n_vocab; u32 N_short
  i32 tokens[N]                 tokens[0] = BOS, the rest uniform in [3, n_vocab)
  f64 logits_short[n_vocab]     after the first N_short (2^14) tokens
  f64 logits[n_vocab]           after the N (2^20) tokens
MANIFEST.tsv: '#' comment lines, then per model: name  T  Tt  m  role  description
(role "ref" or "stream").
"""
import math
import os
import statistics
import struct
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ggufpy as G  # noqa: E402

# One thread: every op here is tiny (T <= 251, D <= 72); with two, the script ran 2x slower (53 s
# against 23 s, before the stream reference was added, on the 2-core machine busy with other work),
# the pool's hand-offs costing more than the ops.
torch.set_num_threads(1)
HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("MSRNN_SHARED", os.path.join(HERE, "..", "..", "..", "shared"))
TOK_GUT8K = os.path.join(SHARED, "data", "tokenizers", "gutenberg8k", "gut8k.model")
CHUNK = 64  # msrnn's chunk: T and Tt must cross several and end in a partial one
GAMMA_STREAM = float(np.float32(1 - 1e-6))
STREAM_TOKENS, STREAM_CHUNK, STREAM_BLOCK = 1 << 20, 512, 1 << 15
STREAM_SHORT = 1 << 14  # a checkpoint: what the sanitized builds (slow) run

# gamma per layer and head; P "dct" (convert's formula, m = d only) or "random" N(0, 1/d)
MODELS = [
    dict(name="dj_h4x4_m16", dim=64, n_layers=2, n_heads=4, n_kv_heads=4, ffn=96, m=16, feat="dct",
         gammas=[[1 - 1 / 32, 0.9, 1 - 1e-3, 1 - 1 / 512], [0.5, 1 - 1e-3, 1 - 1 / 128, 0.97]],
         gn_eps=1e-5, tied=False, T=217, B=2, Tt=150, seed=601, role="ref"),
    dict(name="dj_h4x2_m8", dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn=80, m=8, feat="random",
         gammas=[[0.95, 1 - 1e-3, 0.8, 1 - 1 / 256], [1 - 1e-3, 0.99, 1 - 1 / 64, 0.7]],
         gn_eps=1e-3, tied=True, T=251, B=2, Tt=141, seed=602, role="ref"),
    dict(name="dj_h3x1_m48", dim=72, n_layers=2, n_heads=3, n_kv_heads=1, ffn=96, m=48,
         feat="random", gammas=[[1 - 1e-3, 0.9, 0.98], [0.6, 1 - 1 / 300, 1 - 1e-3]],
         gn_eps=1e-2, tied=False, T=190, B=2, Tt=155, seed=603, role="ref"),
    dict(name="dj_stream", dim=32, n_layers=2, n_heads=2, n_kv_heads=1, ffn=48, m=16, feat="dct",
         gammas=[[GAMMA_STREAM, 1 - 1 / 32], [1 - 1e-3, GAMMA_STREAM]],
         gn_eps=1e-5, tied=False, T=160, B=2, Tt=133, seed=604, role="stream", vocab=256),
]
ROPE_BASE, NORM_EPS, N_CTX = 10000.0, 1e-5, 512
PRIMES = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]


def radical_inverse(i, base):
    r, f = 0.0, 1.0 / base
    while i > 0:
        r += f * (i % base)
        i //= base
        f /= base
    return r


def dct_feat(d, layer):
    """METHODS.md §6, what `convert` writes (m = d): P[i][j] = s_i cos(pi i (2j+1) / 2d) ·
    Phi^-1(u_j), u_j the radical inverse of j + 1 in base p_L (the (L+1)-th prime)."""
    nd = statistics.NormalDist()
    u = [radical_inverse(j + 1, PRIMES[layer]) for j in range(d)]
    scale = np.array([nd.inv_cdf(x) for x in u])
    P = np.empty((d, d))
    for i in range(d):
        s = math.sqrt(1.0 / d) if i == 0 else math.sqrt(2.0 / d)
        for j in range(d):
            P[i, j] = s * math.cos(math.pi * i * (2 * j + 1) / (2 * d)) * scale[j]
    return P


def make_weights(cfg, n_vocab, rng):
    D, F, H, Hkv, m = cfg["dim"], cfg["ffn"], cfg["n_heads"], cfg["n_kv_heads"], cfg["m"]
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
        if cfg["feat"] == "dct":
            assert m == d
            w[p + "attn_feat"] = dct_feat(d, l).astype(np.float32)  # numpy (d, m): ne = [m, d]
        else:
            w[p + "attn_feat"] = (rng.standard_normal((d, m)) / np.sqrt(d)).astype(np.float32)
        w[p + "attn_decay"] = np.asarray(cfg["gammas"][l], dtype=np.float32)
        w[p + "attn_gate"] = mat(H * d, D, 1.5)  # W_G, PyTorch (H·d, D): ne = [D, H·d]
        w[p + "attn_gnorm.weight"] = norm(H * d)
        w[p + "attn_gnorm.bias"] = (0.1 * rng.standard_normal(H * d)).astype(np.float32)
        w[p + "ffn_norm.weight"] = norm(D)
        w[p + "ffn_gate.weight"] = mat(F, D, 1.5)
        w[p + "ffn_up.weight"] = mat(F, D, 1.0)
        w[p + "ffn_down.weight"] = mat(D, F, 0.8)
    w["output_norm.weight"] = norm(D)
    if not cfg["tied"]:
        w["output.weight"] = mat(n_vocab, D, 1.0)
    return w


def frozen_kind(name):
    """0 trained, 1 fixed (P: no gradient), 2 optional (gamma: frozen unless train --unfreeze)"""
    return 1 if name.endswith(".attn_feat") else 2 if name.endswith(".attn_decay") else 0


def write_gguf(path, cfg, w):
    g = G.GGUFWriter()
    g.add("general.architecture", G.STR, "dijiang")
    g.add("general.name", G.STR, cfg["name"])
    a = "dijiang"
    g.add(a + ".context_length", G.U32, N_CTX)
    g.add(a + ".embedding_length", G.U32, cfg["dim"])
    g.add(a + ".block_count", G.U32, cfg["n_layers"])
    g.add(a + ".feed_forward_length", G.U32, cfg["ffn"])
    g.add(a + ".attention.head_count", G.U32, cfg["n_heads"])
    g.add(a + ".attention.head_count_kv", G.U32, cfg["n_kv_heads"])
    g.add(a + ".rope.freq_base", G.F32, ROPE_BASE)
    g.add(a + ".attention.layer_norm_rms_epsilon", G.F32, NORM_EPS)
    g.add(a + ".feature_count", G.U32, cfg["m"])
    g.add(a + ".attention.group_norm_epsilon", G.F32, cfg["gn_eps"])
    if "vocab" in cfg:
        g.add(a + ".vocab_size", G.U32, cfg["vocab"])
    else:
        G.add_spm_vocab(g, TOK_GUT8K)
    for name, t in w.items():
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


def heads_naive(phq, phk, v, gam, grp):
    """phq [T, H, m], phk [T, Hkv, m], v [T, Hkv, d] -> o [T, H, d]: the masked O(T²) form."""
    T, H = phq.shape[0], phq.shape[1]
    idx = torch.arange(T)
    diff = idx[:, None] - idx[None, :]
    mask = diff >= 0
    ex = diff.clamp(min=0).to(torch.float64)
    out = []
    for h in range(H):
        g = h // grp
        dec = torch.where(mask, torch.pow(gam[h], ex), torch.zeros((), dtype=torch.float64))
        out.append(((phq[:, h] @ phk[:, g].T) * dec) @ v[:, g])
    return torch.stack(out, 1)


def heads_recurrent(phq, phk, v, gam, grp):
    """The same, one token at a time through the state S (m × d) of each query head."""
    T, H, m = phq.shape
    d = v.shape[2]
    out = torch.empty(T, H, d, dtype=torch.float64)
    for h in range(H):
        g = h // grp
        S = torch.zeros(m, d, dtype=torch.float64)
        for t in range(T):
            S = gam[h] * S + torch.outer(phk[t, g], v[t, g])
            out[t, h] = phq[t, h] @ S
    return out


def dijiang_attention(cfg, P, l, n, heads=heads_naive, gn_eps=None):
    """n [T, D] (the RMSNormed input) -> [T, D]."""
    H, Hkv, D = cfg["n_heads"], cfg["n_kv_heads"], cfg["dim"]
    d, grp = D // H, H // Hkv
    eps = cfg["gn_eps"] if gn_eps is None else gn_eps
    p = f"blk.{l}."
    T = n.shape[0]
    pos = torch.arange(T)
    q = rope((n @ P[p + "attn_q.weight"].T).view(T, H, d), pos, d)
    k = rope((n @ P[p + "attn_k.weight"].T).view(T, Hkv, d), pos, d)
    v = (n @ P[p + "attn_v.weight"].T).view(T, Hkv, d)
    feat = P[p + "attn_feat"]  # (d, m)
    phq = torch.softmax(q @ feat, -1)
    phk = torch.softmax(k @ feat, -1)
    o = heads(phq, phk, v, P[p + "attn_decay"], grp)  # [T, H, d]
    mu = o.mean(-1, keepdim=True)
    var = ((o - mu) ** 2).mean(-1, keepdim=True)
    gn = ((o - mu) / torch.sqrt(var + eps)).reshape(T, H * d)
    gn = gn * P[p + "attn_gnorm.weight"] + P[p + "attn_gnorm.bias"]
    gate = torch.nn.functional.silu(n @ P[p + "attn_gate"].T)
    return (gate * gn) @ P[p + "attn_output.weight"].T


def forward(cfg, P, tokens, attn=dijiang_attention):
    x = P["token_embd.weight"][tokens]
    for l in range(cfg["n_layers"]):
        p = f"blk.{l}."
        x = x + attn(cfg, P, l, rmsnorm(x, P[p + "attn_norm.weight"]))
        nn = rmsnorm(x, P[p + "ffn_norm.weight"])
        f = (torch.nn.functional.silu(nn @ P[p + "ffn_gate.weight"].T) *
             (nn @ P[p + "ffn_up.weight"].T))
        x = x + f @ P[p + "ffn_down.weight"].T
    head = P["output.weight"] if "output.weight" in P else P["token_embd.weight"]
    return rmsnorm(x, P["output_norm.weight"]) @ head.T


def loss_of(cfg, P, rows):
    total = 0
    for r in rows:
        lg = forward(cfg, P, torch.tensor(r[:-1]))
        total = total + torch.nn.functional.cross_entropy(lg, torch.tensor(r[1:]), reduction="sum")
    return total / (len(rows) * (len(rows[0]) - 1))


def stream_logits(cfg, w, tokens, C=STREAM_CHUNK, block=STREAM_BLOCK):
    """The last token's logits after `tokens` (numpy float64): the chunked form over chunks of C
    tokens, the sequence fed through all layers in blocks of `block` tokens, each layer's states
    carried across."""
    H, Hkv, D, m = cfg["n_heads"], cfg["n_kv_heads"], cfg["dim"], cfg["m"]
    d, grp = D // H, H // Hkv
    inv = ROPE_BASE ** (-2.0 * np.arange(d // 2) / d)

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + NORM_EPS) * g

    def rope_np(x, pos):
        ang = pos[:, None] * inv[None, :]
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * c - b * s
        out[..., 1::2] = a * s + b * c
        return out

    def softmax(u):
        e = np.exp(u - u.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    def silu(z):
        return z / (1 + np.exp(-z))

    S = [[np.zeros((m, d)) for _ in range(H)] for _ in range(cfg["n_layers"])]
    ii = np.arange(C)
    for b0 in range(0, len(tokens), block):
        tk = np.asarray(tokens[b0:b0 + block])
        n_ = len(tk)
        pos = np.arange(b0, b0 + n_, dtype=np.float64)
        x = w["token_embd.weight"][tk]
        for l in range(cfg["n_layers"]):
            p = f"blk.{l}."
            xn = rms(x, w[p + "attn_norm.weight"])
            q = rope_np((xn @ w[p + "attn_q.weight"].T).reshape(n_, H, d), pos)
            k = rope_np((xn @ w[p + "attn_k.weight"].T).reshape(n_, Hkv, d), pos)
            v = (xn @ w[p + "attn_v.weight"].T).reshape(n_, Hkv, d)
            phq, phk = softmax(q @ w[p + "attn_feat"]), softmax(k @ w[p + "attn_feat"])
            o = np.empty((n_, H, d))
            for h in range(H):
                g, gam = h // grp, w[p + "attn_decay"][h]
                dec = np.where(ii[:, None] >= ii[None, :],
                               gam ** np.maximum(ii[:, None] - ii[None, :], 0), 0.0)
                for t0 in range(0, n_, C):
                    c = min(C, n_ - t0)
                    Q, K, V_ = phq[t0:t0 + c, h], phk[t0:t0 + c, g], v[t0:t0 + c, g]
                    o[t0:t0 + c, h] = ((gam ** (ii[:c] + 1))[:, None] * (Q @ S[l][h]) +
                                       ((Q @ K.T) * dec[:c, :c]) @ V_)
                    S[l][h] = gam ** c * S[l][h] + ((gam ** (c - 1 - ii[:c]))[:, None] * K).T @ V_
            mu = o.mean(-1, keepdims=True)
            var = ((o - mu) ** 2).mean(-1, keepdims=True)
            gn = ((o - mu) / np.sqrt(var + cfg["gn_eps"])).reshape(n_, H * d)
            gn = gn * w[p + "attn_gnorm.weight"] + w[p + "attn_gnorm.bias"]
            x = x + (silu(xn @ w[p + "attn_gate"].T) * gn) @ w[p + "attn_output.weight"].T
            nn = rms(x, w[p + "ffn_norm.weight"])
            f = silu(nn @ w[p + "ffn_gate.weight"].T) * (nn @ w[p + "ffn_up.weight"].T)
            x = x + f @ w[p + "ffn_down.weight"].T
    head = w["output.weight"] if "output.weight" in w else w["token_embd.weight"]
    return rms(x[-1], w["output_norm.weight"]) @ head.T


def rel_change(a, b):
    return (a - b).abs().max().item() / b.abs().max().item()


def main(out_dir):
    out = os.path.join(out_dir, "dijiang")
    os.makedirs(out, exist_ok=True)
    manifest = ["# name\tT\tTt\tm\trole\tdescription (gen_dijiang_ref.py)"]
    for cfg in MODELS:
        t_start = time.time()
        name, T, Tt = cfg["name"], cfg["T"], cfg["Tt"]
        for n_ in (T, Tt):
            assert n_ > 2 * CHUNK and n_ % CHUNK != 0, f"{name}: {n_} tokens do not cross chunks"
        rng = np.random.default_rng(cfg["seed"])
        n_vocab = cfg.get("vocab", 8192)
        w = make_weights(cfg, n_vocab, rng)
        write_gguf(os.path.join(out, name + ".gguf"), cfg, w)
        P = {k: torch.tensor(v.astype(np.float64)) for k, v in w.items()}
        tokens = [1] + [int(t) for t in rng.integers(3, n_vocab, T - 1)]
        tt = torch.tensor(tokens)
        with torch.no_grad():
            logits = forward(cfg, P, tt)
            # self-check: the naive masked form against the recurrent loop
            rec = forward(cfg, P, tt, lambda c, P_, l, n: dijiang_attention(c, P_, l, n,
                                                                            heads_recurrent))
            e_rec = rel_change(rec, logits)
            assert e_rec < 1e-12, f"{name}: naive vs recurrent form {e_rec}"
            # the decay and the GroupNorm epsilon must each matter
            Pd = dict(P)
            for l in range(cfg["n_layers"]):
                g = P[f"blk.{l}.attn_decay"]
                Pd[f"blk.{l}.attn_decay"] = 1 - (1 - g) * 1.25
            e_decay = rel_change(forward(cfg, Pd, tt), logits)
            e_eps = rel_change(forward(cfg, P, tt, lambda c, P_, l, n: dijiang_attention(
                c, P_, l, n, gn_eps=c["gn_eps"] * 10)), logits)
            assert e_decay > 1e-3, f"{name}: gamma hardly matters ({e_decay})"
            assert e_eps > 1e-5, f"{name}: the GroupNorm epsilon hardly matters ({e_eps})"
        rows = [[1] + [int(t) for t in rng.integers(3, n_vocab, Tt)] for _ in range(cfg["B"])]
        Pg = {k: v.clone().requires_grad_(True) for k, v in P.items()}
        loss = loss_of(cfg, Pg, rows)
        loss.backward()
        names = list(w.keys())
        # autograd against a central difference along a random direction of each tensor
        worst_fd = 0.0
        for nm in names:
            dirn = torch.tensor(rng.standard_normal(P[nm].shape))
            g = Pg[nm].grad
            h = 1e-5
            with torch.no_grad():
                Pp = dict(P)
                lh = {}
                # fourth order for gamma: gamma^(t-s) over 150 steps has large higher derivatives
                for j in (-2, -1, 1, 2) if nm.endswith("attn_decay") else (-1, 1):
                    Pp[nm] = P[nm] + j * h * dirn
                    lh[j] = loss_of(cfg, Pp, rows).item()
            if nm.endswith("attn_decay"):
                fd = (8 * (lh[1] - lh[-1]) - (lh[2] - lh[-2])) / (12 * h)
            else:
                fd = (lh[1] - lh[-1]) / (2 * h)
            an = (g * dirn).sum().item()
            scale = g.norm().item() * dirn.norm().item() / math.sqrt(dirn.numel())
            assert abs(fd - an) <= 1e-6 * max(scale, 1e-12) + 1e-10, \
                f"{name}: autograd vs finite difference on {nm}: {an} vs {fd}"
            worst_fd = max(worst_fd, abs(fd - an) / max(scale, 1e-12))
            assert g.abs().max().item() > 0, f"{name}: no gradient reaches {nm}"
        with open(os.path.join(out, name + ".ref"), "wb") as f:
            f.write(b"DJRF" + struct.pack("<7I", 1, T, n_vocab, cfg["B"], Tt, len(names), cfg["m"]))
            f.write(np.asarray(tokens, dtype="<i4").tobytes())
            f.write(logits.numpy().astype("<f8").tobytes())
            f.write(np.asarray(rows, dtype="<i4").tobytes())
            f.write(struct.pack("<d", loss.item()))
            for nm in names:
                f.write(nm.encode().ljust(48, b"\0") + struct.pack("<QII", w[nm].size,
                                                                   frozen_kind(nm), 0))
            for nm in names:
                gr = Pg[nm].grad.numpy().astype("<f8").ravel()
                f.write((np.zeros_like(gr) if frozen_kind(nm) == 1 else gr).tobytes())
        stream_desc = ""
        if cfg["role"] == "stream":
            w64 = {k: v.astype(np.float64) for k, v in w.items()}
            short = stream_logits(cfg, w64, tokens, C=24, block=100)  # states cross both
            e_short = np.abs(short - logits[-1].numpy()).max() / np.abs(short).max()
            assert e_short < 1e-12, f"{name}: chunked float64 vs naive form {e_short}"
            stoks = [1] + [int(t) for t in rng.integers(3, n_vocab, STREAM_TOKENS - 1)]
            t_s = time.time()
            short_lg = stream_logits(cfg, w64, stoks[:STREAM_SHORT])
            long_lg = stream_logits(cfg, w64, stoks)
            assert np.all(np.isfinite(long_lg))
            with open(os.path.join(out, name + ".stream"), "wb") as f:
                f.write(b"DJST" + struct.pack("<4I", 1, STREAM_TOKENS, n_vocab, STREAM_SHORT))
                f.write(np.asarray(stoks, dtype="<i4").tobytes())
                f.write(short_lg.astype("<f8").tobytes())
                f.write(long_lg.astype("<f8").tobytes())
            stream_desc = (f"; stream of {STREAM_TOKENS} tokens (max |logit| "
                           f"{np.abs(long_lg).max():.3g}, {time.time() - t_s:.1f} s), chunked "
                           f"vs naive {e_short:.1e}")
        D, H = cfg["dim"], cfg["n_heads"]
        desc = (f"D {D} L {cfg['n_layers']} H {H}/{cfg['n_kv_heads']} d {D // H} m {cfg['m']} "
                f"P {cfg['feat']} {'tied' if cfg['tied'] else 'untied'} gn_eps {cfg['gn_eps']:g}; "
                f"gamma x1.25 farther from 1 changes logits {e_decay:.3g} rel., "
                f"eps x10 {e_eps:.3g}; "
                f"self-checks recurrent {e_rec:.1e} fd {worst_fd:.1e}{stream_desc}")
        manifest.append(f"{name}\t{T}\t{Tt}\t{cfg['m']}\t{cfg['role']}\t{desc}")
        print(f"{name}: T {T}, Tt {Tt}, loss {loss.item():.6f}; {desc} "
              f"({time.time() - t_start:.1f} s)")
    with open(os.path.join(out, "MANIFEST.tsv"), "w") as f:
        f.write("\n".join(manifest) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
