"""test_chat_template — msrnn's chat templates and special-token tokenization against llama.cpp.

The peer is llama.cpp itself, from the npm package node-llama-cpp (the prebuilt libllama that
.ci/install-deps installs):
  1. msrnn_chat_apply (libmsrnn, through ctypes) against libllama's llama_chat_apply_template
     (through ctypes too) for every template msrnn names except its own "plain", on conversations
     with a system message, several turns, white space around the text (trimmed by some templates),
     an empty message and non-ASCII text, with and without the assistant's opening: the same bytes.
  2. Real templates' Jinja texts (tokenizer.chat_template as model files carry them, written out
     below): msrnn recognises each as the template it is (its name asserted) and renders it as
     llama.cpp does, and says "unknown" for the ones llama.cpp takes for a template msrnn does not
     have, never another. Then every template of llama.cpp's own tests (test-chat-template.cpp, from
     the release's source in node-llama-cpp's gitRelease.bundle): recognised ones render alike; an
     unrecognised one must not be rendered by llama.cpp as any of msrnn's templates.
  3. msrnn_tokenize_special (`msrnn tokenize --special`) against llama.cpp's tokenizer with
     parse_special (node-llama-cpp's model.tokenize(text, true)) on a Llama 2 vocabulary with added
     control, user-defined and normal-typed end-of-turn tokens (<|eot_id|>, <|endoftext|>: llama.cpp
     makes them control), also named Phi-3 (llama.cpp then drops white space after special tokens):
     chat prompts, adjacent, broken and nested special texts, "<s>" and "</s>", spaces around them;
     with BOS: BOS then the same ids.
  4. `msrnn serve` with such a model carrying a ChatML template: /v1/chat/completions feeds the
     rendered, specially tokenized prompt (its continuation and prompt count equal a completion's of
     those ids); with <|im_end|> made the greedy answer, chat stops at it (empty answer, "stop"),
     ignore_eos and completions run on; --chat-template plain overrides; unknown names exit 2.
"""
import ctypes
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish  # noqa: E402

