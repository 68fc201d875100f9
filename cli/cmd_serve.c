/* cmd_serve.c — `msrnn serve`: an OpenAI-compatible HTTP server over the batched engine of
 * serve_engine.c. HTTP is libmicrohttpd's (a thread per connection), JSON is cJSON's; nothing
 * here parses either by hand.
 *
 * Endpoints: POST /v1/completions, POST /v1/chat/completions (JSON, or Server-Sent Events with
 * "stream": true), GET /v1/models, GET /health, GET /metrics (Prometheus text), GET /v1/sessions,
 * DELETE /v1/sessions/ID. A request's thread tokenizes and checks it, submits a job, then waits
 * for the engine's progress (answering once for JSON, or writing each new piece of text as an
 * event); it polls its socket while it waits, so a client that goes away frees its slot within
 * POLL_S.
 */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "cli.h"
#include "common.h"
#include "serve.h"

#define POLL_S 0.05 /* how often a waiting request checks its client and the engine */

typedef struct {
    serve_engine *e;
    msrnn_model *m;
    const char *model_id;
    const char *api_key;
    size_t body_limit;
    int default_max_tokens;
    double t_start;
    const char *chat_template; /* chat's template: a msrnn_chat_template_name */
    int32_t chat_end_id;       /* the token ending the assistant's turn, or -1 */
} server;

typedef struct {
    char *body;
    size_t len;
    int too_big;
} conn_ctx;

/* ---- responses ------------------------------------------------------------------------------ */

static enum MHD_Result send_text(struct MHD_Connection *c, int status, const char *type,
                                 const char *text, size_t len, int retry_after) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    if (retry_after) MHD_add_response_header(r, "Retry-After", "1");
    const enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result send_json(struct MHD_Connection *c, int status, cJSON *obj) {
    char *s = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    if (!s) return MHD_NO;
    const enum MHD_Result ok = send_text(c, status, "application/json", s, strlen(s), 0);
    free(s);
    return ok;
}

static const char *error_type(int status) {
    switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 409: return "conflict_error";
    case 413: return "invalid_request_error";
    case 503: return "server_busy";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

static cJSON *error_json(int status, const char *msg, const char *param) {
    cJSON *o = cJSON_CreateObject(), *err = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(err, "message", msg);
    cJSON_AddStringToObject(err, "type", error_type(status));
    if (param)
        cJSON_AddStringToObject(err, "param", param);
    else
        cJSON_AddNullToObject(err, "param");
    cJSON_AddNumberToObject(err, "code", status);
    return o;
}

static enum MHD_Result send_error(struct MHD_Connection *c, int status, const char *param,
                                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum MHD_Result send_error(struct MHD_Connection *c, int status, const char *param,
                                  const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *obj = error_json(status, msg, param);
    char *s = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    if (!s) return MHD_NO;
    const enum MHD_Result ok =
        send_text(c, status, "application/json", s, strlen(s), status == 503);
    free(s);
    return ok;
}

/* Text as a JSON-safe string: invalid UTF-8 becomes U+FFFD (cJSON copies bytes as they are). */
static char *utf8_clean_dup(const char *s, size_t n) {
    char *out = malloc(n * 3 + 1);
    if (out) out[utf8_clean(s, n, out)] = 0;
    return out;
}

static void add_text(cJSON *o, const char *key, const char *s, size_t n) {
    char *clean = utf8_clean_dup(s, n);
    cJSON_AddStringToObject(o, key, clean ? clean : "");
    free(clean);
}

static char *token_text(const server *sv, int32_t id, size_t *len) {
    static _Thread_local char buf[256];
    size_t n = msrnn_token_to_text(sv->m, 0, id, buf, sizeof buf);
    *len = n < sizeof buf ? n : sizeof buf;
    return buf;
}

/* ---- request parsing ---------------------------------------------------------------------------
 */

typedef struct {
    int chat, stream, include_usage, logprobs_chat;
    int return_tokens; /* msrnn's (as llama-server's): the generated ids beside the text */
    serve_job *job;
    char *prompt_text; /* the text the prompt was made of (completions: for echo-free usage) */
} parsed;

/* A field of a given JSON type or absent; else a 400 naming it. */
static const char *want(const cJSON *root, const char *key, int (*is)(const cJSON *),
                        const char *type_name, const cJSON **out, char *err, size_t cap) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    *out = NULL;
    if (!v || cJSON_IsNull(v)) return NULL;
    if (!is(v)) {
        snprintf(err, cap, "'%s' must be %s", key, type_name);
        return key;
    }
    *out = v;
    return NULL;
}

/* an integer JSON number within 2^53 (exact in a double); checked before any cast, which would be
 * undefined for 1e300 */
static int is_int(const cJSON *v) {
    return cJSON_IsNumber(v) && fabs(v->valuedouble) <= 9007199254740992.0 &&
           v->valuedouble == floor(v->valuedouble);
}
static int is_num(const cJSON *v) { return cJSON_IsNumber(v); }
static int is_bool(const cJSON *v) { return cJSON_IsBool(v); }
static int is_str(const cJSON *v) { return cJSON_IsString(v); }
static int is_obj(const cJSON *v) { return cJSON_IsObject(v); }
static int is_str_or_arr(const cJSON *v) { return cJSON_IsString(v) || cJSON_IsArray(v); }

/* The chat transcript rendered by the server's template (msrnn_chat_apply: the model's own as
 * llama.cpp renders it, or msrnn's plain one, documented in the README), ending with the opening of
 * the assistant's turn. A message's content is a string or an array of text parts (joined). */
static int chat_format(const server *sv, const cJSON *messages, char **out, char *err, size_t cap) {
    const int n = cJSON_GetArraySize(messages);
    if (n == 0) return snprintf(err, cap, "'messages' must hold at least one message"), 1;
    msrnn_chat_message *msgs = calloc((size_t)n, sizeof *msgs);
    char **joined = calloc((size_t)n, sizeof *joined);
    int i = 0, rc = 1;
    if (!msgs || !joined) {
        snprintf(err, cap, "out of memory");
        goto done;
    }
    const cJSON *msg;
    cJSON_ArrayForEach(msg, messages) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(msg, "role"),
                    *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
        if (!cJSON_IsObject(msg) || !cJSON_IsString(role)) {
            snprintf(err, cap, "'messages[%d]' must be an object with a string 'role'", i);
            goto done;
        }
        const char *r = role->valuestring;
        if (strcmp(r, "system") && strcmp(r, "developer") && strcmp(r, "user") &&
            strcmp(r, "assistant")) {
            snprintf(err, cap,
                     "'messages[%d].role' is '%.40s'; expected system, developer, user or "
                     "assistant",
                     i, r);
            goto done;
        }
        /* OpenAI's "developer" is the system message of templates that know only "system" */
        msgs[i].role = !strcmp(r, "developer") && strcmp(sv->chat_template, "plain") ? "system" : r;
        /* content: a string, or an array of {"type": "text", "text": ...} parts */
        if (cJSON_IsString(content)) {
            msgs[i].content = content->valuestring;
        } else if (cJSON_IsArray(content)) {
            size_t len = 0;
            const cJSON *p;
            int parts = 0;
            cJSON_ArrayForEach(p, content) {
                const cJSON *t = cJSON_GetObjectItemCaseSensitive(p, "text");
                if (!cJSON_IsString(t) || ++parts > 64) {
                    snprintf(err, cap,
                             "'messages[%d].content' parts must be {\"type\": \"text\", \"text\": "
                             "STRING} (at most 64)",
                             i);
                    goto done;
                }
                len += strlen(t->valuestring);
            }
            if (!(joined[i] = malloc(len + 1))) {
                snprintf(err, cap, "out of memory");
                goto done;
            }
            len = 0;
            cJSON_ArrayForEach(p, content) {
                const char *t = cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring;
                memcpy(joined[i] + len, t, strlen(t));
                len += strlen(t);
            }
            joined[i][len] = 0;
            msgs[i].content = joined[i];
        } else if (!content || cJSON_IsNull(content)) {
            msgs[i].content = "";
        } else {
            snprintf(err, cap, "'messages[%d].content' must be a string or an array", i);
            goto done;
        }
        i++;
    }
    size_t len = 0;
    char *buf = NULL;
    if (msrnn_chat_apply(sv->chat_template, msgs, (size_t)n, 1, NULL, 0, &len) != MSRNN_OK ||
        !(buf = malloc(len + 1)) ||
        msrnn_chat_apply(sv->chat_template, msgs, (size_t)n, 1, buf, len + 1, &len) != MSRNN_OK) {
        snprintf(err, cap, "%s", buf || len == 0 ? msrnn_last_error() : "out of memory");
        free(buf);
        goto done;
    }
    *out = buf;
    rc = 0;
done:
    for (int k = 0; joined && k < n; k++) free(joined[k]);
    free(joined), free(msgs);
    return rc;
}

