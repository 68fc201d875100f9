"""test_cli_paths — no command replaces its own input, and every output location is checked before
the work (issue 9, classes 1 and 9).

Class 1: for every command that writes files, every (output flag, input flag) pair and every
(output, output) pair is tried with the output naming the same file in several spellings: the same
string, "./name", the absolute path, "sub/../name", a hard link and a symbolic link. Each must exit 2
with a message naming both flags, leave every input byte-identical (sha256 before and after) and
leave nothing new in the folder.

Class 9: every output flag of every command is pointed at a folder, at a file in a folder that does
not exist, at a path ending in '/', at a file under a regular file, and at /dev/null. Each must exit 1
at once, before any work: the message names the flag, it is the only line on stderr (no progress
was printed: the model was not loaded, no text was read), the inputs are unchanged and nothing new
was left. Controls: the same commands with distinct, writable outputs succeed."""
import hashlib
import os
import subprocess
import tempfile

from checks import check, finish

BIN = os.environ["MSRNN_BIN"]
SRC = os.environ["MSRNN_SOURCE_DIR"]
SHARED = os.environ["MSRNN_SHARED"]
BOOK = os.path.join(SHARED, "data", "gutenberg", "pg55.txt")
SHAPE = ["--dim", "32", "--layers", "1", "--heads", "2", "--ffn", "64"]
TRAIN = ["-c", "32", "--batch", "1", "--steps", "1", "--eval-every", "0", "-t", "1"]


def run(args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=600)


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def listing(d):
    out = []
    for root, dirs, files in os.walk(d):
        out += [os.path.relpath(os.path.join(root, f), d) for f in files + dirs]
    return sorted(out)


