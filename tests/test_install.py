"""test_install — `make install` into a fresh prefix, the installed library used the way other
programs use it, and `make uninstall`.

  * `make install PREFIX=P` (as this user, into an empty folder) installs exactly bin/msrnn,
    lib/libmsrnn.so{,.MAJOR,.MAJOR.MINOR.PATCH}, lib/libmsrnn.a, include/msrnn.h,
    lib/pkgconfig/msrnn.pc, share/man/man1/msrnn.1 and msrnn-COMMAND.1 for every command, and
    share/bash-completion/completions/msrnn; the SONAME is libmsrnn.so.MAJOR of the header's
    version, and pkg-config reports that version;
  * both examples (examples/stream.c, examples/perplexity.c) compile with nothing but
    `pkg-config --cflags --libs msrnn` (PKG_CONFIG_PATH pointing into the prefix) and run on the
    default model against the installed library: stream prints its prompt and new text under a
    bounded memory; perplexity prints the same ppl, bits per byte, token count and memory bytes
    as `msrnn perplexity --json` (the installed tool) for the same text and memory, to the printed
    digits (the same code runs both);
  * `make uninstall PREFIX=P` leaves P empty; a file of someone else's in the prefix survives it;
  * DESTDIR stages an install (the .pc file then names the final prefix, not the stage), and
    uninstalls from the stage.

The sanitizer build runs none of it (its library needs the sanitizer runtime in every program
that loads it); the Release build of the same `make test` does. abi-check and `nm -D` are in
test_abi."""
import json
import os
import re
import subprocess
import tempfile

from checks import check, finish

BUILD = os.environ["MSRNN_BUILD_DIR"]
SRC = os.environ["MSRNN_SOURCE_DIR"]
SHARED = os.environ["MSRNN_SHARED"]
MODEL = os.path.join(SRC, "models", "default.gguf")
BOOK = os.path.join(SHARED, "data", "gutenberg", "pg55.txt")


def run(cmd, env=None, **kw):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, env=e, **kw)


def tree(root):
    out = set()
    for d, dirs, files in os.walk(root):
        for n in files + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
            out.add(os.path.relpath(os.path.join(d, n), root))
    return out


def version():
    h = open(os.path.join(SRC, "include", "msrnn.h")).read()
    return tuple(int(re.search(rf"#define MSRNN_VERSION_{k} (\d+)", h).group(1))
                 for k in ("MAJOR", "MINOR", "PATCH"))


def make(*args, env=None):
    return run(["make", "-s", "-C", SRC, f"BUILD={BUILD}", *args], env=env)


if os.environ.get("MSRNN_SANITIZED"):
    print("test_install: the sanitizer build installs nothing (see the docstring); the Release "
          "build's run checks it")
    finish("test_install")

major, minor, patch = version()
ver = f"{major}.{minor}.{patch}"
commands = re.findall(r"^  ([a-z][a-z-]*) ", run([os.path.join(BUILD, "msrnn"), "--help"]).stdout,
                      re.M)
check(len(commands) >= 10, f"msrnn --help lists its commands: {commands}")

