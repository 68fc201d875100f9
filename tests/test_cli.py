"""test_cli — the msrnn tool as a user meets it: exit codes and messages for bad input, JSON outputs
that parse, seeded sampling that repeats, perplexity whose bounded-but-never-evicting run equals the
full cache exactly, and a sweep that writes its table, JSON and a well-formed SVG.

Uses ../shared/models/gutenberg-ref.gguf with short chunks so that it runs in seconds."""
import json
import os
import subprocess
import tempfile
import xml.etree.ElementTree as ET

from checks import check, finish

BIN = os.environ["MSRNN_BIN"]
SHARED = os.environ["MSRNN_SHARED"]
MODEL = os.path.join(SHARED, "models", "gutenberg-ref.gguf")
BOOK = os.path.join(SHARED, "data", "gutenberg", "pg55.txt")


def run(*args, expect=0):
    r = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=600)
    return r


# bad usage: exit 2 and a message naming the flag
for args, needle in [
    (["generate", "-m", MODEL, "-p", "x", "-n", "abc"], "-n"),
    (["generate", "-m", MODEL, "-p", "x", "--temp", "-1"], "--temp"),
    (["generate", "-m", MODEL, "-p", "x", "--top-p", "2"], "--top-p"),
    (["generate", "-m", MODEL, "-p", "x", "--bogus"], "--bogus"),
    (["generate", "-m", MODEL], "-p"),
    (["bench", "-m", MODEL, "-t", "0"], "-t"),
    (["perplexity", "-m", MODEL, "-f", BOOK, "--kv", "lru", "--kv-size", "8"], "--kv"),
    (["perplexity", "-m", MODEL, "-f", BOOK, "--kv", "tova"], "--kv-size"),
    (["perplexity", "-m", MODEL, "-f", BOOK, "--sweep", "64,32"], "increase"),
    (["frobnicate"], "frobnicate"),
]:
    r = run(*args)
    check(r.returncode == 2 and needle in r.stderr, f"{args}: rc {r.returncode}, stderr {r.stderr!r}")

# runtime failures: exit 1 and a message naming the file
with tempfile.TemporaryDirectory() as d:
    bad = os.path.join(d, "bad.gguf")
    with open(bad, "wb") as f:
        f.write(b"GGUF\x03\x00\x00\x00" + b"\xff" * 16)
    for cmd in (["info", bad], ["generate", "-m", bad, "-p", "x"], ["tokenize", "-m", bad, "-p", "x"]):
        r = run(*cmd)
        check(r.returncode == 1 and "bad.gguf" in r.stderr, f"{cmd}: rc {r.returncode}, {r.stderr!r}")
    empty = os.path.join(d, "empty.txt")
    open(empty, "w").close()
    r = run("perplexity", "-m", MODEL, "-f", empty)
    check(r.returncode == 1 and "no tokens" in r.stderr, f"empty text: rc {r.returncode}, {r.stderr!r}")
    r = run("perplexity", "-m", MODEL, "-f", BOOK, "--ctx", "16", "--sweep", "4,8")
    check(r.returncode == 2 and "sink" in r.stderr, f"sweep below the sinks: rc {r.returncode}, {r.stderr!r}")
    r = run("generate", "-m", os.path.join(d, "missing.gguf"), "-p", "x")
    check(r.returncode == 1 and "missing.gguf" in r.stderr, f"missing model: {r.stderr!r}")

# generate --json: parses, ids match tokenize, greedy repeats, a seed repeats, another seed differs
r = run("generate", "-m", MODEL, "-p", "The sky was", "-n", "24", "--temp", "0", "--json", "-t", "2")
g = json.loads(r.stdout)
check(set(g) >= {"prompt_ids", "ids", "text", "prompt_tps", "gen_tps"} and len(g["ids"]) == 24, f"json keys {g}")
t = json.loads(run("tokenize", "-m", MODEL, "-p", "The sky was", "--json").stdout)
check(t["ids"] == g["prompt_ids"], f"tokenize {t['ids']} vs generate {g['prompt_ids']}")
g2 = json.loads(run("generate", "-m", MODEL, "-p", "The sky was", "-n", "24", "--temp", "0", "--json", "-t", "1").stdout)
check(g2["ids"] == g["ids"], "greedy differs between 1 and 2 threads")
s1 = json.loads(run("generate", "-m", MODEL, "-p", "The sky was", "-n", "32", "--seed", "5", "--json").stdout)
s2 = json.loads(run("generate", "-m", MODEL, "-p", "The sky was", "-n", "32", "--seed", "5", "--json").stdout)
s3 = json.loads(run("generate", "-m", MODEL, "-p", "The sky was", "-n", "32", "--seed", "6", "--temp", "1.5", "--json").stdout)
check(s1["ids"] == s2["ids"], "same seed, different output")
check(s1["ids"] != s3["ids"], "different seed and temperature, same output")
k1 = json.loads(run("generate", "-m", MODEL, "-p", "The sky was", "-n", "32", "--seed", "5", "--top-k", "1", "--temp", "2", "--json").stdout)
check(k1["ids"] == g["ids"][:24] + k1["ids"][24:] and k1["ids"][:24] == g["ids"], "top-k 1 is not greedy")

