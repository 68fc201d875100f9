"""gen_train_ref — float64 PyTorch references for the training engine: loss, every gradient, and
a 10-step AdamW trajectory of small random Llama models.

Written from the architecture's definition (shared/docs/METHODS.md §0) and adamw.h's formulas, not
from msrnn's C:
  x = token_embd[t]; per layer  h = x + W_o Attn(RoPE(W_q n), RoPE(W_k n), W_v n),
                                x = h + W_down(silu(W_gate n') ⊙ W_up n'),
  with n = RMSNorm(x)·w_attn and n' = RMSNorm(h)·w_ffn;
  logits = W_out RMSNorm(x)·w_out_norm   (W_out = token_embd when output.weight is absent)
  RMSNorm(x) = x / sqrt(mean(x²) + eps); RoPE rotates adjacent pairs (x[2i], x[2i+1]) of each head
  by pos·base^(-2i/d), pos from 0 in each sequence; causal softmax(q·k/sqrt(d)); query head h reads
  kv head h // (H/H_kv); loss = mean cross-entropy over the B·T targets of B rows of T+1 ids
  (inputs the first T, targets the last T).
AdamW (adamw.h), step s from 0, t = s + 1:
  g ← g·min(1, clip/‖g‖₂) (‖g‖ over all parameters, before the update)
  m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;  m̂ = m/(1−β1^t);  v̂ = v/(1−β2^t)
  p ← p − lr(s)·(m̂/(sqrt(v̂)+ε) + wd·p)      (wd only on 2-D tensors: matrices, token_embd, output)
  lr(s) = lr_max·(s+1)/warmup                                              for s < warmup,
        = lr_min + ½(lr_max−lr_min)(1 + cos(π(s−warmup)/(steps−warmup)))    after
Step s uses token batch s (with accumulation over n_micro micro-batches: batches s·n_micro + j, each
micro-batch's gradient scaled by 1/n_micro; the step's loss is the mean of the micro-batch losses).

Self-checks (the reference proves itself before it is written; any failure raises):
  - the loss against gen_llama_ref.py's Reference (the inference reference: the same forward
    written independently, sequence by sequence), to 1e-12;
  - autograd against a float64 central finite difference along a random direction of every
    tensor, for every config, to 1e-6 of the tensor's gradient norm;
  - the hand-written AdamW against torch.optim.AdamW (two parameter groups, wd / no wd) fed the same
    clipped gradients, to ~1e-13;
  - clipping (clip set per config between its gradient norms) bites on some steps of every
    trajectory but not on all, so that both branches of min(1, clip/‖g‖) are followed.
It also runs the same trajectory in float32 (f32 weights, f32 torch ops) and records how far that
lies from float64 (the "f32sim" columns): what an f32 engine doing everything right may deviate by.
They justify test_train_ref.c's tolerances; they do not set them.

Usage: gen_train_ref.py OUT_DIR  — writes OUT_DIR/train/{NAME.gguf, NAME.ref, bad_shape.gguf,
MANIFEST.tsv}. Weights are random normal, stored as f32 (so the file holds them exactly).

NAME.ref, little-endian:
  char magic[4] = "MTRF"; u32 version = 1
  u32 B, T, n_micro, n_steps, n_tensors, n_vocab, warmup
  f64 lr_max, lr_min, beta1, beta2, eps, weight_decay, clip
  n_tensors × { char name[48] (NUL-padded); u32 n_dims; u32 decay; i64 ne[2] }   GGUF order and
                                        GGUF ne (ne[0] = row length; ne[1] = 1 for 1-D tensors)
  i32 tokens[n_steps·n_micro][B][T+1]   token batches; batch 0 is the one of the gradient check
  f32 params0[all tensors]              the initial weights (exactly the file's)
  f64 loss0                             mean loss of batch 0
  f64 grads[all tensors]                d loss0 / d param, tensor by tensor, GGUF layout
  f64 lr[n_steps]; f64 loss[n_steps]; f64 grad_norm[n_steps]
                                        per step: lr(s), the step's loss (before its update), the
                                        global gradient norm before clipping
  f64 params[all tensors]               the parameters after n_steps steps
MANIFEST.tsv: one line per config (after '#' lines), tab-separated:
  name  B  T  n_micro  n_steps  f32sim_loss  f32sim_grad  f32sim_traj_loss  f32sim_traj_norm
  f32sim_param_max  f32sim_param_upd  description
  f32sim_*: the float32 run against this float64 reference: relative error of the loss of batch 0;
  worst gradient tensor (max|Δ|/max|ref|); worst step's loss and pre-clip gradient norm (relative);
  final parameters, worst tensor as max|Δ|/max|ref| and as ‖Δ‖/‖p_ref − p0‖ (error of the update).
bad_shape.gguf: the first config with blk.1.attn_k.weight one row short (train_model_open must
fail).
"""
import math
import os
import struct
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ggufpy as G  # noqa: E402

