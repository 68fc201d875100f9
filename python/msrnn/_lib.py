"""_lib — the raw ctypes layer over libmsrnn.so: finding and loading the library, the public structs
of include/msrnn.h (field by field, in order) and every function's argument and result types.

Nothing here is meant for direct use (see the msrnn package); `lib` is the loaded CDLL and
`library_path` what it was loaded from."""
import ctypes
import ctypes.util
import os
import sys

# The major version of the C API these declarations describe (include/msrnn.h MSRNN_VERSION_MAJOR):
# a library of another major version has other signatures or struct layouts and is refused.
API_MAJOR = 1
SONAME = "libmsrnn.so.%d" % API_MAJOR

c_int, c_float, c_double, c_size_t = ctypes.c_int, ctypes.c_float, ctypes.c_double, ctypes.c_size_t
c_int32, c_int64, c_uint64 = ctypes.c_int32, ctypes.c_int64, ctypes.c_uint64
c_char_p, c_void_p = ctypes.c_char_p, ctypes.c_void_p
P = ctypes.POINTER

# ---- structs ------------------------------------------------------------------------------------


class model_info(ctypes.Structure):
    _fields_ = [("n_vocab", c_int), ("dim", c_int), ("n_layers", c_int), ("n_heads", c_int),
                ("n_kv_heads", c_int), ("head_dim", c_int), ("ffn_dim", c_int), ("n_ctx", c_int),
                ("rope_base", c_float), ("norm_eps", c_float), ("tied_output", c_int),
                ("bos_id", c_int), ("eos_id", c_int), ("n_params", c_uint64),
                ("weight_bytes", c_uint64), ("architecture", c_char_p)]


class session_params(ctypes.Structure):
    _fields_ = [("n_ctx", c_int), ("n_threads", c_int), ("n_batch", c_int), ("kv_f16", c_int),
                ("memory", c_char_p), ("kv_size", c_int), ("kv_sinks", c_int),
                ("batched_attention", c_int), ("kv_merge_bias", c_float), ("kv_clusters", c_int)]


class memory_settings(ctypes.Structure):
    _fields_ = [("sinks", c_int), ("clusters", c_int), ("min_kv_size", c_int)]


class perplexity_params(ctypes.Structure):
    _fields_ = [("ctx", c_int), ("max_chunks", c_int), ("session", session_params)]


class perplexity_result(ctypes.Structure):
    _fields_ = [("n_scored", c_uint64), ("nll_sum", c_double), ("nll_mean", c_double),
                ("ppl", c_double), ("bits_per_byte", c_double), ("seconds", c_double),
                ("tokens_per_s", c_double), ("memory_bytes", c_uint64)]


class chat_message(ctypes.Structure):
    _fields_ = [("role", c_char_p), ("content", c_char_p)]


class sampler_params(ctypes.Structure):
    _fields_ = [("temperature", c_float), ("top_k", c_int), ("top_p", c_float),
                ("min_p", c_float), ("repeat_penalty", c_float), ("repeat_last_n", c_int),
                ("seed", c_uint64)]


STRUCTS = {"msrnn_model_info": model_info, "msrnn_session_params": session_params,
           "msrnn_memory_settings": memory_settings, "msrnn_perplexity_params": perplexity_params,
           "msrnn_perplexity_result": perplexity_result, "msrnn_sampler_params": sampler_params}

# opaque handles: only ever pointers
model_p = session_p = batch_p = sampler_p = c_void_p
status = c_int  # msrnn_status

# ---- functions: name -> (restype, argtypes), in the header's order ------------------------------