SOURCE = os.environ.get("MSRNN_SOURCE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(SOURCE, "tests", "ref"))
import ggufpy  # noqa: E402

BIN = os.environ["MSRNN_BIN"]
BUILD = os.environ["MSRNN_BUILD_DIR"]
SHARED = os.environ["MSRNN_SHARED"]
SANITIZED = os.environ.get("MSRNN_SANITIZED") == "1"
NODE_MODULES = os.path.join(SOURCE, "node_modules")
PKG = os.path.join(NODE_MODULES, "node-llama-cpp")
BINS = os.path.join(NODE_MODULES, "@node-llama-cpp", "linux-x64", "bins", "linux-x64")


class Msg(ctypes.Structure):
    _fields_ = [("role", ctypes.c_char_p), ("content", ctypes.c_char_p)]


def load_llama():
    libs = sorted(os.listdir(BINS)) if os.path.isdir(BINS) else []
    base = [x for x in libs if x.startswith("libggml-base")]
    ggml = [x for x in libs if x.startswith("libggml.")]
    llama = [x for x in libs if x.startswith("libllama.")]
    if not (base and ggml and llama):
        check(False, f"libllama not found in {BINS} (npm i node-llama-cpp@3.21.1 @node-llama-cpp/linux-x64@3.21.1)")
        finish("test_chat_template")
    for x in (base[0], ggml[0]):
        ctypes.CDLL(os.path.join(BINS, x), mode=ctypes.RTLD_GLOBAL)
    lib = ctypes.CDLL(os.path.join(BINS, llama[0]))
    lib.llama_chat_apply_template.restype = ctypes.c_int32
    lib.llama_chat_apply_template.argtypes = [ctypes.c_char_p, ctypes.POINTER(Msg), ctypes.c_size_t,
                                              ctypes.c_bool, ctypes.c_char_p, ctypes.c_int32]
    return lib


def load_msrnn():
    lib = ctypes.CDLL(os.path.join(BUILD, "libmsrnn.so"))
    lib.msrnn_chat_apply.restype = ctypes.c_int
    lib.msrnn_chat_apply.argtypes = [ctypes.c_char_p, ctypes.POINTER(Msg), ctypes.c_size_t, ctypes.c_int,
                                     ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]
    lib.msrnn_chat_template_name.restype = ctypes.c_char_p
    lib.msrnn_chat_template_name.argtypes = [ctypes.c_int]
    lib.msrnn_chat_template_detect.restype = ctypes.c_char_p
    lib.msrnn_chat_template_detect.argtypes = [ctypes.c_char_p]
    lib.msrnn_last_error.restype = ctypes.c_char_p
    return lib


def msgs_array(conv):
    arr = (Msg * max(1, len(conv)))()
    for i, (r, c) in enumerate(conv):
        arr[i] = Msg(r.encode(), c.encode())
    return arr


def llama_render(lib, tmpl, conv, add):
    arr = msgs_array(conv)
    buf = ctypes.create_string_buffer(1 << 16)
    n = lib.llama_chat_apply_template(tmpl.encode(), arr, len(conv), add, buf, len(buf))
    return None if n < 0 else buf.raw[:n]


def msrnn_render(lib, tmpl, conv, add):
    arr = msgs_array(conv)
    n = ctypes.c_size_t()
    if lib.msrnn_chat_apply(tmpl.encode() if tmpl else None, arr, len(conv), int(add), None, 0, ctypes.byref(n)):
        return None
    buf = ctypes.create_string_buffer(n.value + 1)
    st = lib.msrnn_chat_apply(tmpl.encode() if tmpl else None, arr, len(conv), int(add), buf, len(buf),
                              ctypes.byref(n))
    check(st == 0 and buf.raw[n.value] == 0, f"msrnn_chat_apply writes the text and a NUL ({tmpl})")
    return buf.raw[:n.value]


CONVERSATIONS = [
    [("user", "Hello")],
    [("system", "You are a helpful assistant."), ("user", "Hello"), ("assistant", "Hi there"),
     ("user", "Who are you")],
    [("system", "  Spaces around  "), ("user", "\n  What is 2+2?  \n"), ("assistant", "  4 \t"),
     ("user", "And 3+3?")],
    [("user", "First"), ("assistant", "Second"), ("user", "")],
    [("system", "Sé breve."), ("user", "¿Dónde está 東京? 😀"), ("assistant", "日本"), ("user", "Gracias")],
    [("system", "one"), ("system", "two"), ("user", "q")],
]

# tokenizer.chat_template texts as model files carry them (the parts of them llama.cpp's markers
# look at; each is a whole template of the family)
REAL = {
    "chatml (OpenHermes)": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
    "llama2 (Llama-2-chat)": "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}",
    "llama2 without <<SYS>> (Mistral-7B-Instruct-v0.1)": "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}",
    "llama2-sys-bos": "{% for message in messages %}{% if message['role'] == 'system' %}{{ '<<SYS>>\\n' + message['content'] + '\\n<</SYS>>\\n\\n' }}{% elif message['role'] == 'user' %}{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}",
    "mistral-v7": "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}{{- bos_token }}{%- if system_message is defined %}{{- '[SYSTEM_PROMPT] ' + system_message + '[/SYSTEM_PROMPT]' }}{%- endif %}{%- for message in loop_messages %}{%- if message['role'] == 'user' %}{{- '[INST] ' + message['content'] + '[/INST]' }}{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token}}{%- endif %}{%- endfor %}",
    "phi3 (Phi-3-mini)": "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}",
    "zephyr (role tags, <|endoftext|>)": "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '<|endoftext|>\\n' }}{% else %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|endoftext|>\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|' + 'assistant' + '|>\\n' }}{% endif %}",
    "gemma (gemma-7b-it)": "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}",
    "openchat (openchat-3.5)": "{{ bos_token }}{% for message in messages %}{{ 'GPT4 Correct ' + message['role'].title() + ': ' + message['content'] + '<|end_of_turn|>'}}{% endfor %}{% if add_generation_prompt %}{{ 'GPT4 Correct Assistant:' }}{% endif %}",
    "vicuna": "{% for message in messages %}{% if message['role'] == 'system' %}{{message['content'] + '\\n\\n'}}{% elif message['role'] == 'user' %}{{'USER: ' + message['content'] + '\\n'}}{% elif message['role'] == 'assistant' %}{{'ASSISTANT: ' + message['content'] + '</s>\\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}",
    "vicuna-orca": "{% for message in messages %}{% if message['role'] == 'system' %}{{'SYSTEM: ' + message['content'] + '\\n'}}{% elif message['role'] == 'user' %}{{'USER: ' + message['content'] + '\\n'}}{% elif message['role'] == 'assistant' %}{{'ASSISTANT: ' + message['content'] + '</s>\\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}",
    "llama3 (Llama-3-Instruct)": "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
    "monarch": "{% for message in messages %}{{bos_token + message['role'] + '\\n' + message['content'] + eos_token + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ bos_token + 'assistant\\n' }}{% endif %}",
    "phi4": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '<|im_sep|>' + message['content'] + '<|im_end|>'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant<|im_sep|>' }}{% endif %}",
}
# templates llama.cpp takes for one msrnn does not have: msrnn must say unknown
UNKNOWN_TO_MSRNN = {
    "falcon3": "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '\\n' }}{% else %}{{ '<|assistant|>\\n' + message['content'] + '</s>\\n' }}{% endif %}{% endfor %}{{ '<|assistant|>\\n' }}",
    "deepseek": "{% for message in messages %}{% if message['role'] == 'user' %}{{'### Instruction:\\n' + message['content'] + '\\n'}}{% else %}{{'### Response:\\n' + message['content'] + '\\n<|EOT|>\\n'}}{% endif %}{% endfor %}",
    "command-r": "{{ '<|START_OF_TURN_TOKEN|><|USER_TOKEN|>' }}{{ '<|END_OF_TURN_TOKEN|>' }}",
    "chatglm4": "[gMASK]<sop>{% for item in messages %}<|{{ item['role'] }}|>{% endfor %}",
    "smolvlm": "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}{{':'}}<end_of_utterance>{% endfor %}",
}


def test_named(llama, ms):
    names = []
    i = 0
    while True:
        n = ms.msrnn_chat_template_name(i)
        if n is None:
            break
        names.append(n.decode())
        i += 1
    check(names[:2] == ["plain", "chatml"] and len(names) >= 15, f"msrnn's templates: {names}")
    for name in names[1:]:
        for conv in CONVERSATIONS:
            for add in (True, False):
                ref = llama_render(llama, name, conv, add)
                got = msrnn_render(ms, name, conv, add)
                check(ref is not None and got == ref,
                      f"{name} (add_assistant {add}) over {[r for r, _ in conv]}: msrnn {got!r} llama.cpp {ref!r}")
    print(f"named: {len(names) - 1} templates x {len(CONVERSATIONS)} conversations x 2 as llama.cpp")
    return names


# the name each REAL text must be recognised as
REAL_NAME = {"chatml (OpenHermes)": "chatml", "llama2 (Llama-2-chat)": "llama2-sys-strip",
             "llama2 without <<SYS>> (Mistral-7B-Instruct-v0.1)": "llama2", "llama2-sys-bos": "llama2-sys-bos",
             "mistral-v7": "mistral-v7", "phi3 (Phi-3-mini)": "phi3", "zephyr (role tags, <|endoftext|>)": "zephyr",
             "gemma (gemma-7b-it)": "gemma", "openchat (openchat-3.5)": "openchat", "vicuna": "vicuna",
             "vicuna-orca": "vicuna-orca", "llama3 (Llama-3-Instruct)": "llama3", "monarch": "monarch",
             "phi4": "phi4"}


def test_real(llama, ms):
    for label, text in REAL.items():
        name = ms.msrnn_chat_template_detect(text.encode())
        check(name is not None and name.decode() == REAL_NAME[label], f"{label}: recognised as {name}")
        for conv in CONVERSATIONS[:3]:
            ref = llama_render(llama, text, conv, True)
            got = msrnn_render(ms, text, conv, True)
            check(ref is not None and got == ref, f"{label} as {name}: msrnn {got!r} llama.cpp {ref!r}")
    for label, text in UNKNOWN_TO_MSRNN.items():
        check(llama_render(llama, text, CONVERSATIONS[1], True) is not None, f"llama.cpp knows {label}")
        check(ms.msrnn_chat_template_detect(text.encode()) is None, f"{label}: unknown to msrnn")
        check(msrnn_render(ms, text, CONVERSATIONS[1], True) is None and
              b"not one msrnn knows" in ms.msrnn_last_error(), f"{label}: msrnn_chat_apply refuses it")
    print(f"real templates: {len(REAL)} recognised as llama.cpp renders them, {len(UNKNOWN_TO_MSRNN)} unknown")


def llamacpp_corpus():
    """The real templates of llama.cpp's own tests (tests/test-chat-template.cpp of the release in
    node-llama-cpp's gitRelease.bundle): (name, template text)."""
    import ast
    import re
    bundle = os.path.join(PKG, "llama", "gitRelease.bundle")
    with tempfile.TemporaryDirectory() as d:
        # (this runs in the child that has the ASan runtime preloaded: git must not inherit it)
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS")}
        r = subprocess.run(["git", "clone", "-q", bundle, os.path.join(d, "l")], capture_output=True, text=True,
                           env=env)
        check(r.returncode == 0, f"git clone {bundle}: {r.stderr[-500:]}")
        if r.returncode:
            return []
        src = open(os.path.join(d, "l", "tests", "test-chat-template.cpp"), encoding="utf-8").read()
    out, name = [], None
    for line in src.splitlines():
        m = re.search(r'/\* \.name= \*/ "(.*)",\s*$', line)
        if m:
            name = m.group(1)
        m = re.search(r'/\* \.template_str= \*/ (.*),\s*$', line)
        if m and name:
            lit = m.group(1).strip()
            lit = re.sub(r'^U8C\((.*)\)$', r"\1", lit)
            lit = re.sub(r'^u8"', '"', lit)
            try:
                out.append((name, ast.literal_eval(lit)))
            except (ValueError, SyntaxError):
                check(False, f"cannot read the template of {name}: {lit[:80]}")
            name = None
    return out


def test_llamacpp_corpus(llama, ms, names):
    """Every real template llama.cpp's tests carry: where msrnn recognises it, the same bytes as
    llama.cpp; where not, llama.cpp does not render it as any of msrnn's templates either."""
    corpus = llamacpp_corpus()
    check(len(corpus) >= 30, f"llama.cpp's test templates read: {len(corpus)}")
    known = unknown = 0
    for label, text in corpus:
        refs = [llama_render(llama, text, conv, True) for conv in CONVERSATIONS[:3]]
        if any(x is None for x in refs):
            continue  # llama.cpp does not know it either
        det = ms.msrnn_chat_template_detect(text.encode())
        if det is not None:
            known += 1
            for conv, ref in zip(CONVERSATIONS[:3], refs):
                got = msrnn_render(ms, text, conv, True)
                check(got == ref, f"llama.cpp's '{label}' as {det}: msrnn {got!r} llama.cpp {ref!r}")
        else:
            unknown += 1
            same = [n for n in names[1:]
                    if all(msrnn_render(ms, n, conv, True) == ref for conv, ref in zip(CONVERSATIONS[:3], refs))]
            check(not same, f"llama.cpp's '{label}' renders as msrnn's {same}, but msrnn does not recognise it")
    check(known >= 15, f"msrnn recognises most of llama.cpp's test templates: {known}")
    print(f"llama.cpp's own test templates: {known} recognised and rendered alike, {unknown} of templates msrnn lacks")


ADDED = [("<|im_start|>", 3), ("<|im_end|>", 3), ("<|tool|>", 4), ("<tok>", 4),
         ("<|eot_id|>", 1), ("<|endoftext|>", 1), ("<|end|>", 4)]  # the last three: end-of-turn texts
# llama.cpp makes control tokens whatever their type in the file


def special_vocab(path, template=None):
    """Llama 2's vocabulary plus control, user-defined and normal-typed end-of-turn tokens, as a
    vocabulary GGUF."""
    w = ggufpy.GGUFWriter()
    w.add("general.architecture", ggufpy.STR, "llama")
    ggufpy.add_spm_vocab(w, os.path.join(SHARED, "data", "tokenizers", "llama2", "tokenizer.model"))
    kv = []
    for k, t, v in w.kv:
        if k == "tokenizer.ggml.tokens":
            v = (v[0], v[1] + [p for p, _ in ADDED])
        elif k == "tokenizer.ggml.scores":
            v = (v[0], v[1] + [0.0] * len(ADDED))
        elif k == "tokenizer.ggml.token_type":
            v = (v[0], v[1] + [ty for _, ty in ADDED])
        kv.append((k, t, v))
    w.kv = kv
    if template:
        w.add("tokenizer.chat_template", ggufpy.STR, template)
    w.write(path)


def set_name(path, name):
    """general.name of a model file (llama.cpp strips white space after special tokens of models
    named phi-3 / phi3)"""
    sys.path.insert(0, os.path.join(SOURCE, "tests"))
    import gguf_tiny
    g = gguf_tiny.read(path)
    gguf_tiny.set_key(g, "general.name", gguf_tiny.GGUF_STR, gguf_tiny._str(name))
    gguf_tiny.write(path, g)


TEXTS = [
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|><|im_end|>", "<|im_start|><|im_start|>x", "<|im_start", "|im_start|>", "<<|im_start|>>",
    "<s>[INST] hi [/INST] ok</s><s>[INST] again [/INST]", "a<s>b</s>c", " <s> </s> ", "<s>", "</s>",
    "text <tok> more<|tool|>end", "<tok><tok> <tok>", "  two spaces<|im_end|>  after  ", "\n<|im_end|>\n",
    "plain text only", "", " ", "<unk>", "x<unk>y", "<|im_start|>user\n東京 😀<|im_end|>",
    "<|eot_id|> next", "a<|endoftext|>  b", "<|end|>\n<|end|>  \n x", "<|im_end|>\n  next\t", "<s>  x </s>\n y",
    "<|user|>\nHi<|end|>\n<|assistant|>\n",
]


def llamacpp_ids(model, tmp):
    tpath = os.path.join(tmp, "texts.json")
    with open(tpath, "w") as f:
        json.dump(TEXTS, f)
    r = subprocess.run(["node", os.path.join(SOURCE, "tests", "llamacpp_tokenize.mjs"), "--pkg", PKG,
                        "--model", model, "--texts", tpath, "--special", "1"],
                       capture_output=True, text=True, timeout=300)
    check(r.returncode == 0, f"llamacpp_tokenize.mjs: {r.stderr[-2000:]}")
    return json.loads(r.stdout)["ids"] if r.returncode == 0 else [[]] * len(TEXTS)


def msrnn_ids(model, text, *extra):
    r = subprocess.run([BIN, "tokenize", "-m", model, "-p", text, "--special", "--json", *extra],
                       capture_output=True, text=True)
    return json.loads(r.stdout)["ids"] if r.returncode == 0 else None


def test_tokenize(tmp):
    vocab = os.path.join(tmp, "special-vocab.gguf")
    special_vocab(vocab)
    models = {}
    for label, name in (("Llama 2 + added tokens", None), ("the same named Phi-3-mini-4k-instruct", "Phi-3-mini-4k-instruct")):
        model = os.path.join(tmp, f"special-{len(models)}.gguf")
        r = subprocess.run([BIN, "init-model", "--vocab-from", vocab, "-o", model, "--dim", "64", "--layers", "1",
                            "--heads", "2", "--kv-heads", "1", "--ffn", "128", "--ctx", "256"],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"init-model: {r.stderr}")
        if name:
            set_name(model, name)
        models[label] = model
        same = 0
        for text, ref in zip(TEXTS, llamacpp_ids(model, tmp)):
            got = msrnn_ids(model, text, "--no-bos")
            check(got == ref, f"{label}: tokenize --special {text!r}: msrnn {got} llama.cpp {ref}")
            same += got == ref
            if text:
                bos = msrnn_ids(model, text)
                check(bos == [1] + (got or []), f"{label}: with BOS {text!r}: {bos}")
        print(f"tokenize --special, {label}: {same}/{len(TEXTS)} texts as llama.cpp's parse_special")
    model = models["Llama 2 + added tokens"]
    # the Phi-3 rule is in play: white space after a special token is gone under that name only
    a = msrnn_ids(model, "<|end|>\n x", "--no-bos")
    b = msrnn_ids(models["the same named Phi-3-mini-4k-instruct"], "<|end|>\n x", "--no-bos")
    check(a is not None and b is not None and len(b) < len(a), f"Phi-3 drops the white space after <|end|>: {a} {b}")
    # without --special the control tokens are text, as before
    r = subprocess.run([BIN, "tokenize", "-m", model, "-p", "<|im_start|>", "--no-bos", "--json"],
                       capture_output=True, text=True)
    check(len(json.loads(r.stdout)["ids"]) > 1, "without --special a control token's text stays text")
    return model


def start_server(model, *args):
    import re
    import threading
    p = subprocess.Popen([BIN, "serve", "-m", model, "--port", "0", "-t", "1", "--slots", "1", *args],
                         stderr=subprocess.PIPE, text=True)
    log, port, ready = [], [None], threading.Event()

    def drain():
        for line in p.stderr:
            log.append(line)
            m = re.search(r"listening on http://[0-9.]+:(\d+)", line)
            if m:
                port[0] = int(m.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    ready.wait(120)
    return p, port[0], log


def post(port, path, body):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = json.loads(r.read())
    c.close()
    return r.status, data


def stop_server(p, label):
    p.terminate()
    try:
        code = p.wait(60)
    except subprocess.TimeoutExpired:
        p.kill()
        code = None
    check(code == 0, f"{label}: the server exits cleanly: {code}")


def test_serve(tmp):
    """Chat through the model's own template: the prompt is the rendered text, specially tokenized"""
    chatml = REAL["chatml (OpenHermes)"]
    vocab = os.path.join(tmp, "chatml-vocab.gguf")
    special_vocab(vocab, template=chatml)
    model = os.path.join(tmp, "chatml.gguf")
    r = subprocess.run([BIN, "init-model", "--vocab-from", vocab, "-o", model, "--dim", "64", "--layers", "1",
                        "--heads", "2", "--kv-heads", "1", "--ffn", "128", "--ctx", "256"],
                       capture_output=True, text=True)
    check(r.returncode == 0, f"init-model: {r.stderr}")
    conv = [("system", "Be brief."), ("user", "Hello there"), ("assistant", "Hi"), ("user", "Again?")]
    # the prompt msrnn_chat_apply renders, tokenized with --special (llama.cpp's own rendering is
    # checked above), fed as ids to /v1/completions: the reference continuation
    text = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n"
            "<|im_start|>assistant\nHi<|im_end|>\n<|im_start|>user\nAgain?<|im_end|>\n<|im_start|>assistant\n")
    r = subprocess.run([BIN, "tokenize", "-m", model, "-p", text, "--special", "--json"], capture_output=True,
                       text=True)
    ids = json.loads(r.stdout)["ids"]
    p, port, log = start_server(model)
    check(port is not None and any("chat template chatml (the model's)" in x for x in log),
          f"serve names the model's template: {''.join(log)[-600:]}")
    if port:
        st, ref = post(port, "/v1/completions", {"prompt": ids, "max_tokens": 6, "temperature": 0,
                                                "return_tokens": True})
        st2, got = post(port, "/v1/chat/completions",
                        {"messages": [{"role": r_, "content": c_} for r_, c_ in conv], "max_tokens": 6,
                         "temperature": 0, "return_tokens": True})
        check(st == 200 and st2 == 200, f"answers: {st} {st2} {got}")
        if st == 200 and st2 == 200:
            check(got["usage"]["prompt_tokens"] == len(ids) == ref["usage"]["prompt_tokens"],
                  f"chat's prompt is the rendered text's {len(ids)} special-tokenized ids: {got['usage']}")
            check(got["choices"][0]["token_ids"] == ref["choices"][0]["token_ids"],
                  f"chat continues those ids as a completion does: {got['choices'][0]['token_ids']} "
                  f"{ref['choices'][0]['token_ids']}")
        stop_server(p, "chatml")
    # the end of turn as a token: make <|im_end|> the greedy answer (its output row twice the row of
    # the token the model answers with now), then chat stops there at once, with an empty answer;
    # ignore_eos runs on to max_tokens
    if port and st == 200 and st2 == 200:
        sys.path.insert(0, os.path.join(SOURCE, "tests"))
        import gguf_tiny
        import struct
        first = got["choices"][0]["token_ids"][0]
        im_end = 32000 + [p_ for p_, _ in ADDED].index("<|im_end|>")
        g = gguf_tiny.read(model)
        out = gguf_tiny.tensors(g)["output.weight"]
        dim = out["ne"][0]
        row = struct.unpack_from(f"<{dim}f", out["data"], first * dim * 4)
        data = bytearray(out["data"])
        struct.pack_into(f"<{dim}f", data, im_end * dim * 4, *[2 * x for x in row])
        out["data"] = bytes(data)
        stopper = os.path.join(tmp, "chatml-stop.gguf")
        gguf_tiny.write(stopper, g)
        q, qport, _ = start_server(stopper)
        msgs = [{"role": r_, "content": c_} for r_, c_ in conv]
        st, a = post(qport, "/v1/chat/completions", {"messages": msgs, "max_tokens": 6, "temperature": 0,
                                                     "return_tokens": True})
        check(st == 200 and a["choices"][0]["finish_reason"] == "stop" and a["choices"][0]["token_ids"] == [im_end]
              and a["choices"][0]["message"]["content"] == "",
              f"chat stops at the template's end-of-turn token: {a}")
        st, a = post(qport, "/v1/chat/completions", {"messages": msgs, "max_tokens": 5, "temperature": 0,
                                                     "return_tokens": True, "ignore_eos": True})
        check(st == 200 and a["choices"][0]["finish_reason"] == "length" and len(a["choices"][0]["token_ids"]) == 5,
              f"ignore_eos: not even at the end-of-turn token: {a}")
        st, a = post(qport, "/v1/completions", {"prompt": ids, "max_tokens": 3, "temperature": 0,
                                                "return_tokens": True})
        check(st == 200 and a["choices"][0]["finish_reason"] == "length",
              f"a completion is not a chat turn: it runs past <|im_end|>: {a}")
        stop_server(q, "chatml-stop")
    # --chat-template plain overrides the model's; an unknown name is refused
    p, port, log = start_server(model, "--chat-template", "plain")
    check(any("chat template plain (--chat-template)" in x for x in log), "--chat-template plain is used")
    if port:
        st, got = post(port, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                                     "max_tokens": 2, "temperature": 0})
        plain = subprocess.run([BIN, "tokenize", "-m", model, "-p", "User: Hi\nAssistant:", "--json"],
                               capture_output=True, text=True)
        check(st == 200 and got["usage"]["prompt_tokens"] == len(json.loads(plain.stdout)["ids"]),
              f"the plain template's prompt: {got}")
        stop_server(p, "plain")
    r = subprocess.run([BIN, "serve", "-m", model, "--chat-template", "jinja-please"], capture_output=True,
                       text=True, timeout=60)
    check(r.returncode == 2 and "chatml" in r.stderr and "'jinja-please'" in r.stderr,
          f"an unknown --chat-template: exit 2 listing the names: {r.returncode} {r.stderr[-300:]}")
    print("serve: chat through the model's chatml template, --chat-template plain, unknown names refused")


