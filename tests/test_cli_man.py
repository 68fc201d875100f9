"""test_cli_man — the man pages and the bash completion are made from the same option tables as
each command's --help (issue 14, item 4).

  * msrnn(1) (`msrnn man`): its sections, every command of `msrnn --help` in COMMANDS with its
    summary, and a msrnn-COMMAND(1) for each in SEE ALSO;
  * msrnn-COMMAND(1) (`msrnn man COMMAND`) for every command of `msrnn --help`: its sections; one
    source: every option its OPTIONS section names is one that `msrnn COMMAND --help` prints (each
    entry's label as --help writes it), and every option --help prints is in OPTIONS, or else is not
    an option of the command at all (prose naming another command's option: the command refuses it
    as unknown); roff escaping (every '-' as "\\-", only ASCII, no line a stray request); the same
    bytes whatever the clock, time zone or locale; groff renders every page without a warning
    (said loudly, not failed, when groff is not installed);
  * `msrnn man nosuch` exits 2 naming it; so do a second COMMAND and an unknown option;
  * `msrnn completion bash`: bash -n accepts it, and its function, called as bash calls it,
    completes command names, each command's options (exactly the OPTIONS of its man page), --kv's
    memories, GGUF files and folders for -m, nothing for a prompt; an unknown shell, or none, and
    an unknown command exit 2 with a message naming them."""
import os
import re
import shutil
import subprocess
import tempfile
import time

from checks import check, finish

BIN = os.environ["MSRNN_BIN"]
OPTION = r"(?:(?<=^)|(?<=[\s(\[|,]))(--?[A-Za-z][A-Za-z0-9-]*)"  # as test_cli_messages reads --help
ALWAYS = {"-h", "--help"}  # every command takes them (main.c's dispatch, not a table)
SECTIONS = ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "SEE ALSO"]
REQUESTS = {"TH", "SH", "SS", "TP", "PP", "B", "BR", "nf", "fi", "nh", "ad", '\\"'}
MEMORIES = ["full", "window", "sink", "h2o", "tova", "tova-head", "merge", "merge-var", "merge-clusters"]


def run(args, env=None):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=120, env=env)


def unroff(s):
    """The text a roff line shows: fonts dropped, escapes resolved."""
    s = re.sub(r"\\f[BIRP]", "", s)
    s = re.sub(r"\\\[u([0-9A-F]{4,6})\]", lambda m: chr(int(m.group(1), 16)), s)
    return s.replace("\\-", "-").replace("\\&", "").replace("\\e", "\\")


def sections(page):
    """{section name: its lines}, in order."""
    out, name = {}, None
    for line in page.split("\n"):
        if line.startswith(".SH "):
            name = line[4:].strip('"')
            out[name] = []
        elif name:
            out[name].append(line)
    return out


def check_roff(what, page):
    """Escaping: only ASCII, every '-' escaped, each line starting with '.' a known request."""
    check(page.isascii(), f"{what}: only ASCII (the rest as \\[uXXXX])")
    for line in page.split("\n"):
        if line.startswith('.\\"'):
            continue
        if line.startswith(".") or line.startswith("'"):
            check(line[1:].split(" ")[0] in REQUESTS, f"{what}: a stray request line: {line!r}")
        check(re.search(r"(?<!\\)-", line) is None, f"{what}: a '-' not written '\\-': {line!r}")


GROFF = shutil.which("groff")
if not GROFF:
    print("=" * 78)
    print("WARNING: groff is not installed: the man pages' rendering is NOT checked.")
    print("         Install it (Debian: apt-get install groff-base) to run that part.")
    print("=" * 78)


def check_groff(what, page):
    if not GROFF:
        return
    r = subprocess.run([GROFF, "-man", "-Tutf8", "-ww", "-z"], input=page, capture_output=True, text=True,
                       timeout=60)
    check(r.returncode == 0 and r.stderr == "", f"{what}: groff -man -ww warns: {r.stderr.strip()[:500]}")
    r = subprocess.run([GROFF, "-man", "-Tutf8"], input=page.encode(), capture_output=True, timeout=60)
    text = re.sub(rb".\x08", b"", r.stdout).decode("utf-8", "replace")  # overstrikes: bold, underline
    check(r.returncode == 0 and "NAME" in text and "EXIT STATUS" in text, f"{what}: groff renders it")


# ---- msrnn --help's commands ------------------------------------------------------------------
top = run(["--help"])
check(top.returncode == 0, f"msrnn --help: exit {top.returncode}")
commands = dict(re.findall(r"^  (\S+) +(.+)$", top.stdout.split("commands:")[-1], re.M))
check(len(commands) >= 14 and "man" in commands and "completion" in commands,
      f"msrnn --help lists its commands, man and completion among them: {sorted(commands)}")

