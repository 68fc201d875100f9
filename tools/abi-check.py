#!/usr/bin/env python3
"""abi-check — the shared library's ABI against the recorded one (abi/msrnn.abi).

The ABI is what include/msrnn.h declares and libmsrnn.so exports: every function's signature and
every public type's definition (structs, enums, typedefs), read from the preprocessed header with
its comments gone and its whitespace normalised, plus the version macros. The check fails when

  * the library exports a symbol that is not an msrnn_ name, or a function the header does not
    declare, or the header declares one the library does not export;
  * the SONAME is not libmsrnn.so.MAJOR of the header's MSRNN_VERSION_MAJOR;
  * a function or type of the record has disappeared or changed, and MAJOR was not raised;
  * something was added and neither MAJOR nor MINOR was raised (the version must say so);
  * the version went backwards.

    tools/abi-check.py --lib build/libmsrnn.so            check (exit 0 ok, 1 broken, 2 usage)
    tools/abi-check.py --lib build/libmsrnn.so --update   record the current ABI as the new one
    tools/abi-check.py --list ...                          print the current ABI

Run --update when releasing a version whose changes the check accepted (or after a major bump).
"""
import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def preprocess(header):
    """The header's text with comments removed, #include and #if resolved (msrnn.h includes only
    <stddef.h> and <stdint.h>, whose contents are dropped: only lines from the header itself are
    kept)."""
    out = subprocess.run(["cc", "-E", "-dD", header], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"abi-check: cannot preprocess {header}: {out.stderr.strip()}")
    keep, lines = False, []
    for line in out.stdout.splitlines():
        m = re.match(r'# \d+ "([^"]+)"', line)
        if m:
            keep = os.path.abspath(m.group(1)) == os.path.abspath(header)
            continue
        if keep:
            lines.append(line)
    return "\n".join(lines)


def normalise(s):
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"\s*([(),;{}\[\]*])\s*", r"\1", s)
    return s


def unnamed(params):
    """A parameter list without the parameters' names, which are no part of the ABI:
    'const msrnn_batch*b,int n' -> 'const msrnn_batch*,int'."""
    out = []
    for p in params.split(","):  # msrnn.h takes no function-pointer parameters
        m = re.match(r"(.*[\s*])(\w+)$", p)
        out.append(m.group(1).strip() if m and m.group(1).strip() else p)
    return ",".join(out)


def parse_header(header):
    """(version (major, minor, patch), {function: signature}, {type: definition})."""
    text = preprocess(header)
    ver = {}
    for k in ("MAJOR", "MINOR", "PATCH"):
        m = re.search(rf"^#define MSRNN_VERSION_{k} (\d+)", text, re.M)
        if not m:
            sys.exit(f"abi-check: {header}: no MSRNN_VERSION_{k}")
        ver[k] = int(m.group(1))
    body = "\n".join(l for l in text.splitlines() if not l.startswith("#"))
    body = re.sub(r'extern "C" \{|^\}$', "", body, flags=re.M)
    funcs, types = {}, {}
    depth, cur = 0, []
    for ch in body:  # top-level statements: split at ';' outside braces
        cur.append(ch)
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == ";" and depth == 0:
            stmt = normalise("".join(cur))
            cur = []
            if not stmt or stmt == ";":
                continue
            if stmt.startswith("typedef"):
                name = re.findall(r"(\w+);$", stmt)
                if not name:
                    sys.exit(f"abi-check: cannot read the typedef: {stmt}")
                types[name[0]] = stmt
            else:
                m = re.match(r"(.*?)(\w+)\((.*)\);$", stmt)
                if not m:
                    sys.exit(f"abi-check: cannot read the declaration: {stmt}")
                funcs[m.group(2)] = f"{m.group(1)}{m.group(2)}({unnamed(m.group(3))});"
    return (ver["MAJOR"], ver["MINOR"], ver["PATCH"]), funcs, types


def exported(lib):
    out = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"abi-check: nm -D {lib}: {out.stderr.strip()}")
    syms = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            syms[parts[2]] = parts[1]
    return syms


def soname(lib):
    out = subprocess.run(["readelf", "-d", lib], capture_output=True, text=True).stdout
    m = re.search(r"\(SONAME\)\s+Library soname: \[([^\]]+)\]", out)
    return m.group(1) if m else None


