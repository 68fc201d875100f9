"""test_dijiang_cli — `dijiang` files and `msrnn convert --to dijiang` from the command line.

Every expected value is computed here from docs/METHODS.md §3 and §6 (numpy, math and
statistics.NormalDist for Φ⁻¹), never from msrnn's output. Models: a tiny llama (init-model,
models/default.gguf's vocabulary; D = 64, 3 layers, H = 4, H_kv = 2, d = 16) and a one-head,
one-layer q8_0 llama (D = d = 32), converted:

1. convert: dijiang.* in place of llama.*, general.architecture "dijiang", dijiang.feature_count
   (u32, default d) and dijiang.attention.group_norm_epsilon (f32 1e-5); every llama tensor copied
   byte for byte (same type, same shape, same bytes; q8_0 too); per layer exactly five new tensors:
   - blk.L.attn_feat (f32, ne = [m, d], P[i][j] at i·m + j) = s_i cos(π i (2j+1) / 2d) Φ⁻¹(u_j),
     u_j the radical inverse of j + 1 in base p_L (2, 3, 5, ...), to within f32 rounding of the
     double value, for m = d, m = 24 and m = 65536 (the far tails of Φ⁻¹); with --sampler random
     the same structure with per-column w_j = Φ⁻¹(u_j), u_j uniform in (0, 1) (KS test at m = 4096),
     the same bytes for the default seed and --seed 1, other bytes for --seed 2;
   - blk.L.attn_decay (f32 [H]) γ_h = 1 − exp(ln(1/32) + (ln(1/512) − ln(1/32)) h/(H − 1)),
     1 − 1/32 for H = 1;
   - blk.L.attn_gate (f32, ne = [D, H·d]): Xavier-uniform with gain 2^−2.5 (bound, spread, mean);
   - blk.L.attn_gnorm.weight ones, blk.L.attn_gnorm.bias zeros (f32 [H·d]).
   The same command writes the same bytes; info prints the method's keys.
2. Refused, exit 1 and nothing written: a dijiang or infini input, an output folder that does
   not exist. Usage errors (exit 2): --to unknown, --sampler sobol, --features 0 / 65537 / abc,
   no -m.
3. Broken dijiang files (gguf_tiny copies) exit 1 in generate naming the tensor or key:
   attn_feat / attn_gate / attn_gnorm.weight missing, attn_feat of shape [m, d+1], [m+1, d], [m·d]
   or [d, m] (m = 24: transposed), feature_count 0 or not matching attn_feat, a decay of 1, 0,
   −0.5, 1.5 or NaN (in layer 0 or 2, any head), a decay of the wrong length. Loadable:
   feature_count or group_norm_epsilon absent (their defaults: d, 1e-5), printing what the
   complete file prints.
4. The dijiang model runs: generate (150 tokens past the 64-token context with -c), perplexity on
   one chunk of a few thousand tokens, bench --depth with the same state bytes at every depth
   (more for m = 24 than m = 16); --kv window --kv-size 64 exits 2 naming the memory.
5. train --init from the dijiang file for 2 steps: still dijiang, attn_feat and attn_decay bit for
   bit unchanged (fixed), attn_gate changed.
6. train --unfreeze attn_decay: γ trained, inside (0, 1) (one step at lr 10: on its bounds), P still
   fixed, the model runs; --unfreeze attn_feat (fixed), a misspelt name (the message lists
   attn_decay), "" and stray commas refused, nothing written; the checkpoint records the list, a
   resumed run equals the uninterrupted one bit for bit, resuming with another list refused.
7. train --teacher LLAMA: the weights differ from the plain loss's; the checkpoint records the
   teacher; resumed = uninterrupted bit for bit; resuming with another teacher, or adding one to a
   plain run, refused; a teacher with another vocabulary (gutenberg-ref, 32000) or a missing file
   refused, nothing written.
"""
import json
import math
import os
import struct
import subprocess
import tempfile
from statistics import NormalDist

import numpy as np

import gguf_tiny
from gguf_tiny import set_key, tensors
from checks import check, finish

BIN = os.environ["MSRNN_BIN"]
SHARED = os.environ["MSRNN_SHARED"]
SRC = os.environ.get("MSRNN_SOURCE_DIR", ".")
VOCAB = os.path.join(SRC, "models", "default.gguf")
BOOK = os.path.join(SHARED, "data", "gutenberg", "pg55.txt")
D, LAYERS, H, HKV, HD = 64, 3, 4, 2, 16
SHAPE = ["--dim", str(D), "--layers", str(LAYERS), "--heads", str(H), "--kv-heads", str(HKV),
         "--ffn", "128", "--ctx", "64"]
SHAPE1 = ["--dim", "32", "--layers", "1", "--heads", "1", "--ffn", "64", "--ctx", "64", "--type", "q8_0"]
PRIMES = [2, 3, 5, 7, 11, 13]
NEW = ("attn_feat", "attn_decay", "attn_gate", "attn_gnorm.weight", "attn_gnorm.bias")
PHI_INV = NormalDist().inv_cdf
PHI = NormalDist().cdf


