"""test_cli_lists — list flags mean exactly what they say (issue 9, class 7: lax lists).

Every comma-separated list flag (`perplexity --sweep`, `perplexity --policies`, `bench --depth`) is
tried with generated malformed lists — an empty item at every position of lists of 1 to 3 valid
items, the empty string, lone and repeated commas, and a list longer than the flag accepts — and
must exit 2 with a message naming the flag, before any work and without writing the outputs it was
given. Controls: the same flags with well-formed lists still run (exit 0), and `bench` refuses
`-p 0 -n 0` (nothing to measure) and `--depth` with `-n 0`, but accepts either count alone."""
import itertools
import os
import subprocess
import tempfile

from checks import check, finish

BIN = os.environ["MSRNN_BIN"]
SRC = os.environ["MSRNN_SOURCE_DIR"]
SHARED = os.environ["MSRNN_SHARED"]
MODEL = os.path.join(SRC, "models", "default.gguf")
BOOK = os.path.join(SHARED, "data", "gutenberg", "pg55.txt")


def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=600)


def malformed(items):
    """Lists built from valid items with an empty item somewhere, plus degenerate strings."""
    out = {"", ",", ",,", ",,,", " , "}
    for n in range(1, 4):
        for combo in itertools.permutations(items, n):
            for pos in range(n + 1):  # an empty item before item pos (or at the end)
                parts = list(combo)
                parts.insert(pos, "")
                out.add(",".join(parts))
            out.add(",".join(combo).replace(",", ",,", 1) if n > 1 else combo[0] + ",,")
    return sorted(out)


with tempfile.TemporaryDirectory() as tmp:
    out_json, out_svg = os.path.join(tmp, "s.json"), os.path.join(tmp, "s.svg")
    base = ["perplexity", "-m", MODEL, "-f", BOOK, "--ctx", "64", "--max-chunks", "1", "-t", "1"]
    cases = []
    for lst in malformed(["16", "32", "48"]):
        cases.append(("--sweep", base + ["--sweep", lst, "--out", out_json, "--plot", out_svg]))
    for lst in malformed(["window", "tova", "sink"]):
        cases.append(("--policies", base + ["--sweep", "16", "--policies", lst, "--out", out_json,
                                            "--plot", out_svg]))
    for lst in malformed(["64", "128", "256"]):
        cases.append(("--depth", ["bench", "-m", MODEL, "--depth", lst, "-n", "2", "-r", "1"]))
    cases.append(("--sweep", base + ["--sweep", ",".join(["16"] * 100), "--out", out_json]))
    cases.append(("--policies", base + ["--sweep", "16", "--policies", ",".join(["tova"] * 40)]))
    for flag, args in cases:
        r = run(*args)
        check(r.returncode == 2 and flag in r.stderr,
              f"{' '.join(args[-8:])!r}: exit {r.returncode}, stderr {r.stderr.strip()[:200]!r}")
        check(not os.path.exists(out_json) and not os.path.exists(out_svg),
              f"{' '.join(args[-8:])!r} wrote an output")
    print(f"{len(cases)} malformed lists tried")

    # controls: well-formed lists run
    r = run(*base, "--sweep", "16,32", "--policies", "window,tova", "--out", out_json, "--plot",
            out_svg)
    check(r.returncode == 0 and os.path.exists(out_json) and os.path.exists(out_svg),
          f"a well-formed sweep runs: exit {r.returncode}, {r.stderr[-300:]!r}")
    r = run("bench", "-m", MODEL, "--depth", "16,32", "-n", "2", "-r", "1")
    check(r.returncode == 0, f"a well-formed --depth runs: exit {r.returncode}, {r.stderr[-300:]!r}")

    # bench counts
    r = run("bench", "-m", MODEL, "-p", "0", "-n", "0")
    check(r.returncode == 2 and "-p" in r.stderr and "-n" in r.stderr,
          f"bench -p 0 -n 0: exit {r.returncode}, {r.stderr!r}")
    r = run("bench", "-m", MODEL, "--depth", "16", "-n", "0")
    check(r.returncode == 2 and "-n" in r.stderr, f"bench --depth -n 0: exit {r.returncode}")
    for p, n in (("0", "4"), ("8", "0")):
        r = run("bench", "-m", MODEL, "-p", p, "-n", n, "-r", "1")
        check(r.returncode == 0, f"bench -p {p} -n {n}: exit {r.returncode}, {r.stderr[-300:]!r}")

finish("test_cli_lists")
