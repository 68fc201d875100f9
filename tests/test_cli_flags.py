"""test_cli_flags — a flag that does not apply is an error naming why, never silently ignored
(issue 9, class 6).

Generated over every command that runs a model (generate, perplexity, bench) and every memory:
  * --kv-size with the full cache (named with --kv full, and by default);
  * --kv-sinks with every memory but sink and merge*; --kv-merge-bias with every memory but merge*;
    --kv-clusters with every memory but merge-clusters; merge*'s budgets below their sinks + summary;
and for perplexity: -c and --ctx disagreeing (both set the chunk length, as llama.cpp's -c does),
--policies without --sweep, --kv / --kv-size with --sweep, --kv-sinks with a sweep whose policies lack
sink and merge, --kv-merge-bias with a sweep whose policies lack merge; and `train --config` without a value. Each must exit 2 with the offending flag in the message,
before any output is written. Controls: the same flags where they apply run (exit 0), and -c alone,
or equal to --ctx, sets perplexity's chunk length."""
import json
import os
import subprocess
import tempfile

from checks import check, finish

BIN = os.environ["MSRNN_BIN"]
SRC = os.environ["MSRNN_SOURCE_DIR"]
SHARED = os.environ["MSRNN_SHARED"]
MODEL = os.path.join(SRC, "models", "default.gguf")
BOOK = os.path.join(SHARED, "data", "gutenberg", "pg55.txt")
MEMORIES = ["full", "window", "sink", "h2o", "tova", "tova-head", "merge", "merge-var", "merge-clusters"]
MERGES = ("merge", "merge-var", "merge-clusters")


def run(*args):
    # errors="replace": generate may stop inside a multi-byte character (its pieces are bytes)
    return subprocess.run([BIN, *args], capture_output=True, text=True, errors="replace", timeout=600)


COMMANDS = {
    "generate": ["generate", "-m", MODEL, "-p", "Hi", "-n", "2", "-t", "1"],
    "perplexity": ["perplexity", "-m", MODEL, "-f", BOOK, "--ctx", "32", "--max-chunks", "1", "-t",
                   "1"],
    "bench": ["bench", "-m", MODEL, "-p", "8", "-n", "2", "-r", "1", "-t", "1"],
    "passkey": ["passkey", "-m", MODEL, "--lengths", "100", "--depths", "50", "--trials", "1", "-t",
                "1"],
}

bad = []  # (args, flag that must be named)
for name, base in COMMANDS.items():
    bad.append((base + ["--kv-size", "16"], "--kv-size"))
    bad.append((base + ["--kv", "full", "--kv-size", "16"], "--kv-size"))
    for mem in MEMORIES:
        size = [] if mem == "full" else ["--kv-size", "16"]
        if mem != "sink" and mem not in MERGES:
            bad.append((base + ["--kv", mem, *size, "--kv-sinks", "2"], "--kv-sinks"))
        if mem not in MERGES:
            bad.append((base + ["--kv", mem, *size, "--kv-merge-bias", "0"], "--kv-merge-bias"))
        if mem != "merge-clusters":
            bad.append((base + ["--kv", mem, *size, "--kv-clusters", "2"], "--kv-clusters"))
    # merge's bias: a number (or -inf), not NaN, +inf or a word
    for v in ("nan", "inf", "+inf", "x", "", "1e9"):
        bad.append((base + ["--kv", "merge", "--kv-size", "16", "--kv-merge-bias", v], "--kv-merge-bias"))
    # merge needs room for its sinks, the summary and a recent token
    bad.append((base + ["--kv", "merge", "--kv-size", "5"], "merge"))
    bad.append((base + ["--kv", "merge", "--kv-size", "3", "--kv-sinks", "2"], "merge"))
    bad.append((base + ["--kv", "merge-var", "--kv-size", "6"], "merge-var"))
    bad.append((base + ["--kv", "merge-clusters", "--kv-size", "8"], "merge-clusters"))
    bad.append((base + ["--kv", "merge-clusters", "--kv-size", "16", "--kv-clusters", "12"], "merge-clusters"))
    for v in ("0", "65", "-1", "x"):
        bad.append((base + ["--kv", "merge-clusters", "--kv-size", "16", "--kv-clusters", v], "--kv-clusters"))