def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, errors="replace", timeout=600)


def tail(r):
    return r.stderr[-400:]


# ---- the specification, computed independently ---------------------------------------------------

def radical_inverse(n, base):
    """n's base-`base` digits mirrored about the point: num / base^k exactly, rounded once to a
    double (Python's int / int is correctly rounded)."""
    num, den = 0, 1
    while n:
        n, digit = divmod(n, base)
        num, den = num * base + digit, den * base
    return num / den


assert [radical_inverse(n, 2) for n in (1, 2, 3, 4)] == [0.5, 0.25, 0.75, 0.125]
assert [radical_inverse(n, 3) for n in (1, 2, 3, 4)] == [1 / 3, 2 / 3, 1 / 9, 4 / 9]
assert radical_inverse(65536, 2) == 2.0 ** -17 and radical_inverse(3 * 25 + 2 * 5 + 4, 5) == (4 * 25 + 2 * 5 + 3) / 125


def dct_scaled(d, m):
    """C[i][j] = s_i cos(π i (2j+1) / 2d) for i < d, j < m (double); P = C · diag(w)."""
    i = np.arange(d, dtype=np.float64)[:, None]
    j = np.arange(m, dtype=np.float64)[None, :]
    s = np.where(i == 0, math.sqrt(1.0 / d), math.sqrt(2.0 / d))
    return s * np.cos(math.pi * i * (2 * j + 1) / (2 * d))


# the m = d matrix with w = 1 is the orthonormal DCT-II's transpose (the official dct(eye(d), norm='ortho'))
_c = dct_scaled(16, 16)
assert np.allclose(_c.T @ _c, np.eye(16), atol=1e-12) and np.allclose(_c @ _c.T, np.eye(16), atol=1e-12)


def halton_P(layer, d, m):
    w = np.array([PHI_INV(radical_inverse(j + 1, PRIMES[layer])) for j in range(m)])
    return dct_scaled(d, m) * w[None, :]


def decays(n_head):
    if n_head == 1:
        return [1.0 - 1.0 / 32]
    a, b = math.log(1 / 32), math.log(1 / 512)
    return [1.0 - math.exp(a + (b - a) * h / (n_head - 1)) for h in range(n_head)]


def near_f32(got, want, atol=1e-12):
    """got (f32) is the double `want` rounded to f32, give or take one f32 step (Φ⁻¹, cos and the
    radical inverse may differ from this file's by a few double ulps); atol for the entries whose
    cosine is zero (cos(π/2·odd) is ~1e-17 in double, computed either way)."""
    want = np.asarray(want, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    tol = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64) + atol
    err = np.abs(got - want)
    return bool(np.all(err <= tol)), float(np.max(err / tol)) if err.size else 0.0


def f32s(t):
    return np.frombuffer(t["data"][:4 * int(np.prod(t["ne"]))], dtype="<f4").astype(np.float64)


def nbytes(t):
    n = int(np.prod(t["ne"]))
    per = {0: 4, 1: 2, 30: 2}
    if t["type"] in per:
        return n * per[t["type"]]
    block = {8: 34, 2: 18}[t["type"]]  # q8_0, q4_0: 32 elements per block
    return n // 32 * block


