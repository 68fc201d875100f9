"""test_abi — the shared library exports the public API and nothing else, and keeps its ABI.

  * `nm -D` of libmsrnn.so shows only msrnn_ names, and exactly the functions include/msrnn.h
    declares;
  * tools/abi-check.py accepts this build against the recorded ABI (abi/msrnn.abi);
  * and it can fail: against records edited the ways an ABI breaks, it refuses a function that
    disappeared, a changed signature, a changed struct layout, a version that went backwards, a
    declared function the library does not export, and an addition without a minor bump — and
    accepts the same changes once the version says so (a major bump for the breaks, a minor one
    for the addition)."""
import os
import re
import subprocess
import sys
import tempfile

from checks import check, finish

BUILD = os.environ["MSRNN_BUILD_DIR"]
SRC = os.environ["MSRNN_SOURCE_DIR"]
LIB = os.path.join(BUILD, "libmsrnn.so")
TOOL = os.path.join(SRC, "tools", "abi-check.py")
RECORD = os.path.join(SRC, "abi", "msrnn.abi")

out = subprocess.run(["nm", "-D", "--defined-only", LIB], capture_output=True, text=True,
                     check=True).stdout
names = {l.split()[2] for l in out.splitlines() if len(l.split()) >= 3}
bad = sorted(n for n in names if not n.startswith("msrnn_"))
check(names and not bad, f"libmsrnn.so exports non-msrnn_ names: {bad[:20]}")
header = open(os.path.join(SRC, "include", "msrnn.h")).read()
code = re.sub(r"/\*.*?\*/", "", header, flags=re.S)  # the declarations, not the prose
declared = set(re.findall(r"\b(msrnn_[a-z_0-9]+)\s*\(", code))
check(names == declared, f"exports vs declarations: only exported {sorted(names - declared)}, "
      f"only declared {sorted(declared - names)}")


def abi(record=RECORD, header=None):
    cmd = [sys.executable, TOOL, "--lib", LIB, "--record", record]
    if header:
        cmd += ["--header", header]
    return subprocess.run(cmd, capture_output=True, text=True)


r = abi()
check(r.returncode == 0, f"abi-check accepts this build: {r.stdout} {r.stderr}")

lines = [l for l in open(RECORD).read().splitlines() if l and not l.startswith("#")]
ver = re.match(r"version (\d+)\.(\d+)\.(\d+)", lines[0]).groups()
major, minor, patch = map(int, ver)


def edited(tmp, name, change, version=None):
    """A copy of the record with change(lines) applied and, if given, another version line."""
    new = change(list(lines))
    if version:
        new[0] = f"version {version}"
    path = os.path.join(tmp, name)
    open(path, "w").write("\n".join(new) + "\n")
    return path


def replace_line(prefix, new):
    def f(ls):
        i = next(i for i, l in enumerate(ls) if l.startswith(prefix))
        ls[i] = new(ls[i])
        return ls
    return f


older_major = f"{major - 1}.9.0" if major > 0 else None
with tempfile.TemporaryDirectory() as tmp:
    breaks = {
        "a function disappeared": (
            lambda ls: ls + ["function msrnn_gone int msrnn_gone(void);"], "msrnn_gone disappeared"),
        "a signature changed": (
            replace_line("function msrnn_session_n_past ",
                         lambda l: l.replace("int64_t msrnn_session_n_past", "int msrnn_session_n_past")),
            "msrnn_session_n_past changed"),
        "a struct's layout changed": (
            replace_line("type msrnn_session_params ", lambda l: l.replace("int kv_f16;", "")),
            "msrnn_session_params changed"),
    }
    for what, (change, msg) in breaks.items():
        r = abi(edited(tmp, "break.abi", change))
        check(r.returncode == 1 and msg in r.stderr and "without a major version bump" in r.stderr,
              f"{what}: refused ({r.returncode}: {r.stderr.strip()})")
        if older_major:
            r = abi(edited(tmp, "break-major.abi", change, older_major))
            check(r.returncode == 0, f"{what}: accepted after a major bump "
                  f"({older_major} -> {major}.{minor}.{patch}): {r.stderr.strip()}")
    check(older_major is not None, "the version is at least 1.0.0, so a major bump can be tested")

    r = abi(edited(tmp, "ahead.abi", lambda ls: ls, f"{major + 1}.0.0"))
    check(r.returncode == 1 and "went backwards" in r.stderr,
          f"a version that went backwards is refused: {r.stderr.strip()}")

    # a function added: refused at the same version, accepted with a minor bump
    drop = lambda ls: [l for l in ls if not l.startswith("function msrnn_version_number ")]
    r = abi(edited(tmp, "added.abi", drop))
    check(r.returncode == 1 and "added without a minor version bump" in r.stderr and
          "msrnn_version_number" in r.stderr, f"an addition at the same version: {r.stderr.strip()}")
    bumped = re.sub(r"#define MSRNN_VERSION_MINOR \d+", f"#define MSRNN_VERSION_MINOR {minor + 1}",
                    header)
    hpath = os.path.join(tmp, "msrnn.h")
    open(hpath, "w").write(bumped)
    r = abi(edited(tmp, "added.abi", drop), header=hpath)
    check(r.returncode == 0, f"an addition with a minor bump is accepted: {r.stderr.strip()}")

    # a declaration the library does not export
    open(hpath, "w").write(header.replace("const char *msrnn_version(void);",
                                          "const char *msrnn_version(void);\nint msrnn_nosuch(int x);"))
    r = abi(header=hpath)
    check(r.returncode == 1 and "msrnn_nosuch" in r.stderr and "does not export" in r.stderr,
          f"a declared function missing from the library is refused: {r.stderr.strip()}")

finish("test_abi")