def library_checks():
    """Parts 1 and 2 in a child python3: the sanitized build's libmsrnn.so takes the ASan runtime as a
    shared library, which a child gets preloaded (LD_PRELOAD, detect_leaks=0: python itself leaks at
    exit)."""
    env = dict(os.environ)
    if SANITIZED:
        rt = subprocess.run(["clang", "-print-file-name=libclang_rt.asan-x86_64.so"], capture_output=True,
                            text=True).stdout.strip()
        env["LD_PRELOAD"] = rt
        # the suite's options with detect_leaks=0 last (a later option wins)
        env["ASAN_OPTIONS"] = ":".join([o for o in env.get("ASAN_OPTIONS", "").split(":")
                                        if o and not o.startswith("detect_leaks=")] + ["detect_leaks=0"])
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--library"], env=env, capture_output=True,
                       text=True, timeout=600)
    sys.stdout.write(r.stdout)
    check(r.returncode == 0, f"the library checks (child python3) pass: exit {r.returncode}\n"
          f"{r.stdout[-3000:]}{r.stderr[-3000:]}")


def main():
    if sys.argv[1:] == ["--library"]:
        llama, ms = load_llama(), load_msrnn()
        names = test_named(llama, ms)
        test_real(llama, ms)
        test_llamacpp_corpus(llama, ms, names)
        finish("test_chat_template (library)")
        return
    load_llama()
    library_checks()
    with tempfile.TemporaryDirectory() as tmp:
        test_tokenize(tmp)
        test_serve(tmp)
    finish("test_chat_template")


if __name__ == "__main__":
    main()
