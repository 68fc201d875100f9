"""test_cli_flags — a flag that does not apply is an error naming why, never silently ignored
(issue 9, class 6).

Generated over every command that runs a model (generate, perplexity, bench) and every memory:
  * --kv-size with the full cache (named with --kv full, and by default);
  * --kv-sinks with every memory but sink;
and for perplexity: -c and --ctx disagreeing (both set the chunk length, as llama.cpp's -c does),
--policies without --sweep, --kv / --kv-size with --sweep, --kv-sinks with a sweep whose policies lack
sink; and `train --config` without a value. Each must exit 2 with the offending flag in the message,
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
MEMORIES = ["full", "window", "sink", "h2o", "tova", "tova-head"]


def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=600)


COMMANDS = {
    "generate": ["generate", "-m", MODEL, "-p", "Hi", "-n", "2", "-t", "1"],
    "perplexity": ["perplexity", "-m", MODEL, "-f", BOOK, "--ctx", "32", "--max-chunks", "1", "-t",
                   "1"],
    "bench": ["bench", "-m", MODEL, "-p", "8", "-n", "2", "-r", "1", "-t", "1"],
}

bad = []  # (args, flag that must be named)
for name, base in COMMANDS.items():
    bad.append((base + ["--kv-size", "16"], "--kv-size"))
    bad.append((base + ["--kv", "full", "--kv-size", "16"], "--kv-size"))
    for mem in MEMORIES:
        if mem != "sink":
            size = [] if mem == "full" else ["--kv-size", "16"]
            bad.append((base + ["--kv", mem, *size, "--kv-sinks", "2"], "--kv-sinks"))
ppl = COMMANDS["perplexity"]
bad += [
    (ppl[:7] + ["-c", "100", "--ctx", "256"], "-c"),
    (ppl + ["--policies", "tova"], "--policies"),
    (ppl + ["--sweep", "16", "--kv", "tova"], "--kv"),
    (ppl + ["--sweep", "16", "--kv-size", "16"], "--kv-size"),
    (ppl + ["--sweep", "16", "--policies", "tova,window", "--kv-sinks", "2"], "--kv-sinks"),
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
    r = run(*ppl, "--sweep", "16", "--policies", "sink,tova", "--kv-sinks", "2", "--out", out)
    check(r.returncode == 0 and os.path.exists(out), f"sweep with sink and --kv-sinks: {r.stderr[-200:]}")

    # -c is perplexity's chunk length when alone or equal to --ctx
    def n_tokens(*args):
        r = run("perplexity", "-m", MODEL, "-f", BOOK, "--max-chunks", "2", "-t", "1", "--json", *args)
        check(r.returncode == 0, f"perplexity {' '.join(args)}: {r.stderr[-200:]}")
        return json.loads(r.stdout)["n_tokens"] if r.returncode == 0 else None
    a, b, c = n_tokens("-c", "48"), n_tokens("--ctx", "48"), n_tokens("-c", "48", "--ctx", "48")
    check(a == b == c == 94, f"-c 48 / --ctx 48 / both score {a} / {b} / {c} tokens (2 chunks of 47)")

finish("test_cli_flags")