def check_convert(src, dst, label, d, n_head, n_layer, m):
    """Part 1 on one converted file: keys, copies, the five new tensors of every layer."""
    check(gguf_tiny.value(dst, "general.architecture") == b"dijiang", f"{label}: general.architecture dijiang")
    kv = {k: t for k, t, _ in dst["kvs"]}
    check(kv.get("dijiang.feature_count") == gguf_tiny.GGUF_U32 and
          gguf_tiny.value(dst, "dijiang.feature_count") == m, f"{label}: dijiang.feature_count u32 {m}")
    eps = gguf_tiny.value(dst, "dijiang.attention.group_norm_epsilon")
    check(kv.get("dijiang.attention.group_norm_epsilon") == gguf_tiny.GGUF_F32 and
          eps == struct.unpack("<f", struct.pack("<f", 1e-5))[0],
          f"{label}: dijiang.attention.group_norm_epsilon f32 1e-5 ({eps})")
    check(not any(k.startswith("llama.") for k, _, _ in dst["kvs"]), f"{label}: no llama.* key left")
    for k, _, _ in src["kvs"]:
        if k.startswith("llama."):
            want = "dijiang." + k[6:]
            check(gguf_tiny.value(dst, want) == gguf_tiny.value(src, k), f"{label}: {want} = {k}")
        elif k != "general.architecture":
            check(gguf_tiny.value(dst, k) == gguf_tiny.value(src, k), f"{label}: {k} copied")
    st, dt = tensors(src), tensors(dst)
    for name, s in st.items():
        t = dt.get(name)
        check(t is not None and t["ne"] == s["ne"] and t["type"] == s["type"] and
              t["data"][:nbytes(s)] == s["data"][:nbytes(s)], f"{label}: {name} copied byte for byte")
    want_new = {f"blk.{L}.{n}" for L in range(n_layer) for n in NEW}
    check(set(dt) == set(st) | want_new, f"{label}: new tensors {sorted(set(dt) - set(st))}")
    hd = n_head * d
    dim = gguf_tiny.value(src, "llama.embedding_length")
    a = 2 ** -2.5 * math.sqrt(6.0 / (dim + hd))
    for L in range(n_layer):
        if not want_new <= set(dt):
            break
        feat, dec, gate = dt[f"blk.{L}.attn_feat"], dt[f"blk.{L}.attn_decay"], dt[f"blk.{L}.attn_gate"]
        gw, gb = dt[f"blk.{L}.attn_gnorm.weight"], dt[f"blk.{L}.attn_gnorm.bias"]
        check(feat["type"] == 0 and feat["ne"] == [m, d], f"{label}: blk.{L}.attn_feat f32 ne [{m}, {d}]: "
              f"{feat['type']} {feat['ne']}")
        if feat["type"] == 0 and feat["ne"] == [m, d]:
            ok, worst = near_f32(f32s(feat).reshape(d, m), halton_P(L, d, m))
            check(ok, f"{label}: blk.{L}.attn_feat = s_i cos(π i(2j+1)/2d) Φ⁻¹(halton_{PRIMES[L]}(j+1)) "
                  f"(worst error {worst:.3g} × the f32 step)")
        check(dec["type"] == 0 and dec["ne"] == [n_head], f"{label}: blk.{L}.attn_decay f32 ne [{n_head}]")
        if dec["type"] == 0 and dec["ne"] == [n_head]:
            ok, worst = near_f32(f32s(dec), decays(n_head), atol=0)
            check(ok, f"{label}: blk.{L}.attn_decay = {decays(n_head)} (got {list(f32s(dec))})")
        check(gate["type"] == 0 and gate["ne"] == [dim, hd], f"{label}: blk.{L}.attn_gate f32 ne [{dim}, {hd}]:"
              f" {gate['type']} {gate['ne']}")
        if gate["type"] == 0 and gate["ne"] == [dim, hd]:
            w = f32s(gate)
            # uniform on [-a, a]: sd a/√3, mean 0, the largest |w| close to a (n ≥ 1024 draws)
            sd, mean, top = float(w.std()), float(w.mean()), float(np.abs(w).max())
            check(top <= a * (1 + 2 ** -23), f"{label}: blk.{L}.attn_gate |w| ≤ 2^-2.5·sqrt(6/(D+Hd)) = {a:.6g}"
                  f" (max {top:.6g})")
            check(top >= 0.95 * a and abs(sd / (a / math.sqrt(3)) - 1) < 0.06 and abs(mean) < 0.1 * a,
                  f"{label}: blk.{L}.attn_gate spread like U(-a, a): max {top:.4g}, sd {sd:.4g} "
                  f"(want {a / math.sqrt(3):.4g}), mean {mean:.3g}")
        check(gw["type"] == 0 and gw["ne"] == [hd] and np.all(f32s(gw) == 1.0),
              f"{label}: blk.{L}.attn_gnorm.weight f32 [{hd}] ones")
        check(gb["type"] == 0 and gb["ne"] == [hd] and np.all(f32s(gb) == 0.0) and
              not np.any(np.signbit(f32s(gb))), f"{label}: blk.{L}.attn_gnorm.bias f32 [{hd}] zeros")