/* Parse and check a completion request into p (status 0), or return the HTTP status with err
 * set and *param naming the field. */
static int parse_request(const server *sv, const char *body, size_t len, int chat, parsed *p,
                         char *err, size_t cap, const char **param) {
    memset(p, 0, sizeof *p);
    p->chat = chat;
    *param = NULL;
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!root) return snprintf(err, cap, "the body is not valid JSON"), 400;
    int status = 400;
    serve_job *j = p->job = serve_job_new();
    const cJSON *v;
    char *text = NULL;
    if (!j) {
        status = 500, snprintf(err, cap, "out of memory");
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        snprintf(err, cap, "the body must be a JSON object");
        goto fail;
    }
#define FIELD(key, is, tname)                                                                      \
    if ((*param = want(root, key, is, tname, &v, err, cap))) goto fail;
    FIELD("model", is_str, "a string")
    if (v && strcmp(v->valuestring, sv->model_id)) {
        status = 404;
        *param = "model";
        snprintf(err, cap, "the model '%.200s' does not exist; this server serves '%s'",
                 v->valuestring, sv->model_id);
        goto fail;
    }
    FIELD("stream", is_bool, "a boolean")
    p->stream = v && cJSON_IsTrue(v);
    FIELD("stream_options", is_obj, "an object")
    if (v) {
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(v, "include_usage");
        p->include_usage = cJSON_IsTrue(u);
    }
    FIELD("n", is_int, "an integer")
    if (v && v->valuedouble != 1) {
        *param = "n";
        snprintf(err, cap, "'n' must be 1 (one choice per request)");
        goto fail;
    }
    j->max_tokens = sv->default_max_tokens;
    if (!chat) j->max_tokens = 16; /* OpenAI's default for completions */
    FIELD(chat ? "max_completion_tokens" : "max_tokens", is_int, "an integer")
    if (!v && chat) FIELD("max_tokens", is_int, "an integer")
    if (v) {
        if (v->valuedouble < 0 || v->valuedouble > (1 << 24)) {
            *param = "max_tokens";
            snprintf(err, cap, "'max_tokens' must be in [0, 16777216]");
            goto fail;
        }
        j->max_tokens = (int)v->valuedouble;
    }
    msrnn_sampler_params *sp = &j->sampling;
    sp->temperature = 1.0f, sp->top_p = 1.0f, sp->top_k = 0, sp->min_p = 0;
    sp->repeat_penalty = 1.0f, sp->repeat_last_n = 64;
    sp->seed = (uint64_t)(now_seconds() * 1e6);
    static const struct {
        const char *key;
        double lo, hi;
        int integer;
    } nums[] = {{"temperature", 0, 2, 0},
                {"top_p", 0, 1, 0},
                {"top_k", 0, 1 << 24, 1},
                {"min_p", 0, 1, 0},
                {"repeat_penalty", 1e-3, 1e3, 0},
                {"repeat_last_n", 0, 1 << 24, 1},
                {"seed", -9007199254740992.0, 9007199254740992.0, 1}};
    for (size_t k = 0; k < sizeof nums / sizeof nums[0]; k++) {
        FIELD(nums[k].key, nums[k].integer ? is_int : is_num,
              nums[k].integer ? "an integer" : "a number")
        if (!v) continue;
        if (v->valuedouble < nums[k].lo || v->valuedouble > nums[k].hi) {
            *param = nums[k].key;
            snprintf(err, cap, "'%s' must be in [%g, %g]", nums[k].key, nums[k].lo, nums[k].hi);
            goto fail;
        }
        const double x = v->valuedouble;
        switch (k) {
        case 0: sp->temperature = (float)x; break;
        case 1: sp->top_p = (float)x; break;
        case 2: sp->top_k = (int)x; break;
        case 3: sp->min_p = (float)x; break;
        case 4: sp->repeat_penalty = (float)x; break;
        case 5: sp->repeat_last_n = (int)x; break;
        default: sp->seed = (uint64_t)(long long)x; break;
        }
    }
    FIELD("ignore_eos", is_bool, "a boolean")
    j->ignore_eos = v && cJSON_IsTrue(v);
    FIELD("stop", is_str_or_arr, "a string or an array of strings")
    if (v) {
        const cJSON *one = cJSON_IsString(v) ? v : NULL, *it;
        if (one) {
            j->stop[j->n_stop++] = strdup(one->valuestring);
        } else {
            cJSON_ArrayForEach(it, v) {
                if (!cJSON_IsString(it) || j->n_stop == SERVE_MAX_STOP || !it->valuestring[0]) {
                    *param = "stop";
                    snprintf(err, cap, "'stop' must hold at most %d non-empty strings",
                             SERVE_MAX_STOP);
                    goto fail;
                }
                j->stop[j->n_stop++] = strdup(it->valuestring);
            }
        }
        if (one && !one->valuestring[0]) j->n_stop = 0, free(j->stop[0]);
    }
    if (chat) {
        FIELD("logprobs", is_bool, "a boolean")
        p->logprobs_chat = v && cJSON_IsTrue(v);
        FIELD("top_logprobs", is_int, "an integer")
        if (v && (v->valuedouble < 0 || v->valuedouble > SERVE_MAX_TOP)) {
            *param = "top_logprobs";
            snprintf(err, cap, "'top_logprobs' must be in [0, %d]", SERVE_MAX_TOP);
            goto fail;
        }
        j->top_logprobs = v && p->logprobs_chat ? (int)v->valuedouble : 0;
    } else {
        FIELD("logprobs", is_int, "an integer")
        if (v && (v->valuedouble < 0 || v->valuedouble > SERVE_MAX_TOP)) {
            *param = "logprobs";
            snprintf(err, cap, "'logprobs' must be in [0, %d]", SERVE_MAX_TOP);
            goto fail;
        }
        p->logprobs_chat = v != NULL; /* completions: logprobs object wanted */
        j->top_logprobs = v ? (int)v->valuedouble : 0;
    }
    j->logprobs = p->logprobs_chat;
    FIELD("return_tokens", is_bool, "a boolean")
    p->return_tokens = v && cJSON_IsTrue(v);
    FIELD("session", is_str, "a string")
    if (v) {
        if (!serve_session_name_ok(v->valuestring)) {
            *param = "session";
            snprintf(err, cap,
                     "'session' must be 1 to %d characters of A-Z a-z 0-9 _ - . (not starting "
                     "with '.')",
                     SERVE_NAME_MAX);
            goto fail;
        }
        snprintf(j->session, sizeof j->session, "%s", v->valuestring);
    }
    /* the prompt */
    const msrnn_model_info *in = msrnn_model_get_info(sv->m);
    if (chat) {
        FIELD("messages", cJSON_IsArray, "an array of messages")
        if (!v) {
            *param = "messages";
            snprintf(err, cap, "'messages' is required");
            goto fail;
        }
        if (chat_format(sv, v, &text, err, cap)) {
            *param = "messages";
            goto fail;
        }
        /* the end of the assistant's turn: a token (a special one) and the text */
        const char *end = msrnn_chat_template_end(sv->chat_template);
        if (end && j->n_stop < SERVE_MAX_STOP) j->stop[j->n_stop++] = strdup(end);
        if (sv->chat_end_id >= 0 && !j->ignore_eos) /* ignore_eos: no end of turn either */
            j->stop_id = sv->chat_end_id;
    } else {
        FIELD("prompt", is_str_or_arr, "a string, an array of token ids or an array of one string")
        if (!v) {
            *param = "prompt";
            snprintf(err, cap, "'prompt' is required");
            goto fail;
        }
        if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 1 &&
            cJSON_IsString(cJSON_GetArrayItem(v, 0)))
            v = cJSON_GetArrayItem(v, 0);
        if (cJSON_IsArray(v)) { /* token ids, fed as they are (no BOS added) */
            const int n = cJSON_GetArraySize(v);
            j->prompt = malloc((size_t)(n > 0 ? n : 1) * sizeof *j->prompt);
            const cJSON *it;
            cJSON_ArrayForEach(it, v) {
                if (!is_int(it) || it->valuedouble < 0 || it->valuedouble >= in->n_vocab) {
                    *param = "prompt";
                    snprintf(err, cap,
                             "'prompt' as an array must hold token ids in [0, %d) (or be one "
                             "string)",
                             in->n_vocab);
                    goto fail;
                }
                j->prompt[j->n_prompt++] = (int32_t)it->valuedouble;
            }
        } else {
            text = strdup(v->valuestring);
        }
    }
    if (text) {
        /* a model's chat template holds special tokens (<|im_start|>, [INST] after <s>); a
         * completion's prompt and the plain template are text */
        const int special = chat && strcmp(sv->chat_template, "plain");
        const size_t tl = strlen(text), capn = special ? msrnn_tokenize_special_max(sv->m, tl)
                                                       : msrnn_tokenize_max(sv->m, tl);
        size_t n = 0;
        j->prompt = malloc(capn * sizeof *j->prompt);
        if (!j->prompt ||
            (special ? msrnn_tokenize_special(sv->m, text, tl, 1, j->prompt, capn, &n)
                     : msrnn_tokenize(sv->m, text, tl, 1, j->prompt, capn, &n)) != MSRNN_OK) {
            *param = chat ? "messages" : "prompt";
            snprintf(err, cap, "cannot tokenize the prompt: %s", msrnn_last_error());
            goto fail;
        }
        j->n_prompt = (int)n;
    }
    /* the tokens the named session holds already (0 without one) */
    const int64_t past = j->session[0] ? serve_session_n_past(sv->e, j->session) : 0;
    if (j->n_prompt == 0 && past == 0) {
        *param = chat ? "messages" : "prompt";
        snprintf(err, cap, "the prompt is empty");
        goto fail;
    }
    /* the full cache: the prompt must fit the context (a bounded memory takes any length) */
    const serve_config *cfg = serve_engine_config(sv->e);
    if (!serve_engine_bounded(sv->e)) {
        if (past + j->n_prompt > cfg->sp.n_ctx) {
            *param = chat ? "messages" : "prompt";
            snprintf(err, cap,
                     "the prompt has %d tokens%s, more than the context of %d tokens (use a "
                     "bounded memory, --kv, for longer inputs)",
                     j->n_prompt, past ? " after the session's" : "", cfg->sp.n_ctx);
            goto fail;
        }
    }
    p->prompt_text = text;
    cJSON_Delete(root);
    return 0;
