"""test_passkey — `msrnn passkey` (METHODS.md §2) checked from outside:

- the prompt (--show-prompt) is the task's text: the filler repeated, the key sentence at the asked
  depth (first at 0%, last before the question at 100%, the middle unit at 50%), the question last;
  its token count is what `msrnn tokenize` gives for the same text (the token-level concatenation
  equals tokenizing the whole text), at most the length less the answer's room (11) and within one
  filler unit of it;
- every answer equals `msrnn generate --temp 0` on that prompt text (greedy, same model and memory),
  and "correct" is recomputed here from the answer and the key (first run of digits == the key);
- keys: five digits, the same for the same seed whatever the grid, different for another seed;
- results do not depend on the thread count; --out JSON equals --json's cells; --plot is a
  well-formed SVG with one cell per (depth, length);
- the full cache marks lengths beyond its context as not run, and refuses a grid with none;
- bounded memory at any length: peak RSS at 16K tokens within 10% (+4 MB) of the peak at 1K (sink);
- --make-data: the shard's header and size (a leading BOS, then N examples of L tokens; train's window i has
  example i as its targets, so --loss-last scores the whole answer), each example
  decoded by SentencePiece is a tail of filler (the slack), filler, key sentence, filler, question
  and the same key as its last tokens; keys and depths vary, the bytes are deterministic, msrnn train accepts the shard;
- bad flags exit 2 naming the flag.

Uses ../shared/models/gutenberg-ref.gguf and models/default.gguf (two tokenizers)."""
import json
import os
import re
import subprocess
import tempfile
import xml.etree.ElementTree as ET

from checks import check, finish

BIN = os.environ["MSRNN_BIN"]
SHARED = os.environ["MSRNN_SHARED"]
SRC = os.environ["MSRNN_SOURCE_DIR"]
REF = os.path.join(SHARED, "models", "gutenberg-ref.gguf")
DEFAULT = os.path.join(SRC, "models", "default.gguf")
MODELS = [m for m in (REF, DEFAULT) if os.path.exists(m)]
ANSWER_ROOM = 11  # PASSKEY_MAX_GEN - 1
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
QUESTION = "What is the pass key? The pass key is"


def run(*args, timeout=600):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout)


def key_sentence(k):
    return f"The pass key is {k}. Remember it. {k} is the pass key."


check(len(MODELS) == 2, f"both models present: {MODELS}")