with tempfile.TemporaryDirectory() as d:
    os.chdir(d)
    os.mkdir("sub")
    with open(BOOK, encoding="utf-8") as f:
        text = f.read()[:40000]
    with open("book.txt", "w", encoding="utf-8") as f:
        f.write(text)
    with open("book2.txt", "w", encoding="utf-8") as f:
        f.write(text[::-1])
    setup = [
        ["tokenizer-train", "--vocab", "400", "-o", "tok.gguf", "book.txt"],
        ["tokenize-corpus", "-m", "tok.gguf", "-o", "train.bin", "book.txt"],
        ["tokenize-corpus", "-m", "tok.gguf", "-o", "val.bin", "book2.txt"],
        ["init-model", "--vocab-from", "tok.gguf", "-o", "m.gguf", *SHAPE, "--ctx", "64"],
    ]
    for args in setup:
        r = run(args)
        check(r.returncode == 0, f"setup {' '.join(args)}: {r.stderr}")
    with open("c.conf", "w") as f:
        f.write("lr = 1e-3\n")

    # each command: its fixed arguments, its inputs {flag: file}, its outputs {flag: default name}
    commands = [
        ("init-model", ["init-model", *SHAPE], {"--vocab-from": "tok.gguf"}, {"-o": "new.gguf"}),
        ("tokenize-corpus", ["tokenize-corpus"], {"-m": "tok.gguf", "FILE": "book.txt"},
         {"-o": "new.bin"}),
        ("tokenizer-train", ["tokenizer-train", "--vocab", "400"], {"FILE": "book.txt"},
         {"-o": "new.gguf", "--merges": "new.merges"}),
        ("perplexity", ["perplexity", "--ctx", "32", "--max-chunks", "1", "--sweep", "16", "-t", "1"],
         {"-m": "m.gguf", "-f": "book.txt"}, {"--out": "new.json", "--plot": "new.svg"}),
        ("train --init", ["train", *TRAIN],
         {"--init": "m.gguf", "--train": "train.bin", "--val": "val.bin", "--config": "c.conf"},
         {"-o": "new.gguf", "--ckpt": "new.ckpt", "--log": "new.csv", "--plot": "new.svg"}),
        ("train --tokenizer", ["train", *TRAIN, *SHAPE],
         {"--tokenizer": "tok.gguf", "--train": "train.bin"},
         {"-o": "new.gguf", "--ckpt": "new.ckpt", "--log": "new.csv", "--plot": "new.svg"}),
    ]

    def argv(base, ins, outs):
        a = list(base)
        for flag, path in list(ins.items()) + list(outs.items()):
            if flag != "FILE":
                a += [flag, path]
        a += [p for flag, p in ins.items() if flag == "FILE"]
        return a

    def spellings(name):
        """Other names of the same file (made fresh for each case, removed after)."""
        yield name, None
        yield "./" + name, None
        yield os.path.join(d, name), None
        yield "sub/../" + name, None
        if os.path.exists(name):
            yield "hard-" + name, lambda: os.link(name, "hard-" + name)
        yield "sym-" + name, lambda: os.symlink(name, "sym-" + name)

    def attempt(label, args, want_rc, want_words, one_line=False):
        inputs = [p for p in ("tok.gguf", "train.bin", "val.bin", "m.gguf", "book.txt", "c.conf")]
        before = {p: digest(p) for p in inputs}
        files_before = listing(d)
        r = run(args)
        check(r.returncode == want_rc, f"{label}: exit {r.returncode}, want {want_rc}: {r.stderr.strip()}")
        for w in want_words:
            check(w in r.stderr, f"{label}: the message names {w}: {r.stderr.strip()}")
        if one_line:
            lines = [x for x in r.stderr.splitlines() if x.strip()]
            check(len(lines) == 1, f"{label}: refused before any work (one line on stderr): {r.stderr}")
        check(all(digest(p) == before[p] for p in inputs), f"{label}: inputs unchanged")
        check(listing(d) == files_before, f"{label}: nothing new left: {set(listing(d)) ^ set(files_before)}")

    n_clash = 0
    for label, base, ins, outs in commands:
        # controls: distinct outputs work (and are then removed)
        r = run(argv(base, ins, outs))
        check(r.returncode == 0, f"{label} control: {r.stderr.strip()[-500:]}")
        for flag, p in outs.items():
            check(os.path.exists(p), f"{label} control wrote {flag} {p}")
        for p in listing(d):
            if p.startswith("new"):
                os.remove(p)
        # output = input
        for oflag in outs:
            for iflag, ipath in ins.items():
                for name, make in spellings(ipath):
                    if make:
                        make()
                    o = dict(outs)
                    o[oflag] = name
                    attempt(f"{label}: {oflag} {name} = {iflag} {ipath}", argv(base, ins, o), 2,
                            [oflag, iflag])
                    if make:
                        os.remove(name)
                    n_clash += 1
        # output = another output (the later flag names the earlier one's file)
        flags = list(outs)
        for i, a in enumerate(flags):
            for b in flags[i + 1:]:
                for name, make in list(spellings(outs[a]))[:4]:
                    o = dict(outs)
                    o[b] = name
                    attempt(f"{label}: {b} {name} = {a} {outs[a]}", argv(base, ins, o), 2, [a, b])
                    n_clash += 1
        # class 9: unwritable output locations, found before any work
        for oflag in outs:
            for bad in ("sub", "nosuch/x.out", "sub/", "book.txt/x.out", "/dev/null"):
                o = dict(outs)
                o[oflag] = bad
                attempt(f"{label}: {oflag} {bad}", argv(base, ins, o), 1, [oflag, bad.rstrip("/")],
                        one_line=True)
    print(f"  {n_clash} clash cases")
    # a train resume reads and rewrites its checkpoint by design: not a clash
    r = run(["train", *TRAIN, "--steps", "2", "--stop-after", "1", "--init", "m.gguf", "--train",
             "train.bin", "-o", "r.gguf"])
    check(r.returncode == 0, f"train --stop-after: {r.stderr.strip()[-300:]}")
    r = run(["train", "--resume", "--ckpt", "r.gguf.ckpt.gguf", "--train", "train.bin", "-o", "r.gguf",
             "-t", "1"])
    check(r.returncode == 0, f"train --resume with its own checkpoint: {r.stderr.strip()[-300:]}")
    r = run(["train", "--resume", "--ckpt", "r.gguf.ckpt.gguf", "--train", "train.bin", "-o",
             "r.gguf.ckpt.gguf", "-t", "1"])
    check(r.returncode == 2 and "-o" in r.stderr and "--ckpt" in r.stderr,
          f"train --resume with -o = --ckpt: exit {r.returncode}: {r.stderr.strip()}")

finish("test_cli_paths")