with tempfile.TemporaryDirectory() as tmp:
    prefix = os.path.join(tmp, "prefix")
    os.mkdir(prefix)
    r = make("install", f"PREFIX={prefix}")
    check(r.returncode == 0, f"make install: {r.stdout[-2000:]} {r.stderr[-2000:]}")
    want = {"bin/msrnn", "lib/libmsrnn.so", f"lib/libmsrnn.so.{major}", f"lib/libmsrnn.so.{ver}",
            "lib/libmsrnn.a", "include/msrnn.h", "lib/pkgconfig/msrnn.pc",
            "share/man/man1/msrnn.1", "share/bash-completion/completions/msrnn"}
    want |= {f"share/man/man1/msrnn-{c}.1" for c in commands}
    got = tree(prefix)
    check(got == want, f"installed files: missing {sorted(want - got)}, extra {sorted(got - want)}")
    lib = os.path.join(prefix, "lib", f"libmsrnn.so.{ver}")
    dyn = run(["readelf", "-d", lib]).stdout
    check(f"Library soname: [libmsrnn.so.{major}]" in dyn, f"SONAME libmsrnn.so.{major}: {dyn}")
    check(os.readlink(os.path.join(prefix, "lib", f"libmsrnn.so.{major}")) == f"libmsrnn.so.{ver}",
          "libmsrnn.so.MAJOR links to the versioned file")
    pcenv = {"PKG_CONFIG_PATH": os.path.join(prefix, "lib", "pkgconfig")}
    r = run(["pkg-config", "--modversion", "msrnn"], env=pcenv)
    check(r.stdout.strip() == ver, f"pkg-config --modversion: '{r.stdout.strip()}' vs {ver}")
    flags = run(["pkg-config", "--cflags", "--libs", "msrnn"], env=pcenv).stdout.split()
    check(f"-I{prefix}/include" in flags and f"-L{prefix}/lib" in flags and "-lmsrnn" in flags,
          f"pkg-config flags name the prefix: {flags}")
    # the installed tool runs
    r = run([os.path.join(prefix, "bin", "msrnn"), "--help"])
    check(r.returncode == 0 and "generate" in r.stdout, "the installed msrnn runs")
    r = run([os.path.join(prefix, "bin", "msrnn"), "--version"])
    check(r.returncode == 0 and r.stdout == f"msrnn {ver}\n", f"msrnn --version: {r.stdout!r}")

    # the examples, built through pkg-config alone, outside the source tree
    exe = {}
    for name in ("stream", "perplexity"):
        src = os.path.join(SRC, "examples", f"{name}.c")
        exe[name] = os.path.join(tmp, name)
        r = run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", src, "-o", exe[name]] + flags,
                env=pcenv, cwd=tmp)
        check(r.returncode == 0, f"examples/{name}.c compiles with pkg-config: {r.stderr}")
    libenv = {"LD_LIBRARY_PATH": os.path.join(prefix, "lib")}
    r = run(["ldd", exe["stream"]], env=libenv)
    check(os.path.join(prefix, "lib", f"libmsrnn.so.{major}") in r.stdout,
          f"the example loads the installed library: {r.stdout}")
    r = run([exe["stream"], MODEL, "It was a dark and stormy night", "40", "tova", "16"],
            env=libenv, timeout=300)
    check(r.returncode == 0 and r.stdout.startswith("It was a dark and stormy night") and
          len(r.stdout) > len("It was a dark and stormy night") + 40 and
          "tova, 16 entries per layer" in r.stderr,
          f"stream generates under tova: rc {r.returncode} out {r.stdout!r} err {r.stderr!r}")
    # a memory the library refuses: the library's message on stderr, exit 1
    r = run([exe["stream"], MODEL, "Hi", "4", "no-such-memory", "16"], env=libenv)
    check(r.returncode == 1 and "no-such-memory" in r.stderr,
          f"stream passes the library's message on: {r.returncode} {r.stderr!r}")
    text = os.path.join(tmp, "text.txt")  # 8 KB of a book: about 2000 tokens, one chunk
    with open(BOOK, "rb") as f:
        open(text, "wb").write(f.read(8000))
    for mem, k in (("full", "0"), ("tova", "64")):
        r = run([exe["perplexity"], MODEL, text, mem, k, "1"], env=libenv, timeout=600)
        check(r.returncode == 0, f"perplexity example {mem}: {r.stderr}")
        ex = dict(kv.split("=") for kv in r.stdout.split())
        cli = [os.path.join(prefix, "bin", "msrnn"), "perplexity", "-m", MODEL, "-f", text,
               "--max-chunks", "1", "--json"] + (["--kv", mem, "--kv-size", k] if k != "0" else [])
        r = run(cli, timeout=600)
        check(r.returncode == 0, f"msrnn perplexity: {r.stderr[-1000:]}")
        j = json.loads(r.stdout)
        check(f"{float(ex['ppl']):.6f}" == f"{j['ppl']:.6f}" and
              f"{float(ex['bits_per_byte']):.6f}" == f"{j['bits_per_byte']:.6f}" and
              int(ex["tokens"]) == j["n_tokens"] and int(ex["memory_bytes"]) == j["kv_bytes"],
              f"{mem}: the example ({ex}) and the CLI ({j}) agree")

    # make uninstall: exactly what was installed goes; another file in the prefix stays
    mine = os.path.join(prefix, "share", "man", "man1", "other.1")
    open(mine, "w").write(".TH OTHER 1\n")
    r = make("uninstall", f"PREFIX={prefix}")
    check(r.returncode == 0, f"make uninstall: {r.stderr}")
    check(tree(prefix) == {"share/man/man1/other.1"},
          f"uninstall left only the other file: {sorted(tree(prefix))}")
    os.remove(mine)
    r = make("uninstall", f"PREFIX={prefix}")  # again: the folders it left go now
    check(r.returncode == 0, f"a second uninstall is harmless: {r.stderr}")
    check(os.listdir(prefix) == [], f"the prefix is empty: {os.listdir(prefix)}")

    # DESTDIR: staged under the folder, for the final prefix
    stage = os.path.join(tmp, "stage")
    r = make("install", "PREFIX=/opt/msrnn-test", env={"DESTDIR": stage})
    check(r.returncode == 0, f"make install DESTDIR: {r.stderr[-1000:]}")
    staged = tree(os.path.join(stage, "opt", "msrnn-test"))
    check(staged == want, f"DESTDIR install: {sorted(staged ^ want)}")
    pc = open(os.path.join(stage, "opt", "msrnn-test", "lib", "pkgconfig", "msrnn.pc")).read()
    check("prefix=/opt/msrnn-test\n" in pc, f"the staged .pc names the final prefix: {pc}")
    check(not os.path.exists("/opt/msrnn-test"), "nothing was written outside the stage")
    r = make("uninstall", "PREFIX=/opt/msrnn-test", env={"DESTDIR": stage})
    check(r.returncode == 0 and not tree(stage), f"DESTDIR uninstall: {sorted(tree(stage))}")

finish("test_install")