with tempfile.TemporaryDirectory() as tmp:
    # --- the prompt ---
    for model in MODELS:
        for length, depth in [(150, 0), (150, 100), (600, 50), (600, 25), (2000, 75)]:
            r = run("passkey", "-m", model, "--lengths", str(length), "--depths", str(depth),
                    "--seed", "7", "--show-prompt")
            ok = r.returncode == 0
            check(ok, f"--show-prompt {length}/{depth}: rc {r.returncode} {r.stderr}")
            if not ok:
                continue
            text = r.stdout[:-1] if r.stdout.endswith("\n") else r.stdout
            m = re.search(r"(\d+) prompt tokens .* key (\d{5})", r.stderr)
            check(m is not None, f"--show-prompt reports tokens and key: {r.stderr!r}")
            if not m:
                continue
            n, key = int(m.group(1)), m.group(2)
            ks = key_sentence(key)
            check(text.endswith(" " + QUESTION), f"prompt ends with the question: {text[-60:]!r}")
            check(text.count(ks) == 1, f"one key sentence in the prompt ({length}/{depth})")
            before, _, after = text.partition(ks)
            after = after[: -len(QUESTION)].strip()
            units_before = before.count(FILLER)
            units_after = after.count(FILLER)
            units = units_before + units_after
            filler_only = (before.replace(FILLER, "").strip() == "" and
                           after.replace(FILLER, "").strip() == "")
            check(filler_only, f"only filler around the key ({length}/{depth})")
            check(units_before == round(depth / 100 * units),
                  f"{length}/{depth}: {units_before} units before the key of {units}")
            # the same text tokenized whole: the same count (BOS included)
            p = os.path.join(tmp, "prompt.txt")
            with open(p, "w") as f:
                f.write(text)
            t = run("tokenize", "-m", model, "-f", p, "--ids")
            ids = t.stdout.split()
            check(t.returncode == 0 and len(ids) == n,
                  f"{os.path.basename(model)} {length}/{depth}: tokenize gives {len(ids)} tokens, "
                  f"passkey {n}")
            unit_tokens = len(run("tokenize", "-m", model, "-p", " " + FILLER, "--ids")
                              .stdout.split())
            check(n <= length - ANSWER_ROOM and n > length - ANSWER_ROOM - unit_tokens,
                  f"{length}/{depth}: {n} tokens within one unit ({unit_tokens}) below "
                  f"{length - ANSWER_ROOM}")

    # --- answers against greedy generate, full and sink; correctness recomputed ---
    def grid(model, *extra, threads="2", lengths="300,700", depths="0,50,100", trials="2"):
        out = os.path.join(tmp, "g.json")
        r = run("passkey", "-m", model, "--lengths", lengths, "--depths", depths, "--trials",
                trials, "--seed", "11", "-t", threads, "--json", "--out", out, *extra)
        if r.returncode != 0:
            return r, None, None
        with open(out) as f:
            return r, json.loads(r.stdout), json.load(f)

    for model in MODELS:
        for mem in (["--kv", "full"], ["--kv", "sink", "--kv-size", "64"]):
            r, d, d_file = grid(model, *mem)
            check(r.returncode == 0, f"passkey {mem}: rc {r.returncode} {r.stderr[-300:]}")
            if d is None:
                continue
            check(d == d_file, "--out holds the same JSON as --json")
            check(len(d["cells"]) == 6 and all(c["run"] for c in d["cells"]), "6 cells, all run")
            compared = 0
            for c in d["cells"]:
                n_ok = 0
                for a in c["answers"]:
                    check(re.fullmatch(r"\d{5}", a["key"]) is not None, f"key {a['key']}")
                    digits = re.match(r" *(\d*)", a["answer"]).group(1)
                    check(a["correct"] == (digits == a["key"]),
                          f"correct recomputed: answer {a['answer']!r} key {a['key']}")
                    n_ok += a["correct"]
                    check(a["n_tokens"] <= c["length"] - ANSWER_ROOM, "prompt within the length")
                check(c["correct"] == n_ok and abs(c["accuracy"] - n_ok / len(c["answers"])) < 1e-9,
                      "cell counts its correct answers")
                # the first trial of each cell against generate on the same prompt text
                s = run("passkey", "-m", model, "--lengths", str(c["length"]), "--depths",
                        str(c["depth"]), "--seed", "11", "--show-prompt")
                p = os.path.join(tmp, "p.txt")
                with open(p, "w") as f:
                    f.write(s.stdout[:-1])
                g = run("generate", "-m", model, "-f", p, "-n", "12", "--temp", "0", "--json",
                        *mem)
                if g.returncode == 0:
                    gen = json.loads(g.stdout)["text"]
                    a = c["answers"][0]["answer"]
                    check(gen.startswith(a) and a != "",
                          f"{mem} {c['length']}/{c['depth']}: passkey answered {a!r}, generate "
                          f"{gen!r}")
                    compared += 1
                else:
                    check(False, f"generate: {g.stderr[-300:]}")
            check(compared == 6, f"{compared} answers compared with generate")

    # --- threads, seeds, keys ---
    _, d1, _ = grid(REF, "--kv", "sink", "--kv-size", "32", threads="1")
    _, d2, _ = grid(REF, "--kv", "sink", "--kv-size", "32", threads="2")
    strip = lambda d: [[(a["key"], a["answer"], a["correct"], a["n_tokens"]) for a in c["answers"]]
                       for c in d["cells"]] if d else None
    check(d1 is not None and strip(d1) == strip(d2), "-t 1 and -t 2 give the same answers")
    _, d3, _ = grid(REF, "--kv", "sink", "--kv-size", "32", lengths="700", depths="50")
    keys = lambda d, L, D: [a["key"] for c in d["cells"] if c["length"] == L and c["depth"] == D
                            for a in c["answers"]]
    check(d3 is not None and keys(d3, 700, 50) == keys(d1, 700, 50),
          "a cell's keys do not depend on the rest of the grid")
    r = run("passkey", "-m", REF, "--lengths", "300", "--depths", "0", "--trials", "4", "--seed",
            "12", "--kv", "sink", "--kv-size", "32", "--json")
    other = [a["key"] for a in json.loads(r.stdout)["cells"][0]["answers"]] if r.returncode == 0 else []
    check(d1 is not None and len(other) == 4 and other[:2] != keys(d1, 300, 0) and
          len(set(other)) == 4,
          f"another seed, other keys: {other}")

    # --- plot and table ---
    svg = os.path.join(tmp, "h.svg")
    r = run("passkey", "-m", REF, "--lengths", "300,600,1K", "--depths", "0,100", "--trials", "1",
            "--kv", "tova", "--kv-size", "64", "--plot", svg)
    check(r.returncode == 0, f"--plot: rc {r.returncode} {r.stderr[-200:]}")
    try:
        root = ET.parse(svg).getroot()
        rects = [e for e in root.iter() if e.tag.endswith("rect")]
        check(len(rects) == 1 + 6, f"SVG: background + 6 cells, got {len(rects)} rects")
    except Exception as e:  # noqa: BLE001
        check(False, f"SVG parses: {e}")
    lines = r.stdout.splitlines()
    check(len(lines) >= 5 and lines[1].split() == ["depth", "300", "600", "1K"] and
          lines[2].startswith("0%") and lines[3].startswith("100%") and lines[4].startswith("all"),
          f"table layout: {lines}")

    # --- the full cache and its context ---
    r, d, _ = grid(REF, "-c", "512", lengths="300,1K", depths="0", trials="1")
    check(d is not None and [c["run"] for c in d["cells"]] == [True, False] and
          d["cells"][1]["accuracy"] is None, "full: 1K beyond -c 512 is not run")
    r = run("passkey", "-m", REF, "-c", "512", "--lengths", "1K,2K")
    check(r.returncode == 2 and "full cache" in r.stderr, f"full, no length fits: {r.stderr!r}")

    # --- bounded memory at any length (peak RSS of the process) ---
    # Under ASan, freed blocks wait in a quarantine (up to 256 MB) before reuse, and the OpenMP
    # runtime allocates and frees a team for every parallel region: RSS then grows with the number
    # of regions run, not with what the process holds. An empty quarantine measures the latter.
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = ":".join(o for o in (env.get("ASAN_OPTIONS"), "quarantine_size_mb=0")
                                   if o)

    def peak_rss(*args):
        p = subprocess.Popen([BIN, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=env)
        _, status, ru = os.wait4(p.pid, 0)
        return os.waitstatus_to_exitcode(status), ru.ru_maxrss * 1024

    base = ["passkey", "-m", REF, "--depths", "50", "--trials", "1", "-t", "1", "--kv", "sink",
            "--kv-size", "128"]
    rc1, small = peak_rss(*base, "--lengths", "1K")
    rc2, large = peak_rss(*base, "--lengths", "16K")
    print(f"peak RSS, sink k=128: {small / 1e6:.1f} MB at 1K, {large / 1e6:.1f} MB at 16K")
    check(rc1 == 0 and rc2 == 0 and large <= small * 1.10 + 4e6,
          f"peak RSS at 16K {large / 1e6:.1f} MB vs 1K {small / 1e6:.1f} MB")

    # --- --make-data: a token shard of passkey examples for `msrnn train -c LENGTH` ---
    import numpy as np
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(
        model_file=os.path.join(SHARED, "data", "tokenizers", "gutenberg8k", "gut8k.model"))
    N, L = 12, 400
    shard = os.path.join(tmp, "pk.bin")
    r = run("passkey", "-m", REF, "--make-data", shard, "--examples", str(N), "--example-length",
            str(L), "--seed", "3")
    check(r.returncode == 0 and os.path.exists(shard), f"--make-data: rc {r.returncode} {r.stderr}")
    if r.returncode == 0:
        raw = open(shard, "rb").read()
        hdr = np.frombuffer(raw[:64], dtype="<u4")
        n_tok, n_docs = np.frombuffer(raw[24:40], dtype="<u8")
        check(raw[:8] == b"MSRNNTOK" and hdr[2] == 2 and hdr[3] == 2 and hdr[4] == 8192 and
              hdr[5] == 1, f"shard header {hdr[:6]}")
        check(n_tok == N * L + 1 and n_docs == N + 1 and len(raw) == 64 + 2 * n_tok,
              f"shard of {n_tok} tokens, {n_docs} documents, {len(raw)} bytes")
        ids = np.frombuffer(raw[64:], dtype="<u2").astype(np.int64)
        keys, depths = set(), []
        # train's window i is ids[iL : iL + L + 1]: its targets (all but the first) must be example
        # i exactly, so that --loss-last scores the whole answer (one BOS leads the shard)
        check(ids[0] == 1, f"the shard starts with one BOS before the examples: {ids[:3]}")
        for i in range(N):
            ex = ids[1 + i * L:1 + (i + 1) * L].tolist()
            window = ids[i * L:i * L + L + 1].tolist()
            check(window[1:] == ex, f"window {i}: its targets are example {i}")
            check(ex[0] == 1 and ex.count(1) == 1, f"example {i}: one BOS, first")
            text = sp.decode(ex[1:])
            head, sep, tail = text.partition(QUESTION + " ")
            body = (r"((?:" + re.escape(FILLER) + r" )*)" +
                    re.escape(key_sentence("KEY")).replace("KEY", r"(\d{5})", 1)
                    .replace("KEY", r"\2") + r"((?: " + re.escape(FILLER) + r")*) ")
            # the slack first: a tail of filler units shorter than one unit (it may cut a word)
            m = None
            for cut in range(0, len(FILLER) + 2):
                if ((FILLER + " ") * 2).endswith(head[:cut]) and re.fullmatch(body, head[cut:]):
                    m = re.fullmatch(body, head[cut:])
                    break
            a = re.fullmatch(r"(\d{5})\.", tail)
            ok = bool(m and a and a.group(1) == m.group(2))
            check(ok, f"example {i}: a tail of filler, filler, key, filler, question, the key as "
                      f"its last tokens: {text[:160]!r}...{text[-160:]!r}")
            if not ok:
                continue
            k1 = m.group(2)
            keys.add(k1)
            depths.append(len(m.group(1)) / max(1, len(m.group(1)) + len(m.group(3))))
        check(len(keys) >= N - 1, f"keys differ between examples: {sorted(keys)}")
        check(bool(depths) and min(depths) < 0.3 and max(depths) > 0.7, f"depths spread over 0..1: {depths}")
        # the same command writes the same bytes; another seed other keys
        shard2 = os.path.join(tmp, "pk2.bin")
        run("passkey", "-m", REF, "--make-data", shard2, "--examples", str(N), "--example-length",
            str(L), "--seed", "3")
        check(open(shard2, "rb").read() == raw, "--make-data is deterministic")
        run("passkey", "-m", REF, "--make-data", shard2, "--examples", str(N), "--example-length",
            str(L), "--seed", "4")
        check(open(shard2, "rb").read() != raw, "--make-data: another seed, other data")
        # msrnn train takes it: windows of L tokens are whole examples
        out = os.path.join(tmp, "pk.gguf")
        r = run("train", "--init", REF, "--train", shard, "-c", str(L), "--batch", "2", "--steps",
                "2", "-o", out)
        check(r.returncode == 0 and os.path.exists(out), f"train on the shard: {r.stderr[-500:]}")
        # the answer alone: --loss-last (its loss is tested against the logits in test_train_ref)
        r = run("train", "--init", REF, "--train", shard, "-c", str(L), "--batch", "2", "--steps",
                "2", "--loss-last", "7", "--json", "-o", out)
        check(r.returncode == 0, f"train --loss-last 7 on the shard: {r.stderr[-500:]}")
        for bad in ("0", str(L + 1), "x"):
            r = run("train", "--init", REF, "--train", shard, "-c", str(L), "--steps", "1",
                    "--loss-last", bad, "-o", out)
            check(r.returncode in (1, 2) and ("loss-last" in r.stderr), f"--loss-last {bad}: rc "
                  f"{r.returncode}, {r.stderr.strip()[-200:]!r}")
    for args, needle in [
        (["--examples", "5"], "--make-data"),
        (["--make-data", os.path.join(tmp, "x.bin"), "--examples", "0"], "--examples"),
        (["--make-data", os.path.join(tmp, "x.bin"), "--example-length", "20"], "length"),
        (["--make-data", os.path.join(tmp, "x.bin"), "--json"], "--json"),
        (["--make-data", os.path.join(tmp, "no", "such", "dir.bin")], "dir.bin"),
    ]:
        r = run("passkey", "-m", REF, *args)
        check(r.returncode in (1, 2) and needle in r.stderr and
              not os.path.exists(os.path.join(tmp, "x.bin")),
              f"{args}: rc {r.returncode} {r.stderr!r}")

    # --- bad flags ---
    for args, needle in [
        (["--lengths", "0"], "--lengths"),
        (["--lengths", "4X"], "--lengths"),
        (["--lengths", "1K,,2K"], "--lengths"),
        (["--lengths", "5"], "shortest"),
        (["--depths", "101"], "--depths"),
        (["--trials", "0"], "--trials"),
        (["--seed", "-1"], "--seed"),
        (["--kv", "sink"], "--kv-size"),
        (["--frobnicate"], "--frobnicate"),
    ]:
        r = run("passkey", "-m", REF, *args)
        check(r.returncode == 2 and needle in r.stderr, f"{args}: rc {r.returncode} {r.stderr!r}")
    r = run("passkey", "-m", os.path.join(tmp, "missing.gguf"))
    check(r.returncode == 1 and "missing.gguf" in r.stderr, f"missing model: {r.stderr!r}")

finish("test_passkey")
