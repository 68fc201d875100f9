"""test_python — the Python bindings (python/, issue 14 item 3), installed with pip and run against
the shared library of this build, compared with the C API and the command-line tool.

The driver (this file without arguments):
  1. installs the package offline, `pip install --no-build-isolation --no-deps --no-index --target`
     a copy of python/ (Debian's python3-pip; nothing is fetched): a pure wheel (py3-none-any,
     Root-Is-Purelib) whose files hold nothing compiled (no ELF, .so, .c), version = msrnn.h's
     MSRNN_VERSION_STRING;
  2. checks the library lookup: MSRNN_LIBRARY; LD_LIBRARY_PATH alone (the loader's search for
     libmsrnn.so.1); a missing MSRNN_LIBRARY gives an ImportError saying what was tried; a library
     of another major version (a stub compiled here) is refused by name and version;
  3. runs the checks below in a child python3 (`--inner SITE`) importing the installed copy, with
     MSRNN_LIBRARY = this build's libmsrnn.so. Under the sanitizer build (MSRNN_SANITIZED=1) that
     library takes the ASan runtime as a shared library: every child python3 gets it preloaded
     (LD_PRELOAD=$(clang -print-file-name=libclang_rt.asan-x86_64.so)) and detect_leaks=0 (the
     interpreter itself leaks at exit); ASan or UBSan stopping a child fails the test.

The child:
  * the ctypes structs match the C structs field by field (offset, size, order, total size: tests/
    tool_logits layout), and every function of msrnn.h is declared;
  * logits bit for bit: the same ids through tests/tool_logits (C, public API) and Session.eval
    (logits_all) + Session.logits, under the full cache (one eval, and evals of 7 tokens) and under
    tova (k=8) and merge (k=12, evals of 5) with eviction (checked: fewer entries kept than tokens
    fed, and logits unlike the full cache's);
  * greedy generation (and one seeded sampled run) equals `msrnn generate --json`: prompt ids, ids,
    text (detokenize and stream), full cache and tova k=16;
  * a malformed model (llama.embedding_length a string; llama.block_count missing) raises
    FormatError naming the key, with the CLI's message; a missing file FileError (an OSError)
    naming the path;
  * memory bytes equal the CLI's reports: perplexity --json kv_bytes (merge k=16 and full) against
    Model.perplexity's memory_bytes, with ppl, nll_mean, bits per byte and tokens equal to the
    printed precision; bench --depth's memory_bytes and session_bytes against Session.memory_bytes
    and .bytes (tova k=16 and full); generate's "session memory" line against Session.bytes;
  * error paths: unknown memory -> InvalidError with the library's own message (as a direct ctypes
    call reads it); past n_ctx -> ContextFullError; out-of-vocabulary token -> InvalidError; use
    after close -> ValueError; the logits view is read-only, at msrnn_session_logits' address,
    follows the next eval, and keeps its session's memory until it is gone (also after close());
    a model closed under a live session keeps serving it; save/load; a batch; two threads.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from checks import check, finish

BIN = os.environ["MSRNN_BIN"]
BUILD = os.environ["MSRNN_BUILD_DIR"]
SRC = os.environ["MSRNN_SOURCE_DIR"]
SHARED = os.environ["MSRNN_SHARED"]
SANITIZED = os.environ.get("MSRNN_SANITIZED") == "1"
LIB = os.path.join(BUILD, "libmsrnn.so")
TOOL = os.path.join(BUILD, "tests", "tool_logits")
MODEL = os.path.join(SRC, "models", "default.gguf")
BOOK = os.path.join(SHARED, "data", "gutenberg", "pg55.txt")
THREADS = 2
ASAN_RUNTIME = ""  # the driver finds it under the sanitizer build
SYMBOLIZER = ""  # and writes this llvm-symbolizer wrapper


def header_version():
    h = open(os.path.join(SRC, "include", "msrnn.h")).read()
    return re.search(r'#define MSRNN_VERSION_STRING "([^"]+)"', h).group(1)


def child_env(**extra):
    """The environment of a child python3: under the sanitizer build the ASan runtime preloaded."""
    env = dict(os.environ)
    env.pop("MSRNN_LIBRARY", None)
    env.pop("PYTHONPATH", None)
    if SANITIZED:
        env["LD_PRELOAD"] = ASAN_RUNTIME
        env["MSRNN_TEST_ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "")  # for the child's children
        opts = [o for o in env.get("ASAN_OPTIONS", "").split(":") if o and
                not o.startswith("detect_leaks=")] + ["detect_leaks=0"]
        if SYMBOLIZER:
            opts.append("external_symbolizer_path=" + SYMBOLIZER)
        env["ASAN_OPTIONS"] = ":".join(opts)
    env.update(extra)
    return env


def execute(args, env=None, timeout=600):
    """Run a program, its output through files rather than pipes: a sanitizer report starts
    llvm-symbolizer, which may outlive the program holding its pipes open. A CompletedProcess (exit
    status -9 after the timeout)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            rc = subprocess.run(args, stdout=out, stderr=err, env=env, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = -9
        out.seek(0)
        err.seek(0)
        text = [f.read().decode("utf-8", "replace") for f in (out, err)]
    if rc == -9:
        text[1] += f"\n(killed after {timeout} s)"
    return subprocess.CompletedProcess(args, rc, *text)


def unpreload():
    """In a child python3 with the ASan runtime preloaded: take it out of the environment, so the
    programs it starts (the CLI, tool_logits: they link their own) do not get it, and give them the
    suite's ASAN_OPTIONS again."""
    if "MSRNN_TEST_ASAN_OPTIONS" in os.environ:
        os.environ.pop("LD_PRELOAD", None)
        os.environ["ASAN_OPTIONS"] = os.environ.pop("MSRNN_TEST_ASAN_OPTIONS")


def python(args, timeout=600, **extra):
    return execute([sys.executable, *args], child_env(**extra), timeout)


def report(stderr):
    """The start of a sanitizer's report in stderr, else its end."""
    at = re.search(r"==\d+==ERROR|runtime error", stderr)
    return stderr[max(at.start() - 200, 0):at.start() + 3000] if at else stderr[-3000:]


# ==================================== the driver ===============================================


def driver():
    global ASAN_RUNTIME
    if SANITIZED:
        try:
            ASAN_RUNTIME = subprocess.run(["clang", "-print-file-name=libclang_rt.asan-x86_64.so"],
                                          capture_output=True, text=True).stdout.strip()
        except OSError as e:
            ASAN_RUNTIME = ""
            print("clang:", e)
        if not os.path.isfile(ASAN_RUNTIME):
            check(False, f"the ASan runtime to preload into python3 (clang -print-file-name="
                         f"libclang_rt.asan-x86_64.so gave {ASAN_RUNTIME!r}; libclang-rt-14-dev)")
            finish("test_python")
    check(os.path.isfile(LIB), f"the shared library {LIB} is built")
    with tempfile.TemporaryDirectory() as tmp:
        # ---- 1. install, offline, from a copy (setuptools builds in the source folder) ----
        src = os.path.join(tmp, "src")
        shutil.copytree(os.path.join(SRC, "python"), src,
                        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "dist"))
        site = os.path.join(tmp, "site")
        global SYMBOLIZER
        real = shutil.which("llvm-symbolizer") or shutil.which("llvm-symbolizer-14")
        if SANITIZED and real:
            # ASan starts llvm-symbolizer to print a report, with the python3's environment: the
            # runtime preloaded there, it hangs (an orphan keeping the report's output open). A
            # wrapper of the same name (ASan goes by the name) starts it without.
            os.mkdir(os.path.join(tmp, "bin"))
            SYMBOLIZER = os.path.join(tmp, "bin", "llvm-symbolizer")
            open(SYMBOLIZER, "w").write(f'#!/bin/sh\nunset LD_PRELOAD\nexec {real} "$@"\n')
            os.chmod(SYMBOLIZER, 0o755)
        r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation",
                            "--no-deps", "--no-index", "--no-cache-dir",
                            "--disable-pip-version-check", "--target", site, src],
                           capture_output=True, text=True, timeout=300)
        check(r.returncode == 0, f"pip install ./python: {r.stdout[-1500:]} {r.stderr[-1500:]}")
        if r.returncode:
            finish("test_python")
        files = [os.path.relpath(os.path.join(d, f), site) for d, _, fs in os.walk(site)
                 for f in fs if "__pycache__" not in d]
        check(os.path.join("msrnn", "__init__.py") in files and os.path.join("msrnn", "_lib.py")
              in files, f"the package's modules are installed: {files}")
        native = [f for f in files if f.endswith((".so", ".c", ".h", ".o", ".a", ".pyd", ".dylib"))
                  or open(os.path.join(site, f), "rb").read(4) == b"\x7fELF"]
        check(not native, f"the installed package holds no compiled file: {native}")
        info = glob.glob(os.path.join(site, "msrnn-*.dist-info"))
        wheel = open(os.path.join(info[0], "WHEEL")).read() if info else ""
        meta = open(os.path.join(info[0], "METADATA")).read() if info else ""
        check("Root-Is-Purelib: true" in wheel and "Tag: py3-none-any" in wheel,
              f"a pure-Python wheel: {wheel!r}")
        check(f"\nVersion: {header_version()}\n" in meta and "Requires-Dist: numpy" in meta,
              f"version {header_version()} (msrnn.h) and numpy required: {meta[:400]!r}")

        # ---- 2. the library lookup ----
        probe = ["-c", "import msrnn; "
                 "print(msrnn.version(), msrnn.library_path, msrnn.__version__)"]
        r = python(probe, PYTHONPATH=site, MSRNN_LIBRARY=LIB)
        check(r.returncode == 0 and r.stdout.split() == [header_version(), LIB, header_version()],
              f"MSRNN_LIBRARY: {r.stdout!r} {r.stderr[-800:]!r}")
        r = python(probe, PYTHONPATH=site, LD_LIBRARY_PATH=BUILD)
        check(r.returncode == 0 and r.stdout.split()[:2] == [header_version(), "libmsrnn.so.1"],
              f"LD_LIBRARY_PATH alone (the loader's search for libmsrnn.so.1): {r.stdout!r} "
              f"{r.stderr[-800:]!r}")
        missing = os.path.join(tmp, "no", "libmsrnn.so")
        r = python(probe, PYTHONPATH=site, MSRNN_LIBRARY=missing)
        check(r.returncode != 0 and "ImportError" in r.stderr and missing in r.stderr and
              "MSRNN_LIBRARY" in r.stderr,
              f"a missing library: ImportError naming it: {r.stderr!r}")
        stub_c, stub = os.path.join(tmp, "stub.c"), os.path.join(tmp, "libmsrnn.so.2")
        open(stub_c, "w").write('const char *msrnn_version(void) { return "2.3.4"; }\n'
                                'int msrnn_version_number(void) { return 20304; }\n')
        cc = subprocess.run(["cc", "-shared", "-fPIC", "-o", stub, stub_c], capture_output=True,
                            text=True)
        check(cc.returncode == 0, f"cc builds a stub library: {cc.stderr}")
        r = python(probe, PYTHONPATH=site, MSRNN_LIBRARY=stub)
        check(r.returncode != 0 and "ImportError" in r.stderr and "2.3.4" in r.stderr and
              "major version 1" in r.stderr,
              f"a library of major version 2 is refused: {r.stderr[-600:]!r}")

        # ---- 3. everything else, in a child importing the installed copy ----
        r = python([os.path.abspath(__file__), "--inner", site], timeout=1200, PYTHONPATH=site,
                   MSRNN_LIBRARY=LIB)
        sys.stdout.write(r.stdout)
        sanitizer = re.search(r"(AddressSanitizer|UndefinedBehaviorSanitizer|runtime error)",
                              r.stderr)
        check(r.returncode == 0 and not sanitizer,
              f"the checks of the bindings (exit {r.returncode}): {report(r.stderr)}")
    finish("test_python")


