"""ggufpy — a small, independent GGUF v3 writer for the test references (numpy only).

Written from the GGUF specification, not from msrnn's C: the tests use it to build model files whose
contents they know, so that msrnn's reader and forward pass are checked against something else.
Quantisers follow ggml's reference rounding (Q8_0: d = amax/127, q = round(x/d); Q4_0: d = max/-8,
q = min(15, int(x/d + 8.5))); dequantize() gives exactly the values a correct engine must compute with.
"""
import struct

import numpy as np

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
T_F32, T_F16, T_Q4_0, T_Q8_0, T_BF16 = 0, 1, 2, 8, 30
TYPE_NAMES = {"f32": T_F32, "f16": T_F16, "q4_0": T_Q4_0, "q8_0": T_Q8_0, "bf16": T_BF16}
_SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
           BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}


def _str(s):
    b = s.encode() if isinstance(s, str) else bytes(s)
    return struct.pack("<Q", len(b)) + b


def _value(vtype, v):
    if vtype == STR:
        return _str(v)
    if vtype == ARR:
        etype, items = v
        out = struct.pack("<IQ", etype, len(items))
        if etype in (STR, ARR):
            return out + b"".join(_value(etype, x) for x in items)
        return out + b"".join(struct.pack(_SCALAR[etype], x) for x in items)
    return struct.pack(_SCALAR[vtype], v)


def f32_to_bf16_bits(x):
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def quantize(x, ttype):
    """x: float32 array [rows, n]; returns raw bytes of the GGUF tensor data."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if ttype == T_F32:
        return x.tobytes()
    if ttype == T_F16:
        return x.astype(np.float16).tobytes()
    if ttype == T_BF16:
        return f32_to_bf16_bits(x).tobytes()
    blocks = x.reshape(-1, 32)
    if ttype == T_Q8_0:
        amax = np.abs(blocks).max(axis=1)
        d = amax / 127.0
        inv = np.where(d != 0, 1.0 / np.where(d != 0, d, 1), 0).astype(np.float32)
        q = np.round(blocks * inv[:, None])  # numpy rounds half to even; fix to half away from zero
        t = blocks * inv[:, None]
        q = np.where(np.abs(t - np.trunc(t)) == 0.5, np.trunc(t) + np.sign(t), q)
        rec = np.zeros(len(blocks), dtype=[("d", "<f2"), ("q", "i1", 32)])
        rec["d"] = d.astype(np.float16)
        rec["q"] = q.astype(np.int8)
        return rec.tobytes()
    if ttype == T_Q4_0:
        idx = np.abs(blocks).argmax(axis=1)
        mx = blocks[np.arange(len(blocks)), idx]
        d = (mx / -8.0).astype(np.float32)
        inv = np.where(d != 0, 1.0 / np.where(d != 0, d, 1), 0).astype(np.float32)
        q = np.minimum(15, np.trunc(blocks * inv[:, None] + 8.5).astype(np.int32)).astype(np.uint8)
        rec = np.zeros(len(blocks), dtype=[("d", "<f2"), ("q", "u1", 16)])
        rec["d"] = d.astype(np.float16)
        rec["q"] = q[:, :16] | (q[:, 16:] << 4)
        return rec.tobytes()
    raise ValueError(f"unknown tensor type {ttype}")


def dequantize(raw, ttype, shape):
    """Inverse of quantize(): the float32 values an engine reading the file must use."""
    if ttype == T_F32:
        return np.frombuffer(raw, dtype=np.float32).reshape(shape).copy()
    if ttype == T_F16:
        return np.frombuffer(raw, dtype=np.float16).astype(np.float32).reshape(shape)
    if ttype == T_BF16:
        b = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
        return b.view(np.float32).reshape(shape)
    if ttype == T_Q8_0:
        rec = np.frombuffer(raw, dtype=[("d", "<f2"), ("q", "i1", 32)])
        return (rec["q"].astype(np.float32) * rec["d"].astype(np.float32)[:, None]).reshape(shape)
    if ttype == T_Q4_0:
        rec = np.frombuffer(raw, dtype=[("d", "<f2"), ("q", "u1", 16)])
        lo = (rec["q"] & 15).astype(np.float32) - 8
        hi = (rec["q"] >> 4).astype(np.float32) - 8
        q = np.concatenate([lo, hi], axis=1)
        return (q * rec["d"].astype(np.float32)[:, None]).reshape(shape)
    raise ValueError(f"unknown tensor type {ttype}")


class GGUFWriter:
    def __init__(self, alignment=32):
        self.kv = []  # (key, vtype, value)
        self.tensors = []  # (name, ne list fastest-first, ttype, raw bytes)
        self.alignment = alignment

    def add(self, key, vtype, value):
        self.kv.append((key, vtype, value))

    def add_tensor(self, name, array, ttype=T_F32):
        """array: numpy [.., rows, n] in PyTorch order; stored with ne = reversed(shape)."""
        array = np.asarray(array, dtype=np.float32)
        raw = quantize(array, ttype)
        self.tensors.append((name, list(reversed(array.shape)), ttype, raw))
        return dequantize(raw, ttype, array.shape)

    def to_bytes(self):
        kv = list(self.kv)
        if self.alignment != 32:
            kv.append(("general.alignment", U32, self.alignment))
        out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(self.tensors), len(kv)))
        for key, vtype, value in kv:
            out += _str(key) + struct.pack("<I", vtype) + _value(vtype, value)
        offset = 0
        offsets = []
        for name, ne, ttype, raw in self.tensors:
            offsets.append(offset)
            out += _str(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
            out += struct.pack("<IQ", ttype, offset)
            offset += (len(raw) + self.alignment - 1) // self.alignment * self.alignment
        out += b"\0" * (-len(out) % self.alignment)
        for (name, ne, ttype, raw), off in zip(self.tensors, offsets):
            out += raw + b"\0" * (-len(raw) % self.alignment)
        return bytes(out)

    def write(self, path):
        with open(path, "wb") as f:
            f.write(self.to_bytes())


def add_spm_vocab(w, model_path):
    """Put a SentencePiece model's vocabulary into the GGUF tokenizer keys, as llama.cpp's converter
    does (token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=model_path)
    n = sp.get_piece_size()
    tokens, scores, types = [], [], []
    for i in range(n):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            t = 2
        elif sp.is_control(i):
            t = 3
        elif sp.is_unused(i):
            t = 5
        elif sp.is_byte(i):
            t = 6
        else:
            t = 1
        types.append(t)
    w.add("tokenizer.ggml.model", STR, "llama")
    w.add("tokenizer.ggml.tokens", ARR, (STR, tokens))
    w.add("tokenizer.ggml.scores", ARR, (F32, scores))
    w.add("tokenizer.ggml.token_type", ARR, (I32, types))
    w.add("tokenizer.ggml.bos_token_id", U32, sp.bos_id())
    w.add("tokenizer.ggml.eos_token_id", U32, sp.eos_id())
    w.add("tokenizer.ggml.unknown_token_id", U32, sp.unk_id())
    w.add("tokenizer.ggml.add_bos_token", BOOL, True)
    w.add("tokenizer.ggml.add_eos_token", BOOL, False)
    return sp