torch.set_num_threads(2)

CONFIGS = [
    # MHA 4×16, tied output, T = 64: exactly one 64-wide attention tile.
    dict(name="mha_tied", vocab=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=4, ffn=96,
         tied=True, rope_base=10000.0, eps=1e-5, B=2, T=64, n_micro=1, clip=3.5),
    # GQA 6/2 (group 3: h // 3 differs from h % 2), untied, rope base 500000, less than a tile,
    # gradient accumulation over 2 micro-batches.
    dict(name="gqa_untied_accum", vocab=176, dim=96, n_layers=2, n_heads=6, n_kv_heads=2, ffn=160,
         tied=False, rope_base=500000.0, eps=1e-6, B=2, T=48, n_micro=2, clip=3.0),
    # GQA 4/2, tied, T = 130 = 64 + 64 + 2: three tiles, the last one ragged.
    dict(name="gqa_tied_t130", vocab=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn=128,
         tied=True, rope_base=10000.0, eps=1e-5, B=2, T=130, n_micro=1, clip=2.9),
    # Head dim 32, one kv head for 4 query heads (MQA), untied, eps 1e-4, T = 67 (a tile + 3),
    # B = 3.
    dict(name="mqa_hd32_t67", vocab=192, dim=128, n_layers=2, n_heads=4, n_kv_heads=1, ffn=200,
         tied=False, rope_base=10000.0, eps=1e-4, B=3, T=67, n_micro=1, clip=3.2),
]
N_CTX = 512
OPT = dict(lr_max=1e-2, lr_min=1e-3, warmup=3, steps=10, beta1=0.9, beta2=0.95, eps=1e-8,
           weight_decay=0.1)
NAME_LEN = 48


# ---- the model ----------------------------------------------------------------------------------

def tensor_names(cfg):
    names = ["token_embd.weight"]
    for l in range(cfg["n_layers"]):
        names += [f"blk.{l}.{t}.weight" for t in ("attn_norm", "attn_q", "attn_k", "attn_v",
                                                   "attn_output", "ffn_norm", "ffn_gate", "ffn_up",
                                                   "ffn_down")]
    names.append("output_norm.weight")
    if not cfg["tied"]:
        names.append("output.weight")
    return names


