#!/usr/bin/python3
"""train_pytorch — the PyTorch side of bench/train-vs-pytorch: trains a Llama GGUF on a token shard the way
`msrnn train` does, with nothing but stock PyTorch on the CPU, and reports per-step times and losses.

Written from the architecture's definition (shared/docs/METHODS.md §0, src/train/adamw.h's formulas), not
from msrnn's C. Per layer, with n = RMSNorm(x)·w_attn and n' = RMSNorm(h)·w_ffn:
  h = x + W_o Attn(RoPE(W_q n), RoPE(W_k n), W_v n);   x = h + W_down(silu(W_gate n') ⊙ W_up n')
  logits = W_out RMSNorm(x)·w_out_norm (W_out = token_embd when output.weight is absent, "tied")
RMSNorm(x) = x / sqrt(mean(x²) + eps); RoPE rotates adjacent pairs (x[2i], x[2i+1]) of each head's first
n_rot dims by pos·base^(-2i/n_rot) (angles in float64, then float32, as msrnn's table); causal softmax
attention with scale 1/sqrt(hd) through PyTorch's fused entry point (F.scaled_dot_product_attention with
is_causal=True; torch 1.13 only has it as F._scaled_dot_product_attention); query head h reads kv head
h // (H/Hkv) (k and v repeat_interleave'd); loss = mean cross-entropy over the B·T targets.
Optimizer as msrnn's: global-norm clip g ← g·min(1, clip/‖g‖), then torch.optim.AdamW (betas, eps,
decoupled decay on 2-D tensors only: matrices and token_embd; norms none), learning rate
lr(s) = lr_max·(s+1)/warmup for s < warmup, else lr_min + ½(lr_max−lr_min)(1 + cos(π(s−warmup)/(steps−warmup))).
Batches are msrnn's data loader's (src/train/data.h): windows of T+1 tokens starting at multiples of T,
visited in the Fisher–Yates order that splitmix64 draws from (seed, epoch), B windows per step. So step 1
sees the very batch msrnn's step 1 sees, and the two loss trajectories must agree to float32 noise.
Everything is float32; the threads are T for PyTorch's own (OpenMP) ops and for its BLAS (OpenBLAS reads
OPENBLAS_NUM_THREADS when it loads, so it is set before torch is imported).

Each step is timed whole: batch from the shard, forward, backward, clip, optimizer. Prints one JSON object:
  {"torch": version, "torch_config": torch.__config__.show(), "blas_libraries": [mapped *blas* files],
   "attention": which entry point, "threads": T, "n_params": ..., "losses": [...], "grad_norms": [...],
   "lrs": [...], "step_s": [...], "timed_tokens_per_s": tokens of steps 2..S / their seconds}

usage: train_pytorch.py --init INIT.gguf --train SHARD.bin --ctx T --batch B --steps S [--warmup 1]
                        [--lr 1e-3] [--lr-min 1e-4] [--wd 0.1] [--clip 1.0] [--beta1 0.9] [--beta2 0.95]
                        [--eps 1e-8] [--seed 1] [-t 2]
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np


# ---- GGUF: metadata and f32 / f16 / bf16 tensors ------------------------------------------------------

def read_gguf(path):
    """({key: value}, {name: float32 array in PyTorch order, i.e. reversed GGUF ne}) of a GGUF v2/v3 file."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    buf = memoryview(data)
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return v[0]

    scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}

    def value(t):
        nonlocal pos
        if t == 8:
            n = take("<Q")
            s = bytes(buf[pos:pos + n])
            pos += n
            return s.decode("utf-8", "replace")
        if t == 9:
            et, n = take("<I"), take("<Q")
            return [value(et) for _ in range(n)]
        return take(scalar[t])

    if bytes(buf[:4]) != b"GGUF":
        sys.exit(f"train_pytorch: {path}: not a GGUF file")
    pos = 4
    version = take("<I")
    if version not in (2, 3):
        sys.exit(f"train_pytorch: {path}: GGUF version {version}, expected 2 or 3")
    n_tensors, n_kv = take("<Q"), take("<Q")
    meta = {}
    for _ in range(n_kv):
        key = value(8)
        meta[key] = value(take("<I"))
    infos = []
    for _ in range(n_tensors):
        name = value(8)
        ne = [take("<Q") for _ in range(take("<I"))]
        infos.append((name, ne, take("<I"), take("<Q")))
    align = meta.get("general.alignment", 32)
    base = (pos + align - 1) // align * align
    dtypes = {0: np.float32, 1: np.float16, 30: np.uint16}
    tensors = {}
    for name, ne, ttype, off in infos:
        if ttype not in dtypes:
            sys.exit(f"train_pytorch: {path}: tensor {name} has GGML type {ttype}; only f32, f16 and bf16 "
                     "weights are read here (make the model with init-model --type f32)")
        n = int(np.prod(ne))
        raw = np.frombuffer(data, dtype=dtypes[ttype], count=n, offset=base + off)
        if ttype == 30:
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = raw.astype(np.float32).reshape(list(reversed(ne)))
    return meta, tensors


