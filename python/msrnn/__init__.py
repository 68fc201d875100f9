"""msrnn — Python bindings of libmsrnn (include/msrnn.h): transformer language models stored as GGUF,
run on the CPU with bounded attention memories.

    import msrnn
    with msrnn.Model("models/default.gguf") as model:
        ids = model.tokenize("Once upon a time")
        with model.session(memory="tova", kv_size=256) as s:
            s.eval(ids)
            logits = s.logits                      # (n_vocab,) float32, no copy
            next_id = int(logits.argmax())
        print(model.detokenize(model.generate("Once upon a time", 40, temperature=0)))

A pure-Python package over the shared library (ctypes): the library is found through MSRNN_LIBRARY
(a path), then the dynamic loader's search for libmsrnn.so.1, ctypes.util.find_library("msrnn"),
and lib/ of sys.prefix, /usr/local and ~/.local.

Errors of the library are raised as msrnn.Error subclasses carrying its message (the file, field and
expected value): FileError (also an OSError), FormatError and InvalidError (also ValueErrors),
NoMemoryError (also a MemoryError), UnsupportedError, ContextFullError. Using a closed object raises
ValueError, as closed Python files do.

Threads: every library call releases the GIL (ctypes does), so sessions used from different threads
run at the same time. One session, batch or sampler must not be used by two threads at once.
"""
import codecs
import ctypes
import dataclasses
import os
import threading
import weakref
from collections import namedtuple

import numpy as np

from . import _lib
from ._lib import lib, library_path

__version__ = "1.1.0"  # the C API version the bindings were written for (MSRNN_VERSION_STRING)

__all__ = ["Batch", "ContextFullError", "Error", "FileError", "FormatError", "InvalidError",
           "MemorySettings", "Model", "ModelInfo", "NoMemoryError", "PerplexityResult", "Sampler",
           "Session", "UnsupportedError", "chat_apply", "chat_template_detect", "chat_templates",
           "library_path", "memory_names", "memory_settings", "version"]

_P = ctypes.POINTER
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1


def version():
    """The version of the loaded C library, "MAJOR.MINOR.PATCH" (msrnn_version())."""
    return lib.msrnn_version().decode()


# ---- errors --------------------------------------------------------------------------------------


class Error(Exception):
    """A failure of the library: str(e) is its message (msrnn_last_error()), e.status the
    msrnn_status number and e.status_name its name (msrnn_status_name())."""
    status = None
    status_name = None


class FileError(Error, OSError):
    """MSRNN_ERR_IO: a file could not be opened, read, mapped or written."""


class FormatError(Error, ValueError):
    """MSRNN_ERR_FORMAT: a file is malformed."""


class InvalidError(Error, ValueError):
    """MSRNN_ERR_INVALID: a bad argument."""


class NoMemoryError(Error, MemoryError):
    """MSRNN_ERR_NOMEM: an allocation failed or a requested size does not fit in memory."""


class UnsupportedError(Error):
    """MSRNN_ERR_UNSUPPORTED: a valid file that uses something msrnn does not implement."""


class ContextFullError(Error):
    """MSRNN_ERR_FULL: the session's context is full."""


_ERRORS = {1: FileError, 2: FormatError, 3: InvalidError, 4: NoMemoryError, 5: UnsupportedError,
           6: ContextFullError}


def _check(status):
    """Raise the exception of a failed call. The library's message is per thread, and ctypes calls
    run on the calling thread: read right after the call, it is this call's."""
    if status == 0:
        return
    message = lib.msrnn_last_error().decode("utf-8", "replace")
    e = _ERRORS.get(status, Error)(message)
    e.status = status
    e.status_name = lib.msrnn_status_name(status).decode()
    raise e


# ---- conversions ---------------------------------------------------------------------------------