# ---- msrnn(1) ---------------------------------------------------------------------------------
r = run(["man"])
page = r.stdout
check(r.returncode == 0 and r.stderr == "", f"msrnn man: exit {r.returncode}, {r.stderr.strip()[:300]}")
check(re.match(r'(?:\.\\".*\n)*\.TH "?MSRNN"? 1 ', page) is not None, "msrnn(1) starts with .TH MSRNN 1")
secs = sections(page)
check([s for s in secs if s in SECTIONS + ["COMMANDS"]] == SECTIONS[:3] + ["COMMANDS"] + SECTIONS[4:],
      f"msrnn(1) sections: {list(secs)}")
listed = "\n".join(unroff(x) for x in secs.get("COMMANDS", [])) + "\n"
see_also = "\n".join(unroff(x) for x in secs.get("SEE ALSO", []))
for name, summary in commands.items():
    check(f".B {name}\n{summary}\n" in listed, f"msrnn(1) COMMANDS: {name} with its summary '{summary}'")
    check(re.search(rf"^\.BR msrnn-{re.escape(name)} \(1\),?$", see_also, re.M) is not None,
          f"msrnn(1) SEE ALSO: msrnn-{name}(1)")
check_roff("msrnn(1)", page)
check_groff("msrnn(1)", page)

# ---- msrnn-COMMAND(1): one source with --help ---------------------------------------------------
for name, summary in commands.items():
    what = f"msrnn-{name}(1)"
    helptext = run([name, "--help"]).stdout
    r = run(["man", name])
    page = r.stdout
    check(r.returncode == 0 and r.stderr == "" and page, f"msrnn man {name}: exit {r.returncode}")
    if r.returncode != 0:
        continue
    title = "MSRNN\\-" + name.upper().replace("-", "\\-")
    check(re.search(rf'^\.TH "?{re.escape(title)}"? 1 ', page, re.M) is not None, f"{what}: .TH {title} 1")
    secs = sections(page)
    check([s for s in secs if s in SECTIONS] == SECTIONS, f"{what}: sections {list(secs)}")
    check(unroff(" ".join(secs.get("NAME", []))) == f"msrnn-{name} - {summary}",
          f"{what}: NAME is msrnn-{name} - {summary}: {secs.get('NAME')}")
    synopsis = helptext.split("\n")[0].removeprefix("usage: ")
    check(synopsis in unroff("\n".join(secs.get("SYNOPSIS", []))), f"{what}: SYNOPSIS is --help's: {synopsis}")
    status = "\n".join(secs.get("EXIT STATUS", []))
    check(all(f".B {k}\n" in status for k in "012"), f"{what}: EXIT STATUS names 0, 1 and 2")
    check(".BR msrnn (1)" in "\n".join(secs.get("SEE ALSO", [])), f"{what}: SEE ALSO msrnn(1)")

    # the entries of OPTIONS: each tag (the line after .TP) as --help writes it
    opt_lines = secs.get("OPTIONS", [])
    tags = [unroff(opt_lines[i + 1]) for i, x in enumerate(opt_lines[:-1]) if x == ".TP"]
    check(len(tags) >= 1, f"{what}: OPTIONS has entries")
    in_man = set()
    for t in tags:
        in_man |= set(re.findall(OPTION, t))
        check(t in helptext, f"{what}: the entry '{t}' is written so in msrnn {name} --help")
    in_help = set(re.findall(OPTION, helptext, re.M)) - ALWAYS
    check(in_man <= in_help, f"{what}: names options --help lacks: {sorted(in_man - in_help)}")
    for opt in sorted(in_help - in_man):
        # named in --help's prose but not an entry: it must not be an option of this command
        r = run([name, opt, "1"])
        check(r.returncode == 2 and f"unknown option '{opt}'" in r.stderr,
              f"{what}: --help names {opt}, OPTIONS lacks it, and msrnn {name} {opt} 1 is not refused as "
              f"unknown: exit {r.returncode}: {r.stderr.strip()[:300]}")
    check_roff(what, page)
    check_groff(what, page)

# the same bytes whatever the clock, the time zone or the locale: no date in the pages
env = dict(os.environ, TZ="Pacific/Kiritimati", LC_ALL="C.UTF-8", SOURCE_DATE_EPOCH="0")
for args in (["man"], ["man", "train"]):
    a, b = run(args).stdout, run(args, env=env).stdout
    check(a == b, f"msrnn {' '.join(args)}: the same page under another TZ / locale / SOURCE_DATE_EPOCH")
    check(time.strftime("%Y-%m-%d") not in a and time.strftime("%B %Y") not in a, f"msrnn {' '.join(args)}: no date")

# bad usage of man
for args, needles in [(["man", "nosuch"], ["unknown command", "'nosuch'"]),
                      (["man", "generate", "train"], ["'train'"]),
                      (["man", "--bogus"], ["unknown option '--bogus'"])]:
    r = run(args)
    check(r.returncode == 2 and all(n in r.stderr for n in needles) and r.stdout == "",
          f"msrnn {' '.join(args)}: exit {r.returncode}, {r.stderr.strip()[:300]}")
