"""gguf_tiny — a minimal GGUF v3 reader/writer for tests that need to take a model file apart:
patch a key, drop keys, poison or add a tensor, and write it back (not a test: the test glob is
test_*.py).

read(path) gives a dict: kvs, a list of [key, type, raw value bytes] in file order (values are
kept as their bytes, so any type round-trips), tensors, a list of dicts (name, ne, type, data: the
tensor's bytes up to the next tensor, alignment padding included) in file order, and alignment.
write(path, g) lays them out again (GGUF spec: header, kv pairs, tensor infos, padding to the
alignment, data). value(g, key) decodes a value (scalars, strings, arrays of scalars or strings)."""
import struct

GGUF_U8, GGUF_I8, GGUF_U16, GGUF_I16, GGUF_U32, GGUF_I32, GGUF_F32, GGUF_BOOL = range(8)
GGUF_STR, GGUF_ARR, GGUF_U64, GGUF_I64, GGUF_F64 = range(8, 13)
SCALAR = {GGUF_U8: "B", GGUF_I8: "b", GGUF_U16: "H", GGUF_I16: "h", GGUF_U32: "I", GGUF_I32: "i",
          GGUF_F32: "f", GGUF_BOOL: "?", GGUF_U64: "Q", GGUF_I64: "q", GGUF_F64: "d"}


class _Reader:
    def __init__(self, data):
        self.d, self.p = data, 0

    def take(self, fmt):
        v = struct.unpack_from("<" + fmt, self.d, self.p)
        self.p += struct.calcsize("<" + fmt)
        return v[0] if len(v) == 1 else v

    def string(self):
        n = self.take("Q")
        s = self.d[self.p:self.p + n]
        self.p += n
        return s

    def value(self, t):
        if t in SCALAR:
            return self.take(SCALAR[t])
        if t == GGUF_STR:
            return self.string()
        if t == GGUF_ARR:
            et, n = self.take("I"), self.take("Q")
            return [self.value(et) for _ in range(n)]
        raise ValueError(f"unknown GGUF type {t}")


def read(path):
    data = open(path, "rb").read()
    r = _Reader(data)
    assert data[:4] == b"GGUF", "not a GGUF file"
    r.p = 4
    version, n_tensors, n_kv = r.take("I"), r.take("Q"), r.take("Q")
    assert version == 3, f"GGUF version {version}"
    kvs, alignment = [], 32
    for _ in range(n_kv):
        key = r.string().decode()
        t = r.take("I")
        start = r.p
        v = r.value(t)
        kvs.append([key, t, data[start:r.p]])
        if key == "general.alignment":
            alignment = v
    infos = []
    for _ in range(n_tensors):
        name = r.string().decode()
        nd = r.take("I")
        ne = [r.take("Q") for _ in range(nd)]
        t, off = r.take("I"), r.take("Q")
        infos.append(dict(name=name, ne=ne, type=t, offset=off))
    base = (r.p + alignment - 1) // alignment * alignment
    ends = sorted(i["offset"] for i in infos)[1:] + [len(data) - base]
    end_of = dict(zip(sorted(i["offset"] for i in infos), ends))
    for i in infos:
        i["data"] = data[base + i["offset"]:base + end_of[i["offset"]]]
        del i["offset"]
    return dict(kvs=kvs, tensors=infos, alignment=alignment)


def value(g, key):
    for k, t, raw in g["kvs"]:
        if k == key:
            return _Reader(raw).value(t)
    return None


def tensors(g):
    """{name: tensor} of a read file"""
    return {t["name"]: t for t in g["tensors"]}


def set_key(g, key, t, raw):
    """replace key's type and raw value (as read: the bytes after the type)"""
    for kv in g["kvs"]:
        if kv[0] == key:
            kv[1], kv[2] = t, raw


def _str(s):
    s = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(s)) + s


def write(path, g):
    a = g["alignment"]
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(g["tensors"]), len(g["kvs"])))
    for k, t, raw in g["kvs"]:
        out += _str(k) + struct.pack("<I", t) + raw
    off, blobs = 0, []
    for t in g["tensors"]:
        d = bytes(t["data"])
        d += bytes(-len(d) % a)
        out += _str(t["name"]) + struct.pack("<I", len(t["ne"]))
        out += b"".join(struct.pack("<Q", n) for n in t["ne"]) + struct.pack("<IQ", t["type"], off)
        blobs.append(d)
        off += len(d)
    out += bytes(-len(out) % a)
    for d in blobs:
        out += d
    open(path, "wb").write(bytes(out))


def vocab_hash(g):
    """spm_vocab_hash (src/text/tokenizer.h) of a file's tokenizer keys, as train/shard.h documents
    it: FNV-1a 64 over (u32 length, bytes, u32 type, u32 score bits) per piece in id order."""
    tokens = value(g, "tokenizer.ggml.tokens")
    scores = value(g, "tokenizer.ggml.scores")
    types = value(g, "tokenizer.ggml.token_type")
    if types is None:
        bos = value(g, "tokenizer.ggml.bos_token_id")
        eos = value(g, "tokenizer.ggml.eos_token_id")
        unk = value(g, "tokenizer.ggml.unknown_token_id")
        bos, eos, unk = 1 if bos is None else bos, 2 if eos is None else eos, 0 if unk is None else unk
        types = [3 if i in (bos, eos) else 2 if i == unk else 1 for i in range(len(tokens))]
    h = 0xcbf29ce484222325
    for piece, score, t in zip(tokens, scores, types):
        for b in struct.pack("<I", len(piece)) + piece + struct.pack("<I", t or 1) + struct.pack("<f", score):
            h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h