# perplexity: a bounded memory that never evicts equals full exactly; a small one is worse
def ppl(*extra):
    r = run("perplexity", "-m", MODEL, "-f", BOOK, "--ctx", "96", "--max-chunks", "3", "--json", "-t", "2", *extra)
    check(r.returncode == 0, f"perplexity {extra}: {r.stderr[-300:]}")
    return json.loads(r.stdout)

full = ppl()
check(set(full) >= {"ppl", "nll_mean", "bits_per_byte", "n_tokens", "tps", "kv_bytes"}, f"keys {full}")
check(full["n_tokens"] == 3 * 95, f"n_tokens {full['n_tokens']}")
for pol in ("window", "sink", "h2o", "tova"):
    same = ppl("--kv", pol, "--kv-size", "96")
    check(same["nll_mean"] == full["nll_mean"], f"{pol} k=96 nll {same['nll_mean']} != full {full['nll_mean']}")
    small = ppl("--kv", pol, "--kv-size", "16")
    check(small["ppl"] > full["ppl"] and small["kv_bytes"] < full["kv_bytes"], f"{pol} k=16: {small} vs {full}")

with tempfile.TemporaryDirectory() as d:
    js, svg = os.path.join(d, "s.json"), os.path.join(d, "s.svg")
    r = run("perplexity", "-m", MODEL, "-f", BOOK, "--ctx", "64", "--max-chunks", "2", "--sweep", "8,16,32",
            "--out", js, "--plot", svg, "-t", "2")
    check(r.returncode == 0 and "| tova |" in r.stdout and "| window |" in r.stdout and "| merge |" in r.stdout,
          f"sweep table: {r.stdout}")
    res = json.load(open(js))  # the default policies: window, sink, h2o, tova, merge
    check(len(res["results"]) == 15 and res["full"]["policy"] == "full", f"sweep json {res}")
    root = ET.parse(svg).getroot()
    check(root.tag.endswith("svg") and len(root.findall(".//{http://www.w3.org/2000/svg}polyline")) == 5, "svg lines")

# perplexity over a manifest's split equals the same books given with -f, in manifest order
MANIFEST = os.path.join(SHARED, "data", "gutenberg", "MANIFEST.tsv")
val_books = []
with open(MANIFEST) as f:
    cols = f.readline().rstrip("\n").split("\t")
    for line in f:
        row = dict(zip(cols, line.rstrip("\n").split("\t")))
        if row["split"] == "validation":
            val_books.append(os.path.join(SHARED, "data", "gutenberg", row["file"]))
quick = ["--ctx", "64", "--max-chunks", "1", "--json", "-t", "2"]
r = run("perplexity", "-m", MODEL, "--manifest", MANIFEST, "--split", "validation", *quick)
by_split = json.loads(r.stdout) if r.returncode == 0 else {}
by_files = json.loads(run("perplexity", "-m", MODEL, *[a for b in val_books for a in ("-f", b)], *quick).stdout)
check(len(val_books) == 6 and by_split.get("n_tokens") == 6 * 63 and by_split.get("nll_mean") == by_files["nll_mean"],
      f"--split validation {by_split} vs -f {by_files}")
r = run("perplexity", "-m", MODEL, "--manifest", MANIFEST, "--split", "validation", "-f", BOOK, *quick)
check(r.returncode == 0 and json.loads(r.stdout)["n_tokens"] == 7 * 63, f"--split plus -f: {r.stderr[-300:]}")
r = run("perplexity", "-m", MODEL, "--manifest", MANIFEST, "--split", "train", *(["-f", BOOK] * 30), *quick)
check(r.returncode == 0 and json.loads(r.stdout)["n_tokens"] == 76 * 63, f"76 texts (no fixed limit): {r.stderr[-300:]}")
for args, rc_want, needle in [
    (["--split", "validation"], 2, "--manifest"),
    (["--manifest", MANIFEST], 2, "--split"),
    (["--manifest", MANIFEST, "--split", "nosuch"], 2, "nosuch"),
    (["--manifest", MANIFEST + ".missing", "--split", "test"], 1, "MANIFEST.tsv.missing"),
]:
    r = run("perplexity", "-m", MODEL, *args, *quick)
    check(r.returncode == rc_want and needle in r.stderr, f"{args[:4]}: rc {r.returncode}, {r.stderr!r}")

# outputs are written atomically: an unwritable target fails cleanly and leaves nothing behind
with tempfile.TemporaryDirectory() as d:
    js = os.path.join(d, "no", "such", "dir", "s.json")
    r = run("perplexity", "-m", MODEL, "-f", BOOK, "--ctx", "32", "--max-chunks", "1", "--sweep", "8", "--out", js)
    check(r.returncode == 1 and "s.json" in r.stderr, f"unwritable --out: rc {r.returncode}, {r.stderr!r}")
    svg = os.path.join(d, "s.svg")
    with open(svg, "w") as f:
        f.write("old")
    r = run("perplexity", "-m", MODEL, "-f", BOOK, "--ctx", "32", "--max-chunks", "1", "--sweep", "8", "--plot", svg)
    check(r.returncode == 0 and open(svg).read().startswith("<svg") and os.listdir(d) == ["s.svg"],
          f"--plot replaces the old file, no temporary left: {os.listdir(d)} {r.stderr[-200:]}")

# bench --json keys
b = json.loads(run("bench", "-m", MODEL, "-p", "16", "-n", "4", "-r", "1", "--json").stdout)
check(set(b) >= {"pp_tps", "tg_tps", "pp_sd", "tg_sd"}, f"bench keys {b}")

finish("test_cli")
