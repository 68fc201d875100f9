/* msrnn.h — the public interface of libmsrnn.
 *
 * msrnn runs transformer language models stored as GGUF files on the CPU. A model is opened once
 * (weights are memory-mapped, never copied); any number of sessions can then be opened on it, each
 * with its own memory (the KV cache, or a method's recurrent state) sized up front. Link with
 * `pkg-config --cflags --libs msrnn`; examples/ holds two short programs.
 *
 * Conventions (every function follows them unless its comment says otherwise)
 *
 * Errors. A function that can fail returns an msrnn_status (MSRNN_OK is 0). On failure
 * msrnn_last_error() gives a message naming what is wrong (the file, field or argument, and the
 * value expected), an out-pointer is set to NULL, and nothing else the caller can see has changed.
 * Bad input — a malformed file, an out-of-range token, an absurd size — is a status, never a
 * crash. Functions that return a count, a size or a pointer into an object cannot fail once their
 * object is open; passing NULL for an object they require is a programming error (like passing
 * NULL to strlen).
 *
 * Ownership. Every object is opaque. Each *_open allocates one, which the matching *_close frees;
 * *_close(NULL) does nothing. Sessions and batches keep a pointer to their model: close them
 * before the model. Memory the library returns (msrnn_last_error's message, msrnn_status_name,
 * msrnn_version, msrnn_model_get_info and its architecture string, unused tensor names, session
 * logits) belongs to the library and lives as long as its object (or, for static strings, for
 * ever). Memory the caller passes is only read or written during the call and never kept: the
 * parameter structs and their strings may be freed once the call returns.
 *
 * Threads. The library has no mutable global state; msrnn_last_error() is per thread.
 *   - A model is read-only once opened: any number of threads may use one model at once (info,
 *     tokenizer, msrnn_session_open, msrnn_session_bytes_needed, msrnn_perplexity, and evaluating
 *     its sessions).
 *   - A session, a batch and a sampler are used by one thread at a time (the caller serialises
 *     calls on one object); different sessions of one model may be evaluated by different threads
 *     at the same time, with the same results as one at a time, bit for bit. msrnn_batch_eval
 *     uses the sessions it is given: none of them may be in use elsewhere during that call.
 *   - Each evaluation runs an OpenMP team of the object's n_threads (0: every core). Sessions
 *     evaluated at the same time each run their own team: give each cores / concurrent sessions,
 *     or the machine is oversubscribed.
 *   - msrnn_model_close must not run while any other call uses the model or its sessions.
 *
 * Memory. Every buffer a session needs is allocated when it is opened (msrnn_session_bytes says
 * how much, msrnn_session_bytes_needed beforehand); evaluating tokens allocates nothing, so a
 * bounded memory runs for ever in the bytes it started with. The library never prints, never
 * exits the process and installs no signal handlers.
 *
 * Stability. Within one major version (MSRNN_VERSION_MAJOR, the shared library's SONAME) no
 * function is removed or changes its signature and no public struct changes its layout;
 * tools/abi-check.py holds the library to it against the recorded ABI (abi/msrnn.abi).
 */
#ifndef MSRNN_H
#define MSRNN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- version --------------------------------------------------------------------------------- */

/* The API version this header describes. MAJOR changes when a function is removed or changes its
 * signature, or a public struct its layout (the shared library's SONAME is libmsrnn.so.MAJOR, so
 * programs built against another major version refuse to load rather than misbehave); MINOR when
 * functions are added; PATCH for fixes alone. */
#define MSRNN_VERSION_MAJOR 1
#define MSRNN_VERSION_MINOR 1
#define MSRNN_VERSION_PATCH 0
#define MSRNN_VERSION_STRING "1.1.0"
#define MSRNN_VERSION_NUMBER                                                                       \
    (MSRNN_VERSION_MAJOR * 10000 + MSRNN_VERSION_MINOR * 100 + MSRNN_VERSION_PATCH)

/* The version of the library actually linked (which may be newer than the header a program was
 * compiled with, within one major version): "MAJOR.MINOR.PATCH", a static string, and the same as
 * MSRNN_VERSION_NUMBER's formula. A program can compare msrnn_version_number() / 10000 with
 * MSRNN_VERSION_MAJOR at start-up, as zlib's users compare zlibVersion(). */
const char *msrnn_version(void);
int msrnn_version_number(void);