#undef FIELD
fail:
    free(text);
    cJSON_Delete(root);
    if (p->job) serve_job_release(sv->e, p->job);
    p->job = NULL;
    return status;
}

/* ---- answers -------------------------------------------------------------------------------- */

static void completion_id(char *buf, size_t cap, const char *prefix) {
    static unsigned long counter;
    snprintf(buf, cap, "%s-%lx%04lx", prefix, (unsigned long)time(NULL),
             __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED) & 0xffff);
}

/* The logprobs of tokens [t0, t1) (lock held): chat's {content: [...]} or completions'
 * {tokens, token_logprobs, top_logprobs, text_offset}. */
static cJSON *logprobs_json(const server *sv, const serve_job *j, int t0, int t1, int chat) {
    cJSON *o = cJSON_CreateObject();
    size_t len;
    if (chat) {
        cJSON *content = cJSON_AddArrayToObject(o, "content");
        for (int t = t0; t < t1; t++) {
            const serve_token *tk = serve_job_token(j, t);
            const serve_top *tp = serve_job_tops(j, t);
            cJSON *e = cJSON_CreateObject();
            const char *s = token_text(sv, tk->id, &len);
            add_text(e, "token", s, len);
            cJSON_AddNumberToObject(e, "logprob", tk->logprob);
            cJSON *bytes = cJSON_AddArrayToObject(e, "bytes");
            for (size_t b = 0; b < len; b++)
                cJSON_AddItemToArray(bytes, cJSON_CreateNumber((unsigned char)s[b]));
            cJSON *top = cJSON_AddArrayToObject(e, "top_logprobs");
            for (int k = 0; k < tk->n_top; k++) {
                cJSON *a = cJSON_CreateObject();
                const char *ts = token_text(sv, tp[k].id, &len);
                add_text(a, "token", ts, len);
                cJSON_AddNumberToObject(a, "logprob", tp[k].logprob);
                cJSON_AddItemToArray(top, a);
            }
            cJSON_AddItemToArray(content, e);
        }
        return o;
    }
    cJSON *tokens = cJSON_AddArrayToObject(o, "tokens"),
          *lps = cJSON_AddArrayToObject(o, "token_logprobs"),
          *tops = cJSON_AddArrayToObject(o, "top_logprobs"),
          *offs = cJSON_AddArrayToObject(o, "text_offset");
    for (int t = t0; t < t1; t++) {
        const serve_token *tk = serve_job_token(j, t);
        const serve_top *tp = serve_job_tops(j, t);
        const char *s = token_text(sv, tk->id, &len);
        char *clean = utf8_clean_dup(s, len);
        cJSON_AddItemToArray(tokens, cJSON_CreateString(clean ? clean : ""));
        free(clean);
        cJSON_AddItemToArray(lps, cJSON_CreateNumber(tk->logprob));
        cJSON *top = cJSON_CreateObject();
        for (int k = 0; k < tk->n_top; k++) {
            const char *ts = token_text(sv, tp[k].id, &len);
            char *c2 = utf8_clean_dup(ts, len);
            if (c2 && !cJSON_GetObjectItemCaseSensitive(top, c2))
                cJSON_AddNumberToObject(top, c2, tp[k].logprob);
            free(c2);
        }
        cJSON_AddItemToArray(tops, top);
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)tk->text_start));
    }
    return o;
}