def render(ver, funcs, types):
    lines = [f"version {ver[0]}.{ver[1]}.{ver[2]}"]
    lines += [f"type {k} {v}" for k, v in sorted(types.items())]
    lines += [f"function {k} {v}" for k, v in sorted(funcs.items())]
    return "\n".join(lines) + "\n"


def read_record(path):
    ver, funcs, types = None, {}, {}
    for n, line in enumerate(open(path), 1):
        line = line.rstrip("\n")
        if not line or line.startswith("#"):
            continue
        kind, _, rest = line.partition(" ")
        if kind == "version":
            ver = tuple(int(x) for x in rest.split("."))
        elif kind in ("type", "function"):
            name, _, sig = rest.partition(" ")
            (types if kind == "type" else funcs)[name] = sig
        else:
            sys.exit(f"abi-check: {path}:{n}: unknown line '{line}'")
    if ver is None:
        sys.exit(f"abi-check: {path}: no version line")
    return ver, funcs, types


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", required=True, help="the shared library (libmsrnn.so)")
    ap.add_argument("--header", default=os.path.join(ROOT, "include", "msrnn.h"))
    ap.add_argument("--record", default=os.path.join(ROOT, "abi", "msrnn.abi"))
    ap.add_argument("--update", action="store_true", help="write the current ABI to the record")
    ap.add_argument("--list", action="store_true", help="print the current ABI")
    a = ap.parse_args()
    ver, funcs, types = parse_header(a.header)
    if a.list:
        sys.stdout.write(render(ver, funcs, types))
        return 0
    errors = []
    syms = exported(a.lib)
    for s, t in sorted(syms.items()):
        if not s.startswith("msrnn_"):
            errors.append(f"the library exports '{s}' ({t}), not an msrnn_ name")
        elif s not in funcs:
            errors.append(f"the library exports {s}, which {a.header} does not declare")
    for f in sorted(funcs):
        if f not in syms:
            errors.append(f"{a.header} declares {f}, which the library does not export")
    want = f"libmsrnn.so.{ver[0]}"
    if soname(a.lib) != want:
        errors.append(f"the SONAME is {soname(a.lib)}, not {want} (MSRNN_VERSION_MAJOR {ver[0]})")
    if a.update:
        if errors:
            print("\n".join(f"abi-check: {e}" for e in errors), file=sys.stderr)
            return 1
        tmp = a.record + ".tmp"
        with open(tmp, "w") as f:
            f.write("# The ABI of libmsrnn (tools/abi-check.py --update writes it; never edit).\n")
            f.write(render(ver, funcs, types))
        os.replace(tmp, a.record)
        print(f"abi-check: recorded {len(funcs)} functions and {len(types)} types of "
              f"{ver[0]}.{ver[1]}.{ver[2]} in {a.record}")
        return 0
    old_ver, old_funcs, old_types = read_record(a.record)
    sver = lambda v: ".".join(map(str, v))
    if ver < old_ver:
        errors.append(f"the version went backwards: {sver(old_ver)} recorded, {sver(ver)} now")
    major_bumped = ver[0] > old_ver[0]
    minor_bumped = major_bumped or ver[:2] > old_ver[:2]
    for kind, old, new in (("function", old_funcs, funcs), ("type", old_types, types)):
        for name in sorted(old):
            if name not in new:
                change = f"{kind} {name} disappeared"
            elif old[name] != new[name]:
                change = f"{kind} {name} changed: '{old[name]}' -> '{new[name]}'"
            else:
                continue
            if not major_bumped:
                errors.append(f"{change} without a major version bump "
                              f"({sver(old_ver)} -> {sver(ver)})")
        added = sorted(set(new) - set(old))
        if added and not minor_bumped:
            errors.append(f"{kind}s added without a minor version bump ({sver(old_ver)} -> "
                          f"{sver(ver)}): {', '.join(added)}")
    if errors:
        print("\n".join(f"abi-check: {e}" for e in errors), file=sys.stderr)
        return 1
    print(f"abi-check: ok: {len(funcs)} functions, {len(types)} types, version {sver(ver)} "
          f"(recorded {sver(old_ver)}), SONAME {want}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