typedef enum {
    MSRNN_OK = 0,
    MSRNN_ERR_IO,          /* a file could not be opened, read, mapped or written */
    MSRNN_ERR_FORMAT,      /* a file is malformed (bad magic, truncated, out-of-range data...) */
    MSRNN_ERR_INVALID,     /* a bad argument: out-of-range token, wrong size, bad flag value */
    MSRNN_ERR_NOMEM,       /* an allocation failed or a requested size is absurd */
    MSRNN_ERR_UNSUPPORTED, /* a valid file that uses something msrnn does not implement */
    MSRNN_ERR_FULL,        /* the session's context is full */
} msrnn_status;

/* The message of the most recent failure on this thread ("" if none): a thread-local buffer,
 * valid until the next failing call on the same thread. */
const char *msrnn_last_error(void);
/* A short static name of a status ("malformed file"); "unknown status" for a value not above. */
const char *msrnn_status_name(msrnn_status st);

/* ---- models ---------------------------------------------------------------------------------- */

typedef struct msrnn_model msrnn_model;

typedef struct {
    int n_vocab;
    int dim;        /* model width D */
    int n_layers;   /* L */
    int n_heads;    /* H query heads */
    int n_kv_heads; /* H_kv key/value heads */
    int head_dim;   /* d */
    int ffn_dim;    /* SwiGLU hidden width */
    int n_ctx;      /* trained context length */
    float rope_base;
    float norm_eps;
    int tied_output; /* 1 when the output head reuses token_embd */
    int bos_id, eos_id;
    uint64_t n_params;
    uint64_t weight_bytes;    /* bytes of tensor data in the file */
    const char *architecture; /* general.architecture: "llama", "infini" (a static string) */
} msrnn_model_info;

/* Open a GGUF model file: its header, metadata and tensor table are checked (every tensor's type,
 * shape and extent against the architecture's parameter list), the file is memory-mapped and the
 * tokenizer read. MSRNN_ERR_IO (the path cannot be opened or mapped), MSRNN_ERR_FORMAT (the message
 * names the field or tensor and what was expected), MSRNN_ERR_UNSUPPORTED (an architecture or
 * weight type msrnn does not run), MSRNN_ERR_NOMEM. */
msrnn_status msrnn_model_open(const char *path, msrnn_model **out);
/* Unmap the file and free the model. Its sessions and batches must be closed first. */
void msrnn_model_close(msrnn_model *m);
/* The model's hyper-parameters; the struct lives until msrnn_model_close. */
const msrnn_model_info *msrnn_model_get_info(const msrnn_model *m);
/* The tensors of the file that the model does not use: those its architecture's parameter list
 * (for the file's hyper-parameters) does not name, e.g. the layers beyond a lowered block_count.
 * A checkpoint's AdamW moments (opt.m.* and opt.v.*, in a file with msrnn.train.step) do not count.
 * Opening succeeds anyway; the command-line tool warns, and refuses with --strict. Names are in
 * file order and live until msrnn_model_close. */
int msrnn_model_n_unused(const msrnn_model *m);
const char *msrnn_model_unused_name(const msrnn_model *m, int i);

/* ---- sessions: one attention state over a model ---------------------------------------------- */

typedef struct msrnn_session msrnn_session;

typedef struct {
    int n_ctx;     /* the full memory: longest sequence the session accepts (0: the model's n_ctx);
                      bounded memories accept any length */
    int n_threads; /* worker threads (0: all cores) */
    int n_batch;   /* tokens processed together during prompt evaluation (0: 512); < 0: no
                      workspace of its own — the session is advanced by msrnn_batch_eval alone
                      (msrnn_session_eval refuses), as a server's slots are */
    int kv_f16;    /* store the KV cache as f16 instead of f32 */
    /* The attention memory (METHODS.md §1), per layer:
     *   "full" (default, NULL too): every token kept;
     *   "window": the last kv_size tokens; "sink": the first kv_sinks tokens + the most recent;
     *   "h2o": kv_size/2 most recent + the rest by accumulated attention;
     *   "tova": evict the entry the newest query attends to least (mean over all query heads);
     *   "tova-head": TOVA with a kept set per kv head;
     *   "merge": the first kv_sinks tokens + the most recent, every evicted token folded into
     *            one summary slot per kv head (Σk, Σv, n), read as one more softmax entry with
     *            logit q·(Σk/n)/sqrt(d) + ln n + kv_merge_bias and value Σv/n; the summary
     *            takes one entry of the budget (msrnn's own; METHODS.md §1);
     *   "merge-var": merge with Σk² too, the logit adding ½·Σ_i q_i²·var_i/d (two entries);
     *   "merge-clusters": up to kv_clusters summary columns per kv head (one entry each), an
     *            evicted token a new column, the closest two (n_i·n_j/(n_i+n_j)·|μ_i − μ_j|²
     *            over keys) merged when there is one too many. */
    const char *memory;
    int kv_size;  /* entries kept per layer by the bounded memories */
    int kv_sinks; /* "sink", "merge": first tokens never evicted (0: the default 4; < 0: none) */
    /* 1: prompt batches of the full memory use blocked sgemm attention (fast; default). 0: every
     * memory attends token by token through the same scan, so a bounded memory whose budget covers
     * the input gives bit-identical logits to full (perplexity sets this). */
    int batched_attention;
    float
        kv_merge_bias; /* "merge*": β of the summary's logit (default -1; -INFINITY: never read) */
    int kv_clusters;   /* "merge-clusters": summary columns per kv head, 1..64 (0: 4) */
} msrnn_session_params;