for name in ("man", "completion"):
    r = run([name, "--help"])
    check(r.returncode == 0 and r.stdout.startswith(f"usage: msrnn {name}"), f"msrnn {name} --help: {r.stdout[:200]}")

# ---- bash completion --------------------------------------------------------------------------
r = run(["completion", "bash"])
script = r.stdout
check(r.returncode == 0 and "complete -F _msrnn msrnn" in script, f"msrnn completion bash: exit {r.returncode}")
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "msrnn.bash")
    with open(path, "w") as f:
        f.write(script)
    r = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
    check(r.returncode == 0 and r.stderr == "", f"bash -n accepts the script: {r.stderr.strip()[:300]}")
    work = os.path.join(d, "work")
    os.makedirs(os.path.join(work, "models"))
    for f in ("a.gguf", "b.txt", "c.gguf"):
        open(os.path.join(work, f), "w").close()

    def complete(*words):
        """COMPREPLY of _msrnn for the words typed so far (the last is the one completed)."""
        prog = (f"source {path}\nCOMP_WORDS=({' '.join(repr(w) for w in words)})\n"
                f"COMP_CWORD={len(words) - 1}\n_msrnn\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
        r = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, cwd=work, timeout=60)
        check(r.returncode == 0 and r.stderr == "", f"completing {words}: {r.stderr.strip()[:300]}")
        return sorted(x for x in r.stdout.split("\n") if x)

    check(complete("msrnn", "gen") == ["generate"], f"msrnn gen -> {complete('msrnn', 'gen')}")
    got = complete("msrnn", "")
    check(set(commands) <= set(got), f"msrnn <TAB> offers every command: {got}")
    helptext = run(["generate", "--help"]).stdout
    want = sorted(o for o in set(re.findall(OPTION, helptext, re.M)) if o.startswith("--kv-s"))
    got = complete("msrnn", "generate", "--kv-s")
    check(len(want) >= 2 and got == want, f"msrnn generate --kv-s -> {got}, want {want}")
    got = complete("msrnn", "generate", "--kv", "")
    check(got == sorted(MEMORIES) and all(m in helptext for m in MEMORIES),
          f"msrnn generate --kv <TAB> -> {got}, want the memories {MEMORIES}")
    got = complete("msrnn", "generate", "--kv", "tova")
    check(got == ["tova", "tova-head"], f"msrnn generate --kv tova -> {got}")
    got = complete("msrnn", "generate", "-m", "")
    check(got == ["a.gguf", "c.gguf", "models"], f"msrnn generate -m <TAB>: GGUF files and folders: {got}")
    got = complete("msrnn", "perplexity", "-f", "")
    check(got == ["a.gguf", "b.txt", "c.gguf", "models"], f"msrnn perplexity -f <TAB>: any file: {got}")
    got = complete("msrnn", "serve", "--session-dir", "")
    check(got == ["models"], f"msrnn serve --session-dir <TAB>: folders: {got}")
    got = complete("msrnn", "generate", "-p", "")
    check(got == [], f"msrnn generate -p <TAB>: a prompt, not a file: {got}")
    got = complete("msrnn", "generate", "-n", "")
    check(got == [], f"msrnn generate -n <TAB>: a number: {got}")
    got = complete("msrnn", "init-model", "--type", "")
    check(got == sorted(["f32", "f16", "bf16", "q8_0", "q4_0"]), f"msrnn init-model --type <TAB> -> {got}")
    got = complete("msrnn", "man", "tokenize")
    check(got == sorted(c for c in commands if c.startswith("tokenize")), f"msrnn man tokenize -> {got}")
    check(complete("msrnn", "completion", "") == ["bash"], "msrnn completion <TAB> -> bash")
    check(complete("msrnn", "nosuch", "--") == [], "an unknown command completes nothing")
    # each command's options are exactly its man page's (and -h, --help)
    for name in commands:
        page = run(["man", name]).stdout
        opt_lines = sections(page).get("OPTIONS", [])
        in_man = set()
        for i, x in enumerate(opt_lines[:-1]):
            if x == ".TP":
                in_man |= set(re.findall(OPTION, unroff(opt_lines[i + 1])))
        got = complete("msrnn", name, "-")
        check(set(got) == in_man | ALWAYS, f"msrnn {name} -<TAB>: {sorted(set(got) ^ (in_man | ALWAYS))} differ")

for args, needles in [(["completion", "zsh"], ["unknown shell", "'zsh'"]),
                      (["completion"], ["bash"]),
                      (["nosuch"], ["unknown command", "'nosuch'"])]:
    r = run(args)
    check(r.returncode == 2 and all(n in r.stderr for n in needles),
          f"msrnn {' '.join(args)}: exit {r.returncode}, {r.stderr.strip()[:300]}")

finish("test_cli_man")
