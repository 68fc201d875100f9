"""test_cli_messages — messages say what is wrong (issue 9, class 8).

  * unknown options: every long option of every command's --help, misspelt (three of: a letter
    dropped, doubled, two letters swapped), given last (where it used to read "needs a value") and
    followed by a value: exit 2, "unknown option 'X'", never "needs a value", and a suggestion that
    is a known option within one edit of the typo; the same for "--flag=value" (the message shows
    "--flag value") and for stray words (commands without FILE... arguments);
  * config files: each kind of bad line (unknown setting, bad value, bad name, "name =" without a
    value, a switch given a value, a value setting given none, a NUL byte, invalid UTF-8) placed at
    each line of a five-line file: exit 2 and the message names FILE:LINE; a binary (/bin/ls) is "not
    a text file";
  * GGUF lengths: a length or count field set to an impossible value (beyond any file) is "corrupt";
    a cut-off file stays "truncated"."""
import os
import re
import struct
import subprocess
import tempfile

from checks import check, finish

BIN = os.environ["MSRNN_BIN"]
SRC = os.environ["MSRNN_SOURCE_DIR"]
MODEL = os.path.join(SRC, "models", "default.gguf")
POSITIONAL = ("info", "tokenizer-train", "tokenize-corpus")  # these take FILE... arguments
COMMANDS = ["generate", "perplexity", "passkey", "bench", "tokenize", "info", "init-model", "tokenizer-train",
            "tokenize-corpus", "train"]


def run(args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=120)


def distance(a, b):
    """Edits between a and b: insert, delete, substitute, swap two neighbours (each 1)."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def typos(opt):
    name = opt[2:]
    out = set()
    for i in range(len(name)):
        out.add("--" + name[:i] + name[i + 1:])
        out.add("--" + name[:i] + name[i] + name[i:])
        if i + 1 < len(name):
            out.add("--" + name[:i] + name[i + 1] + name[i] + name[i + 2:])
    return sorted(x for x in out if len(x) > 3)


n_typos = 0
for cmd in COMMANDS:
    helptext = run([cmd, "--help"]).stdout
    known = set(re.findall(r"(?:(?<=^)|(?<=[\s(\[|,]))(--?[A-Za-z][A-Za-z0-9-]*)", helptext, re.M))
    longs = sorted(o for o in known if o.startswith("--"))
    check(len(longs) >= 1, f"{cmd} --help lists its options: {longs}")
    for opt in longs:
        for t in typos(opt)[:3]:
            if t in known:
                continue
            for args in ([t], [t, "7"]):
                r = run([cmd, *args])
                msg = r.stderr
                m = re.search(r"did you mean '([^']+)'", msg)
                check(r.returncode == 2 and f"unknown option '{t}'" in msg and "needs a value" not in msg
                      and m is not None and m.group(1) in known and distance(m.group(1), t) <= 1,
                      f"msrnn {cmd} {' '.join(args)}: exit {r.returncode}: {msg.strip()[:300]}")
                n_typos += 1
        r = run([cmd, opt + "=3"])
        check(r.returncode == 2 and f"unknown option '{opt}=3'" in r.stderr and f"'{opt} 3'" in r.stderr,
              f"msrnn {cmd} {opt}=3: {r.stderr.strip()[:300]}")
    for word in () if cmd in POSITIONAL else ("stray", "hello.txt", "3"):
        r = run([cmd, word])
        check(r.returncode == 2 and f"unknown option '{word}'" in r.stderr and "stray" in r.stderr,
              f"msrnn {cmd} {word}: exit {r.returncode}: {r.stderr.strip()[:300]}")
    r = run([cmd, "--zzqqxxyy"])
    check(r.returncode == 2 and "unknown option '--zzqqxxyy'" in r.stderr and "did you mean" not in r.stderr,
          f"msrnn {cmd} --zzqqxxyy: no suggestion for nothing alike: {r.stderr.strip()[:300]}")
print(f"  {n_typos} misspelt options")

with tempfile.TemporaryDirectory() as d:
    conf = os.path.join(d, "c.conf")
    good = ["lr = 1e-3", "steps = 10", "# a comment", "", "batch = 2"]
    bad_lines = {
        "unknown setting": b"frobnicate = 3",
        "bad value": b"lr = abc",
        "bad name": b"LR = 1",
        "no value": b"warmup =",
        "switch with value": b"json = yes",
        "value setting alone": b"steps",
        "NUL byte": b"lr = 1\0e-3",
        "invalid UTF-8": b"name = \xff\xfe",
    }
    for what, line in bad_lines.items():
        for k in range(1, 6):
            lines = [x.encode() for x in good]
            lines.insert(k - 1, line)
            with open(conf, "wb") as f:
                f.write(b"\n".join(lines) + b"\n")
            r = run(["train", "--config", conf])
            check(r.returncode == 2 and f"{conf}:{k}:" in r.stderr,
                  f"config with {what} at line {k}: exit {r.returncode}: {r.stderr.strip()[:300]}")
    r = run(["train", "--config", "/bin/ls"])
    check(r.returncode == 2 and "/bin/ls:" in r.stderr and "not a text file" in r.stderr
          and "needs a value" not in r.stderr, f"train --config /bin/ls: {r.stderr.strip()[:300]}")

    # GGUF: impossible lengths and counts are corrupt, a cut-off file is truncated
    with open(MODEL, "rb") as f:
        data = f.read(1 << 20)
    full = os.path.getsize(MODEL)
    cases = []
    for value in (1 << 41, 1 << 50, (1 << 63) + 5, (1 << 64) - 1):
        cases.append(("first key's length", 24, value))  # after magic, version, n_tensors, n_kv
        cases.append(("tensor count", 8, value))
        cases.append(("key/value count", 16, value))
    for what, off, value in cases:
        p = os.path.join(d, "x.gguf")
        with open(p, "wb") as f:
            f.write(data[:off] + struct.pack("<Q", value) + data[off + 8:])
            f.write(b"\0" * (full - len(data)))  # the real file's size: nothing is cut off
        r = run(["info", p])
        check(r.returncode == 1 and "corrupt" in r.stderr and "truncated" not in r.stderr,
              f"GGUF with its {what} = {value}: {r.stderr.strip()[:300]}")
    for cut in (10, 30, 100, 1000, 5000):
        p = os.path.join(d, "cut.gguf")
        with open(p, "wb") as f:
            f.write(data[:cut])
        r = run(["info", p])
        check(r.returncode == 1 and "truncated" in r.stderr, f"GGUF cut at {cut}: {r.stderr.strip()[:300]}")

finish("test_cli_messages")