static cJSON *usage_json(const serve_job *j) {
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", j->n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", j->n_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", j->n_prompt + j->n_tokens);
    return u;
}

/* msrnn's own fields beside OpenAI's: timings and the session's position */
static cJSON *timings_json(const serve_job *j) {
    cJSON *t = cJSON_CreateObject();
    if (j->t_start > 0) cJSON_AddNumberToObject(t, "queued_ms", (j->t_start - j->t_submit) * 1e3);
    if (j->t_first > 0)
        cJSON_AddNumberToObject(t, "first_token_ms", (j->t_first - j->t_submit) * 1e3);
    if (j->t_done > 0 && j->t_first > 0 && j->n_tokens > 1)
        cJSON_AddNumberToObject(t, "generated_per_second",
                                (j->n_tokens - 1) / (j->t_done - j->t_first + 1e-9));
    cJSON_AddNumberToObject(t, "n_past", (double)j->n_past);
    return t;
}

/* A chunk of text [a, b) of the job as one choice (lock held). */
static cJSON *choice_json(const server *sv, const parsed *p, const serve_job *j, size_t a, size_t b,
                          int t0, int t1, const char *finish, int first_chunk, int stream) {
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", 0);
    if (p->chat) {
        cJSON *msg = cJSON_AddObjectToObject(ch, stream ? "delta" : "message");
        if (!stream || first_chunk) cJSON_AddStringToObject(msg, "role", "assistant");
        if (!stream || b > a || first_chunk) add_text(msg, "content", serve_job_text(j, a), b - a);
    } else {
        add_text(ch, "text", serve_job_text(j, a), b - a);
    }
    if (p->return_tokens) {
        cJSON *ids = cJSON_AddArrayToObject(ch, "token_ids");
        for (int t = t0; t < t1; t++)
            cJSON_AddItemToArray(ids, cJSON_CreateNumber(serve_job_token(j, t)->id));
    }
    if (p->logprobs_chat && t1 > t0)
        cJSON_AddItemToObject(ch, "logprobs", logprobs_json(sv, j, t0, t1, p->chat));
    else
        cJSON_AddNullToObject(ch, "logprobs");
    if (finish)
        cJSON_AddStringToObject(ch, "finish_reason", finish);
    else
        cJSON_AddNullToObject(ch, "finish_reason");
    return ch;
}

static cJSON *envelope(const server *sv, const parsed *p, const char *id, long created,
                       int stream) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object",
                            p->chat ? (stream ? "chat.completion.chunk" : "chat.completion")
                                    : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)created);
    cJSON_AddStringToObject(o, "model", sv->model_id);
    cJSON_AddStringToObject(o, "system_fingerprint", "msrnn");
    return o;
}

/* 1 when the peer has closed its end (or the socket failed). */
static int client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 0;
    struct pollfd pfd = {ci->connect_fd, POLLRDHUP, 0};
    return poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/* ---- streaming ------------------------------------------------------------------------------- */

typedef struct {
    server *sv;
    parsed p;
    struct MHD_Connection *c;
    char id[64];
    long created;
    char *out; /* events not yet written */
    size_t n_out, at_out, cap_out;
    int n_tok_seen, n_fed_seen;
    size_t n_text_seen, sent_text;
    int sent_tokens, first_chunk, ended;
} stream_ctx;

static int out_append(stream_ctx *s, const char *data, size_t n) {
    if (s->n_out + n > s->cap_out) {
        const size_t cap = (s->n_out + n) * 2 + 256;
        char *g = realloc(s->out, cap);
        if (!g) return 1;
        s->out = g, s->cap_out = cap;
    }
    memcpy(s->out + s->n_out, data, n);
    s->n_out += n;
    return 0;
}