with tempfile.TemporaryDirectory() as tmp:
    P = lambda name: os.path.join(tmp, name)  # noqa: E731
    same = lambda a, b: open(P(a), "rb").read() == open(P(b), "rb").read()  # noqa: E731
    r = run("init-model", "--vocab-from", VOCAB, "-o", P("llama.gguf"), *SHAPE, "--std", "0.3", "--seed", "5")
    check(r.returncode == 0, f"init-model: {tail(r)}")
    r = run("init-model", "--vocab-from", VOCAB, "-o", P("one.gguf"), *SHAPE1, "--std", "0.3", "--seed", "3")
    check(r.returncode == 0, f"init-model (one head, q8_0): {tail(r)}")
    conv = lambda src, out, *a: run("convert", "--to", "dijiang", "-m", P(src), "-o", P(out), *a)  # noqa: E731

    # 1. what convert writes
    r = conv("llama.gguf", "dj.gguf")
    check(r.returncode == 0, f"convert: {tail(r)}")
    r = conv("llama.gguf", "dj2.gguf", "--sampler", "halton")
    check(r.returncode == 0 and same("dj.gguf", "dj2.gguf"),
          f"convert twice (--sampler halton the default) writes the same bytes: {tail(r)}")
    src = gguf_tiny.read(P("llama.gguf"))
    if os.path.exists(P("dj.gguf")):
        check_convert(src, gguf_tiny.read(P("dj.gguf")), "m = d", HD, H, LAYERS, HD)
    r = conv("llama.gguf", "dj24.gguf", "--features", "24")
    check(r.returncode == 0, f"convert --features 24: {tail(r)}")
    if r.returncode == 0:
        check_convert(src, gguf_tiny.read(P("dj24.gguf")), "m = 24", HD, H, LAYERS, 24)
    r = conv("one.gguf", "dj1.gguf")
    check(r.returncode == 0, f"convert (one head, q8_0): {tail(r)}")
    if r.returncode == 0:
        check_convert(gguf_tiny.read(P("one.gguf")), gguf_tiny.read(P("dj1.gguf")), "H = 1, q8_0", 32, 1, 1, 32)
    r = conv("one.gguf", "big.gguf", "--features", "65536")  # u_65535 = 2^-17: Φ⁻¹'s far tail
    check(r.returncode == 0, f"convert --features 65536 (the largest allowed): {tail(r)}")
    if r.returncode == 0:
        t = tensors(gguf_tiny.read(P("big.gguf")))["blk.0.attn_feat"]
        check(t["ne"] == [65536, 32], f"--features 65536: attn_feat ne {t['ne']}")
        if t["ne"] == [65536, 32]:
            ok, worst = near_f32(f32s(t).reshape(32, 65536), halton_P(0, 32, 65536))
            check(ok, f"--features 65536: attn_feat to within f32 rounding (worst {worst:.3g} × the step)")
        os.remove(P("big.gguf"))

    # --sampler random: P = C · diag(w) with a per-column w = Φ⁻¹(u), u uniform in (0, 1), seeded
    r = conv("llama.gguf", "rnd.gguf", "--sampler", "random")
    r1 = conv("llama.gguf", "rnd1.gguf", "--sampler", "random", "--seed", "1")
    r2 = conv("llama.gguf", "rnd2.gguf", "--sampler", "random", "--seed", "2")
    check(r.returncode == 0 and r1.returncode == 0 and r2.returncode == 0,
          f"convert --sampler random: {tail(r)} {tail(r1)} {tail(r2)}")
    if r.returncode == 0 and r1.returncode == 0 and r2.returncode == 0:
        check(same("rnd.gguf", "rnd1.gguf"), "--sampler random: the default seed is 1 (same bytes)")
        a, b, c = (tensors(gguf_tiny.read(P(f))) for f in ("rnd.gguf", "rnd2.gguf", "dj.gguf"))
        r3 = conv("llama.gguf", "rnd3.gguf", "--sampler", "random")
        check(r3.returncode == 0 and same("rnd.gguf", "rnd3.gguf"), "--sampler random twice: the same bytes")
        for L in range(LAYERS):
            n = f"blk.{L}.attn_feat"
            check(a[n]["data"] != b[n]["data"], f"--seed 2: {n} differs from --seed 1's")
            check(a[n]["data"] != c[n]["data"], f"--sampler random: {n} differs from halton's")
            for k in ("attn_decay", "attn_gnorm.weight", "attn_gnorm.bias"):
                k = f"blk.{L}.{k}"
                check(a[k]["data"] == c[k]["data"], f"--sampler random: {k} as halton's")
        for name, t in a.items():
            if not any(name.endswith(k) for k in NEW):
                check(t["data"] == c[name]["data"], f"--sampler random: {name} copied")
    r = conv("llama.gguf", "rndbig.gguf", "--sampler", "random", "--features", "4096", "--seed", "7")
    check(r.returncode == 0, f"convert --sampler random --features 4096: {tail(r)}")
    if r.returncode == 0:
        g = tensors(gguf_tiny.read(P("rndbig.gguf")))
        for L in range(LAYERS):
            t, m = g[f"blk.{L}.attn_feat"], 4096
            check(t["type"] == 0 and t["ne"] == [m, HD], f"random 4096: blk.{L}.attn_feat ne {t['ne']}")
            if t["ne"] != [m, HD]:
                continue
            p = f32s(t).reshape(HD, m)
            w = p[0] / math.sqrt(1.0 / HD)  # row 0: s_0 · 1 · w_j
            pred = dct_scaled(HD, m) * w[None, :]
            tol = 2 * np.spacing(np.abs(pred).astype(np.float32)).astype(np.float64) + 1e-12
            err = np.abs(p - pred)
            check(bool(np.all(err <= tol)), f"random 4096: blk.{L}.attn_feat = s_i cos(π i(2j+1)/2d) w_j "
                  f"(worst {float(np.max(err / tol)):.3g} × the tolerance)")
            u = np.sort(np.array([PHI(x) for x in w]))
            ks = float(np.max(np.maximum(np.arange(1, m + 1) / m - u, u - np.arange(m) / m)))
            check(np.all(np.isfinite(w)) and 0 < u[0] and u[-1] < 1 and ks < 2.3 / math.sqrt(m),
                  f"random 4096: blk.{L}: Φ(w_j) uniform in (0, 1) (KS distance {ks:.4f}, "
                  f"limit {2.3 / math.sqrt(m):.4f})")
        os.remove(P("rndbig.gguf"))

    r = run("info", P("dj.gguf"))
    check(r.returncode == 0 and "dijiang.feature_count" in r.stdout and
          "dijiang.attention.group_norm_epsilon" in r.stdout, f"info prints the method's keys: {tail(r)}")

    # 2. refusals
    r = run("convert", "--to", "infini", "--segment", "4", "-m", P("llama.gguf"), "-o", P("inf.gguf"))
    check(r.returncode == 0, f"convert --to infini: {tail(r)}")
    for args, code, what in [
        (["--to", "dijiang", "-m", P("dj.gguf"), "-o", P("out.gguf")], 1, "llama"),
        (["--to", "dijiang", "-m", P("inf.gguf"), "-o", P("out.gguf")], 1, "llama"),
        (["--to", "dijiang", "-m", P("llama.gguf"), "-o", P("nodir/out.gguf")], 1, "nodir"),
        (["--to", "dijiangx", "-m", P("llama.gguf"), "-o", P("out.gguf")], 2, "--to"),
        (["--to", "dijiang", "--sampler", "sobol", "-m", P("llama.gguf"), "-o", P("out.gguf")], 2, "--sampler"),
        (["--to", "dijiang", "--features", "0", "-m", P("llama.gguf"), "-o", P("out.gguf")], 2, "--features"),
        (["--to", "dijiang", "--features", "65537", "-m", P("llama.gguf"), "-o", P("out.gguf")], 2, "--features"),
        (["--to", "dijiang", "--features", "abc", "-m", P("llama.gguf"), "-o", P("out.gguf")], 2, "--features"),
        (["--to", "dijiang", "--features", "-16", "-m", P("llama.gguf"), "-o", P("out.gguf")], 2, "--features"),
        (["--to", "dijiang", "-o", P("out.gguf")], 2, "-m"),
    ]:
        r = run("convert", *args)
        check(r.returncode == code and what in r.stderr,
              f"convert {' '.join(args[:4])}: exit {r.returncode} (want {code}), message names {what!r}: {tail(r)}")
        check(not os.path.exists(P("out.gguf")) and not os.path.exists(P("nodir")),
              f"convert {' '.join(args[:4])}: nothing written")
    check(not [f for f in os.listdir(tmp) if ".tmp-" in f], "no temporary files left")

    # 3. broken dijiang files
    def broken(name, edit, base="dj.gguf"):
        g = gguf_tiny.read(P(base))
        edit(g)
        gguf_tiny.write(P(name), g)
        return P(name)

    def drop(name):
        return lambda g: g.update(tensors=[t for t in g["tensors"] if t["name"] != name])

    def reshape(name, ne):
        return lambda g: [t.update(ne=ne, data=np.full(int(np.prod(ne)), 0.1, "<f4").tobytes())
                          for t in g["tensors"] if t["name"] == name]

    def poke(name, index, value):
        def edit(g):
            for t in g["tensors"]:
                if t["name"] == name:
                    d = bytearray(t["data"])
                    d[4 * index:4 * index + 4] = struct.pack("<f", value)
                    t["data"] = bytes(d)
        return edit

    u32 = lambda v: (gguf_tiny.GGUF_U32, struct.pack("<I", v))  # noqa: E731
    gen = ["-p", "It was a dark and stormy night", "-n", "12", "--temp", "0", "-t", "1"]
    cases = [
        ("no_feat.gguf", drop("blk.0.attn_feat"), "blk.0.attn_feat", "dj.gguf"),
        ("feat_d1.gguf", reshape("blk.0.attn_feat", [HD, HD + 1]), "blk.0.attn_feat", "dj.gguf"),
        ("feat_m1.gguf", reshape("blk.0.attn_feat", [HD + 1, HD]), "blk.0.attn_feat", "dj.gguf"),
        ("feat_1d.gguf", reshape("blk.1.attn_feat", [HD * HD]), "blk.1.attn_feat", "dj.gguf"),
        ("m24_T.gguf", lambda g: [t.update(ne=[HD, 24]) for t in g["tensors"] if t["name"] == "blk.0.attn_feat"],
         "blk.0.attn_feat", "dj24.gguf"),
        ("m24_says16.gguf", lambda g: set_key(g, "dijiang.feature_count", *u32(HD)), "blk.0.attn_feat", "dj24.gguf"),
        ("m24_nokey.gguf", lambda g: g.update(kvs=[kv for kv in g["kvs"] if kv[0] != "dijiang.feature_count"]),
         "blk.0.attn_feat", "dj24.gguf"),
        ("m0.gguf", lambda g: set_key(g, "dijiang.feature_count", *u32(0)), "dijiang.feature_count", "dj.gguf"),
        ("no_gate.gguf", drop("blk.1.attn_gate"), "blk.1.attn_gate", "dj.gguf"),
        ("no_gnorm.gguf", drop("blk.0.attn_gnorm.weight"), "blk.0.attn_gnorm.weight", "dj.gguf"),
        ("decay_len.gguf", reshape("blk.0.attn_decay", [H + 1]), "blk.0.attn_decay", "dj.gguf"),
        ("decay_1.gguf", poke("blk.0.attn_decay", 3, 1.0), "blk.0.attn_decay", "dj.gguf"),
        ("decay_0.gguf", poke("blk.0.attn_decay", 0, 0.0), "blk.0.attn_decay", "dj.gguf"),
        ("decay_neg.gguf", poke("blk.0.attn_decay", 1, -0.5), "blk.0.attn_decay", "dj.gguf"),
        ("decay_15.gguf", poke("blk.0.attn_decay", 2, 1.5), "blk.0.attn_decay", "dj.gguf"),
        ("decay_nan.gguf", poke("blk.0.attn_decay", 0, float("nan")), "blk.0.attn_decay", "dj.gguf"),
        ("decay_nan2.gguf", poke("blk.2.attn_decay", 3, float("nan")), "blk.2.attn_decay", "dj.gguf"),
    ]
    for name, edit, what, base in cases:
        if not os.path.exists(P(base)):
            break
        path = broken(name, edit, base)
        r = run("generate", "-m", path, *gen)
        check(r.returncode == 1 and what in r.stderr, f"{name}: exit {r.returncode} (want 1), names {what}: {tail(r)}")
    # the keys' defaults: feature_count = d, group_norm_epsilon = 1e-5 (what convert writes)
    ref = run("generate", "-m", P("dj.gguf"), *gen)
    check(ref.returncode == 0 and len(ref.stdout) > 10, f"generate on dijiang: {tail(ref)}")
    for name, key in [("nom.gguf", "dijiang.feature_count"), ("noeps.gguf", "dijiang.attention.group_norm_epsilon")]:
        if ref.returncode:
            break
        path = broken(name, lambda g: g.update(kvs=[kv for kv in g["kvs"] if kv[0] != key]))
        r = run("generate", "-m", path, *gen)
        check(r.returncode == 0 and r.stdout == ref.stdout,
              f"{key} absent: its default, the same text ({r.stdout!r} vs {ref.stdout!r}): {tail(r)}")

    # 4. the dijiang model runs
    for f in ("dj24.gguf", "dj1.gguf", "rnd.gguf"):
        r = run("generate", "-m", P(f), *gen)
        check(r.returncode == 0 and len(r.stdout) > 10, f"generate on {f}: {tail(r)}")
    r = run("generate", "-m", P("dj.gguf"), "-p", "hi", "-n", "150", "-c", "512", "--temp", "0", "--ignore-eos",
            "--json", "-t", "1")
    try:
        ids = json.loads(r.stdout)["ids"] if r.returncode == 0 else []
    except (ValueError, KeyError):
        ids = []
    check(len(ids) == 150, f"generate 150 tokens past the 64-token context: {len(ids)} ids: {tail(r)}")
    text = open(BOOK, encoding="utf-8", errors="replace").read()[:9000]
    open(P("text.txt"), "w").write(text)
    r = run("perplexity", "-m", P("dj.gguf"), "-f", P("text.txt"), "--ctx", "4096", "-t", "2", "--json")
    try:
        pp = json.loads(r.stdout) if r.returncode == 0 else {}
    except ValueError:
        pp = {}
    check(pp.get("n_tokens", 0) > 2000 and pp.get("chunk_tokens") == [pp.get("n_tokens")] and
          math.isfinite(pp.get("ppl", math.nan)) and pp.get("ppl", 0) > 1,
          f"perplexity on dijiang, one chunk of {pp.get('n_tokens')} tokens (context 64): ppl {pp.get('ppl')}: "
          f"{tail(r)}")
    state = {}
    for f in ("dj.gguf", "dj24.gguf"):
        r = run("bench", "-m", P(f), "-p", "0", "-n", "8", "-r", "1", "--depth", "16,256,1024", "-t", "1", "--json")
        try:
            out = json.loads(r.stdout) if r.returncode == 0 else {}
        except ValueError:
            out = {}
        rows = out.get("depths", [])
        check(len(rows) == 3, f"bench --depth on {f}: {tail(r)} {r.stdout[:300]}")
        if len(rows) != 3:
            continue
        check(out.get("memory") == "dijiang", f"bench on {f} names the memory dijiang: {out.get('memory')}")
        check(len({x["session_bytes"] for x in rows}) == 1 and len({x["memory_bytes"] for x in rows}) == 1 and
              all(x["tg_tps"] > 0 for x in rows),
              f"bench --depth on {f}: state bytes the same at every depth "
              f"{[(x['memory_bytes'], x['session_bytes']) for x in rows]}")
        check(all(0 < x["memory_bytes"] <= x["session_bytes"] for x in rows),
              f"bench on {f}: the memory's bytes within the session's")
        state[f] = rows[0]["memory_bytes"]
    if len(state) == 2:
        check(state["dj24.gguf"] > state["dj.gguf"], f"state S (m × d per head) grows with m: {state}")
    r = run("generate", "-m", P("dj.gguf"), "--kv", "window", "--kv-size", "64", *gen)
    check(r.returncode == 2 and "memory" in r.stderr,
          f"--kv window on dijiang (generate): exit {r.returncode}: {tail(r)}")
    r = run("perplexity", "-m", P("dj.gguf"), "-f", P("text.txt"), "--kv", "window", "--kv-size", "64", "-t", "1")
    check(r.returncode == 2 and "memory" in r.stderr,
          f"--kv window on dijiang (perplexity): exit {r.returncode}: {tail(r)}")

    # 5. training from the dijiang file: P and γ fixed, W_G trained
    r = run("tokenize-corpus", "-m", P("llama.gguf"), "-o", P("train.bin"), P("text.txt"), "-t", "1")
    check(r.returncode == 0, f"tokenize-corpus: {tail(r)}")
    r = run("train", "--init", P("dj.gguf"), "--train", P("train.bin"), "-c", "32", "--batch", "2", "--steps", "2",
            "--warmup", "0", "--lr", "1e-3", "--lr-min", "1e-3", "-t", "1", "-o", P("trained.gguf"))
    check(r.returncode == 0, f"train --init dijiang: {tail(r)}")
    if r.returncode == 0:
        g, d0 = gguf_tiny.read(P("trained.gguf")), tensors(gguf_tiny.read(P("dj.gguf")))
        t = tensors(g)
        check(gguf_tiny.value(g, "general.architecture") == b"dijiang" and
              gguf_tiny.value(g, "dijiang.feature_count") == HD, "the trained model is still dijiang, m = d")
        check(set(t) == set(d0), f"the trained model has the same tensors: {sorted(set(t) ^ set(d0))}")
        for L in range(LAYERS):
            for k in ("attn_feat", "attn_decay"):
                n = f"blk.{L}.{k}"
                check(n in t and t[n]["type"] == 0 and t[n]["ne"] == d0[n]["ne"] and
                      t[n]["data"][:nbytes(d0[n])] == d0[n]["data"][:nbytes(d0[n])], f"train: {n} fixed (bit for bit)")
            n = f"blk.{L}.attn_gate"
            if n in t:
                moved = float(np.max(np.abs(f32s(t[n]) - f32s(d0[n])))) if t[n]["ne"] == d0[n]["ne"] else 0
                check(moved > 0, f"train: {n} trained (moved {moved:.3g})")

    # 6. train --unfreeze attn_decay: γ trained and kept in (0, 1), P still fixed; refusals; the
    #    checkpoint remembers it, and a resumed run equals an uninterrupted one bit for bit
    base = ["--init", P("dj.gguf"), "--train", P("train.bin"), "-c", "32", "--batch", "2", "--steps", "4",
            "--warmup", "0", "--lr", "2e-2", "--lr-min", "2e-2", "-t", "1", "--ckpt-every", "1"]

    def weights(path):
        return {n: f32s(x) for n, x in tensors(gguf_tiny.read(path)).items()}

    r = run("train", *base, "--unfreeze", "attn_decay", "-o", P("unf.gguf"))
    check(r.returncode == 0, f"train --unfreeze attn_decay: {tail(r)}")
    if r.returncode == 0:
        w, w0 = weights(P("unf.gguf")), weights(P("dj.gguf"))
        for L in range(LAYERS):
            g, g0 = w[f"blk.{L}.attn_decay"], w0[f"blk.{L}.attn_decay"]
            check(np.all(g > 0) and np.all(g < 1) and np.any(g != g0),
                  f"--unfreeze: blk.{L}.attn_decay trained and inside (0, 1): {g0} -> {g}")
            check(np.array_equal(w[f"blk.{L}.attn_feat"], w0[f"blk.{L}.attn_feat"]),
                  f"--unfreeze attn_decay: blk.{L}.attn_feat still fixed")
        r = run("generate", "-m", P("unf.gguf"), "-p", "The", "-n", "8", "-t", "1")
        check(r.returncode == 0, f"the model with trained decays runs: {tail(r)}")
    # one step at the largest learning rate: AdamW's first step moves γ by lr·0.1 = 1 against the
    # sign of its gradient, so every γ must land on a bound, 1e-6 or the last float below 1
    big = [a if a not in ("2e-2", "4") else {"2e-2": "10", "4": "1"}[a] for a in base]
    r = run("train", *big, "--unfreeze", "attn_decay", "-o", P("unf10.gguf"))
    check(r.returncode == 0, f"train --unfreeze attn_decay --lr 10, one step: {tail(r)}")
    if r.returncode == 0:
        g = np.concatenate([weights(P("unf10.gguf"))[f"blk.{L}.attn_decay"] for L in range(LAYERS)])
        lo, hi = np.float32(1e-6), np.nextafter(np.float32(1), np.float32(0))
        check(np.all((g == lo) | (g == hi)), f"--lr 10: every γ clamped to [1e-6, 1 - 2^-24]: {g}")
    for val, code, what in [("attn_feat", 1, "fixed"), ("attn_dekay", 1, "attn_decay"), ("", 2, "--unfreeze"),
                            ("attn_decay,", 2, "--unfreeze"), ("attn_decay,,attn_feat", 2, "--unfreeze")]:
        r = run("train", *base, "--unfreeze", val, "-o", P("bad.gguf"))
        check(r.returncode == code and what in r.stderr and not os.path.exists(P("bad.gguf")),
              f"train --unfreeze {val!r}: exit {r.returncode} (want {code}) naming {what!r}, nothing written: {tail(r)}")
    r = run("train", *base, "--unfreeze", "attn_decay", "--stop-after", "2", "-o", P("unfr.gguf"))
    check(r.returncode == 0, f"train --unfreeze --stop-after 2: {tail(r)}")
    ck = P("unfr.gguf.ckpt.gguf")
    if r.returncode == 0:
        check(gguf_tiny.value(gguf_tiny.read(ck), "msrnn.train.unfreeze") == b"attn_decay",
              "the checkpoint records msrnn.train.unfreeze = attn_decay")
        r = run("train", "--resume", "--train", P("train.bin"), "--unfreeze", "attn_gate", "-t", "1",
                "-o", P("unfr.gguf"))
        check(r.returncode == 1 and "attn_decay" in r.stderr, f"resume with another --unfreeze: {tail(r)}")
        r = run("train", "--resume", "--train", P("train.bin"), "-t", "1", "-o", P("unfr.gguf"))
        check(r.returncode == 0, f"resume an --unfreeze run: {tail(r)}")
        if r.returncode == 0 and os.path.exists(P("unf.gguf")):
            a, b = weights(P("unf.gguf")), weights(P("unfr.gguf"))
            diff = [n for n in a if not np.array_equal(a[n], b[n])]
            check(not diff, f"--unfreeze: resumed after 2 of 4 steps = uninterrupted, bit for bit ({diff[:3]})")

    # 7. train --teacher: distillation from the llama the dijiang file was converted from; the
    #    teacher remembered by the checkpoint (resume = uninterrupted), refusals
    r = run("train", *base, "--teacher", P("llama.gguf"), "-o", P("dist.gguf"))
    check(r.returncode == 0, f"train --teacher: {tail(r)}")
    r2 = run("train", *base, "-o", P("plain.gguf"))
    check(r2.returncode == 0, f"train (plain loss): {tail(r2)}")
    if r.returncode == 0 and r2.returncode == 0:
        a, b = weights(P("dist.gguf")), weights(P("plain.gguf"))
        check(any(not np.array_equal(a[n], b[n]) for n in a), "--teacher changes the training (KL loss)")
        check(gguf_tiny.value(gguf_tiny.read(P("dist.gguf.ckpt.gguf")), "msrnn.train.teacher") ==
              P("llama.gguf").encode(), "the checkpoint records msrnn.train.teacher")
    r = run("train", *base, "--teacher", P("llama.gguf"), "--stop-after", "2", "-o", P("distr.gguf"))
    check(r.returncode == 0, f"train --teacher --stop-after 2: {tail(r)}")
    if r.returncode == 0:
        r = run("train", "--resume", "--train", P("train.bin"), "--teacher", P("dj.gguf"), "-t", "1",
                "-o", P("distr.gguf"))
        check(r.returncode == 1 and "teacher" in r.stderr, f"resume with another teacher: {tail(r)}")
        r = run("train", "--resume", "--train", P("train.bin"), "-t", "1", "-o", P("distr.gguf"))
        check(r.returncode == 0, f"resume a distillation run: {tail(r)}")
        if r.returncode == 0 and os.path.exists(P("dist.gguf")):
            a, b = weights(P("dist.gguf")), weights(P("distr.gguf"))
            diff = [n for n in a if not np.array_equal(a[n], b[n])]
            check(not diff, f"--teacher: resumed after 2 of 4 steps = uninterrupted, bit for bit ({diff[:3]})")
    r = run("train", *base, "--stop-after", "2", "-o", P("plr.gguf"))
    if r.returncode == 0:
        r = run("train", "--resume", "--train", P("train.bin"), "--teacher", P("llama.gguf"), "-t", "1",
                "-o", P("plr.gguf"))
        check(r.returncode == 1 and "plain loss" in r.stderr, f"resume a plain run adding a teacher: {tail(r)}")
    ref_model = os.path.join(SHARED, "models", "gutenberg-ref.gguf")
    if os.path.exists(ref_model):
        r = run("train", *base, "--teacher", ref_model, "-o", P("badt.gguf"))
        check(r.returncode == 1 and "vocabulary" in r.stderr and not os.path.exists(P("badt.gguf")),
              f"a teacher with another vocabulary: exit {r.returncode}: {tail(r)}")
    r = run("train", *base, "--teacher", P("missing.gguf"), "-o", P("badt.gguf"))
    check(r.returncode != 0 and "missing.gguf" in r.stderr and not os.path.exists(P("badt.gguf")),
          f"a teacher that does not exist: exit {r.returncode}: {tail(r)}")

finish("test_dijiang_cli")