# ==================================== the child ================================================


def inner(site):
    import gc
    import threading

    import numpy as np

    import gguf_tiny
    import msrnn
    from msrnn import _lib

    check(os.path.abspath(msrnn.__file__).startswith(os.path.abspath(site)),
          f"the installed copy is imported: {msrnn.__file__}")
    check(msrnn.__version__ == header_version() == msrnn.version(),
          f"versions: bindings {msrnn.__version__}, library {msrnn.version()}")
    lib = _lib.lib

    unpreload()
    env = dict(os.environ)

    def run(*args, timeout=300):
        return execute(list(args), env, timeout)

    def cli(*args):
        return run(BIN, *args)

    # ---- the structs and functions ----
    r = run(TOOL, "layout")
    check(r.returncode == 0, f"tool_logits layout: {r.stderr}")
    c_fields, c_size = {}, {}
    for line in r.stdout.splitlines():
        a, b, c = line.split()
        if b == "size":
            c_size[a] = int(c)
        else:
            s, f = a.split(".")
            c_fields.setdefault(s, []).append((f, int(b), int(c)))
    check(sorted(c_size) == sorted(_lib.STRUCTS), f"structs: C {sorted(c_size)}")
    for name, st in _lib.STRUCTS.items():
        py = [(f, getattr(st, f).offset, getattr(st, f).size) for f, _ in st._fields_]
        check(py == c_fields.get(name) and _lib.ctypes.sizeof(st) == c_size.get(name),
              f"{name}: ctypes {py} size {_lib.ctypes.sizeof(st)}, C {c_fields.get(name)} size "
              f"{c_size.get(name)}")
    header = re.sub(r"/\*.*?\*/", "", open(os.path.join(SRC, "include", "msrnn.h")).read(),
                    flags=re.S)  # the declarations, without the comments
    declared = set(re.findall(r"\b(msrnn_[a-z_0-9]+)\s*\(", header))
    check(declared == set(_lib.FUNCTIONS),
          f"functions: only in msrnn.h {sorted(declared - set(_lib.FUNCTIONS))}, only in the "
          f"bindings {sorted(set(_lib.FUNCTIONS) - declared)}")

    model = msrnn.Model(MODEL)
    V = model.n_vocab
    book = open(BOOK, "rb").read()
    text = book[20000:22000].decode("utf-8", "replace")
    ids = model.tokenize(text)[:48]
    check(len(ids) == 48 and ids[0] == model.bos_id, f"a prompt of 48 ids from BOS: {ids[:4]}")
    check(model.detokenize(model.tokenize(text)) == text, "detokenize(tokenize(text)) == text")
    # chat templates and special tokens: "<s>" is BOS's text (the special tokenizer takes it as
    # BOS, the plain one as text); chatml written out from its definition; the default model has no
    # template of its own, so chat_apply uses plain
    check(model.tokenize_special("<s>Hi", add_bos=False) == [model.bos_id] + model.tokenize("Hi", add_bos=False)
          and model.tokenize("<s>Hi", add_bos=False) != model.tokenize_special("<s>Hi", add_bos=False),
          f"tokenize_special reads <s> as BOS: {model.tokenize_special('<s>Hi', add_bos=False)}")
    conv = [{"role": "system", "content": "S"}, ("user", "Hi"), ("assistant", "Yo"), ("user", "Again")]
    check(msrnn.chat_apply("chatml", conv) == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
          "<|im_start|>assistant\nYo<|im_end|>\n<|im_start|>user\nAgain<|im_end|>\n<|im_start|>assistant\n",
          f"chat_apply chatml: {msrnn.chat_apply('chatml', conv)!r}")
    check(model.chat_template is None and model.chat_apply(conv) == "S\n\nUser: Hi\nAssistant: Yo\nUser: Again\n"
          "Assistant:", f"Model.chat_apply without a template: plain: {model.chat_apply(conv)!r}")
    # the memory names: the ones the CLI's --kv takes, in its order
    kv = re.search(r"--kv POLICY\s+attention memory: ([^\n]*\n(?:\s+[^-\s][^\n]*\n)*)",
                   run(BIN, "bench", "--help").stdout)
    kv_names = [x.strip(" ,") for x in re.sub(r"\(default\)", "", kv.group(1)).replace("\n", " ").split(",")] if kv else []
    check(msrnn.memory_names() == [x for x in kv_names if x], f"memory_names {msrnn.memory_names()} vs --kv {kv_names}")
    check("chatml" in msrnn.chat_templates() and msrnn.chat_template_detect("{{'<|im_start|>'}}") == "chatml"
          and msrnn.chat_template_detect("{{ x }}") is None, f"templates: {msrnn.chat_templates()}")
    try:
        msrnn.chat_apply("{{ unknown }}", conv)
        check(False, "an unknown template raises")
    except msrnn.UnsupportedError as e:
        check("not one msrnn knows" in str(e), f"an unknown template raises UnsupportedError: {e}")

    # ---- logits bit for bit against the C API ----
    with tempfile.TemporaryDirectory() as tmp:
        last = {}  # the last logits of each memory
        for memory, k, piece in [("full", 0, 0), ("full", 0, 7), ("tova", 8, 0), ("merge", 12, 5)]:
            out = os.path.join(tmp, "logits.bin")
            r = run(TOOL, MODEL, memory, str(k), str(THREADS), str(piece), out, *map(str, ids))
            what = f"{memory} k={k} evals of {piece or len(ids)}"
            check(r.returncode == 0, f"tool_logits {what}: {r.stderr}")
            if r.returncode:
                continue
            c = open(out, "rb").read()
            s = model.session(memory=memory, kv_size=k, n_threads=THREADS)
            rows, step = [], piece or len(ids)
            for i in range(0, len(ids), step):
                rows.append(s.eval(ids[i:i + step], logits_all=True))
            view = s.logits
            py = np.concatenate(rows + [view[None, :]])
            check(py.dtype == np.float32 and py.shape == (len(ids) + 1, V), f"shape {py.shape}")
            check(len(c) == py.nbytes and py.tobytes() == c,
                  f"{what}: the logits equal the C API's bit for bit "
                  f"({len(c)} and {py.nbytes} bytes)")
            check(r.stdout.split() == ["n_past", str(s.n_past), "session_bytes", str(s.bytes),
                                       "memory_bytes", str(s.memory_bytes)],
                  f"{what}: n_past and bytes as the C API's: {r.stdout!r}")
            if memory != "full":
                pos, score = s.kept(0)
                check(s.n_past == len(ids) and 0 < len(pos) < len(ids) and
                      len(pos) == len(score) and list(pos) == sorted(pos),
                      f"{what}: the memory evicted ({len(pos)} of {len(ids)} kept)")
            last[memory] = view.tobytes()
            s.close()
            del view
        check(len(set(last.values())) == 3, "bounded memories give logits unlike the full cache's")

    # ---- greedy (and sampled) generation against the CLI ----
    prompt = "Once upon a time"
    runs = [([], {}), (["--kv", "tova", "--kv-size", "16"], {"memory": "tova", "kv_size": 16}),
            (["--temp", "0.8", "--seed", "5"], {"temperature": 0.8, "seed": 5})]
    for flags, kw in runs:
        what = " ".join(flags) or "full cache"
        greedy = {} if "temperature" in kw else {"temperature": 0}
        r = cli("generate", "-m", MODEL, "-p", prompt, "-n", "40", "-t", str(THREADS), "--json",
                *(["--temp", "0"] if greedy else []), *flags)
        check(r.returncode == 0, f"generate {what}: {report(r.stderr)}")
        if r.returncode:
            continue
        j = json.loads(r.stdout)
        gen = model.generate(prompt, 40, n_threads=THREADS, **greedy, **kw)
        check(model.tokenize(prompt) == j["prompt_ids"],
              f"{what}: prompt ids {model.tokenize(prompt)} vs the CLI's {j['prompt_ids']}")
        check(gen == j["ids"] and len(gen) > 0, f"{what}: ids {gen} vs the CLI's {j['ids']}")
        check(model.detokenize(gen, prev=j["prompt_ids"][-1]) == j["text"],
              f"{what}: text {model.detokenize(gen, prev=j['prompt_ids'][-1])!r} vs {j['text']!r}")
        streamed = "".join(model.stream(prompt, 40, n_threads=THREADS, **greedy, **kw))
        check(streamed == j["text"], f"{what}: streamed {streamed!r}")

    # ---- malformed and missing files ----
    with tempfile.TemporaryDirectory() as tmp:
        good = gguf_tiny.read(MODEL)
        broken = []
        g = gguf_tiny.read(MODEL)
        gguf_tiny.set_key(g, "llama.embedding_length", gguf_tiny.GGUF_STR, gguf_tiny._str("256"))
        broken.append(("llama.embedding_length", g))
        g = gguf_tiny.read(MODEL)
        g["kvs"] = [kv for kv in g["kvs"] if kv[0] != "llama.block_count"]
        broken.append(("llama.block_count", g))
        check(len(good["kvs"]) == len(broken[1][1]["kvs"]) + 1, "the key is dropped")
        for i, (key, g) in enumerate(broken):
            path = os.path.join(tmp, f"broken{i}.gguf")
            gguf_tiny.write(path, g)
            r = cli("generate", "-m", path, "-p", "x", "-n", "1", "--temp", "0")
            cli_msg = r.stderr.strip().splitlines()[-1].replace("msrnn generate: ", "", 1) \
                if r.stderr.strip() else ""
            try:
                msrnn.Model(path)
                check(False, f"{key}: a malformed model opens")
            except msrnn.FormatError as e:
                check(isinstance(e, ValueError) and e.status == 2 and
                      e.status_name == lib.msrnn_status_name(2).decode(),
                      f"{key}: a FormatError (a ValueError), status {e.status} {e.status_name}")
                check(key in str(e) and path in str(e), f"{key}: the message names it: {e}")
                check(r.returncode == 1 and str(e) == cli_msg,
                      f"{key}: the CLI's message {cli_msg!r} (exit {r.returncode}), Python's {e}")
            except Exception as e:
                check(False, f"{key}: {type(e).__name__} {e}")
        path = os.path.join(tmp, "missing.gguf")
        r = cli("generate", "-m", path, "-p", "x", "-n", "1", "--temp", "0")
        try:
            msrnn.Model(path)
            check(False, "a missing file opens")
        except msrnn.FileError as e:
            check(isinstance(e, OSError) and path in str(e) and
                  r.stderr.strip().endswith(str(e)),
                  f"a missing file: FileError naming it as the CLI does: {e} / {r.stderr!r}")

    # ---- memory bytes and perplexity against the CLI ----
    with tempfile.TemporaryDirectory() as tmp:
        txt = os.path.join(tmp, "book.txt")
        open(txt, "wb").write(book[:30000])
        kv_bytes = {}
        for memory, k in [("merge", 16), ("full", 0)]:
            flags = ["--kv", memory] + (["--kv-size", str(k)] if k else [])
            r = cli("perplexity", "-m", MODEL, "-f", txt, "--ctx", "128", "--max-chunks", "2",
                    "-t", str(THREADS), "--json", *flags)
            check(r.returncode == 0, f"perplexity {memory}: {report(r.stderr)}")
            if r.returncode:
                continue
            j = json.loads(r.stdout)
            p = model.perplexity(book[:30000], ctx=128, max_chunks=2, memory=memory, kv_size=k,
                                 n_threads=THREADS)
            check(p.memory_bytes == j["kv_bytes"] and p.memory_bytes > 0,
                  f"perplexity {memory}: memory bytes {p.memory_bytes}, the CLI's {j['kv_bytes']}")
            check(("%.6f %.8f %.6f %d" % (p.ppl, p.nll_mean, p.bits_per_byte, p.n_scored)) ==
                  ("%.6f %.8f %.6f %d" % (j["ppl"], j["nll_mean"], j["bits_per_byte"],
                                          j["n_tokens"])),
                  f"perplexity {memory}: {p} vs the CLI's {j}")
            kv_bytes[memory] = p.memory_bytes
        check(len(set(kv_bytes.values())) == 2, f"the bounded memory's bytes differ: {kv_bytes}")
        depth, n_gen = 40, 2
        for memory, k in [("tova", 16), ("full", 0)]:
            flags = ["--kv", memory] + (["--kv-size", str(k)] if k else [])
            r = cli("bench", "-m", MODEL, "--depth", str(depth), "-n", str(n_gen), "-r", "1", "-t",
                    str(THREADS), "--json", *flags)
            check(r.returncode == 0, f"bench {memory}: {report(r.stderr)}")
            if r.returncode:
                continue
            d = json.loads(r.stdout)["depths"][0]
            # bench sizes the session for what it feeds: n_ctx = depth + n_gen * reps + 1
            with model.session(memory=memory, kv_size=k, n_ctx=depth + n_gen + 1,
                               n_threads=THREADS) as s:
                s.eval(model.tokenize(book[:4000].decode("utf-8", "replace"))[:depth])
                check(s.memory_bytes == d["memory_bytes"] and s.bytes == d["session_bytes"],
                      f"bench {memory}: memory bytes {s.memory_bytes}, session bytes {s.bytes}; "
                      f"the CLI's {d}")
        for flags, kw in [([], {}), (["--kv", "tova", "--kv-size", "16"],
                                     {"memory": "tova", "kv_size": 16})]:
            r = cli("generate", "-m", MODEL, "-p", prompt, "-n", "40", "--temp", "0", "-t",
                    str(THREADS), *flags)
            m = re.search(r"session memory (\d+) bytes", r.stderr)
            n_prompt = len(model.tokenize(prompt))
            if not kw:  # generate sizes the full cache for prompt + n - 1 tokens
                kw = {"n_ctx": n_prompt + 40 - 1}
            with model.session(n_threads=THREADS, **kw) as s:
                check(m and int(m.group(1)) == s.bytes,
                      f"generate {flags}: session bytes {s.bytes}, the CLI's {r.stderr[-300:]!r}")

    # ---- errors, lifetimes, views ----
    try:
        model.session(memory="bogus", kv_size=4)
        check(False, "an unknown memory opens")
    except msrnn.InvalidError as e:
        p = lib.msrnn_session_default_params()
        p.memory, p.kv_size = b"bogus", 4
        h = _lib.ctypes.c_void_p()
        st = lib.msrnn_session_open(model._ptr, _lib.ctypes.byref(p), _lib.ctypes.byref(h))
        direct = lib.msrnn_last_error().decode()
        check(st == 3 and str(e) == direct and "bogus" in direct and isinstance(e, ValueError),
              f"unknown memory: InvalidError with the library's message {direct!r}: {e!r}")
    check(msrnn.memory_settings("merge", kv_sinks=2).min_kv_size == 4,
          f"memory_settings: {msrnn.memory_settings('merge', kv_sinks=2)}")
    s = model.session(n_ctx=16, n_threads=THREADS)
    try:
        s.eval(ids[:20])
        check(False, "20 tokens fit a context of 16")
    except msrnn.ContextFullError as e:
        check("16" in str(e) and s.n_past == 0 and
              e.status_name == lib.msrnn_status_name(6).decode(),
              f"ContextFullError: {e}, n_past {s.n_past}")
    try:
        s.eval([V])
        check(False, "a token outside the vocabulary is fed")
    except msrnn.InvalidError as e:
        check(str(V) in str(e), f"out of the vocabulary: {e}")
    try:
        s.eval([1.5])
        check(False, "a float token is fed")
    except TypeError:
        pass
    s.eval(np.array(ids[:10], dtype=np.int64))
    v = s.logits
    addr = _lib.ctypes.cast(lib.msrnn_session_logits(s._ptr), _lib.ctypes.c_void_p).value
    check(v.ctypes.data == addr and v.shape == (V,) and v.dtype == np.float32,
          f"the view is at msrnn_session_logits ({v.ctypes.data:#x}, {addr:#x})")
    check(not v.flags.writeable and not v.flags.owndata, "the view is read-only and not a copy")
    try:
        v[0] = 1.0
        check(False, "the view is writable")
    except ValueError:
        pass
    before = v.copy()
    rows = s.eval(ids[10:12], logits_all=True)
    check(np.shares_memory(v, s.logits) and v.tobytes() == rows[-1].tobytes() and
          v.tobytes() != before.tobytes(), "the view follows the next eval (no copy)")
    keep = v.copy()
    s.close()  # a view is alive: the memory stays until it is gone
    for name, f in [("eval", lambda: s.eval(ids[:1])), ("logits", lambda: s.logits),
                    ("n_past", lambda: s.n_past), ("reset", s.reset), ("kept", lambda: s.kept(0))]:
        try:
            f()
            check(False, f"{name} after close")
        except ValueError:
            pass
    check(v.tobytes() == keep.tobytes() and s._ptr is not None,
          "a view outlives close(), reading the session's memory")
    del v
    check(s._ptr is None, "the session's memory is freed once the view is gone")

    def orphan_view():
        t = model.session(memory="window", kv_size=8, n_threads=THREADS)
        t.eval(ids[:12])
        return t.logits, t.logits.copy()
    v, want = orphan_view()
    gc.collect()
    check(v.tobytes() == want.tobytes(), "a view keeps an unreferenced session alive")
    del v

    # save, load
    with tempfile.TemporaryDirectory() as tmp:
        a = model.session(memory="h2o", kv_size=10, n_threads=THREADS)
        a.eval(ids[:30])
        a.save(os.path.join(tmp, "s.bin"))
        b = model.session(memory="h2o", kv_size=10, n_threads=THREADS)
        b.load(os.path.join(tmp, "s.bin"))
        check(b.n_past == 30 and b.logits.tobytes() == a.logits.tobytes() and
              [x.tolist() for x in b.kept(2)] == [x.tolist() for x in a.kept(2)],
              "a loaded session equals the saved one")
        a.eval(ids[30:32])
        b.eval(ids[30:32])
        check(b.logits.tobytes() == a.logits.tobytes(), "and goes on the same")
        c = model.session(memory="tova", kv_size=10, n_threads=THREADS)
        try:
            c.load(os.path.join(tmp, "s.bin"))
            check(False, "a state of another memory loads")
        except msrnn.InvalidError as e:
            check("memory" in str(e) and c.n_past == 0, f"load of another memory: {e}")
        for x in (a, b, c):
            x.close()

    # a batch: the same logits as separate evals (up to the order of float sums)
    x = model.session(n_batch=-1, n_threads=THREADS)
    y = model.session(n_batch=-1, memory="sink", kv_size=12, n_threads=THREADS)
    with model.batch(64, THREADS) as bt:
        bt.eval([(x, ids[:20]), (y, ids[:30])])
    ref_x = model.session(n_threads=THREADS)
    ref_x.eval(ids[:20])
    ref_y = model.session(memory="sink", kv_size=12, n_threads=THREADS)
    ref_y.eval(ids[:30])
    check(x.n_past == 20 and y.n_past == 30 and
          np.allclose(x.logits, ref_x.logits, atol=1e-3) and
          np.allclose(y.logits, ref_y.logits, atol=1e-3), "a batch advances each session")
    try:
        x.eval(ids[:1])
        check(False, "a batch-only session evaluates alone")
    except msrnn.InvalidError:
        pass

    # two threads at once (the GIL is released during the calls)
    want = {}
    for mem in ("tova", "full"):
        with model.session(memory=mem, kv_size=8, n_threads=1) as t:
            t.eval(ids)
            want[mem] = t.logits.tobytes()
    got, errors = {}, []

    def worker(mem):
        try:
            with model.session(memory=mem, kv_size=8, n_threads=1) as t:
                for _ in range(3):
                    t.reset()
                    t.eval(ids)
                got[mem] = t.logits.tobytes()
        except Exception as e:  # reported below
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(m,)) for m in want]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(not errors and got == want, f"two sessions in two threads: {errors}")

    # sampler
    smp = model.sampler(temperature=0)
    check(smp.sample(ref_x.logits, ids[:20]) == int(np.argmax(ref_x.logits)), "greedy = argmax")
    try:
        smp.sample(np.zeros(V - 1, np.float32))
        check(False, "logits of the wrong size are sampled")
    except ValueError:
        pass
    smp.close()
    try:
        smp.sample(ref_x.logits)
        check(False, "a closed sampler samples")
    except ValueError:
        pass

    # a model closed under a live session keeps serving it; freed with its last session
    live = model.session(memory="window", kv_size=8, n_threads=THREADS)
    for t in (x, y, ref_x, ref_y):
        t.close()
    model.close()
    live.eval(ids[:12])
    check(live.n_past == 12 and model._ptr is not None, "a session outlives its model's close()")
    try:
        model.tokenize("x")
        check(False, "a closed model tokenizes")
    except ValueError:
        pass
    try:
        model.session()
        check(False, "a closed model opens a session")
    except ValueError:
        pass
    live.close()
    check(model._ptr is None, "the model is freed with its last session")
    finish("test_python (bindings)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--inner":
        inner(sys.argv[2])
    else:
        driver()
