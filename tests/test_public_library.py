"""test_public_library — libmsrnn.a, the library other programs link, exports only the public API.

  * every global symbol libmsrnn.a defines starts with msrnn_ (internal names are local, as ggml
    keeps to its ggml_ prefix; the one exception is the lock clang's OpenMP names for unnamed
    critical sections, which is no C identifier), and they are exactly the functions
    include/msrnn.h declares;
  * a program defining functions with the library's internal names (matmul, rmsnorm_forward,
    gguf_open, softmax...) links against it without a clash and runs a model through the public API
    (Release build only: the sanitizer build's objects need the sanitizer runtime);
  * control: the internal library (libmsrnn_internal.a, which the CLI and tests link) does export
    those names, so the check above can fail."""
import os
import re
import subprocess
import tempfile

from checks import check, finish

BUILD = os.environ["MSRNN_BUILD_DIR"]
SRC = os.environ["MSRNN_SOURCE_DIR"]
PUBLIC = os.path.join(BUILD, "libmsrnn.a")
INTERNAL = os.path.join(BUILD, "libmsrnn_internal.a")


def defined_globals(lib):
    out = subprocess.run(["nm", "-g", "--defined-only", lib], capture_output=True, text=True,
                         check=True).stdout
    return {line.split()[2] for line in out.splitlines() if len(line.split()) == 3}


pub = defined_globals(PUBLIC)
# OpenMP's lock of an unnamed `critical` (clang: .gomp_critical_user_.var, .reduction.var) is a common
# symbol the compiler names itself; it starts with '.', so it is no C identifier and cannot clash
# with a program's names (and OpenMP wants it shared by every unnamed critical in the program).
bad = sorted(s for s in pub
             if not s.startswith("msrnn_") and not s.startswith(".gomp_critical_user_"))
check(not bad, f"libmsrnn.a exports non-msrnn_ symbols: {bad[:20]}")
header = open(os.path.join(SRC, "include", "msrnn.h")).read()
code = re.sub(r"/\*.*?\*/", "", header, flags=re.S)  # the declarations, not the prose
declared = set(re.findall(r"\b(msrnn_[a-z_0-9]+)\s*\(", code))
missing = sorted(declared - pub)
check(declared and not missing, f"public functions missing from libmsrnn.a: {missing}")
extra = sorted(s for s in pub - declared if s.startswith("msrnn_"))
check(not extra, f"libmsrnn.a exports msrnn_ names msrnn.h does not declare: {extra}")

internal = defined_globals(INTERNAL)
clash_names = ["matmul", "rmsnorm_forward", "gguf_open", "softmax", "adamw_step", "arch_find"]
check(all(n in internal for n in clash_names),
      "control: the internal library exports its internal names "
      f"(missing: {[n for n in clash_names if n not in internal]})")
check(not any(n in pub for n in clash_names), "libmsrnn.a hides the internal names")

if os.environ.get("MSRNN_SANITIZED") != "1":
    prog = r"""
#include <stdio.h>
#include "msrnn.h"
/* the library's internal names, defined again by the program: they must not clash */
int matmul(void) { return 1; }
int rmsnorm_forward(void) { return 2; }
int gguf_open(void) { return 3; }
int softmax(void) { return 4; }
int adamw_step(void) { return 5; }
int arch_find(void) { return 6; }
int main(int argc, char **argv) {
    msrnn_model *m;
    if (argc < 2 || msrnn_model_open(argv[1], &m) != MSRNN_OK) return 10;
    msrnn_session *s;
    if (msrnn_session_open(m, NULL, &s) != MSRNN_OK) return 11;
    int32_t ids[3] = {1, 100, 200};
    if (msrnn_session_eval(s, ids, 3, NULL) != MSRNN_OK) return 12;
    printf("%d %lld\n", matmul() + softmax(), (long long)msrnn_session_n_past(s));
    msrnn_session_close(s);
    msrnn_model_close(m);
    return 0;
}
"""
    with tempfile.TemporaryDirectory() as tmp:
        c = os.path.join(tmp, "prog.c")
        exe = os.path.join(tmp, "prog")
        open(c, "w").write(prog)
        blas = "/usr/lib/x86_64-linux-gnu/openblas-pthread"
        r = subprocess.run(["cc", "-std=c11", "-O1", "-I", os.path.join(SRC, "include"), c, PUBLIC,
                            "-fopenmp", "-L" + blas, "-lopenblas", "-lm", "-o", exe],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"a program with the internal names links: {r.stderr[-2000:]}")
        if r.returncode == 0:
            r = subprocess.run([exe, os.path.join(SRC, "models", "default.gguf")],
                               capture_output=True, text=True, timeout=120)
            check(r.returncode == 0 and r.stdout.split() == ["5", "3"],
                  f"it runs the default model: rc {r.returncode}, out {r.stdout!r} {r.stderr!r}")
        r = subprocess.run(["cc", "-std=c11", "-O1", "-I", os.path.join(SRC, "include"), c,
                            INTERNAL, "-fopenmp", "-L" + blas, "-lopenblas", "-lm", "-o", exe],
                           capture_output=True, text=True)
        check(r.returncode != 0 and "multiple definition" in r.stderr,
              "control: the same program clashes with the internal library")

finish("test_public_library")