# ---- msrnn's token shard and window loader (src/train/data.h) ----------------------------------------

M64 = (1 << 64) - 1


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def permutation(n, seed, epoch):
    """Epoch `epoch`'s window order: Fisher–Yates over the identity, j uniform in [0, i] by rejection."""
    state = mix64(seed ^ mix64((epoch + 0x632BE59BD9B4E019) & M64))
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        bound = i + 1
        threshold = (-bound) % (1 << 64) % bound
        while True:
            state = (state + 0x9E3779B97F4A7C15) & M64
            r = mix64(state)
            if r >= threshold:
                break
        j = r % bound
        perm[i], perm[j] = perm[j], perm[i]
    return perm


class Loader:
    def __init__(self, path, T, seed):
        head = np.fromfile(path, dtype=np.uint8, count=64)
        if bytes(head[:8]) != b"MSRNNTOK":
            sys.exit(f"train_pytorch: {path}: not an msrnn token shard")
        width, vocab, _bos, n_tokens = struct.unpack_from("<IIIQ", head.tobytes(), 12)
        self.ids = np.memmap(path, dtype={2: np.uint16, 4: np.uint32}[width], mode="r", offset=64, shape=(n_tokens,))
        self.vocab, self.T, self.seed = vocab, T, seed
        self.n_windows = (n_tokens - 1) // T
        if self.n_windows < 1:
            sys.exit(f"train_pytorch: {path}: {n_tokens} tokens are fewer than one window of {T + 1}")
        self.epoch, self.cursor = 0, 0
        self.perm = permutation(self.n_windows, seed, 0)

    def next(self, B):
        rows = []
        for _ in range(B):
            if self.cursor == self.n_windows:
                self.epoch, self.cursor = self.epoch + 1, 0
                self.perm = permutation(self.n_windows, self.seed, self.epoch)
            w = self.perm[self.cursor]
            self.cursor += 1
            rows.append(np.asarray(self.ids[w * self.T: w * self.T + self.T + 1], dtype=np.int64))
        return np.stack(rows)


# ---- the model ---------------------------------------------------------------------------------------

def build_model(torch, meta, tensors):
    arch = meta.get("general.architecture", "llama")
    g = lambda k, d=None: meta.get(f"{arch}.{k}", d)
    C, L, H = g("embedding_length"), g("block_count"), g("attention.head_count")
    shape = {"dim": C, "n_layers": L, "n_heads": H, "n_kv_heads": g("attention.head_count_kv", H),
             "head_dim": C // H, "ffn_dim": g("feed_forward_length"), "n_rot": g("rope.dimension_count", C // H),
             "rope_base": g("rope.freq_base", 10000.0), "norm_eps": g("attention.layer_norm_rms_epsilon", 1e-5),
             "n_vocab": tensors["token_embd.weight"].shape[0], "tied": "output.weight" not in tensors}
    params = {name: torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(a))) for name, a in tensors.items()}
    return shape, params


