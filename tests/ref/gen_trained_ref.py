"""gen_trained_ref — per-token NLL of the trained reference model on a validation book (PyTorch).

Reads shared/models/gutenberg-ref.gguf with its own small GGUF reader (below; no msrnn code) and
runs the Llama forward of shared/docs/METHODS.md §0 in float64: RMSNorm x/sqrt(mean(x²)+eps)·w,
adjacent-pair RoPE (x[2i], x[2i+1]) by pos·base^(-2i/d), GQA (query head h reads kv head h // g),
SwiGLU, output.weight (or token_embd when absent).

Text: the smallest validation book of shared/data/gutenberg/MANIFEST.tsv (by characters),
encoded whole with gut8k.model (no BOS/EOS). Convention (the TOVA protocol's chunking): the text
ids are cut into consecutive pieces of CHUNK-1 = 4095 tokens (the last one shorter); each chunk is
BOS + its piece and is run from an empty cache; every text token is scored once, predicted from
BOS and the chunk's preceding tokens (position 0, BOS, is not scored). MAX_CHUNKS = None scores
the whole book (15 chunks, 60,453 tokens; the float64 forward takes ~10-20 s a 4096-token chunk on 2
threads); a number keeps only the first chunks.

Usage: gen_trained_ref.py OUT_DIR   — writes OUT_DIR/trained/:
  ids.bin   int32 little-endian: the chunks back to back (each starts with BOS; every chunk but
            the last has exactly CHUNK ids), i.e. what tool_nll reads with chunk size CHUNK
  nll.bin   float64 little-endian: -log p(token) for every scored token, chunk by chunk, in order
  meta.txt  key value lines: book, chunk, n_chunks, n_ids, n_scored, mean_nll, ppl, seconds
"""
import os
import struct
import sys
import time

import numpy as np
import torch

torch.set_num_threads(2)
HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("MSRNN_SHARED", os.path.join(HERE, "..", "..", "..", "shared"))
MODEL = os.path.join(SHARED, "models", "gutenberg-ref.gguf")
TOKENIZER = os.path.join(SHARED, "data", "tokenizers", "gutenberg8k", "gut8k.model")
BOOKS = os.path.join(SHARED, "data", "gutenberg")
CHUNK = 4096
MAX_CHUNKS = None  # the whole book


# ---- a minimal GGUF v2/v3 reader --------------------------------------------------------------------

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}
_STR, _ARR = 8, 9


class GGUF:
    def __init__(self, path):
        self.buf = np.memmap(path, dtype=np.uint8, mode="r")
        self.pos = 0
        magic = bytes(self.buf[:4])
        if magic != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        self.pos = 4
        version = self._scalar(4)
        if version not in (2, 3):
            raise ValueError(f"{path}: GGUF version {version}")
        n_tensors, n_kv = self._scalar(10), self._scalar(10)
        self.kv = {}
        for _ in range(n_kv):
            key = self._string()
            self.kv[key] = self._value(self._scalar(4))
        infos = []
        for _ in range(n_tensors):
            name = self._string()
            ne = [self._scalar(10) for _ in range(self._scalar(4))]
            infos.append((name, ne, self._scalar(4), self._scalar(10)))
        align = self.kv.get("general.alignment", 32)
        data = (self.pos + align - 1) // align * align
        self.tensors = {name: (ne, t, data + off) for name, ne, t, off in infos}

    def _read(self, n):
        b = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return b

    def _scalar(self, t):
        fmt = _SCALARS[t]
        return struct.unpack(fmt, self._read(struct.calcsize(fmt)))[0]

    def _string(self):
        return self._read(self._scalar(10)).decode("utf-8", errors="replace")

    def _value(self, t):
        if t == _STR:
            return self._string()
        if t == _ARR:
            et, n = self._scalar(4), self._scalar(10)
            return [self._value(et) for _ in range(n)]
        return self._scalar(t)

    def tensor(self, name):
        """float64 torch tensor in PyTorch order (ne reversed: [out, in] for a matrix)."""
        ne, t, off = self.tensors[name]
        n = int(np.prod(ne))
        if t == 0:  # F32
            a = np.frombuffer(self.buf, dtype="<f4", count=n, offset=off)
        elif t == 1:  # F16
            a = np.frombuffer(self.buf, dtype="<f2", count=n, offset=off)
        elif t == 30:  # BF16: the top half of an f32
            a = (np.frombuffer(self.buf, dtype="<u2", count=n, offset=off).astype(np.uint32) << 16
                 ).view(np.float32)
        else:
            raise ValueError(f"{name}: tensor type {t} not supported by this reader")
        return torch.from_numpy(a.astype(np.float64).reshape(list(reversed(ne))))