ppl = COMMANDS["perplexity"]
bad += [
    (ppl[:7] + ["-c", "100", "--ctx", "256"], "-c"),
    (ppl + ["--policies", "tova"], "--policies"),
    (ppl + ["--sweep", "16", "--kv", "tova"], "--kv"),
    (ppl + ["--sweep", "16", "--kv-size", "16"], "--kv-size"),
    (ppl + ["--sweep", "16", "--policies", "tova,window", "--kv-sinks", "2"], "--kv-sinks"),
    (ppl + ["--sweep", "16", "--policies", "tova,sink", "--kv-merge-bias", "0"], "--kv-merge-bias"),
    (ppl + ["--sweep", "16", "--policies", "merge,merge-var", "--kv-clusters", "2"], "--kv-clusters"),
    (["train", "--config"], "--config"),
    (["train", "--train", "x.bin", "-o", "y.gguf", "--config"], "--config"),
]

with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "out.json")
    for args, flag in bad:
        if args[0] == "perplexity" and "--sweep" in args:
            args = args + ["--out", out]
        r = run(*args)
        check(r.returncode == 2 and flag in r.stderr,
              f"{' '.join(args[1:])}: exit {r.returncode}, expected 2 naming {flag}: "
              f"{r.stderr.strip()[-200:]!r}")
        check(not os.path.exists(out), f"{' '.join(args[1:])} wrote its output")
    print(f"{len(bad)} inapplicable flags tried")

    # controls: where the flags apply they run
    for name, base in COMMANDS.items():
        r = run(*base, "--kv", "sink", "--kv-size", "16", "--kv-sinks", "2")
        check(r.returncode == 0, f"{name} --kv sink --kv-size 16 --kv-sinks 2: exit {r.returncode}: "
                                 f"{r.stderr[-200:]!r}")
        for mem, extra in (("merge", ["--kv-sinks", "0"]), ("merge", ["--kv-merge-bias", "-inf"]),
                           ("merge", ["--kv-merge-bias", "0.5"]), ("merge", ["--kv-size", "2", "--kv-sinks", "0"]),
                           ("merge-var", ["--kv-size", "7"]), ("merge-var", ["--kv-size", "3", "--kv-sinks", "0"]),
                           ("merge-clusters", ["--kv-clusters", "2", "--kv-size", "7"]),
                           ("merge-clusters", ["--kv-clusters", "1", "--kv-sinks", "0", "--kv-size", "2"])):
            args = [*base, "--kv", mem, "--kv-size", "16", *extra]
            r = run(*args)
            check(r.returncode == 0, f"{' '.join(args[1:])}: exit {r.returncode}: {r.stderr[-200:]!r}")
    r = run(*ppl, "--sweep", "16", "--policies", "sink,tova", "--kv-sinks", "2", "--out", out)
    check(r.returncode == 0 and os.path.exists(out), f"sweep with sink and --kv-sinks: {r.stderr[-200:]}")
    r = run(*ppl, "--sweep", "16", "--policies", "merge", "--kv-sinks", "0", "--kv-merge-bias", "-2",
            "--out", out)
    check(r.returncode == 0 and os.path.exists(out), f"sweep with merge, --kv-sinks 0 and --kv-merge-bias: "
                                                     f"{r.stderr[-200:]}")

    # -c is perplexity's chunk length when alone or equal to --ctx
    def n_tokens(*args):
        r = run("perplexity", "-m", MODEL, "-f", BOOK, "--max-chunks", "2", "-t", "1", "--json", *args)
        check(r.returncode == 0, f"perplexity {' '.join(args)}: {r.stderr[-200:]}")
        return json.loads(r.stdout)["n_tokens"] if r.returncode == 0 else None
    a, b, c = n_tokens("-c", "48"), n_tokens("--ctx", "48"), n_tokens("-c", "48", "--ctx", "48")
    check(a == b == c == 94, f"-c 48 / --ctx 48 / both score {a} / {b} / {c} tokens (2 chunks of 47)")

finish("test_cli_flags")