def rope_tables(torch, T, n_rot, base):
    i = np.arange(n_rot // 2, dtype=np.float64)
    theta = np.arange(T, dtype=np.float64)[:, None] * base ** (-2.0 * i / n_rot)[None, :]
    return (torch.from_numpy(np.cos(theta).astype(np.float32))[None, :, None, :],   # (1, T, 1, n_rot/2)
            torch.from_numpy(np.sin(theta).astype(np.float32))[None, :, None, :])


def attention_fn(torch):
    F = torch.nn.functional
    if hasattr(F, "scaled_dot_product_attention"):
        return "F.scaled_dot_product_attention(is_causal=True)", \
            lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if hasattr(F, "_scaled_dot_product_attention"):  # torch 1.13: returns (out, weights)
        return "F._scaled_dot_product_attention(is_causal=True) (torch 1.13's fused entry point)", \
            lambda q, k, v: F._scaled_dot_product_attention(q, k, v, is_causal=True)[0]
    return "matmul + causal mask + softmax", None


def make_forward(torch, shape, params, T):
    F = torch.nn.functional
    H, Hkv, hd = shape["n_heads"], shape["n_kv_heads"], shape["head_dim"]
    n_rot, eps, group = shape["n_rot"], shape["norm_eps"], shape["n_heads"] // shape["n_kv_heads"]
    cos, sin = rope_tables(torch, T, n_rot, shape["rope_base"])
    attn_name, attn = attention_fn(torch)
    if attn is None:
        mask = torch.ones(T, T, dtype=torch.bool).tril()

        def attn(q, k, v):
            s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
            return torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1) @ v

    def rmsnorm(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    def rope(x):  # x: (B, T, heads, hd); adjacent pairs of the first n_rot dims
        B, _, nh, _ = x.shape
        xr = x[..., :n_rot].reshape(B, T, nh, n_rot // 2, 2)
        x0, x1 = xr[..., 0], xr[..., 1]
        out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).reshape(B, T, nh, n_rot)
        return out if n_rot == hd else torch.cat((out, x[..., n_rot:]), dim=-1)

    head = params["token_embd.weight"] if shape["tied"] else params["output.weight"]

    def loss_fn(tokens):  # tokens: (B, T + 1) int64
        B = tokens.shape[0]
        inp, tgt = tokens[:, :-1], tokens[:, 1:]
        x = F.embedding(inp, params["token_embd.weight"])
        for l in range(shape["n_layers"]):
            p = lambda n: params[f"blk.{l}.{n}.weight"]
            n = rmsnorm(x, p("attn_norm"))
            q = rope(F.linear(n, p("attn_q")).view(B, T, H, hd)).transpose(1, 2)
            k = rope(F.linear(n, p("attn_k")).view(B, T, Hkv, hd)).transpose(1, 2)
            v = F.linear(n, p("attn_v")).view(B, T, Hkv, hd).transpose(1, 2)
            if group > 1:
                k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
            o = attn(q, k, v).transpose(1, 2).reshape(B, T, H * hd)
            x = x + F.linear(o, p("attn_output"))
            n = rmsnorm(x, p("ffn_norm"))
            x = x + F.linear(F.silu(F.linear(n, p("ffn_gate"))) * F.linear(n, p("ffn_up")), p("ffn_down"))
        logits = F.linear(rmsnorm(x, params["output_norm.weight"]), head)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))

    return attn_name, loss_fn


def lr_at(a, s):
    if s < a.warmup:
        return a.lr * (s + 1) / a.warmup
    span = max(1, a.steps - a.warmup)
    return a.lr_min + 0.5 * (a.lr - a.lr_min) * (1 + math.cos(math.pi * (s - a.warmup) / span))


def blas_libraries():
    """The BLAS shared objects this process has mapped (what torch's 'BLAS_INFO=generic' really is)."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.lower() and line.split()[-1].startswith("/")}
        return sorted(os.path.realpath(p) + ("" if os.path.realpath(p) == p else f" (as {p})") for p in libs)
    except OSError:
        return []


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--init", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--ctx", type=int, required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-min", type=float, default=1e-4)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.95)
    ap.add_argument("--eps", type=float, default=1e-8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-t", "--threads", type=int, default=2)
    a = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(a.threads)
    import torch  # after the thread variables: OpenBLAS reads them when it loads

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    meta, tensors = read_gguf(a.init)
    shape, params = build_model(torch, meta, tensors)
    loader = Loader(a.train, a.ctx, a.seed)
    if loader.vocab > shape["n_vocab"]:
        sys.exit(f"train_pytorch: {a.train} has ids up to {loader.vocab} but the model only {shape['n_vocab']}")
    attn_name, loss_fn = make_forward(torch, shape, params, a.ctx)
    plist = list(params.values())
    decay = [p for p in plist if p.dim() == 2]
    no_decay = [p for p in plist if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(a.beta1, a.beta2), eps=a.eps)

    losses, norms, lrs, step_s = [], [], [], []
    for s in range(a.steps):
        t0 = time.perf_counter()
        tokens = torch.from_numpy(loader.next(a.batch))
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(tokens)
        loss.backward()
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in plist]))
        if a.clip > 0 and norm > a.clip:
            for p in plist:
                p.grad.mul_(a.clip / norm)
        lr = lr_at(a, s)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        step_s.append(time.perf_counter() - t0)
        losses.append(loss.item())
        norms.append(norm.item())
        lrs.append(lr)
        print(f"train_pytorch: step {s + 1}/{a.steps} | loss {losses[-1]:.4f} | norm {norms[-1]:.3f} | "
              f"{step_s[-1]:.2f} s", file=sys.stderr, flush=True)

    timed = sum(step_s[1:])
    print(json.dumps({
        "torch": torch.__version__, "torch_config": torch.__config__.show(), "blas_libraries": blas_libraries(),
        "attention": attn_name, "threads": a.threads, "torch_threads": torch.get_num_threads(), "shape": shape,
        "n_params": sum(p.numel() for p in plist), "ctx": a.ctx, "batch": a.batch, "steps": a.steps,
        "losses": losses, "grad_norms": norms, "lrs": lrs, "step_s": step_s,
        "timed_tokens_per_s": (a.steps - 1) * a.batch * a.ctx / timed if a.steps > 1 else None}))


if __name__ == "__main__":
    main()