def make_weights(cfg, seed):
    """float32 master weights in PyTorch [out, in] order, GGUF tensor order."""
    rng = np.random.default_rng(seed)
    D, F, V = cfg["dim"], cfg["ffn"], cfg["vocab"]
    hd = D // cfg["n_heads"]
    Dq, Dkv = cfg["n_heads"] * hd, cfg["n_kv_heads"] * hd

    def mat(rows, cols, gain):  # std gain/sqrt(cols): 0.1..0.3 at these widths
        return (rng.standard_normal((rows, cols)) * gain / math.sqrt(cols)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    # logits of std ~1 (loss a little above log V): token_embd std 1/sqrt(D) when it is the head
    emb_std = 1.0 / math.sqrt(D) if cfg["tied"] else 0.2
    w = {"token_embd.weight": (rng.standard_normal((V, D)) * emb_std).astype(np.float32)}
    for l in range(cfg["n_layers"]):
        p = f"blk.{l}."
        w[p + "attn_norm.weight"] = norm(D)
        w[p + "attn_q.weight"] = mat(Dq, D, 1.5)
        w[p + "attn_k.weight"] = mat(Dkv, D, 1.5)
        w[p + "attn_v.weight"] = mat(Dkv, D, 1.2)
        w[p + "attn_output.weight"] = mat(D, Dq, 1.2)
        w[p + "ffn_norm.weight"] = norm(D)
        w[p + "ffn_gate.weight"] = mat(F, D, 1.5)
        w[p + "ffn_up.weight"] = mat(F, D, 1.2)
        w[p + "ffn_down.weight"] = mat(D, F, 1.2)
    w["output_norm.weight"] = norm(D)
    if not cfg["tied"]:
        w["output.weight"] = mat(V, D, 1.0)
    assert list(w) == tensor_names(cfg)
    return w


def write_gguf(path, cfg, w, shapes=None):
    """shapes: optional {name: array} overriding what is stored (the bad-shape file)."""
    hd = cfg["dim"] // cfg["n_heads"]
    g = G.GGUFWriter()
    g.add("general.architecture", G.STR, "llama")
    g.add("general.name", G.STR, cfg["name"])
    g.add("llama.context_length", G.U32, N_CTX)
    g.add("llama.embedding_length", G.U32, cfg["dim"])
    g.add("llama.block_count", G.U32, cfg["n_layers"])
    g.add("llama.feed_forward_length", G.U32, cfg["ffn"])
    g.add("llama.attention.head_count", G.U32, cfg["n_heads"])
    g.add("llama.attention.head_count_kv", G.U32, cfg["n_kv_heads"])
    g.add("llama.rope.freq_base", G.F32, cfg["rope_base"])
    g.add("llama.attention.layer_norm_rms_epsilon", G.F32, cfg["eps"])
    g.add("llama.rope.dimension_count", G.U32, hd)
    g.add("llama.vocab_size", G.U32, cfg["vocab"])
    for name, a in w.items():
        a = (shapes or {}).get(name, a)
        back = g.add_tensor(name, a, G.T_F32)
        assert np.array_equal(back, a)  # f32: stored exactly
    g.write(path)


def rmsnorm(x, w, eps):
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * w


def rope(x, base):
    """x [B, T, heads, d]: rotate adjacent pairs (x[2i], x[2i+1]) by pos·base^(-2i/d), pos from 0
    in each sequence."""
    T, d = x.shape[1], x.shape[3]
    i = torch.arange(d // 2, dtype=torch.float64)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * base ** (-2.0 * i / d)  # [T, d/2]
    c = torch.cos(ang).to(x.dtype)[None, :, None, :]
    s = torch.sin(ang).to(x.dtype)[None, :, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], dim=-1).flatten(-2)


def attention(q, k, v, H, Hkv):
    """q [B, T, H, d], k/v [B, T, Hkv, d]: causal softmax attention, query head h reads kv head
    h // (H / Hkv). Returns [B, T, H·d]."""
    B, T, _, d = q.shape
    kv_of = torch.arange(H) // (H // Hkv)
    kh, vh = k[:, :, kv_of], v[:, :, kv_of]
    scores = torch.einsum("bthd,bshd->bhts", q, kh) / math.sqrt(d)
    future = torch.arange(T)[None, :] > torch.arange(T)[:, None]  # key s after query t
    scores = scores.masked_fill(future, float("-inf"))
    att = torch.softmax(scores, dim=-1)
    return torch.einsum("bhts,bshd->bthd", att, vh).reshape(B, T, H * d)


def loss_fn(cfg, w, tokens):
    """w: name -> tensor [out, in] (float64 or float32); tokens: int64 [B, T+1]. Mean CE loss."""
    inp, tgt = tokens[:, :-1], tokens[:, 1:]
    B, T = inp.shape
    H, Hkv, eps = cfg["n_heads"], cfg["n_kv_heads"], cfg["eps"]
    d = cfg["dim"] // H
    x = w["token_embd.weight"][inp]
    for l in range(cfg["n_layers"]):
        p = f"blk.{l}."
        n = rmsnorm(x, w[p + "attn_norm.weight"], eps)
        q = rope((n @ w[p + "attn_q.weight"].T).view(B, T, H, d), cfg["rope_base"])
        k = rope((n @ w[p + "attn_k.weight"].T).view(B, T, Hkv, d), cfg["rope_base"])
        v = (n @ w[p + "attn_v.weight"].T).view(B, T, Hkv, d)
        h = x + attention(q, k, v, H, Hkv) @ w[p + "attn_output.weight"].T
        n = rmsnorm(h, w[p + "ffn_norm.weight"], eps)
        a, u = n @ w[p + "ffn_gate.weight"].T, n @ w[p + "ffn_up.weight"].T
        x = h + (a * torch.sigmoid(a) * u) @ w[p + "ffn_down.weight"].T
    out = w["token_embd.weight"] if cfg["tied"] else w["output.weight"]
    logits = rmsnorm(x, w["output_norm.weight"], eps) @ out.T  # [B, T, V]
    nll = torch.logsumexp(logits, dim=-1) - logits.gather(-1, tgt[..., None])[..., 0]
    return nll.mean()


def loss_and_grads(cfg, w, tokens):
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in w.items()}
    loss = loss_fn(cfg, leaves, tokens)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return loss.detach(), dict(zip(leaves, grads))