/* The defaults every field above documents: the full memory of the model's context, all cores,
 * n_batch 512, f32 cache, batched attention. Start from these and set what differs, so that a
 * program keeps working when a later minor version documents a new default. */
msrnn_session_params msrnn_session_default_params(void);
/* A memory's settings with their defaults resolved, as msrnn_session_open will use them: sinks
 * (kv_sinks 0: 4, < 0: none; counted for sink and merge*), clusters (kv_clusters <= 0: 4; used by
 * merge-clusters), and the smallest kv_size the memory accepts with them (full: 0, it has no
 * budget; sink: sinks + 1; merge: sinks + 2; merge-var: sinks + 3; merge-clusters: sinks +
 * clusters + 1; the others 1). MSRNN_ERR_INVALID for an unknown memory name. */
typedef struct {
    int sinks, clusters, min_kv_size;
} msrnn_memory_settings;
msrnn_status msrnn_memory_settings_of(const msrnn_session_params *p, msrnn_memory_settings *out);
/* 1 when a session of m opened with p keeps a memory of fixed size however many tokens it is fed
 * (a bounded KV cache; Infini-attention's and DiJiang's recurrent state, even with memory "full",
 * which for them names their one memory), so that no context limit applies to it; 0 when its
 * memory grows with the input (the full KV cache) or p would be refused. Answered by the model's
 * parts themselves, not by the memory's name. */
int msrnn_memory_is_bounded(const msrnn_model *m, const msrnn_session_params *p);
/* The i-th name msrnn_session_params.memory takes ("full", "window", "sink", "h2o", "tova", …),
 * NULL past the last: for menus, flags and error messages. */
const char *msrnn_memory_name(int i);
/* Open a session on m with parameters p (NULL: the defaults), allocating all its buffers now.
 * MSRNN_ERR_INVALID for parameters the model's architecture refuses (an unknown memory name, a
 * kv_size below its minimum, a memory the architecture does not have), MSRNN_ERR_NOMEM when the
 * bytes exceed what the machine has available. */
msrnn_status msrnn_session_open(msrnn_model *m, const msrnn_session_params *p, msrnn_session **out);
void msrnn_session_close(msrnn_session *s);
/* Forget every token seen: the next token is at position 0. */
void msrnn_session_reset(msrnn_session *s);
/* Tokens fed so far (the position of the next token); 64-bit, as a bounded session runs for ever.
 */
int64_t msrnn_session_n_past(const msrnn_session *s);
/* Bytes held by the session's buffers (KV cache plus scratch), fixed at open. */
size_t msrnn_session_bytes(const msrnn_session *s);
/* The bytes msrnn_session_open(m, p) would allocate (what msrnn_session_bytes() will then report),
 * computed without allocating, so a caller can refuse a request that does not fit first. The same
 * parameter checks as open (MSRNN_ERR_INVALID). msrnn_session_open itself refuses, with
 * MSRNN_ERR_NOMEM and the byte count, a session above the machine's available memory
 * (MemAvailable; swap not counted). */
msrnn_status msrnn_session_bytes_needed(const msrnn_model *m, const msrnn_session_params *p,
                                        size_t *bytes);