def _int(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError("%s must be an int, not %s" % (name, type(v).__name__))
    if not _INT_MIN <= v <= _INT_MAX:
        raise OverflowError("%s = %d does not fit in a C int" % (name, v))
    return int(v)


def _ids(tokens, what="tokens"):
    """tokens (a sequence of ints or an integer array) as a contiguous 1-D int32 array: an int32
    array is passed as it is, anything else converted after a range check."""
    a = np.asarray(tokens)
    if a.ndim != 1:
        raise ValueError("%s must be 1-D, got shape %s" % (what, a.shape))
    if a.dtype != np.int32:
        if a.size == 0:
            a = a.astype(np.int32)
        elif a.dtype.kind not in "iu":
            raise TypeError("%s must be integers, not %s" % (what, a.dtype))
        elif a.min() < _INT_MIN or a.max() > _INT_MAX:
            raise OverflowError("%s hold a value outside int32" % what)
    a = np.ascontiguousarray(a, dtype=np.int32)
    if len(a) > _INT_MAX:
        raise ValueError("too many %s for one call" % what)
    return a


def _ptr(a, ctype):
    return a.ctypes.data_as(_P(ctype))


# session parameters: msrnn_session_params's fields, given by keyword, the library's defaults for
# the others
SESSION_PARAMS = tuple(name for name, _ in _lib.session_params._fields_)
_FLAGS = ("kv_f16", "batched_attention")


def _session_params(params, into=None):
    p = into if into is not None else lib.msrnn_session_default_params()
    for name, v in params.items():
        if name not in SESSION_PARAMS:
            raise TypeError("unknown session parameter %r (they are %s)"
                            % (name, ", ".join(SESSION_PARAMS)))
        if v is None:
            continue
        if name == "memory":
            if not isinstance(v, (str, bytes)):
                raise TypeError("memory must be a str, not %s" % type(v).__name__)
            v = v.encode() if isinstance(v, str) else v
        elif name in _FLAGS:
            v = int(bool(v))
        elif name == "kv_merge_bias":
            v = float(v)
        else:
            v = _int(name, v)
        setattr(p, name, v)
    return p


def _split(params, names):
    """(the entries of params named in names, the others)"""
    return ({k: v for k, v in params.items() if k in names},
            {k: v for k, v in params.items() if k not in names})


SAMPLER_PARAMS = tuple(name for name, _ in _lib.sampler_params._fields_)


def _sampler_params(params):
    p = lib.msrnn_sampler_default_params()
    for name, v in params.items():
        if name not in SAMPLER_PARAMS:
            raise TypeError("unknown sampler parameter %r (they are %s)"
                            % (name, ", ".join(SAMPLER_PARAMS)))
        if v is None:
            continue
        if name == "seed":
            if not 0 <= int(v) < 1 << 64:
                raise OverflowError("seed must be in [0, 2^64)")
            v = int(v)
        elif name in ("top_k", "repeat_last_n"):
            v = _int(name, v)
        else:
            v = float(v)
        setattr(p, name, v)
    return p


# ---- results -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """msrnn_model_info: the model's hyper-parameters."""
    n_vocab: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    n_ctx: int
    rope_base: float
    norm_eps: float
    tied_output: bool
    bos_id: int
    eos_id: int
    n_params: int
    weight_bytes: int
    architecture: str


@dataclasses.dataclass(frozen=True)
class PerplexityResult:
    """msrnn_perplexity_result."""
    n_scored: int         # text tokens scored
    nll_sum: float        # their total negative log-likelihood, in nats
    nll_mean: float       # nll_sum / n_scored
    ppl: float            # exp(nll_mean)
    bits_per_byte: float  # nll_sum / ln 2 / bytes of text scored
    seconds: float        # wall time of the scoring
    tokens_per_s: float
    memory_bytes: int     # the most memory bytes any of its sessions reached


MemorySettings = namedtuple("MemorySettings", "sinks clusters min_kv_size")


def memory_settings(memory="full", kv_sinks=0, kv_clusters=0):
    """A memory's settings with the defaults resolved (msrnn_memory_settings_of): sinks, clusters
    and the smallest kv_size it accepts. InvalidError for an unknown memory name."""
    p = _session_params({"memory": memory, "kv_sinks": kv_sinks, "kv_clusters": kv_clusters})
    out = _lib.memory_settings()
    _check(lib.msrnn_memory_settings_of(ctypes.byref(p), ctypes.byref(out)))
    return MemorySettings(out.sinks, out.clusters, out.min_kv_size)


# ---- objects over handles ------------------------------------------------------------------------


class _Handle:
    """An object owning a library handle (_ptr): close() makes it unusable at once (ValueError),
    the handle is freed by _free() when nothing depends on it any more."""
    _ptr = None
    _closed = True
    _kind = "object"

    def _live(self):
        if self._closed:
            raise ValueError("the %s is closed" % self._kind)
        return self._ptr

    @property
    def closed(self):
        return self._closed

    def __enter__(self):
        self._live()
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self._closed = True
            self._free()
        except Exception:  # interpreter shutdown: the module may be gone already
            pass


class Model(_Handle):
    """A GGUF model, opened once (the weights memory-mapped): Model(path).

    close() (or leaving a `with` block) makes the Model unusable; the model itself is released when
    its last session, batch or generation is closed, as sessions keep running on it."""
    _kind = "model"

    def __init__(self, path):
        self._children = 0  # sessions and batches open on the handle
        self._lock = threading.Lock()
        self.path = os.fspath(path)
        ptr = ctypes.c_void_p()
        _check(lib.msrnn_model_open(os.fsencode(path), ctypes.byref(ptr)))
        self._ptr, self._closed = ptr.value, False
        i = lib.msrnn_model_get_info(self._ptr).contents
        self.info = ModelInfo(i.n_vocab, i.dim, i.n_layers, i.n_heads, i.n_kv_heads, i.head_dim,
                              i.ffn_dim, i.n_ctx, i.rope_base, i.norm_eps, bool(i.tied_output),
                              i.bos_id, i.eos_id, i.n_params, i.weight_bytes,
                              i.architecture.decode())
        self.unused_tensors = [lib.msrnn_model_unused_name(self._ptr, k).decode("utf-8", "replace")
                               for k in range(lib.msrnn_model_n_unused(self._ptr))]

    def __repr__(self):
        return "<msrnn.Model %r %s%s>" % (self.path, self.info.architecture,
                                           " closed" if self._closed else "")

    def close(self):
        with self._lock:
            if not self._closed:
                self._closed = True
                self._free()

    def _free(self):
        if self._ptr is not None and self._children == 0:
            lib.msrnn_model_close(self._ptr)
            self._ptr = None

    def _child_opened(self):
        with self._lock:
            self._children += 1

    def _child_freed(self):
        with self._lock:
            self._children -= 1
            if self._closed:
                self._free()

    @property
    def n_vocab(self):
        return self.info.n_vocab

    @property
    def bos_id(self):
        return self.info.bos_id

    @property
    def eos_id(self):
        return self.info.eos_id

    # ---- tokenizer ----

    def tokenize(self, text, add_bos=True):
        """The ids of text (str, or bytes of UTF-8), BOS first if add_bos: a list of ints.
        UnsupportedError if the file has no tokenizer."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        cap = lib.msrnn_tokenize_max(self._live(), len(data))
        ids = np.empty(cap, np.int32)
        n = ctypes.c_size_t()
        _check(lib.msrnn_tokenize(self._ptr, data, len(data), int(bool(add_bos)),
                                  _ptr(ids, ctypes.c_int32), cap, ctypes.byref(n)))
        return ids[:n.value].tolist()

    def tokenize_special(self, text, add_bos=True):
        """tokenize, but the text of a special token ("<s>", "<|im_start|>") is that token, as
        llama.cpp's parse_special: for prompts from chat_apply, not for text a user typed."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        cap = lib.msrnn_tokenize_special_max(self._live(), len(data))
        ids = np.empty(cap, np.int32)
        n = ctypes.c_size_t()
        _check(lib.msrnn_tokenize_special(self._ptr, data, len(data), int(bool(add_bos)),
                                          _ptr(ids, ctypes.c_int32), cap, ctypes.byref(n)))
        return ids[:n.value].tolist()

    @property
    def chat_template(self):
        """The file's own chat template (Jinja text, tokenizer.chat_template), or None."""
        t = lib.msrnn_model_chat_template(self._live())
        return None if t is None else t.decode("utf-8", "replace")

    def chat_apply(self, messages, template=None, add_assistant=True):
        """messages ([{"role": ..., "content": ...}] or (role, content) pairs) as one prompt text,
        rendered by template (a name from chat_templates(), a Jinja text; None: the model's own if
        msrnn knows it, else "plain"). Tokenize it with tokenize_special."""
        if template is None:
            own = self.chat_template
            template = own if own and chat_template_detect(own) else "plain"
        return chat_apply(template, messages, add_assistant)

    def token_bytes(self, prev, id):
        """The bytes of token id as it appears in text after token prev (-1 at the start; the
        SentencePiece leading space is dropped after BOS or at the start). Control tokens (BOS,
        EOS) give b""."""
        prev, id = _int("prev", prev), _int("id", id)
        if not 0 <= id < self.info.n_vocab:
            raise ValueError("token %d is outside the vocabulary [0, %d)" % (id, self.info.n_vocab))
        buf = ctypes.create_string_buffer(64)
        n = lib.msrnn_token_to_text(self._live(), prev, id, buf, len(buf))
        if n > len(buf):
            buf = ctypes.create_string_buffer(n)
            n = lib.msrnn_token_to_text(self._ptr, prev, id, buf, len(buf))
        return buf.raw[:n]

    def detokenize(self, ids, prev=-1):
        """The text of ids (each token's bytes after the one before it; prev: the token before
        ids[0], -1 at the start), decoded as UTF-8 with invalid bytes replaced."""
        out = []
        for id in _ids(ids, "ids").tolist():
            out.append(self.token_bytes(prev, id))
            prev = id
        return b"".join(out).decode("utf-8", "replace")

    # ---- sessions ----

    def session(self, **params):
        """A new Session on the model; params are msrnn_session_params's fields (n_ctx, n_threads,
        n_batch, kv_f16, memory, kv_size, kv_sinks, batched_attention, kv_merge_bias,
        kv_clusters), the library's defaults for those not given."""
        return Session(self, **params)

    def session_bytes_needed(self, **params):
        """The bytes a session with these params would allocate (msrnn_session_bytes_needed)."""
        p = _session_params(params)
        n = ctypes.c_size_t()
        _check(lib.msrnn_session_bytes_needed(self._live(), ctypes.byref(p), ctypes.byref(n)))
        return n.value

    def memory_is_bounded(self, **params):
        """Whether a session with these params keeps a memory of fixed size however many tokens it
        is fed, so that no context limit applies (msrnn_memory_is_bounded): a bounded KV cache, or
        an architecture's recurrent state. False for the full KV cache or refused params."""
        p = _session_params(params)
        return bool(lib.msrnn_memory_is_bounded(self._live(), ctypes.byref(p)))

    def batch(self, n_tokens=0, n_threads=0):
        return Batch(self, n_tokens, n_threads)

    def sampler(self, **params):
        """A Sampler for this model's vocabulary (params: see Sampler)."""
        return Sampler(self.info.n_vocab, **params)

    # ---- perplexity ----

    def perplexity(self, texts, ctx=0, max_chunks=0, **params):
        """The long-document perplexity protocol (msrnn_perplexity, what `msrnn perplexity` runs)
        over texts (a str or bytes, or a list of them): chunks of ctx - 1 tokens (0: the model's
        context), each from an empty memory as BOS + chunk; max_chunks > 0 scores only the first
        chunks of each text. params: the memory and threads (memory, kv_size, kv_sinks, kv_f16,
        kv_merge_bias, kv_clusters, n_threads). A PerplexityResult."""
        if isinstance(texts, (str, bytes)):
            texts = [texts]
        data = [t.encode("utf-8") if isinstance(t, str) else bytes(t) for t in texts]
        n = len(data)
        ptrs = (ctypes.c_char_p * max(n, 1))(*data)
        lens = (ctypes.c_size_t * max(n, 1))(*[len(d) for d in data])
        p = lib.msrnn_perplexity_default_params()
        p.ctx, p.max_chunks = _int("ctx", ctx), _int("max_chunks", max_chunks)
        _session_params(params, p.session)
        r = _lib.perplexity_result()
        _check(lib.msrnn_perplexity(self._live(), ptrs, lens, n, ctypes.byref(p), ctypes.byref(r)))
        return PerplexityResult(r.n_scored, r.nll_sum, r.nll_mean, r.ppl, r.bits_per_byte,
                                r.seconds, r.tokens_per_s, r.memory_bytes)

    # ---- generation ----

    def _tokens(self, prompt, n_tokens, stop_at_eos, params):
        """(prompt ids, an iterator of generated ids), as `msrnn generate` runs: the prompt with
        BOS, each token sampled from the last logits with every id so far as history, and fed back
        unless it is the last one or an EOS that stops."""
        sampling, rest = _split(params, SAMPLER_PARAMS)
        prompt_ids = self.tokenize(prompt) if isinstance(prompt, (str, bytes)) else \
            _ids(prompt, "prompt").tolist()
        n_tokens = _int("n_tokens", n_tokens)
        if not rest.get("n_ctx") and not self.memory_is_bounded(**rest):
            # a full cache sized for what this run feeds
            rest["n_ctx"] = max(1, min(self.info.n_ctx, len(prompt_ids) + n_tokens - 1))
        sampler = Sampler(self.info.n_vocab, **sampling)
        session = Session(self, **rest)

        def run():
            with session, sampler:
                history = np.empty(len(prompt_ids) + n_tokens, np.int32)
                history[:len(prompt_ids)] = prompt_ids
                n = len(prompt_ids)
                if n_tokens > 0:
                    session.eval(history[:n])
                for k in range(n_tokens):
                    id = sampler.sample(session.logits, history[:n])
                    history[n] = id
                    n += 1
                    yield id
                    if (id == self.info.eos_id and stop_at_eos) or k == n_tokens - 1:
                        break
                    session.eval(history[n - 1:n])
        return prompt_ids, run()

    def generate(self, prompt, n_tokens=128, stop_at_eos=True, **params):
        """The ids of up to n_tokens tokens generated after prompt (a str, or a list of ids used as
        they are), the EOS included when it ends the run (stop_at_eos). params: the sampler's
        (temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed; the library's
        defaults: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, seed 0; temperature 0 is
        greedy) and the session's (memory, kv_size, n_threads...)."""
        return list(self._tokens(prompt, n_tokens, stop_at_eos, params)[1])

    def stream(self, prompt, n_tokens=128, stop_at_eos=True, **params):
        """generate()'s tokens as text, piece by piece as they are sampled (str; a character split
        over several tokens comes out whole; EOS gives no text)."""
        prompt_ids, tokens = self._tokens(prompt, n_tokens, stop_at_eos, params)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        prev = prompt_ids[-1] if prompt_ids else -1
        for id in tokens:
            piece = decoder.decode(self.token_bytes(prev, id))
            prev = id
            if piece:
                yield piece
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail


_logits_types = {}


def _logits_type(n):
    """A ctypes float array type of n elements whose instances take attributes and weak references
    (a view's buffer holds its session)."""
    t = _logits_types.get(n)
    if t is None:
        t = _logits_types[n] = type("LogitsBuffer", (ctypes.c_float * n,), {})
    return t


class Session(_Handle):
    """An attention state over a model: Session(model, **params) or model.session(**params).

    close() (or leaving a `with` block) makes it unusable; its memory is freed then, or once the
    last logits view taken from it is gone."""
    _kind = "session"

    def __init__(self, model, **params):
        if not isinstance(model, Model):
            raise TypeError("model must be an msrnn.Model")
        # what the session was opened with (the .params property)
        self._params = _session_params(params)
        ptr = ctypes.c_void_p()
        _check(lib.msrnn_session_open(model._live(), ctypes.byref(self._params),
                                      ctypes.byref(ptr)))
        self._ptr, self._closed, self.model = ptr.value, False, model
        model._child_opened()
        self._n_views = 0  # logits views alive
        self._n_vocab = model.info.n_vocab

    def __repr__(self):
        p = self._params
        return "<msrnn.Session %s%s n_past=%s%s>" % (
            p.memory.decode(), " kv_size=%d" % p.kv_size if p.memory != b"full" else "",
            "?" if self._closed else self.n_past, " closed" if self._closed else "")

    @property
    def params(self):
        """The parameters the session was opened with (the library's defaults for those not given,
        0 where the library resolves one itself: n_ctx, n_threads)."""
        p = self._params
        d = {name: getattr(p, name) for name in SESSION_PARAMS}
        d["memory"] = d["memory"].decode()
        for name in _FLAGS:
            d[name] = bool(d[name])
        return d

    def close(self):
        if not self._closed:
            self._closed = True
            if self._n_views == 0:
                self._free()

    def _view_gone(self):
        self._n_views -= 1
        if self._closed and self._n_views == 0:
            self._free()

    def _free(self):
        if self._ptr is not None:
            lib.msrnn_session_close(self._ptr)
            self._ptr = None
            self.model._child_freed()

    def eval(self, tokens, logits_all=False):
        """Feed tokens (a sequence of ids or an int32 array). With logits_all, returns every
        token's logits as a new (n, n_vocab) float32 array the library writes into; the last
        token's logits are in .logits either way. ContextFullError past a full memory's n_ctx."""
        ids = _ids(tokens)
        out = np.empty((len(ids), self._n_vocab), np.float32) if logits_all else None
        _check(lib.msrnn_session_eval(self._live(), _ptr(ids, ctypes.c_int32), len(ids),
                                      _ptr(out, ctypes.c_float) if logits_all else None))
        return out

    @property
    def logits(self):
        """The last token's logits: a read-only (n_vocab,) float32 view of the library's buffer
        (msrnn_session_logits), no copy. Its contents change with the next eval, reset or load
        (take .copy() to keep them); the view keeps the session's memory alive."""
        addr = ctypes.cast(lib.msrnn_session_logits(self._live()), ctypes.c_void_p).value
        buf = _logits_type(self._n_vocab).from_address(addr)
        buf.session = self
        self._n_views += 1
        weakref.finalize(buf, self._view_gone)
        a = np.frombuffer(buf, dtype=np.float32)
        a.flags.writeable = False
        return a

    @property
    def n_past(self):
        """Tokens fed so far (the position of the next token)."""
        return lib.msrnn_session_n_past(self._live())

    @property
    def bytes(self):
        """Bytes held by the session's buffers (KV cache plus scratch), fixed at open."""
        return lib.msrnn_session_bytes(self._live())

    @property
    def memory_bytes(self):
        """Bytes of the attention memory alone (constant once a bounded memory is full)."""
        return lib.msrnn_session_memory_bytes(self._live())

    def reset(self):
        """Forget every token seen: the next token is at position 0."""
        lib.msrnn_session_reset(self._live())

    def save(self, path):
        """Write the session's state to path, atomically (msrnn_session_save)."""
        _check(lib.msrnn_session_save(self._live(), os.fsencode(path)))

    def load(self, path):
        """Restore a state saved by a session of the same model and memory settings; on failure
        the session is unchanged."""
        _check(lib.msrnn_session_load(self._live(), os.fsencode(path)))

    def _layer(self, layer):
        layer = _int("layer", layer)
        if not 0 <= layer < self.model.info.n_layers:
            raise IndexError("layer %d of a model of %d layers" % (layer, self.model.info.n_layers))
        return layer

    def kept(self, layer, head=-1):
        """The entries a bounded memory holds now in layer (head: the kv head for "tova-head"):
        (positions int64 ascending, eviction scores float32)."""
        layer, head = self._layer(layer), _int("head", head)
        n = lib.msrnn_session_kept(self._live(), layer, head, None, None, 0)
        pos, score = np.empty(n, np.int64), np.empty(n, np.float32)
        n = lib.msrnn_session_kept(self._ptr, layer, head, _ptr(pos, ctypes.c_int64),
                                   _ptr(score, ctypes.c_float), n)
        return pos[:n], score[:n]

    def summary(self, layer, head=-1):
        """A summary memory's state in layer ("merge*"): (tokens folded into the summary, an int64
        array of the tokens in each summary column of kv head `head`)."""
        layer, head = self._layer(layer), _int("head", head)
        merged = ctypes.c_int64()
        n = lib.msrnn_session_summary(self._live(), layer, head, ctypes.byref(merged), None, 0)
        counts = np.zeros(n, np.int64)
        lib.msrnn_session_summary(self._ptr, layer, head, None, _ptr(counts, ctypes.c_int64), n)
        return merged.value, counts


class Batch(_Handle):
    """A batch workspace (msrnn_batch_open): several sessions of one model advanced by one forward
    pass. Batch(model, n_tokens=0 (512), n_threads=0 (all cores))."""
    _kind = "batch"

    def __init__(self, model, n_tokens=0, n_threads=0):
        if not isinstance(model, Model):
            raise TypeError("model must be an msrnn.Model")
        ptr = ctypes.c_void_p()
        _check(lib.msrnn_batch_open(model._live(), _int("n_tokens", n_tokens),
                                    _int("n_threads", n_threads), ctypes.byref(ptr)))
        self._ptr, self._closed, self.model = ptr.value, False, model
        model._child_opened()

    def close(self):
        if not self._closed:
            self._closed = True
            self._free()

    def _free(self):
        if self._ptr is not None:
            lib.msrnn_batch_close(self._ptr)
            self._ptr = None
            self.model._child_freed()

    @property
    def bytes(self):
        return lib.msrnn_batch_bytes(self._live())

    def eval(self, work):
        """Feed each (session, tokens) of work in one pass; each session's last logits are then in
        its .logits. Every check is made before any state changes."""
        work = list(work)
        n = len(work)
        ids = [_ids(t) for _, t in work]
        sessions = (ctypes.c_void_p * max(n, 1))(*[s._live() for s, _ in work])
        tokens = (_P(ctypes.c_int32) * max(n, 1))(*[_ptr(a, ctypes.c_int32) for a in ids])
        counts = (ctypes.c_int * max(n, 1))(*[len(a) for a in ids])
        _check(lib.msrnn_batch_eval(self._live(), sessions, tokens, counts, n))


class Sampler(_Handle):
    """Picks the next token from logits: Sampler(n_vocab, temperature=, top_k=, top_p=, min_p=,
    repeat_penalty=, repeat_last_n=, seed=), the library's defaults for those not given
    (temperature 0.8 (<= 0: greedy), top-k 40, top-p 0.95, min-p 0.05, repeat penalty 1 (off), 64,
    seed 0). It keeps its random state from call to call."""
    _kind = "sampler"

    def __init__(self, n_vocab, **params):
        self._params = _sampler_params(params)
        self.n_vocab = _int("n_vocab", n_vocab)
        ptr = ctypes.c_void_p()
        _check(lib.msrnn_sampler_open(ctypes.byref(self._params), self.n_vocab, ctypes.byref(ptr)))
        self._ptr, self._closed = ptr.value, False

    @property
    def params(self):
        """The sampler's parameters (the library's defaults for those not given)."""
        return {name: getattr(self._params, name) for name in SAMPLER_PARAMS}

    def close(self):
        if not self._closed:
            self._closed = True
            self._free()

    def _free(self):
        if self._ptr is not None:
            lib.msrnn_sampler_close(self._ptr)
            self._ptr = None

    def sample(self, logits, history=()):
        """The next token id from logits (n_vocab floats, not modified; a Session's .logits is used
        without a copy) with history the ids so far (the last repeat_last_n penalised)."""
        a = np.ascontiguousarray(logits, dtype=np.float32)
        if a.shape != (self.n_vocab,):
            raise ValueError("logits of shape %s for a vocabulary of %d" % (a.shape, self.n_vocab))
        h = _ids(history, "history")
        return int(lib.msrnn_sample(self._live(), _ptr(a, ctypes.c_float),
                                    _ptr(h, ctypes.c_int32), len(h)))


# ---- chat templates -----------------------------------------------------------------------------


def chat_templates():
    """The names of the chat templates msrnn renders ("plain", "chatml", "llama2", ...)."""
    out, i = [], 0
    while True:
        n = lib.msrnn_chat_template_name(i)
        if n is None:
            return out
        out.append(n.decode())
        i += 1


def chat_template_detect(template):
    """The name of the template a name or a Jinja text is, or None when msrnn does not know it."""
    n = lib.msrnn_chat_template_detect(template.encode("utf-8"))
    return None if n is None else n.decode()


def chat_apply(template, messages, add_assistant=True):
    """messages rendered by template (a name or a Jinja text): a str."""
    pairs = [(m["role"], m["content"]) if isinstance(m, dict) else tuple(m) for m in messages]
    arr = (_lib.chat_message * max(1, len(pairs)))()
    keep = []
    for i, (role, content) in enumerate(pairs):
        r, c = str(role).encode("utf-8"), str(content).encode("utf-8")
        keep += [r, c]
        arr[i] = _lib.chat_message(r, c)
    t = template.encode("utf-8") if template is not None else None
    n = ctypes.c_size_t()
    _check(lib.msrnn_chat_apply(t, arr, len(pairs), int(bool(add_assistant)), None, 0, ctypes.byref(n)))
    buf = ctypes.create_string_buffer(n.value + 1)
    _check(lib.msrnn_chat_apply(t, arr, len(pairs), int(bool(add_assistant)), buf, len(buf),
                                ctypes.byref(n)))
    return buf.raw[:n.value].decode("utf-8", "replace")


def memory_names():
    """The memories a session takes (Model.session(memory=...)): "full", "window", "sink", ..."""
    out, i = [], 0
    while True:
        n = lib.msrnn_memory_name(i)
        if n is None:
            return out
        out.append(n.decode())
        i += 1