FUNCTIONS = {
    "msrnn_version": (c_char_p, []),
    "msrnn_version_number": (c_int, []),
    "msrnn_last_error": (c_char_p, []),
    "msrnn_status_name": (c_char_p, [status]),
    "msrnn_model_open": (status, [c_char_p, P(model_p)]),
    "msrnn_model_close": (None, [model_p]),
    "msrnn_model_get_info": (P(model_info), [model_p]),
    "msrnn_model_n_unused": (c_int, [model_p]),
    "msrnn_model_unused_name": (c_char_p, [model_p, c_int]),
    "msrnn_session_default_params": (session_params, []),
    "msrnn_memory_settings_of": (status, [P(session_params), P(memory_settings)]),
    "msrnn_memory_is_bounded": (c_int, [model_p, P(session_params)]),
    "msrnn_session_open": (status, [model_p, P(session_params), P(session_p)]),
    "msrnn_session_close": (None, [session_p]),
    "msrnn_session_reset": (None, [session_p]),
    "msrnn_session_n_past": (c_int64, [session_p]),
    "msrnn_session_bytes": (c_size_t, [session_p]),
    "msrnn_session_bytes_needed": (status, [model_p, P(session_params), P(c_size_t)]),
    "msrnn_session_kept": (c_int, [session_p, c_int, c_int, P(c_int64), P(c_float), c_int]),
    "msrnn_session_summary": (c_int, [session_p, c_int, c_int, P(c_int64), P(c_int64), c_int]),
    "msrnn_session_memory_bytes": (c_size_t, [session_p]),
    "msrnn_session_eval": (status, [session_p, P(c_int32), c_int, P(c_float)]),
    "msrnn_session_logits": (P(c_float), [session_p]),
    "msrnn_batch_open": (status, [model_p, c_int, c_int, P(batch_p)]),
    "msrnn_batch_close": (None, [batch_p]),
    "msrnn_batch_bytes": (c_size_t, [batch_p]),
    "msrnn_batch_eval": (status, [batch_p, P(session_p), P(P(c_int32)), P(c_int), c_int]),
    "msrnn_session_save": (status, [session_p, c_char_p]),
    "msrnn_session_load": (status, [session_p, c_char_p]),
    "msrnn_perplexity_default_params": (perplexity_params, []),
    "msrnn_perplexity": (status, [model_p, P(c_char_p), P(c_size_t), c_int, P(perplexity_params),
                                  P(perplexity_result)]),
    "msrnn_tokenize": (status, [model_p, c_char_p, c_size_t, c_int, P(c_int32), c_size_t,
                                P(c_size_t)]),
    "msrnn_tokenize_max": (c_size_t, [model_p, c_size_t]),
    "msrnn_tokenize_special": (status, [model_p, c_char_p, c_size_t, c_int, P(c_int32), c_size_t,
                                        P(c_size_t)]),
    "msrnn_tokenize_special_max": (c_size_t, [model_p, c_size_t]),
    "msrnn_model_chat_template": (c_char_p, [model_p]),
    "msrnn_memory_name": (c_char_p, [c_int]),
    "msrnn_chat_template_name": (c_char_p, [c_int]),
    "msrnn_chat_template_detect": (c_char_p, [c_char_p]),
    "msrnn_chat_template_end": (c_char_p, [c_char_p]),
    "msrnn_chat_apply": (status, [c_char_p, P(chat_message), c_size_t, c_int, c_char_p, c_size_t,
                                  P(c_size_t)]),
    "msrnn_token_to_text": (c_size_t, [model_p, c_int32, c_int32, c_char_p, c_size_t]),
    "msrnn_sampler_default_params": (sampler_params, []),
    "msrnn_sampler_open": (status, [P(sampler_params), c_int, P(sampler_p)]),
    "msrnn_sampler_close": (None, [sampler_p]),
    "msrnn_sample": (c_int32, [sampler_p, P(c_float), P(c_int32), c_int]),
}

# ---- loading ------------------------------------------------------------------------------------


def _candidates():
    """(how, what to pass to CDLL) in the order tried."""
    env = os.environ.get("MSRNN_LIBRARY")
    if env:  # an explicit choice: the only one tried
        return [("MSRNN_LIBRARY", env)]
    out = [("the dynamic loader's search (LD_LIBRARY_PATH, ld.so.cache, /usr/lib)", SONAME)]
    found = ctypes.util.find_library("msrnn")
    if found and found != SONAME:
        out.append(("ctypes.util.find_library('msrnn')", found))
    prefixes = [sys.prefix, "/usr/local", os.path.expanduser("~/.local")]
    for prefix in dict.fromkeys(prefixes):  # in order, without repeats
        for libdir in ("lib", "lib64"):
            path = os.path.join(prefix, libdir, SONAME)
            if os.path.exists(path):
                out.append(("prefix " + prefix, path))
    return out


def _load():
    tried = []
    for how, what in _candidates():
        try:
            return ctypes.CDLL(what), what
        except OSError as e:
            tried.append("  %s: %s" % (how, e))
    raise ImportError(
        "msrnn: cannot load the C library %s; tried:\n%s\nInstall it (make install PREFIX=...) "
        "or set MSRNN_LIBRARY to the path of libmsrnn.so" % (SONAME, "\n".join(tried)))


def _declare(dll, path):
    if hasattr(dll, "msrnn_version_number") and hasattr(dll, "msrnn_version"):
        dll.msrnn_version_number.restype, dll.msrnn_version_number.argtypes = c_int, []
        dll.msrnn_version.restype, dll.msrnn_version.argtypes = c_char_p, []
        number = dll.msrnn_version_number()
        if number // 10000 != API_MAJOR:
            raise ImportError("msrnn: %s is version %s (major %d); these bindings are for major "
                              "version %d" % (path, dll.msrnn_version().decode(errors="replace"),
                                              number // 10000, API_MAJOR))
    missing = [name for name in FUNCTIONS if not hasattr(dll, name)]
    if missing:
        raise ImportError("msrnn: %s lacks %s: not the msrnn library, or an older one"
                          % (path, ", ".join(missing)))
    for name, (restype, argtypes) in FUNCTIONS.items():
        f = getattr(dll, name)
        f.restype, f.argtypes = restype, argtypes


lib, library_path = _load()
_declare(lib, library_path)