/* The entries a bounded memory holds now in `layer` (head: the kv head for "tova-head", else -1):
 * writes up to cap absolute positions in ascending order to pos and, if score is non-NULL, each
 * entry's current eviction score (tova: the newest query's probability averaged over the heads;
 * h2o: the accumulated probability summed over heads; others: 0). Returns the number of entries
 * held, which may exceed cap (call once with cap 0 to size the arrays); 0 for a layer out of range
 * and for architectures whose memory keeps no tokens (infini, dijiang). */
int msrnn_session_kept(const msrnn_session *s, int layer, int head, int64_t *pos, float *score,
                       int cap);
/* A summary memory's ("merge", "merge-var", "merge-clusters") state in `layer`: *merged (if
 * non-NULL) = the tokens folded into the summary (every kv head of a layer folds the same tokens:
 * the tokens seen minus the entries kept), counts[0..cap) (if non-NULL) = the tokens in each
 * summary column of kv head `head` (-1: 0), in the order the columns were made. Returns the number
 * of columns (0 before the first fold, and for the other memories). */
int msrnn_session_summary(const msrnn_session *s, int layer, int head, int64_t *merged,
                          int64_t *counts, int cap);
/* Bytes of the attention memory alone (constant once a bounded memory is full). */
size_t msrnn_session_memory_bytes(const msrnn_session *s);

/* Feed n >= 1 tokens (in batches of n_batch). If logits_all is non-NULL it receives n × n_vocab
 * logits (row i for token i); the last token's logits are always available through
 * msrnn_session_logits(). Every token is checked first (MSRNN_ERR_INVALID for one outside the
 * vocabulary; MSRNN_ERR_FULL when the full memory's n_ctx would overflow, naming it), and then
 * nothing has changed. A session opened with n_batch < 0 is refused (msrnn_batch_eval feeds it). */
msrnn_status msrnn_session_eval(msrnn_session *s, const int32_t *tokens, int n, float *logits_all);
/* The n_vocab logits of the last token fed: a buffer of the session's own (never NULL; zeros
 * before the first token), overwritten by the next eval and valid until msrnn_session_close. */
const float *msrnn_session_logits(const msrnn_session *s);

/* ---- batches: several sessions advanced by one forward pass --------------------------------- */

/* A batch workspace: the activations of up to n_tokens tokens (0: 512), whatever sessions they
 * belong to, and the threads every matmul of the pass uses (0: all cores). One forward pass then
 * reads every weight once for all the sessions, which is what makes serving many streams at once
 * cheaper than serving them in turn. A batch may be used with any sessions of the model it was
 * opened on, one call at a time. */
typedef struct msrnn_batch msrnn_batch;
msrnn_status msrnn_batch_open(msrnn_model *m, int n_tokens, int n_threads, msrnn_batch **out);
void msrnn_batch_close(msrnn_batch *b);
/* Bytes of the workspace, fixed at open. */
size_t msrnn_batch_bytes(const msrnn_batch *b);
/* Feed n_tokens[i] > 0 tokens to sessions[i], for i < n_seq, in one pass: each session attends
 * through its own memory, exactly as msrnn_session_eval(sessions[i], tokens[i], n_tokens[i])
 * would (same logits up to the order of float sums in the matmuls), and its last token's logits
 * are then in msrnn_session_logits(sessions[i]). The sessions must be distinct and of the batch's
 * model; Σ n_tokens <= the batch's n_tokens. Every check is made before any state changes
 * (MSRNN_ERR_INVALID, or MSRNN_ERR_FULL naming the session whose context would overflow). */
msrnn_status msrnn_batch_eval(msrnn_batch *b, msrnn_session *const *sessions,
                              const int32_t *const *tokens, const int *n_tokens, int n_seq);

/* ---- saved sessions ------------------------------------------------------------------------- */

/* Write the session's state (its memory, position and last logits) to path, atomically (a
 * temporary file renamed over it). The file names the model it belongs to (shapes plus a checksum
 * of the weights' first bytes) and the memory's settings, and carries a checksum of its data. */
msrnn_status msrnn_session_save(const msrnn_session *s, const char *path);
/* Restore a saved state into s, which must be a session of the same model opened with the same
 * memory settings (memory, kv_size, sinks, clusters, merge bias, n_ctx for the full cache, kv_f16).
 * A file that is truncated, corrupt (checksum), of another model or other settings is refused with
 * MSRNN_ERR_FORMAT or MSRNN_ERR_INVALID naming what differs; s is then left unchanged. */
msrnn_status msrnn_session_load(msrnn_session *s, const char *path);