# ---- the optimizer ------------------------------------------------------------------------------

def lr_at(s):
    o = OPT
    if s < o["warmup"]:
        return o["lr_max"] * (s + 1) / o["warmup"]
    frac = (s - o["warmup"]) / (o["steps"] - o["warmup"])
    return o["lr_min"] + 0.5 * (o["lr_max"] - o["lr_min"]) * (1 + math.cos(math.pi * frac))


def trajectory(cfg, w0, batches, dtype, check_torch=False):
    """n_steps AdamW steps from w0 in dtype. Returns (lrs, losses, norms, params, n_clipped)."""
    o, nm = OPT, cfg["n_micro"]
    p = {k: torch.from_numpy(a).to(dtype) for k, a in w0.items()}
    m = {k: torch.zeros_like(a) for k, a in p.items()}
    v = {k: torch.zeros_like(a) for k, a in p.items()}
    if check_torch:  # the same update by torch.optim.AdamW, fed the same clipped gradients
        tp = {k: a.clone() for k, a in p.items()}
        opt = torch.optim.AdamW(
            [dict(params=[a for a in tp.values() if a.dim() == 2], weight_decay=o["weight_decay"]),
             dict(params=[a for a in tp.values() if a.dim() == 1], weight_decay=0.0)],
            lr=o["lr_max"], betas=(o["beta1"], o["beta2"]), eps=o["eps"])
    lrs, losses, norms, n_clipped = [], [], [], 0
    for s in range(o["steps"]):
        g = {k: torch.zeros_like(a) for k, a in p.items()}
        loss = 0.0
        for j in range(nm):
            lj, gj = loss_and_grads(cfg, p, batches[s * nm + j])
            loss += float(lj) / nm
            for k in g:
                g[k] += gj[k] * (1.0 / nm)
        norm = math.sqrt(sum(float((a.double() ** 2).sum()) for a in g.values()))
        scale = min(1.0, cfg["clip"] / norm)
        n_clipped += scale < 1
        lr, t = lr_at(s), s + 1
        for k in p:
            gk = g[k] * scale
            m[k] = o["beta1"] * m[k] + (1 - o["beta1"]) * gk
            v[k] = o["beta2"] * v[k] + (1 - o["beta2"]) * gk * gk
            mhat = m[k] / (1 - o["beta1"] ** t)
            vhat = v[k] / (1 - o["beta2"] ** t)
            wd = o["weight_decay"] if p[k].dim() == 2 else 0.0
            p[k] = p[k] - lr * (mhat / (torch.sqrt(vhat) + o["eps"]) + wd * p[k])
        if check_torch:
            for k, a in tp.items():
                a.grad = g[k] * scale
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
            err = max(rel_err(tp[k], p[k]) for k in p)
            assert err < 1e-12, f"{cfg['name']} step {s}: hand AdamW vs torch.optim.AdamW {err:.2e}"
        lrs.append(lr)
        losses.append(loss)
        norms.append(norm)
    return lrs, losses, norms, p, n_clipped


# ---- self-checks --------------------------------------------------------------------------------