# ---- the forward pass (float64) ----------------------------------------------------------------------

class Llama:
    def __init__(self, g):
        kv = g.kv
        arch = kv["general.architecture"]
        assert arch == "llama", arch
        self.L = kv["llama.block_count"]
        self.D = kv["llama.embedding_length"]
        self.H = kv["llama.attention.head_count"]
        self.Hkv = kv.get("llama.attention.head_count_kv", self.H)
        self.d = self.D // self.H
        self.eps = kv["llama.attention.layer_norm_rms_epsilon"]
        base = kv.get("llama.rope.freq_base", 10000.0)
        assert kv.get("llama.rope.dimension_count", self.d) == self.d
        self.inv_freq = base ** (-2.0 * torch.arange(self.d // 2, dtype=torch.float64) / self.d)
        self.w = {name: g.tensor(name) for name in g.tensors}
        self.out = self.w.get("output.weight", self.w["token_embd.weight"])

    def rmsnorm(self, x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + self.eps) * w

    def rope(self, x):  # x [T, heads, d], positions 0..T-1, adjacent pairs
        T = x.shape[0]
        ang = torch.arange(T, dtype=torch.float64)[:, None] * self.inv_freq[None, :]
        c, s = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = torch.empty_like(x)
        out[..., 0::2] = x0 * c - x1 * s
        out[..., 1::2] = x0 * s + x1 * c
        return out

    def attention(self, q, k, v, block=1024):
        """Causal softmax attention; q [T, H, d], k/v [T, Hkv, d] -> [T, H*d]. The g query heads
        of kv head j (h = j*g .. j*g+g-1, i.e. h // g = j) are stacked into one matrix, and the
        queries go by blocks, each against its causal prefix of keys only (masked on the diagonal
        block)."""
        T, g, d = q.shape[0], self.H // self.Hkv, self.d
        out = torch.empty(T, self.H, d, dtype=q.dtype)
        upper = torch.ones(block, block, dtype=torch.bool).triu(1)  # key after query
        for j in range(self.Hkv):
            kj, vj = k[:, j, :] / np.sqrt(d), v[:, j, :]
            for t0 in range(0, T, block):
                t1 = min(T, t0 + block)
                tb = t1 - t0
                qb = q[t0:t1, j * g:(j + 1) * g, :].transpose(0, 1).reshape(g * tb, d)
                s = (qb @ kj[:t1].T).view(g, tb, t1)
                s[:, :, t0:t1].masked_fill_(upper[:tb, :tb], float("-inf"))
                s = torch.softmax(s, dim=-1).view(g * tb, t1)
                out[t0:t1, j * g:(j + 1) * g, :] = (s @ vj[:t1]).view(g, tb, d).transpose(0, 1)
        return out.reshape(T, self.D)

    def nll(self, ids):
        """-log p(ids[t] | ids[:t]) for t = 1..len-1 (float64 numpy)."""
        w, T = self.w, len(ids)
        x = w["token_embd.weight"][torch.tensor(ids, dtype=torch.long)]
        for l in range(self.L):
            p = f"blk.{l}."
            h = self.rmsnorm(x, w[p + "attn_norm.weight"])
            q = self.rope((h @ w[p + "attn_q.weight"].T).view(T, self.H, self.d))
            k = self.rope((h @ w[p + "attn_k.weight"].T).view(T, self.Hkv, self.d))
            v = (h @ w[p + "attn_v.weight"].T).view(T, self.Hkv, self.d)
            x = x + self.attention(q, k, v) @ w[p + "attn_output.weight"].T
            h = self.rmsnorm(x, w[p + "ffn_norm.weight"])
            a = torch.nn.functional.silu(h @ w[p + "ffn_gate.weight"].T) * (h @ w[p + "ffn_up.weight"].T)
            x = x + a @ w[p + "ffn_down.weight"].T
        h = self.rmsnorm(x, w["output_norm.weight"])
        target = torch.tensor(ids[1:], dtype=torch.long)
        out = np.empty(T - 1)
        for t0 in range(0, T - 1, 1024):  # logits in slices: 4096 x 8192 doubles is 256 MiB
            t1 = min(T - 1, t0 + 1024)
            lp = torch.log_softmax(h[t0:t1] @ self.out.T, dim=-1)
            out[t0:t1] = (-lp.gather(1, target[t0:t1, None])[:, 0]).numpy()
        return out


def smallest_validation_book():
    with open(os.path.join(BOOKS, "MANIFEST.tsv"), encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        rows = [dict(zip(header, line.rstrip("\n").split("\t"))) for line in f if line.strip()]
    val = [r for r in rows if r["split"] == "validation"]
    return min(val, key=lambda r: int(r["chars"]))["file"]


def main():
    import sentencepiece as spm

    out = os.path.join(sys.argv[1] if len(sys.argv) > 1 else ".", "trained")
    os.makedirs(out, exist_ok=True)
    t_start = time.time()
    book = smallest_validation_book()
    sp = spm.SentencePieceProcessor(model_file=TOKENIZER)
    with open(os.path.join(BOOKS, book), encoding="utf-8") as f:
        text_ids = sp.encode(f.read())
    g = GGUF(MODEL)
    bos = g.kv.get("tokenizer.ggml.bos_token_id", sp.bos_id())
    assert bos == sp.bos_id() == 1, (bos, sp.bos_id())
    model = Llama(g)
    pieces = [text_ids[i:i + CHUNK - 1] for i in range(0, len(text_ids), CHUNK - 1)]
    if MAX_CHUNKS is not None:
        pieces = pieces[:MAX_CHUNKS]
    ids, nll = [], []
    with torch.no_grad():
        for c, piece in enumerate(pieces):
            chunk = [bos] + piece
            ids += chunk
            nll.append(model.nll(chunk))
            print(f"  chunk {c + 1}/{len(pieces)}: {len(chunk)} ids, mean NLL {nll[-1].mean():.5f}"
                  f" ({time.time() - t_start:.0f} s)", flush=True)
    nll = np.concatenate(nll)
    np.asarray(ids, dtype="<i4").tofile(os.path.join(out, "ids.bin"))
    nll.astype("<f8").tofile(os.path.join(out, "nll.bin"))
    secs = time.time() - t_start
    with open(os.path.join(out, "meta.txt"), "w") as f:
        f.write(f"book {book}\nchunk {CHUNK}\nn_chunks {len(pieces)}\nn_ids {len(ids)}\n"
                f"n_scored {len(nll)}\nmean_nll {nll.mean():.8f}\nppl {np.exp(nll.mean()):.5f}\n"
                f"seconds {secs:.1f}\n")
    print(f"gen_trained_ref: {book}, {len(pieces)} chunks of <= {CHUNK} ids, {len(nll)} scored tokens,"
          f" mean NLL {nll.mean():.5f} (ppl {np.exp(nll.mean()):.3f}), {secs:.1f} s -> {out}")


if __name__ == "__main__":
    main()