/* ---- perplexity: the long-document protocol (METHODS.md §1) ---------------------------------- */

/* Each text is tokenized whole (no BOS) and cut into consecutive chunks of ctx − 1 tokens (the
 * last one shorter); each chunk is evaluated from an empty memory as BOS + chunk, the memory's
 * policy applied token by token, so that every text token is scored exactly once. This is what
 * `msrnn perplexity` runs, and gives the same numbers. */
typedef struct {
    int ctx;        /* chunk length in tokens, BOS included (0: the session's n_ctx if set, else the
                       model's trained context); >= 2 */
    int max_chunks; /* > 0: score only the first max_chunks chunks of each text */
    /* The memory to score under (memory, kv_size, kv_sinks, kv_f16, kv_merge_bias, kv_clusters)
     * and the threads (n_threads, 0: all cores; chunks are spread over one single-threaded session
     * per thread, and the sums are added in chunk order, so the result does not depend on the
     * thread count). n_ctx is taken as ctx; batched_attention is always 0 (every memory attends
     * through the same per-token scan, so comparisons between memories are exact). */
    msrnn_session_params session;
} msrnn_perplexity_params;

typedef struct {
    uint64_t n_scored; /* text tokens scored */
    double nll_sum;    /* their total negative log-likelihood, in nats */
    double nll_mean;   /* nll_sum / n_scored */
    double ppl;        /* exp(nll_mean) */
    double
        bits_per_byte;   /* nll_sum / ln 2 / bytes of text scored (pro rata when max_chunks cuts) */
    double seconds;      /* wall time of the scoring (tokenization not included) */
    double tokens_per_s; /* n_scored / seconds */
    uint64_t memory_bytes; /* the most msrnn_session_memory_bytes() any of its sessions reached */
} msrnn_perplexity_result;

msrnn_perplexity_params msrnn_perplexity_default_params(void);
/* Score texts[i] (lens[i] bytes of UTF-8; a NUL is not needed) for i < n_texts under p (NULL: the
 * defaults) into *r. MSRNN_ERR_INVALID if ctx < 2, the session parameters are refused, or no text
 * has a token to score; otherwise the first failure of a session stops the run and is returned
 * with its message. r is written only on success. */
msrnn_status msrnn_perplexity(msrnn_model *m, const char *const *texts, const size_t *lens,
                              int n_texts, const msrnn_perplexity_params *p,
                              msrnn_perplexity_result *r);

/* ---- tokenizer (read from the model file's metadata) ----------------------------------------- */

/* Encode len bytes of UTF-8 text (no NUL needed; a malformed byte is read as U+FFFD, as
 * SentencePiece does) with the model's tokenizer, BOS first if add_bos. Writes at most cap ids;
 * *n_out is the number the full encoding needs (so a call with cap too small returns
 * MSRNN_ERR_INVALID and tells the size to allocate). MSRNN_ERR_UNSUPPORTED when the file has no
 * vocabulary. */
msrnn_status msrnn_tokenize(const msrnn_model *m, const char *text, size_t len, int add_bos,
                            int32_t *ids, size_t cap, size_t *n_out);
/* An ids buffer of this many entries always holds the encoding of len bytes (BOS included). */
size_t msrnn_tokenize_max(const msrnn_model *m, size_t len);
/* msrnn_tokenize as llama.cpp's llama_tokenize with parse_special: the text of a special token
 * (control, user-defined or unknown: "<s>", "</s>", "<|im_start|>" …, and end-of-turn texts such as
 * "<|im_end|>" whatever the file calls them, as llama.cpp does) becomes that token, and the text
 * between is encoded piece by piece (SentencePiece's leading space only on a piece that starts the
 * text or follows a special token). For prompts built by msrnn_chat_apply. Note that text inside
 * them becomes special tokens too: a message holding "<|im_end|>" ends its turn there, as with
 * llama-server; tokenize text you do not trust with msrnn_tokenize. */
msrnn_status msrnn_tokenize_special(const msrnn_model *m, const char *text, size_t len, int add_bos,
                                    int32_t *ids, size_t cap, size_t *n_out);
/* An ids buffer of this many entries always holds msrnn_tokenize_special's encoding. */
size_t msrnn_tokenize_special_max(const msrnn_model *m, size_t len);
/* The bytes of one token as it appears in text (prev: the previous id, -1 at the start; the
 * SentencePiece leading space is dropped after BOS or at the start). Returns the length, writing
 * at most cap bytes to buf (no NUL; a return above cap means the piece was cut). A byte token
 * gives its one byte, so a character split over several tokens is whole only once they are
 * joined. 0 for a control token, an id outside the vocabulary, or a file without one. */