def rel_err(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def finite_difference_check(cfg, w, grads, tokens, seed):
    """Central difference (float64) along a random unit direction u of every tensor: (L(w + hu) −
    L(w − hu)) / 2h against <grad, u>. Returns the worst error relative to that tensor's ‖grad‖."""
    gen = torch.Generator().manual_seed(seed)
    worst, h = 0.0, 1e-4
    with torch.no_grad():
        for name, g in grads.items():
            u = torch.randn(w[name].shape, generator=gen, dtype=torch.float64)
            u /= u.norm()
            fd = (float(loss_fn(cfg, {**w, name: w[name] + h * u}, tokens))
                  - float(loss_fn(cfg, {**w, name: w[name] - h * u}, tokens))) / (2 * h)
            e = abs(fd - float((g * u).sum())) / float(g.norm())
            assert e < 1e-6, f"{cfg['name']} {name}: autograd <g, u> {float((g * u).sum()):.9g} " \
                             f"vs finite difference {fd:.9g}"
            worst = max(worst, e)
    return worst


def llama_ref_check(cfg, w, tokens, loss):
    """The loss from gen_llama_ref.py's Reference (the inference reference, itself checked against
    msrnn and llama.cpp), sequence by sequence: the same forward written a second time."""
    import gen_llama_ref as L

    nll = []
    with torch.no_grad():
        for row in tokens.tolist():
            logits = L.Reference(cfg, w, {}).forward(row[:-1])
            nll.append(torch.logsumexp(logits, -1) - logits[torch.arange(len(row) - 1), row[1:]])
    e = abs(float(torch.cat(nll).mean()) - float(loss)) / float(loss)
    assert e < 1e-12, f"{cfg['name']}: loss {float(loss):.15g} vs gen_llama_ref {e:.3g} off"
    return e


# ---- output -------------------------------------------------------------------------------------

def make_batches(cfg, seed):
    """The token batches of the trajectory (n_steps · n_micro of B rows of T+1 ids), all distinct.
    Untied models: every id is among the inputs of every optimizer step (its micro-batches
    together), so that no token_embd row gets its first gradient late, when Adam's update of a
    fresh row is sign-like (m̂/sqrt(v̂) = ±1) and hence at the mercy of f32 rounding wherever a
    gradient element is tiny. (Tied rows always get the head's gradient.)"""
    rng = np.random.default_rng(seed)
    V, B, T, nm = cfg["vocab"], cfg["B"], cfg["T"], cfg["n_micro"]
    out = []
    for s in range(OPT["steps"]):
        b = rng.integers(0, V, size=(nm * B, T + 1))
        if not cfg["tied"]:
            assert V <= nm * B * T
            ids = np.concatenate([rng.permutation(V), rng.integers(0, V, nm * B * T - V)])
            b[:, :T] = rng.permutation(ids).reshape(nm * B, T)
        else:
            b[0, 0], b[-1, T] = V - 1, 0  # the first and last rows of token_embd
        out += [torch.from_numpy(b[j * B:(j + 1) * B].astype(np.int64)) for j in range(nm)]
    return out


def write_ref(path, cfg, w0, batches, loss0, grads, traj):
    lrs, losses, norms, params, _ = traj
    o = OPT
    with open(path, "wb") as f:
        names = list(w0)
        f.write(b"MTRF" + struct.pack("<I", 1))
        f.write(struct.pack("<7I", cfg["B"], cfg["T"], cfg["n_micro"], o["steps"], len(names),
                            cfg["vocab"], o["warmup"]))
        f.write(struct.pack("<7d", o["lr_max"], o["lr_min"], o["beta1"], o["beta2"], o["eps"],
                            o["weight_decay"], cfg["clip"]))
        for name in names:
            a = w0[name]
            ne = list(reversed(a.shape)) + [1]
            assert len(name) < NAME_LEN
            f.write(name.encode().ljust(NAME_LEN, b"\0"))
            f.write(struct.pack("<IIqq", a.ndim, int(a.ndim == 2), ne[0], ne[1]))
        for b in batches:
            f.write(np.ascontiguousarray(b.numpy(), dtype="<i4").tobytes())
        for name in names:
            f.write(np.ascontiguousarray(w0[name], dtype="<f4").tobytes())
        f.write(struct.pack("<d", float(loss0)))
        for name in names:
            f.write(np.ascontiguousarray(grads[name].numpy(), dtype="<f8").tobytes())
        for series in (lrs, losses, norms):
            f.write(np.asarray(series, dtype="<f8").tobytes())
        for name in names:
            f.write(np.ascontiguousarray(params[name].numpy(), dtype="<f8").tobytes())


def f32_sim(cfg, w0, batches, loss0, grads, traj):
    """How far the same computation in float32 (f32 weights, torch f32 ops) lies from float64:
    (loss of batch 0, worst gradient tensor, trajectory losses, grad norms, final parameters as
    the worst tensor's max |Δ| / max |ref| and as its ‖Δ‖ / ‖p_ref − p0‖ (error of the update))."""
    w32 = {k: torch.from_numpy(a) for k, a in w0.items()}
    l32, g32 = loss_and_grads(cfg, w32, batches[0])
    _, losses, norms, params, _ = trajectory(cfg, w0, batches, torch.float32)
    p_max = p_upd = 0.0
    for k, ref in traj[3].items():
        d = params[k].double() - ref
        p_max = max(p_max, float(d.abs().max() / ref.abs().max()))
        p_upd = max(p_upd, float(d.norm() / (ref - torch.from_numpy(w0[k]).double()).norm()))
    return dict(loss=abs(float(l32) - float(loss0)) / abs(float(loss0)),
                grad=max(rel_err(g32[k], grads[k]) for k in grads),
                traj_loss=max(abs(a - b) / abs(b) for a, b in zip(losses, traj[1])),
                traj_norm=max(abs(a - b) / abs(b) for a, b in zip(norms, traj[2])),
                param_max=p_max, param_upd=p_upd)


def main():
    out = os.path.join(sys.argv[1] if len(sys.argv) > 1 else ".", "train")
    os.makedirs(out, exist_ok=True)
    t_start = time.time()
    rows = []
    for ci, cfg in enumerate(CONFIGS):
        name = cfg["name"]
        w0 = make_weights(cfg, seed=3000 + ci)
        write_gguf(os.path.join(out, name + ".gguf"), cfg, w0)
        if ci == 0:  # one row short: train_model_open must refuse it
            k = w0["blk.1.attn_k.weight"]
            write_gguf(os.path.join(out, "bad_shape.gguf"), cfg, w0,
                       {"blk.1.attn_k.weight": k[:-1]})
        batches = make_batches(cfg, seed=4000 + ci)
        w64 = {k: torch.from_numpy(a).double() for k, a in w0.items()}

        loss0, grads = loss_and_grads(cfg, w64, batches[0])
        fd = finite_difference_check(cfg, w64, grads, batches[0], seed=5000 + ci)
        llama_ref_check(cfg, w64, batches[0], loss0)
        traj = trajectory(cfg, w0, batches, torch.float64, check_torch=True)
        lrs, losses, norms, params, n_clipped = traj
        assert 0 < n_clipped < OPT["steps"], \
            f"{name}: clip {cfg['clip']} clips {n_clipped} of {OPT['steps']} steps (norms {norms})"
        if cfg["n_micro"] == 1:
            assert abs(losses[0] - float(loss0)) < 1e-12
        sim = f32_sim(cfg, w0, batches, loss0, grads, traj)

        write_ref(os.path.join(out, name + ".ref"), cfg, w0, batches, loss0, grads, traj)
        hd = cfg["dim"] // cfg["n_heads"]
        n_params = sum(a.size for a in w0.values())
        desc = (f"V{cfg['vocab']} D{cfg['dim']} L{cfg['n_layers']} H{cfg['n_heads']}/"
                f"{cfg['n_kv_heads']} d{hd} F{cfg['ffn']} {'tied' if cfg['tied'] else 'untied'} "
                f"base{cfg['rope_base']:g} eps{cfg['eps']:g} clip{cfg['clip']:g} "
                f"{n_params} params")
        rows.append((name, cfg["B"], cfg["T"], cfg["n_micro"], OPT["steps"], sim, desc))
        gmax = max(float(g.abs().max()) for g in grads.values())
        print(f"{name:16s} {desc}, B{cfg['B']} T{cfg['T']} micro{cfg['n_micro']}: loss0 "
              f"{float(loss0):.5f} (= gen_llama_ref's), max|grad| {gmax:.3g}, finite difference "
              f"{fd:.1e}; losses {losses[0]:.4f} -> {losses[-1]:.4f}, "
              f"grad norms {min(norms):.3f}..{max(norms):.3f} ({n_clipped}/{OPT['steps']} "
              f"clipped); f32 sim: " + " ".join(f"{k} {v:.1e}" for k, v in sim.items()),
              flush=True)
    with open(os.path.join(out, "MANIFEST.tsv"), "w") as f:
        f.write("# written by tests/ref/gen_train_ref.py; read by tests/test_train_ref.c\n")
        f.write("# name\tB\tT\tn_micro\tn_steps\t" + "\t".join("f32sim_" + k for k in rows[0][5])
                + "\tdescription\n")
        for r in rows:
            f.write("\t".join(str(x) for x in r[:5]) + "\t"
                    + "\t".join(f"{v:.3e}" for v in r[5].values()) + f"\t{r[6]}\n")
    print(f"gen_train_ref: {len(rows)} configs in {time.time() - t_start:.1f} s -> {out}")


if __name__ == "__main__":
    main()