static void out_event(stream_ctx *s, cJSON *obj) {
    char *js = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    if (!js) return;
    out_append(s, "data: ", 6);
    out_append(s, js, strlen(js));
    out_append(s, "\n\n", 2);
    free(js);
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    stream_ctx *s = cls;
    serve_engine *e = s->sv->e;
    serve_job *j = s->p.job;
    for (;;) {
        if (s->at_out < s->n_out) {
            size_t n = s->n_out - s->at_out;
            if (n > max) n = max;
            memcpy(buf, s->out + s->at_out, n);
            s->at_out += n;
            if (s->at_out == s->n_out) s->at_out = s->n_out = 0;
            return (ssize_t)n;
        }
        if (s->ended) return MHD_CONTENT_READER_END_OF_STREAM;
        serve_wait(e, j, s->n_tok_seen, s->n_text_seen, s->n_fed_seen, POLL_S); /* locked */
        s->n_tok_seen = j->n_tokens, s->n_text_seen = j->n_text, s->n_fed_seen = j->n_fed;
        const int done = j->state == JOB_DONE;
        if (done && j->http_status) {
            cJSON *err = error_json(j->http_status, j->error, NULL);
            serve_unlock(e);
            out_event(s, err);
            out_append(s, "data: [DONE]\n\n", 14);
            s->ended = 1;
            continue;
        }
        const size_t upto = serve_job_sendable(j);
        if (upto > s->sent_text || done || (s->first_chunk && s->p.chat)) {
            /* copy the new text and tokens out, then build the event without the engine's lock
             * (the engine waits for it after every forward pass) */
            const int t1 = j->n_tokens, nt = t1 - s->sent_tokens;
            const size_t nx = upto - s->sent_text;
            serve_job view; /* tokens and text from 0 */
            memset(&view, 0, sizeof view);
            view.top_logprobs = j->top_logprobs;
            view.text = malloc(nx + 1);
            view.tokens = malloc((size_t)(nt > 0 ? nt : 1) * sizeof *view.tokens);
            view.tops =
                j->tops ? malloc((size_t)(nt > 0 ? nt : 1) * j->top_logprobs * sizeof *view.tops)
                        : NULL;
            if (view.text) memcpy(view.text, serve_job_text(j, s->sent_text), nx);
            if (view.tokens && nt > 0)
                memcpy(view.tokens, serve_job_token(j, s->sent_tokens),
                       (size_t)nt * sizeof *view.tokens);
            if (view.tops && nt > 0)
                memcpy(view.tops, serve_job_tops(j, s->sent_tokens),
                       (size_t)nt * j->top_logprobs * sizeof *view.tops);
            const int copied = view.text && view.tokens && (view.tops || !j->tops);
            /* sent (once the event is built): the job forgets it, so that a stream of any length
             * holds only what is unsent */
            if (copied) serve_job_consume(j, t1, upto);
            const char *finish = done ? j->finish : NULL;
            cJSON *usage = done && s->p.include_usage ? usage_json(j) : NULL;
            cJSON *timings = done ? timings_json(j) : NULL;
            serve_unlock(e);
            if (!copied) {
                free(view.text), free(view.tokens), free(view.tops);
                cJSON_Delete(usage), cJSON_Delete(timings);
                serve_cancel(e, j);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            cJSON *o = envelope(s->sv, &s->p, s->id, s->created, 1);
            cJSON *choices = cJSON_AddArrayToObject(o, "choices");
            cJSON_AddItemToArray(
                choices, choice_json(s->sv, &s->p, &view, 0, nx, 0, nt, finish, s->first_chunk, 1));
            free(view.text), free(view.tokens), free(view.tops);
            s->sent_tokens = t1, s->sent_text = upto, s->first_chunk = 0;
            if (timings) cJSON_AddItemToObject(o, "timings", timings);
            out_event(s, o);
            if (usage) { /* stream_options.include_usage: one more chunk, no choices */
                cJSON *u = envelope(s->sv, &s->p, s->id, s->created, 1);
                cJSON_AddArrayToObject(u, "choices");
                cJSON_AddItemToObject(u, "usage", usage);
                out_event(s, u);
            }
            if (done) {
                out_append(s, "data: [DONE]\n\n", 14);
                s->ended = 1;
            }
            continue;
        }
        serve_unlock(e);
        if (client_gone(s->c)) {
            serve_cancel(e, j);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
}

static void stream_free(void *cls) {
    stream_ctx *s = cls;
    serve_cancel(s->sv->e, s->p.job); /* no-op once done */
    serve_job_release(s->sv->e, s->p.job);
    free(s->p.prompt_text);
    free(s->out);
    free(s);
}

/* ---- endpoints ------------------------------------------------------------------------------- */

static enum MHD_Result do_completion(server *sv, struct MHD_Connection *c, const conn_ctx *cc,
                                     int chat) {
    char err[768];
    const char *param;
    parsed p;
    const int status =
        parse_request(sv, cc->body ? cc->body : "", cc->len, chat, &p, err, sizeof err, &param);
    if (status) return send_error(c, status, param, "%s", err);
    serve_job *j = p.job;
    const int refused = serve_submit(sv->e, j);
    if (refused) {
        const enum MHD_Result r = send_error(c, refused, NULL, "%s", j->error);
        serve_job_release(sv->e, j);
        free(p.prompt_text);
        return r;
    }
    char id[64];
    completion_id(id, sizeof id, chat ? "chatcmpl" : "cmpl");
    const long created = (long)time(NULL);
    if (p.stream) {
        stream_ctx *s = calloc(1, sizeof *s);
        if (!s) {
            serve_cancel(sv->e, j);
            serve_job_release(sv->e, j);
            return MHD_NO;
        }
        s->sv = sv, s->p = p, s->c = c, s->created = created, s->first_chunk = 1;
        snprintf(s->id, sizeof s->id, "%s", id);
        struct MHD_Response *r =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, s, stream_free);
        if (!r) {
            stream_free(s);
            return MHD_NO;
        }
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        const enum MHD_Result ok = MHD_queue_response(c, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        return ok;
    }
    /* one answer: wait for the job, watching the client */
    int nt = -1, nf = -1;
    size_t nx = (size_t)-1;
    for (;;) {
        serve_wait(sv->e, j, nt, nx, nf, POLL_S);
        nt = j->n_tokens, nx = j->n_text, nf = j->n_fed;
        const int done = j->state == JOB_DONE;
        serve_unlock(sv->e);
        if (done) break;
        if (client_gone(c)) {
            serve_cancel(sv->e, j);
            serve_job_release(sv->e, j);
            free(p.prompt_text);
            return MHD_NO;
        }
    }
    serve_lock(sv->e);
    enum MHD_Result r;
    if (j->http_status) {
        char msg[sizeof j->error];
        snprintf(msg, sizeof msg, "%s", j->error);
        const int st = j->http_status == 499 ? 500 : j->http_status;
        serve_unlock(sv->e);
        r = send_error(c, st, NULL, "%s", msg);
    } else {
        cJSON *o = envelope(sv, &p, id, created, 0);
        cJSON *choices = cJSON_AddArrayToObject(o, "choices");
        cJSON_AddItemToArray(choices,
                             choice_json(sv, &p, j, 0, j->n_text, 0, j->n_tokens, j->finish, 1, 0));
        cJSON_AddItemToObject(o, "usage", usage_json(j));
        cJSON_AddItemToObject(o, "timings", timings_json(j));
        serve_unlock(sv->e);
        r = send_json(c, MHD_HTTP_OK, o);
    }
    serve_job_release(sv->e, j);
    free(p.prompt_text);
    return r;
}

static enum MHD_Result do_models(server *sv, struct MHD_Connection *c) {
    const msrnn_model_info *in = msrnn_model_get_info(sv->m);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data"), *mo = cJSON_CreateObject();
    cJSON_AddStringToObject(mo, "id", sv->model_id);
    cJSON_AddStringToObject(mo, "object", "model");
    cJSON_AddNumberToObject(mo, "created", (double)sv->t_start);
    cJSON_AddStringToObject(mo, "owned_by", "msrnn");
    cJSON *meta = cJSON_AddObjectToObject(mo, "meta");
    cJSON_AddStringToObject(meta, "architecture", in->architecture);
    cJSON_AddNumberToObject(meta, "n_vocab", in->n_vocab);
    cJSON_AddNumberToObject(meta, "n_ctx_train", in->n_ctx);
    cJSON_AddNumberToObject(meta, "n_params", (double)in->n_params);
    const serve_config *cfg = serve_engine_config(sv->e);
    cJSON_AddStringToObject(meta, "memory", cfg->sp.memory ? cfg->sp.memory : "full");
    cJSON_AddNumberToObject(meta, "kv_size", cfg->sp.kv_size);
    cJSON_AddNumberToObject(meta, "n_ctx", cfg->sp.n_ctx);
    cJSON_AddNumberToObject(meta, "slots", cfg->n_slots);
    cJSON_AddItemToArray(data, mo);
    return send_json(c, MHD_HTTP_OK, o);
}

static enum MHD_Result do_metrics(server *sv, struct MHD_Connection *c) {
    serve_stats st;
    serve_engine_stats(sv->e, &st);
    char buf[4096];
    const double tps = st.busy_seconds > 0 ? st.tokens_generated / st.busy_seconds : 0;
    const int n = snprintf(
        buf, sizeof buf,
        "# HELP msrnn_requests_total Completion requests accepted.\n"
        "# TYPE msrnn_requests_total counter\nmsrnn_requests_total %llu\n"
        "# HELP msrnn_requests_refused_total Requests refused because the queue was full or the "
        "session busy.\n# TYPE msrnn_requests_refused_total counter\n"
        "msrnn_requests_refused_total %llu\n"
        "# HELP msrnn_requests_cancelled_total Requests whose client went away.\n"
        "# TYPE msrnn_requests_cancelled_total counter\nmsrnn_requests_cancelled_total %llu\n"
        "# HELP msrnn_tokens_generated_total Tokens sampled.\n"
        "# TYPE msrnn_tokens_generated_total counter\nmsrnn_tokens_generated_total %llu\n"
        "# HELP msrnn_tokens_processed_total Prompt tokens evaluated.\n"
        "# TYPE msrnn_tokens_processed_total counter\nmsrnn_tokens_processed_total %llu\n"
        "# HELP msrnn_forward_seconds_total Time spent in forward passes.\n"
        "# TYPE msrnn_forward_seconds_total counter\nmsrnn_forward_seconds_total %.6f\n"
        "# HELP msrnn_tokens_per_second Generated tokens per second of forward passes.\n"
        "# TYPE msrnn_tokens_per_second gauge\nmsrnn_tokens_per_second %.3f\n"
        "# HELP msrnn_slots_active Slots running a request.\n"
        "# TYPE msrnn_slots_active gauge\nmsrnn_slots_active %d\n"
        "# HELP msrnn_slots_queued Requests waiting for a slot.\n"
        "# TYPE msrnn_slots_queued gauge\nmsrnn_slots_queued %d\n"
        "# HELP msrnn_sessions_idle Named sessions parked in a slot.\n"
        "# TYPE msrnn_sessions_idle gauge\nmsrnn_sessions_idle %d\n"
        "# HELP msrnn_slots_total Slots.\n# TYPE msrnn_slots_total gauge\nmsrnn_slots_total %d\n"
        "# HELP msrnn_memory_bytes Attention memory in use over all slots.\n"
        "# TYPE msrnn_memory_bytes gauge\nmsrnn_memory_bytes %zu\n"
        "# HELP msrnn_allocated_bytes Slots and batch workspace allocated at start.\n"
        "# TYPE msrnn_allocated_bytes gauge\nmsrnn_allocated_bytes %zu\n",
        (unsigned long long)st.requests, (unsigned long long)st.refused,
        (unsigned long long)st.cancelled, (unsigned long long)st.tokens_generated,
        (unsigned long long)st.tokens_prompt, st.busy_seconds, tps, st.active, st.queued, st.parked,
        st.n_slots, st.memory_bytes,
        serve_engine_slot_bytes(sv->e) * (size_t)st.n_slots + serve_engine_batch_bytes(sv->e));
    return send_text(c, MHD_HTTP_OK, "text/plain; version=0.0.4", buf,
                     n > 0 && (size_t)n < sizeof buf ? (size_t)n : strlen(buf), 0);
}

static enum MHD_Result do_sessions(server *sv, struct MHD_Connection *c) {
    const size_t cap = 256 * (size_t)serve_engine_config(sv->e)->n_slots + 64;
    char *arr = malloc(cap), *buf = malloc(cap + 64);
    if (!arr || !buf) {
        free(arr), free(buf);
        return MHD_NO;
    }
    serve_sessions_json(sv->e, arr, cap);
    const int n = snprintf(buf, cap + 64, "{\"object\": \"list\", \"data\": %s}", arr);
    const enum MHD_Result r = send_text(c, MHD_HTTP_OK, "application/json", buf, (size_t)n, 0);
    free(arr), free(buf);
    return r;
}

static int authorized(const server *sv, struct MHD_Connection *c) {
    if (!sv->api_key) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    return h && !strncmp(h, "Bearer ", 7) && !strcmp(h + 7, sv->api_key);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls) {
    (void)version;
    server *sv = cls;
    conn_ctx *cc = *con_cls;
    if (!cc) { /* the first call: headers only */
        cc = calloc(1, sizeof *cc);
        if (!cc) return MHD_NO;
        *con_cls = cc;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > sv->body_limit) cc->too_big = 1;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!cc->too_big) {
            if (cc->len + *upload_size > sv->body_limit) {
                cc->too_big = 1;
                free(cc->body);
                cc->body = NULL, cc->len = 0;
            } else {
                char *g = realloc(cc->body, cc->len + *upload_size + 1);
                if (!g) return MHD_NO;
                cc->body = g;
                memcpy(cc->body + cc->len, upload, *upload_size);
                cc->len += *upload_size;
                cc->body[cc->len] = 0;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    const int get = !strcmp(method, "GET"), post = !strcmp(method, "POST"),
              del = !strcmp(method, "DELETE");
    if (!strcmp(url, "/health") && get)
        return send_text(c, MHD_HTTP_OK, "application/json", "{\"status\": \"ok\"}", 16, 0);
    if (!authorized(sv, c))
        return send_error(c, 401, NULL,
                          "a valid API key is required (header 'Authorization: Bearer KEY')");
    if (cc->too_big)
        return send_error(c, 413, NULL,
                          "the body is larger than the limit of %zu bytes (--body-limit)",
                          sv->body_limit);
    if (!strcmp(url, "/v1/completions") || !strcmp(url, "/completions") ||
        !strcmp(url, "/v1/chat/completions") || !strcmp(url, "/chat/completions")) {
        if (!post) return send_error(c, 405, NULL, "%s takes POST", url);
        return do_completion(sv, c, cc, strstr(url, "chat") != NULL);
    }
    if (!strcmp(url, "/v1/models") || !strcmp(url, "/models")) {
        if (!get) return send_error(c, 405, NULL, "%s takes GET", url);
        return do_models(sv, c);
    }
    if (!strcmp(url, "/metrics") && get) return do_metrics(sv, c);
    if (!strcmp(url, "/v1/sessions") && get) return do_sessions(sv, c);
    if (!strncmp(url, "/v1/sessions/", 13) && del) {
        const char *name = url + 13;
        if (!serve_session_name_ok(name))
            return send_error(c, 400, "session", "'%.80s' is not a valid session id", name);
        const int st = serve_session_delete(sv->e, name);
        if (st == 404) return send_error(c, 404, "session", "no session '%s'", name);
        if (st == 409)
            return send_error(c, 409, "session", "session '%s' is busy with a request", name);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", name);
        cJSON_AddStringToObject(o, "object", "session");
        cJSON_AddTrueToObject(o, "deleted");
        return send_json(c, MHD_HTTP_OK, o);
    }
    return send_error(c, 404, NULL, "no endpoint %s %.200s", method, url);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode code) {
    (void)cls, (void)c, (void)code;
    conn_ctx *cc = *con_cls;
    if (cc) {
        free(cc->body);
        free(cc);
    }
    *con_cls = NULL;
}

/* ---- the command ------------------------------------------------------------------------------
 */

static const cli_option options[] = {
    {NULL, "--slots", "N", .help = "sequences decoded together (default 4)"},
    {NULL, "--mem-budget", "BYTES",
     .help = "as many slots as fit in BYTES (slots + batch workspace)"},
    {NULL, "--host", "ADDR", .help = "IPv4 address to listen on (default 127.0.0.1: loopback)"},
    {NULL, "--port", "N", .help = "(default 8080; 0: any free port, printed)"},
    {NULL, "--api-key", "KEY", .help = "require 'Authorization: Bearer KEY' (or $MSRNN_API_KEY)"},
    {NULL, "--alias", "NAME", .help = "the model's id in the API (default: the file's name)"},
    {NULL, "--batch-tokens", "N", .help = "tokens per forward pass (default 256)"},
    {NULL, "--prompt-chunk", "N", .help = "prompt tokens a slot feeds per pass (default 64)"},
    {NULL, "--queue", "N", .help = "requests waiting for a slot before 503 (default 4 x slots)"},
    {NULL, "--session-dir", "DIR",
     .help = "save named sessions there (when idle, evicted or at exit)"},
    {NULL, "--session-ttl", "S", .help = "seconds an idle session keeps its slot (default 600)"},
    {NULL, "--body-limit", "BYTES", .help = "largest request body (default 1MiB; larger: 413)"},
    {NULL, "--max-tokens", "N", .help = "chat's default max_tokens (default 512)"},
    {NULL, "--chat-template", "NAME",
     .help = "chat's prompt format: auto (default: the model's own template when msrnn knows it, "
             "else plain), plain, chatml, llama2, llama2-sys, mistral-v1, mistral-v3, mistral-v7, "
             "phi3, zephyr, gemma, vicuna, llama3 … (msrnn_chat_template_name)"},
};
static const cli_table table = {.column = 24, CLI_OPTIONS(options)};

const cli_command serve_command = {
    .name = "serve",
    .summary = "an OpenAI-compatible server: many sessions decoded in one batch",
    .synopsis = "msrnn serve -m FILE [options]",
    .description = "An OpenAI-compatible server: POST /v1/completions, /v1/chat/completions "
                   "(\"stream\": true for Server-Sent Events), GET /v1/models, /health, /metrics, "
                   "/v1/sessions, DELETE /v1/sessions/ID.\n",
    .tables = {&RUN_OPTIONS, &table},
};

static void usage(FILE *f) { cli_help(f, &serve_command); }

int cmd_serve(int argc, char **argv) {
    arg_set_command(&serve_command);
    const char *cmd = "serve";
    run_options o;
    run_options_init(&o);
    int rc = 0, slots = 0, port = 8080, batch_tokens = 256, prompt_chunk = 64, queue = 0;
    int max_tokens = 512, ttl = 600;
    uint64_t budget = 0, body_limit = 1 << 20;
    const char *host = "127.0.0.1", *api_key = getenv("MSRNN_API_KEY"), *alias = NULL,
               *session_dir = NULL, *chat_template = "auto";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (run_options_parse(cmd, &o, argc, argv, &i, &rc)) {
            if (rc) return rc;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!(v = arg_value(cmd, argc, argv, i))) return 2;
        i++;
        if (!strcmp(a, "--slots"))
            rc = arg_int(cmd, a, v, 1, 4096, &slots);
        else if (!strcmp(a, "--mem-budget"))
            rc = arg_bytes(cmd, a, v, &budget);
        else if (!strcmp(a, "--host"))
            host = v;
        else if (!strcmp(a, "--port"))
            rc = arg_int(cmd, a, v, 0, 65535, &port);
        else if (!strcmp(a, "--api-key"))
            api_key = v;
        else if (!strcmp(a, "--alias"))
            alias = v;
        else if (!strcmp(a, "--batch-tokens"))
            rc = arg_int(cmd, a, v, 1, 1 << 16, &batch_tokens);
        else if (!strcmp(a, "--prompt-chunk"))
            rc = arg_int(cmd, a, v, 1, 1 << 16, &prompt_chunk);
        else if (!strcmp(a, "--queue"))
            rc = arg_int(cmd, a, v, 0, 1 << 20, &queue);
        else if (!strcmp(a, "--session-dir"))
            session_dir = v;
        else if (!strcmp(a, "--session-ttl"))
            rc = arg_int(cmd, a, v, 1, 1 << 30, &ttl);
        else if (!strcmp(a, "--body-limit"))
            rc = arg_bytes(cmd, a, v, &body_limit);
        else if (!strcmp(a, "--max-tokens"))
            rc = arg_int(cmd, a, v, 1, 1 << 24, &max_tokens);
        else if (!strcmp(a, "--chat-template")) {
            const char *known = msrnn_chat_template_detect(v);
            if (strcmp(v, "auto") && (!known || strcmp(known, v))) {
                fprintf(stderr,
                        "msrnn %s: --chat-template '%s' is not one msrnn renders; one of: auto",
                        cmd, v);
                for (int t = 0; msrnn_chat_template_name(t); t++)
                    fprintf(stderr, ", %s", msrnn_chat_template_name(t));
                fprintf(stderr, "\n");
                return 2;
            }
            chat_template = v;
        } else {
            arg_unknown(cmd, a);
            return 2;
        }
        if (rc) return rc;
    }
    if (slots && budget) {
        fprintf(stderr, "msrnn %s: give --slots or --mem-budget, not both\n", cmd);
        return 2;
    }
    if (api_key && !api_key[0]) api_key = NULL;
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "msrnn %s: --host: '%s' is not an IPv4 address (e.g. 127.0.0.1, 0.0.0.0)\n",
                cmd, host);
        return 2;
    }
    if (session_dir) {
        struct stat sb;
        if (stat(session_dir, &sb) != 0 || !S_ISDIR(sb.st_mode) || access(session_dir, W_OK)) {
            fprintf(stderr, "msrnn %s: --session-dir: '%s' is not a writable folder\n", cmd,
                    session_dir);
            return 1;
        }
    }
    if (body_limit < 1024 || body_limit > (1ULL << 30)) {
        fprintf(stderr, "msrnn %s: --body-limit: %llu bytes, expected 1KiB to 1GiB\n", cmd,
                (unsigned long long)body_limit);
        return 2;
    }
    msrnn_model *m;
    if ((rc = open_model(cmd, &o, &m))) return rc;
    const msrnn_model_info *in = msrnn_model_get_info(m);
    serve_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.sp = o.sp;
    if (cfg.sp.n_ctx <= 0) cfg.sp.n_ctx = in->n_ctx;
    cfg.sp.n_batch = -1; /* no workspace of their own: every token goes through the shared batch */
    cfg.n_threads = o.sp.n_threads;
    if (cfg.sp.n_threads <= 0) cfg.sp.n_threads = cfg.n_threads = 0;
    cfg.batch_tokens = batch_tokens;
    cfg.prompt_chunk = prompt_chunk < batch_tokens ? prompt_chunk : batch_tokens;
    cfg.session_ttl = ttl;
    cfg.session_dir = session_dir;
    size_t slot_bytes = 0;
    if (msrnn_session_bytes_needed(m, &cfg.sp, &slot_bytes) != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
        msrnn_model_close(m);
        return exit_status(MSRNN_ERR_INVALID);
    }
    if (budget) {
        msrnn_batch *probe;
        if (msrnn_batch_open(m, batch_tokens, cfg.n_threads, &probe) != MSRNN_OK) {
            fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
            msrnn_model_close(m);
            return 1;
        }
        const size_t bb = msrnn_batch_bytes(probe);
        msrnn_batch_close(probe);
        if (budget < bb + slot_bytes) {
            fprintf(stderr,
                    "msrnn %s: --mem-budget %llu bytes holds no slot: one takes %zu bytes and the "
                    "batch workspace %zu (lower --kv-size, -c or --batch-tokens)\n",
                    cmd, (unsigned long long)budget, slot_bytes, bb);
            msrnn_model_close(m);
            return 1;
        }
        const uint64_t fit = (budget - bb) / slot_bytes;
        slots = fit > 4096 ? 4096 : (int)fit;
    }
    if (!slots) slots = 4;
    cfg.n_slots = slots;
    cfg.max_queue = queue ? queue : 4 * slots;
    if ((rc = memory_check(cmd, (uint64_t)slot_bytes * (uint64_t)slots, o.max_memory, "the slots",
                           "--slots, --mem-budget, --kv-size or -c")))
        goto close_model;
    serve_engine *e;
    if (serve_engine_open(m, &cfg, &e) != MSRNN_OK) {
        fprintf(stderr, "msrnn %s: %s\n", cmd, msrnn_last_error());
        rc = 1;
        goto close_model;
    }
    char model_id[256];
    if (alias) {
        snprintf(model_id, sizeof model_id, "%s", alias);
    } else {
        const char *base = strrchr(o.model_path, '/');
        snprintf(model_id, sizeof model_id, "%s", base ? base + 1 : o.model_path);
        char *dot = strstr(model_id, ".gguf");
        if (dot && dot[5] == 0) *dot = 0;
    }
    server sv = {e,       m, model_id, api_key, (size_t)body_limit, max_tokens, (double)time(NULL),
                 "plain", -1};
    /* chat's template: the model's own where msrnn knows it (or the one asked for) */
    const char *own = msrnn_model_chat_template(m), *how = "msrnn's own";
    if (strcmp(chat_template, "auto")) {
        sv.chat_template = msrnn_chat_template_detect(chat_template), how = "--chat-template";
    } else if (own && msrnn_chat_template_detect(own)) {
        sv.chat_template = msrnn_chat_template_detect(own), how = "the model's";
    } else if (own) {
        fprintf(stderr,
                "msrnn %s: warning: the model's chat template is not one msrnn renders; chat uses "
                "the plain template (see --chat-template)\n",
                cmd);
    }
    if (strcmp(sv.chat_template, "plain")) {
        const char *end = msrnn_chat_template_end(sv.chat_template);
        /* a token to stop at when the end's text is one special token (as text it is several) */
        int32_t ids[64];
        size_t n_end = 0, n_text = 0;
        if (msrnn_tokenize_special(m, end, strlen(end), 0, ids, 64, &n_end) == MSRNN_OK &&
            n_end == 1 && msrnn_tokenize(m, end, strlen(end), 0, NULL, 0, &n_text) != MSRNN_OK &&
            n_text > 1)
            sv.chat_end_id = ids[0];
    }
    /* the signals are waited for by this thread alone */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (serve_engine_start(e)) {
        fprintf(stderr, "msrnn %s: cannot start the engine thread\n", cmd);
        rc = 1;
        goto close_engine;
    }
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, NULL,
        NULL, handler, &sv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_CONNECTION_LIMIT, 1024u,
        MHD_OPTION_CONNECTION_TIMEOUT, 600u, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
        MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "msrnn %s: cannot listen on %s:%d (in use, or not an address here)\n", cmd,
                host, port);
        serve_engine_stop(e);
        rc = 1;
        goto close_engine;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    const int bound = di ? di->port : port;
    const size_t total = slot_bytes * (size_t)slots + serve_engine_batch_bytes(e);
    fprintf(stderr,
            "msrnn %s: %s (%s), memory %s%s%d, %d slots of %zu bytes + batch %zu bytes = %zu "
            "bytes; %d threads\n",
            cmd, model_id, in->architecture, cfg.sp.memory ? cfg.sp.memory : "full",
            cfg.sp.memory && strcmp(cfg.sp.memory, "full") ? " kv_size " : " context ",
            cfg.sp.memory && strcmp(cfg.sp.memory, "full") ? cfg.sp.kv_size : cfg.sp.n_ctx, slots,
            slot_bytes, serve_engine_batch_bytes(e), total,
            o.sp.n_threads > 0 ? o.sp.n_threads : 0);
    fprintf(stderr, "msrnn %s: chat template %s (%s)\n", cmd, sv.chat_template, how);
    fprintf(stderr, "msrnn %s: listening on http://%s:%d%s\n", cmd, host, bound,
            api_key ? " (API key required)" : "");
    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "msrnn %s: %s: stopping\n", cmd, sig == SIGINT ? "SIGINT" : "SIGTERM");
    serve_engine_stop(e); /* waiting requests end with 503 */
    MHD_stop_daemon(d);
close_engine:
    serve_engine_close(e);
close_model:
    msrnn_model_close(m);
    return rc;
}