size_t msrnn_token_to_text(const msrnn_model *m, int32_t prev, int32_t id, char *buf, size_t cap);

/* ---- chat templates ----------------------------------------------------------------------------
 * A conversation as the one prompt text a chat model was trained on. msrnn does not run Jinja: as
 * llama.cpp's llama_chat_apply_template, it recognises the common templates by their markers and
 * renders each its own way, with the same output as llama.cpp's. */

typedef struct {
    const char *role; /* "system", "user", "assistant" (others passed as the template takes them) */
    const char *content;
} msrnn_chat_message;

/* The i-th template msrnn renders ("plain", "chatml", "llama2", "llama2-sys", …, "llama3"), NULL
 * past the last. "plain" is msrnn's own: a system message then "User: …" / "Assistant: …" lines,
 * ending in "Assistant:". */
const char *msrnn_chat_template_name(int i);
/* The template a name or a Jinja template's text (e.g. msrnn_model_chat_template) is, as one of
 * msrnn_chat_template_name's; NULL when msrnn does not know it. */
const char *msrnn_chat_template_detect(const char *tmpl);
/* The text that ends an assistant's turn under a template (e.g. "<|im_end|>", "</s>"; "\nUser:"
 * for plain): a stop string, or a token to stop at where it is one special token. NULL for an
 * unknown name. */
const char *msrnn_chat_template_end(const char *name);
/* The model file's own template (tokenizer.chat_template), NUL-terminated, owned by the model;
 * NULL when the file has none. */
const char *msrnn_model_chat_template(const msrnn_model *m);
/* Render n messages with a template (a name or a Jinja text as msrnn_chat_template_detect takes;
 * NULL: "plain"), ending with the opening of the assistant's turn when add_assistant. *len is the
 * text's length; at most cap − 1 bytes and a NUL are written (call with buf NULL to size it; a
 * buf too small gets the cut text and MSRNN_ERR_INVALID).
 * MSRNN_ERR_UNSUPPORTED for a template msrnn does not know; MSRNN_ERR_INVALID for a message
 * without a role or content (and, for plain, a role other than system, developer, user or
 * assistant). Tokenize the result with msrnn_tokenize_special. */
msrnn_status msrnn_chat_apply(const char *tmpl, const msrnn_chat_message *msgs, size_t n,
                              int add_assistant, char *buf, size_t cap, size_t *len);

/* ---- sampling ---------------------------------------------------------------------------------
 */

typedef struct {
    float temperature;    /* <= 0: greedy */
    int top_k;            /* <= 0: off */
    float top_p;          /* >= 1: off */
    float min_p;          /* <= 0: off */
    float repeat_penalty; /* 1: off */
    int repeat_last_n;    /* how many recent tokens the penalty looks at */
    uint64_t seed;
} msrnn_sampler_params;

typedef struct msrnn_sampler msrnn_sampler;

/* temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1 (off), repeat_last_n 64,
 * seed 0 (every seed, 0 included, gives its own fixed sequence: the same seed, logits and history
 * draw the same tokens on every run and machine). */
msrnn_sampler_params msrnn_sampler_default_params(void);
/* A sampler for logits of n_vocab entries: its random state and n_vocab-sized scratch, allocated
 * now. MSRNN_ERR_INVALID for a NaN temperature, top_p < 0, min_p > 1, repeat_penalty <= 0,
 * repeat_last_n < 0, or n_vocab outside 1..2^24. */
msrnn_status msrnn_sampler_open(const msrnn_sampler_params *p, int n_vocab, msrnn_sampler **out);
void msrnn_sampler_close(msrnn_sampler *s);
/* Pick the next token from logits (not modified); history = the tokens so far (prompt included),
 * of which the last repeat_last_n are penalised. Order: repetition penalty, top-k, temperature
 * softmax, top-p, min-p, draw (temperature <= 0: argmax after the penalty). Without top-p and
 * min-p nothing needs the candidates in order, and the draw walks them unsorted (the same
 * distribution in O(n_vocab); a seed's sequence differs from the sorted walk's). */
int32_t msrnn_sample(msrnn_sampler *s, const float *logits, const int32_t *history, int n_history);

#ifdef __cplusplus
}
#endif
#endif
