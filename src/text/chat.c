/* chat.c — chat templates: a conversation as the one prompt text a chat model was trained on.
 *
 * A GGUF file carries its template as Jinja text (tokenizer.chat_template). msrnn does not run
 * Jinja: like llama.cpp's llama_chat_apply_template, it recognises the common templates by their
 * markers and renders each with a fixed routine written from the model makers' documented formats.
 * The set and each routine's output match llama.cpp's (tests/test_chat_template.py compares every
 * template, named and recognised from real templates' texts, against libllama's own function), so
 * that a model prompted through `msrnn serve` sees what it would see through llama-server. "plain"
 * is msrnn's own, for models without a template (msrnn's trained models).
 */
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "msrnn.h"

/* ---- an output buffer ----------------------------------------------------------------------- */

typedef struct {
    char *p;
    size_t n, cap;
    int failed;
} sbuf;

static void put_n(sbuf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        char *g = realloc(b->p, cap);
        if (!g) {
            b->failed = 1;
            return;
        }
        b->p = g, b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void put(sbuf *b, const char *s) { put_n(b, s, strlen(s)); }

/* C's isspace in the "C" locale */
static int space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* s without its leading and trailing white space */
static void put_trim(sbuf *b, const char *s) {
    size_t n = strlen(s);
    while (n && space(*s)) s++, n--;
    while (n && space(s[n - 1])) n--;
    put_n(b, s, n);
}

static int is(const char *a, const char *b) { return strcmp(a, b) == 0; }

/* ---- the templates ----------------------------------------------------------------------------
 */

typedef const msrnn_chat_message msg;
typedef void render_fn(int variant, msg *m, size_t n, int add, sbuf *b);

static void r_plain(int v, msg *m, size_t n, int add, sbuf *b) {
    (void)v;
    for (size_t i = 0; i < n; i++) {
        const char *r = m[i].role;
        if (is(r, "user") || is(r, "assistant")) {
            put(b, is(r, "user") ? "User: " : "Assistant: ");
            put(b, m[i].content), put(b, "\n");
        } else { /* system, developer */
            put(b, m[i].content), put(b, "\n\n");
        }
    }
    if (add) put(b, "Assistant:");
}

static void r_chatml(int phi4, msg *m, size_t n, int add, sbuf *b) {
    for (size_t i = 0; i < n; i++) {
        put(b, "<|im_start|>"), put(b, m[i].role), put(b, phi4 ? "<|im_sep|>" : "\n");
        put(b, m[i].content), put(b, phi4 ? "<|im_end|>" : "<|im_end|>\n");
    }
    if (add) put(b, phi4 ? "<|im_start|>assistant<|im_sep|>" : "<|im_start|>assistant\n");
}

/* Llama 2 ([INST] … [/INST] answer</s>): variant 0 no system block (a system message is written
 * as a line of the first turn), 1 <<SYS>>, 2 <<SYS>> and <s> before every later turn, 3 <<SYS>>
 * with every message trimmed */
static void r_llama2(int v, msg *m, size_t n, int add, sbuf *b) {
    (void)add; /* the prompt ends in "[/INST]" either way */
    int inside = 1;
    put(b, "[INST] ");
    for (size_t i = 0; i < n; i++) {
        if (!inside) {
            inside = 1;
            put(b, v == 2 ? "<s>[INST] " : "[INST] ");
        }
        const int sys = is(m[i].role, "system");
        if (sys && v > 0) put(b, "<<SYS>>\n");
        if (v == 3)
            put_trim(b, m[i].content);
        else
            put(b, m[i].content);
        if (sys)
            put(b, v > 0 ? "\n<</SYS>>\n\n" : "\n");
        else if (is(m[i].role, "user"))
            put(b, " [/INST]");
        else {
            put(b, "</s>");
            inside = 0;
        }
    }
}

/* Mistral's v1 / v3 / v3-tekken: a system message opens the turn; variants 0 v1 (" [INST] "),
 * 1 v3 ("[INST] ", answers trimmed), 2 v3-tekken ("[INST]") */
static void r_mistral(int v, msg *m, size_t n, int add, sbuf *b) {
    (void)add;
    const char *lead = v == 0 ? " " : "", *trail = v == 2 ? "" : " ";
    int inside = 0;
    for (size_t i = 0; i < n; i++) {
        if (!inside) {
            put(b, lead), put(b, "[INST]"), put(b, trail);
            inside = 1;
        }
        if (is(m[i].role, "system")) {
            put(b, m[i].content), put(b, "\n\n");
        } else if (is(m[i].role, "user")) {
            put(b, m[i].content), put(b, lead), put(b, "[/INST]");
        } else {
            put(b, trail);
            if (v == 1)
                put_trim(b, m[i].content);
            else
                put(b, m[i].content);
            put(b, "</s>");
            inside = 0;
        }
    }
}

/* Mistral v7 ([SYSTEM_PROMPT] … [/SYSTEM_PROMPT][INST] … [/INST] answer</s>): variant 0 with a
 * space after each opening tag, 1 (tekken) without */
static void r_mistral7(int v, msg *m, size_t n, int add, sbuf *b) {
    (void)add;
    const char *sp = v == 0 ? " " : "";
    for (size_t i = 0; i < n; i++) {
        if (is(m[i].role, "system")) {
            put(b, "[SYSTEM_PROMPT]"), put(b, sp), put(b, m[i].content), put(b, "[/SYSTEM_PROMPT]");
        } else if (is(m[i].role, "user")) {
            put(b, "[INST]"), put(b, sp), put(b, m[i].content), put(b, "[/INST]");
        } else {
            put(b, sp), put(b, m[i].content), put(b, "</s>");
        }
    }
}

/* <|role|>\ncontent END\n: variant 0 Phi-3 (<|end|>), 1 Zephyr (<|endoftext|>) */
static void r_tagged(int v, msg *m, size_t n, int add, sbuf *b) {
    for (size_t i = 0; i < n; i++) {
        put(b, "<|"), put(b, m[i].role), put(b, "|>\n"), put(b, m[i].content);
        put(b, v == 0 ? "<|end|>\n" : "<|endoftext|>\n");
    }
    if (add) put(b, "<|assistant|>\n");
}

static void r_monarch(int v, msg *m, size_t n, int add, sbuf *b) {
    (void)v;
    for (size_t i = 0; i < n; i++) {
        if (i) put(b, "<s>");
        put(b, m[i].role), put(b, "\n"), put(b, m[i].content), put(b, "</s>\n");
    }
    if (add) put(b, "<s>assistant\n");
}

/* Gemma: no system role (system messages are joined, trimmed, into the next user turn);
 * "assistant" is "model"; every message trimmed */
static void r_gemma(int v, msg *m, size_t n, int add, sbuf *b) {
    (void)v;
    sbuf sys = {0};
    for (size_t i = 0; i < n; i++) {
        if (is(m[i].role, "system")) {
            put_trim(&sys, m[i].content);
            continue;
        }
        const int model = is(m[i].role, "assistant");
        put(b, "<start_of_turn>"), put(b, model ? "model" : m[i].role), put(b, "\n");
        if (sys.n && !model) {
            put_n(b, sys.p, sys.n), put(b, "\n\n");
            sys.n = 0;
        }
        put_trim(b, m[i].content), put(b, "<end_of_turn>\n");
    }
    if (sys.failed) b->failed = 1;
    free(sys.p);
    if (add) put(b, "<start_of_turn>model\n");
}

static void r_openchat(int v, msg *m, size_t n, int add, sbuf *b) {
    (void)v;
    for (size_t i = 0; i < n; i++) {
        if (is(m[i].role, "system")) {
            put(b, m[i].content);
        } else {
            char first[2] = {m[i].role[0], 0};
            if (first[0] >= 'a' && first[0] <= 'z') first[0] = (char)(first[0] - 'a' + 'A');
            put(b, "GPT4 Correct "), put(b, first), put(b, m[i].role[0] ? m[i].role + 1 : "");
            put(b, ": "), put(b, m[i].content);
        }
        put(b, "<|end_of_turn|>");
    }
    if (add) put(b, "GPT4 Correct Assistant:");
}

/* Vicuna: variant 0 plain system text, 1 (Orca) "SYSTEM: " */
static void r_vicuna(int v, msg *m, size_t n, int add, sbuf *b) {
    for (size_t i = 0; i < n; i++) {
        if (is(m[i].role, "system")) {
            if (v) put(b, "SYSTEM: ");
            put(b, m[i].content), put(b, v ? "\n" : "\n\n");
        } else if (is(m[i].role, "user")) {
            put(b, "USER: "), put(b, m[i].content), put(b, "\n");
        } else if (is(m[i].role, "assistant")) {
            put(b, "ASSISTANT: "), put(b, m[i].content), put(b, "</s>\n");
        }
    }
    if (add) put(b, "ASSISTANT:");
}

static void r_llama3(int v, msg *m, size_t n, int add, sbuf *b) {
    (void)v;
    for (size_t i = 0; i < n; i++) {
        put(b, "<|start_header_id|>"), put(b, m[i].role), put(b, "<|end_header_id|>\n\n");
        put_trim(b, m[i].content), put(b, "<|eot_id|>");
    }
    if (add) put(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

typedef struct {
    const char *name;
    render_fn *fn;
    int variant;
    const char *end; /* what ends the assistant's turn */
} template_row;

static const template_row TEMPLATES[] = {
    {"plain", r_plain, 0, "\nUser:"},
    {"chatml", r_chatml, 0, "<|im_end|>"},
    {"llama2", r_llama2, 0, "</s>"},
    {"llama2-sys", r_llama2, 1, "</s>"},
    {"llama2-sys-bos", r_llama2, 2, "</s>"},
    {"llama2-sys-strip", r_llama2, 3, "</s>"},
    {"mistral-v1", r_mistral, 0, "</s>"},
    {"mistral-v3", r_mistral, 1, "</s>"},
    {"mistral-v3-tekken", r_mistral, 2, "</s>"},
    {"mistral-v7", r_mistral7, 0, "</s>"},
    {"mistral-v7-tekken", r_mistral7, 1, "</s>"},
    {"phi3", r_tagged, 0, "<|end|>"},
    {"phi4", r_chatml, 1, "<|im_end|>"},
    {"zephyr", r_tagged, 1, "<|endoftext|>"},
    {"monarch", r_monarch, 0, "</s>"},
    {"gemma", r_gemma, 0, "<end_of_turn>"},
    {"openchat", r_openchat, 0, "<|end_of_turn|>"},
    {"vicuna", r_vicuna, 0, "</s>"},
    {"vicuna-orca", r_vicuna, 1, "</s>"},
    {"llama3", r_llama3, 0, "<|eot_id|>"},
};
enum { N_TEMPLATES = sizeof TEMPLATES / sizeof TEMPLATES[0] };

static const template_row *by_name(const char *name) {
    for (int i = 0; i < N_TEMPLATES; i++)
        if (is(TEMPLATES[i].name, name)) return &TEMPLATES[i];
    return NULL;
}

const char *msrnn_chat_template_name(int i) {
    return i >= 0 && i < N_TEMPLATES ? TEMPLATES[i].name : NULL;
}

/* Recognise a Jinja template by llama.cpp's markers, in llama.cpp's order (a template llama.cpp
 * would take for one msrnn lacks is unknown here, never mistaken for a later one). */
static const char *detect(const char *t) {
#define HAS(s) (strstr(t, s) != NULL)
    if (HAS("<|im_start|>"))
        return HAS("<|im_sep|>") ? "phi4" : HAS("<end_of_utterance>") ? NULL : "chatml";
    if (strncmp(t, "mistral", 7) == 0 || HAS("[INST]")) {
        if (HAS("[SYSTEM_PROMPT]")) return "mistral-v7";
        if (HAS("' [INST] ' + system_message") || HAS("[AVAILABLE_TOOLS]"))
            return HAS(" [INST]")      ? "mistral-v1"
                   : HAS("\"[INST]\"") ? "mistral-v3-tekken"
                                       : "mistral-v3";
        if (HAS("content.strip()")) return "llama2-sys-strip";
        if (HAS("bos_token + '[INST]")) return "llama2-sys-bos";
        return HAS("<<SYS>>") ? "llama2-sys" : "llama2";
    }
    if (HAS("<|assistant|>") && HAS("<|end|>")) return "phi3";
    if (HAS("[gMASK]<sop>")) return NULL;                     /* chatglm4 */
    if (HAS("<|assistant|>") && HAS("<|user|>")) return NULL; /* falcon3, glmedge, exaone */
    if (HAS("<|{{ item['role'] }}|>") && HAS("<|begin_of_image|>")) return NULL; /* glmedge */
    if (HAS("<|user|>") && HAS("<|endoftext|>")) return "zephyr";
    if (HAS("bos_token + message['role']")) return "monarch";
    if (HAS("<start_of_turn>")) return "gemma";
    if (HAS("'\\n\\nAssistant: ' + eos_token")) return NULL; /* orion */
    if (HAS("GPT4 Correct ")) return "openchat";
    if (HAS("USER: ") && HAS("ASSISTANT: ")) return HAS("SYSTEM: ") ? "vicuna-orca" : "vicuna";
    if (HAS("### Instruction:") && HAS("<|EOT|>")) return NULL;               /* deepseek */
    if (HAS("<|START_OF_TURN_TOKEN|>") && HAS("<|USER_TOKEN|>")) return NULL; /* command-r */
    if (HAS("<|start_header_id|>") && HAS("<|end_header_id|>")) return "llama3";
    return NULL;
#undef HAS
}

const char *msrnn_chat_template_detect(const char *tmpl) {
    if (!tmpl) return NULL;
    const template_row *r = by_name(tmpl);
    return r ? r->name : detect(tmpl);
}

const char *msrnn_chat_template_end(const char *name) {
    const template_row *r = name ? by_name(name) : NULL;
    return r ? r->end : NULL;
}

msrnn_status msrnn_chat_apply(const char *tmpl, const msrnn_chat_message *msgs, size_t n,
                              int add_assistant, char *buf, size_t cap, size_t *len) {
    if (len) *len = 0;
    const char *name = msrnn_chat_template_detect(tmpl ? tmpl : "plain");
    const template_row *r = name ? by_name(name) : NULL;
    if (!r)
        return status_fail(MSRNN_ERR_UNSUPPORTED,
                           "chat: the template is not one msrnn knows (msrnn_chat_template_name "
                           "lists them): %.60s",
                           tmpl);
    if (n && !msgs) return status_fail(MSRNN_ERR_INVALID, "chat: NULL messages");
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content)
            return status_fail(MSRNN_ERR_INVALID, "chat: message %zu has no %s", i,
                               msgs[i].role ? "content" : "role");
        if (r->fn == r_plain && !is(msgs[i].role, "system") && !is(msgs[i].role, "developer") &&
            !is(msgs[i].role, "user") && !is(msgs[i].role, "assistant"))
            return status_fail(MSRNN_ERR_INVALID,
                               "chat: message %zu has the role '%.40s'; the plain template takes "
                               "system, developer, user or assistant",
                               i, msgs[i].role);
    }
    sbuf b = {0};
    put(&b, ""); /* an empty rendering is still a string */
    r->fn(r->variant, msgs, n, add_assistant, &b);
    if (b.failed) {
        free(b.p);
        return status_fail(MSRNN_ERR_NOMEM, "chat: out of memory rendering %zu messages", n);
    }
    if (len) *len = b.n;
    if (buf && cap) {
        const size_t k = b.n < cap - 1 ? b.n : cap - 1;
        memcpy(buf, b.p, k);
        buf[k] = 0;
    }
    free(b.p);
    if (buf && b.n >= cap) /* cut: as msrnn_tokenize, the size needed is in *len */
        return status_fail(MSRNN_ERR_INVALID, "chat: the text needs %zu bytes and a NUL, %zu given",
                           b.n, cap);
    return MSRNN_OK;
}
