/* gguf.c — the GGUF reader and writer declared in gguf.h.
 *
 * The reader maps a file read-only (or takes a caller's buffer), then validates all of it before
 * returning: the header, every key/value pair (nested arrays included, up to GGUF_MAX_DEPTH
 * levels), every tensor description, and every tensor's extent within the data section. Every
 * length and count is checked against the bytes actually left before anything is allocated, so a
 * hostile file can neither make it read out of bounds nor allocate much more than its own size.
 * Decoded values live in an arena owned by the gguf_file; strings and tensor data point into the
 * mapping.
 *
 * What it is not: a model loader (model/ gives the keys their meaning), a reader of big-endian
 * files or of GGUF v1, or a converter — tensor data is never copied or dequantised here.
 *
 * The writer collects keys (copied) and tensors (copied, referenced, or referenced as f32 to be
 * converted) in memory and writes them in one pass through base/atomic_file.h: a temporary file
 * in the destination's folder, fsynced and renamed over the destination (atomic on POSIX).
 */
#include "io/gguf.h"

#include "base/atomic_file.h"
#include "base/read_file.h"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c copies little-endian file data straight into native integers"
#endif

/* ---- limits ---------------------------------------------------------------------------------- */

#define GGUF_VERSION 3
#define GGUF_HEADER_BYTES 24 /* magic, version, n_tensors, n_kv */
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MIN_ALIGNMENT 8 /* the spec: "must be a multiple of 8" */
#define GGUF_MAX_ALIGNMENT (1u << 20)
#define GGUF_MAX_KV (1u << 16)
#define GGUF_MAX_TENSORS (1u << 20)
#define GGUF_MAX_NAME 65535          /* bytes in a key or a tensor name */
#define GGUF_MAX_STRING (1ull << 30) /* bytes in a string value */
#define GGUF_MAX_ARRAY (1ull << 30)  /* elements in one array */
#define GGUF_MAX_DEPTH 8             /* arrays of arrays of ... */
#define GGUF_MIN_KV_BYTES 13         /* key length (8) + a 1-byte key + type (4) */
#define GGUF_MIN_TENSOR_BYTES 33     /* name length + 1 byte + n_dims + ne[0] + type + offset */

/* ---- small helpers --------------------------------------------------------------------------- */

static const char *const value_type_names[GGUF_TYPE_COUNT] = {
    "uint8", "int8",   "uint16", "int16",  "uint32", "int32",   "float32",
    "bool",  "string", "array",  "uint64", "int64",  "float64",
};

const char *gguf_type_name(gguf_type t) {
    return (unsigned)t < GGUF_TYPE_COUNT ? value_type_names[t] : "unknown";
}

/* Bytes of one scalar of type t in the file (0 for STRING and ARRAY, whose size varies). */
static size_t scalar_bytes(gguf_type t) {
    switch (t) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_INT64:
    case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
    }
}

static int is_signed_int(gguf_type t) {
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 ||
           t == GGUF_TYPE_INT64;
}

static int is_unsigned_int(gguf_type t) {
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_UINT32 ||
           t == GGUF_TYPE_UINT64;
}

/* GGML's names for tensor types msrnn does not implement, so that messages can say "q4_K". */
static const char *ggml_type_name(uint32_t t) {
    static const char *const names[] = {
        [3] = "q4_1",     [6] = "q5_0",    [7] = "q5_1",     [9] = "q8_1",   [10] = "q2_K",
        [11] = "q3_K",    [12] = "q4_K",   [13] = "q5_K",    [14] = "q6_K",  [15] = "q8_K",
        [16] = "iq2_xxs", [17] = "iq2_xs", [18] = "iq3_xxs", [19] = "iq1_s", [20] = "iq4_nl",
        [21] = "iq3_s",   [22] = "iq2_s",  [23] = "iq4_xs",  [24] = "i8",    [25] = "i16",
        [26] = "i32",     [27] = "i64",    [28] = "f64",     [29] = "iq1_m", [34] = "tq1_0",
        [35] = "tq2_0",   [39] = "mxfp4",
    };
    const type_traits_t *tr = type_traits(t);
    if (tr) return tr->name;
    return t < sizeof names / sizeof names[0] ? names[t] : NULL;
}

static int is_pow2(uint64_t x) { return x && !(x & (x - 1)); }

/* a rounded up to a multiple of the power of two b; 0 if that overflows. */
static uint64_t align_up(uint64_t a, uint64_t b) {
    if (a > UINT64_MAX - (b - 1)) return 0;
    return (a + b - 1) & ~(b - 1);
}

/* Quote a name from the file for a message: printable ASCII kept, other bytes as \xNN, long names
 * cut with "...". */
static void quote(char *buf, size_t cap, gguf_str s) {
    size_t o = 0, limit = cap > 8 ? cap - 8 : 0;
    for (uint64_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (o >= limit) {
            memcpy(buf + o, "...", 4);
            return;
        }
        if (c >= 0x20 && c < 0x7f && c != '\\')
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
    }
    buf[o] = 0;
}

/* ---- arena: owned, 16-byte-aligned storage for decoded values -------------------------------- */

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} chunk;

/* The name index: open addressing over names (key of a gguf_kv, name of a gguf_tensor — both
 * structs begin with their gguf_str), slot = item index + 1, 0 = empty. */
typedef struct {
    uint32_t *slots;
    uint64_t mask;
    const unsigned char *items;
    size_t stride;
} name_index;

typedef struct {
    chunk *chunks;
    name_index kv_index, tensor_index;
} store;

static void *arena_alloc(store *s, uint64_t n, size_t each) {
    if (n == 0) n = 1; /* never hand out NULL for an empty array */
    if (n > SIZE_MAX / each) return NULL;
    size_t bytes = ((size_t)n * each + 15) & ~(size_t)15;
    if (bytes == 0) return NULL;
    chunk *c = s->chunks;
    if (!c || c->cap - c->used < bytes) {
        size_t cap = bytes > (64u << 10) ? bytes : (64u << 10);
        if (cap > SIZE_MAX - sizeof(chunk)) return NULL;
        c = calloc(1, sizeof(chunk) + cap);
        if (!c) return NULL;
        c->cap = cap;
        /* a chunk bigger than the default goes second, keeping the current one open for small
         * allocations */
        if (s->chunks && cap > (64u << 10)) {
            c->next = s->chunks->next;
            s->chunks->next = c;
        } else {
            c->next = s->chunks;
            s->chunks = c;
        }
    }
    void *p = c->data + c->used;
    c->used += bytes;
    return p;
}

static void arena_free(store *s) {
    for (chunk *c = s->chunks, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(s);
}

static uint64_t hash_bytes(const char *p, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

static const gguf_str *index_name(const name_index *x, uint32_t i) {
    return (const gguf_str *)(const void *)(x->items + (size_t)i * x->stride);
}

static int index_init(store *s, name_index *x, const void *items, size_t stride, uint64_t n) {
    uint64_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    x->slots = arena_alloc(s, cap, sizeof(uint32_t));
    x->mask = cap - 1;
    x->items = items;
    x->stride = stride;
    return x->slots != NULL;
}

/* The index of the item named p[0..n), or UINT32_MAX. */
static uint32_t index_find(const name_index *x, const char *p, size_t n) {
    if (!x->slots) return UINT32_MAX;
    for (uint64_t h = hash_bytes(p, n) & x->mask;; h = (h + 1) & x->mask) {
        uint32_t slot = x->slots[h];
        if (!slot) return UINT32_MAX;
        const gguf_str *s = index_name(x, slot - 1);
        if (s->len == n && memcmp(s->ptr, p, n) == 0) return slot - 1;
    }
}

/* Add item i; returns UINT32_MAX, or the index of an earlier item with the same name. */
static uint32_t index_insert(name_index *x, uint32_t i) {
    const gguf_str *name = index_name(x, i);
    uint64_t h = hash_bytes(name->ptr, (size_t)name->len) & x->mask;
    for (;; h = (h + 1) & x->mask) {
        uint32_t slot = x->slots[h];
        if (!slot) break;
        const gguf_str *s = index_name(x, slot - 1);
        if (s->len == name->len && memcmp(s->ptr, name->ptr, (size_t)name->len) == 0)
            return slot - 1;
    }
    x->slots[h] = i + 1;
    return UINT32_MAX;
}

/* ---- reader: a cursor over the file with bounds-checked reads -------------------------------- */

typedef struct {
    const char *path;
    const uint8_t *base;
    size_t size, pos;
    store *store;
    char what[160]; /* what is being read, for messages: "key 'general.name'" */
} reader;

static size_t left(const reader *r) { return r->size - r->pos; }

static msrnn_status nomem(const reader *r) {
    return status_fail(MSRNN_ERR_NOMEM, "%s: out of memory while reading %s", r->path, r->what);
}

/* Take n bytes at the cursor; `field` names them for the message. */
static msrnn_status take(reader *r, uint64_t n, const char *field, const uint8_t **p) {
    /* a length no real file reaches is a damaged field, not a cut-off file */
    if (n > ((uint64_t)1 << 40))
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: corrupt: the %s of %s claims %" PRIu64
                           " bytes at offset %zu, an impossible length (file size %zu)",
                           r->path, field, r->what, n, r->pos, r->size);
    if (n > left(r))
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: truncated: the %s of %s needs %" PRIu64
                           " bytes at offset %zu, but only %zu remain (file size %zu)",
                           r->path, field, r->what, n, r->pos, left(r), r->size);
    *p = r->base + r->pos;
    r->pos += (size_t)n;
    return MSRNN_OK;
}

static msrnn_status read_u32(reader *r, const char *field, uint32_t *v) {
    const uint8_t *p = NULL;
    MSRNN_TRY(take(r, 4, field, &p));
    memcpy(v, p, 4);
    return MSRNN_OK;
}

static msrnn_status read_u64(reader *r, const char *field, uint64_t *v) {
    const uint8_t *p = NULL;
    MSRNN_TRY(take(r, 8, field, &p));
    memcpy(v, p, 8);
    return MSRNN_OK;
}

static msrnn_status read_str(reader *r, const char *field, uint64_t max, gguf_str *s) {
    uint64_t len;
    const uint8_t *p = NULL;
    MSRNN_TRY(read_u64(r, field, &len));
    if (len > max && len <= left(r))
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: the %s of %s is %" PRIu64 " bytes long, more than the %" PRIu64
                           " allowed",
                           r->path, field, r->what, len, max);
    MSRNN_TRY(take(r, len, field, &p));
    s->ptr = (const char *)p;
    s->len = len;
    return MSRNN_OK;
}

/* ---- reader: values -------------------------------------------------------------------------- */

static msrnn_status read_array(reader *r, int depth, gguf_value *v);

static msrnn_status check_bool(const reader *r, uint8_t b) {
    if (b <= 1) return MSRNN_OK;
    return status_fail(MSRNN_ERR_FORMAT, "%s: %s: a bool is %u at offset %zu, expected 0 or 1",
                       r->path, r->what, b, r->pos - 1);
}

static msrnn_status read_value(reader *r, gguf_type type, int depth, gguf_value *v) {
    v->type = type;
    if (type == GGUF_TYPE_STRING) return read_str(r, "string", GGUF_MAX_STRING, &v->str);
    if (type == GGUF_TYPE_ARRAY) return read_array(r, depth + 1, v);

    const uint8_t *p = NULL;
    MSRNN_TRY(take(r, scalar_bytes(type), "value", &p));
    uint8_t u8;
    int8_t i8;
    uint16_t u16;
    int16_t i16;
    uint32_t u32;
    int32_t i32;
    float f32;
    switch (type) {
    case GGUF_TYPE_UINT8: memcpy(&u8, p, 1), v->u64 = u8; break;
    case GGUF_TYPE_INT8: memcpy(&i8, p, 1), v->i64 = i8; break;
    case GGUF_TYPE_UINT16: memcpy(&u16, p, 2), v->u64 = u16; break;
    case GGUF_TYPE_INT16: memcpy(&i16, p, 2), v->i64 = i16; break;
    case GGUF_TYPE_UINT32: memcpy(&u32, p, 4), v->u64 = u32; break;
    case GGUF_TYPE_INT32: memcpy(&i32, p, 4), v->i64 = i32; break;
    case GGUF_TYPE_FLOAT32: memcpy(&f32, p, 4), v->f64 = f32; break;
    case GGUF_TYPE_UINT64: memcpy(&v->u64, p, 8); break;
    case GGUF_TYPE_INT64: memcpy(&v->i64, p, 8); break;
    case GGUF_TYPE_FLOAT64: memcpy(&v->f64, p, 8); break;
    case GGUF_TYPE_BOOL:
        MSRNN_TRY(check_bool(r, p[0]));
        v->b = p[0];
        break;
    default: break; /* the caller checked the type */
    }
    return MSRNN_OK;
}

/* An array (element type, count, elements) at nesting level depth (1 = a key's own array). */
static msrnn_status read_array(reader *r, int depth, gguf_value *v) {
    uint32_t elem;
    uint64_t n;
    MSRNN_TRY(read_u32(r, "array element type", &elem));
    if (elem >= GGUF_TYPE_COUNT)
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: %s: array element type is %u, expected a GGUF value type (0..%d)",
                           r->path, r->what, elem, GGUF_TYPE_COUNT - 1);
    if (elem == GGUF_TYPE_ARRAY && depth >= GGUF_MAX_DEPTH)
        return status_fail(MSRNN_ERR_FORMAT, "%s: %s: arrays nested more than %d levels deep",
                           r->path, r->what, GGUF_MAX_DEPTH);
    MSRNN_TRY(read_u64(r, "array length", &n));

    /* the least each element takes in the file bounds the count before anything is allocated */
    size_t min_bytes = elem == GGUF_TYPE_STRING  ? 8
                       : elem == GGUF_TYPE_ARRAY ? 12
                                                 : scalar_bytes((gguf_type)elem);
    if (n > GGUF_MAX_ARRAY)
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: corrupt: %s claims an array of %" PRIu64
                           " elements, more than the %llu allowed",
                           r->path, r->what, n, GGUF_MAX_ARRAY);
    if (n > left(r) / min_bytes)
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: truncated: %s is an array of %" PRIu64
                           " %s elements (at least %zu bytes each), but only %zu bytes remain at "
                           "offset %zu (file size %zu)",
                           r->path, r->what, n, gguf_type_name((gguf_type)elem), min_bytes, left(r),
                           r->pos, r->size);

    v->arr.type = (gguf_type)elem;
    v->arr.n = n;
    if (elem == GGUF_TYPE_STRING) {
        gguf_str *s = arena_alloc(r->store, n, sizeof(gguf_str));
        if (!s) return nomem(r);
        for (uint64_t i = 0; i < n; i++) MSRNN_TRY(read_str(r, "string", GGUF_MAX_STRING, &s[i]));
        v->arr.data = s;
    } else if (elem == GGUF_TYPE_ARRAY) {
        gguf_value *a = arena_alloc(r->store, n, sizeof(gguf_value));
        if (!a) return nomem(r);
        for (uint64_t i = 0; i < n; i++) {
            a[i].type = GGUF_TYPE_ARRAY;
            MSRNN_TRY(read_array(r, depth + 1, &a[i]));
        }
        v->arr.data = a;
    } else {
        /* numbers are stored in the file exactly as a little-endian host holds them */
        const uint8_t *p = NULL;
        void *d = arena_alloc(r->store, n, min_bytes);
        if (!d) return nomem(r);
        MSRNN_TRY(take(r, n * min_bytes, "array elements", &p));
        memcpy(d, p, (size_t)(n * min_bytes));
        if (elem == GGUF_TYPE_BOOL)
            for (uint64_t i = 0; i < n; i++)
                if (p[i] > 1)
                    return status_fail(MSRNN_ERR_FORMAT,
                                       "%s: %s: bool element %" PRIu64 " is %u, expected 0 or 1",
                                       r->path, r->what, i, p[i]);
        v->arr.data = d;
    }
    return MSRNN_OK;
}

/* An integer value as u64 (*neg set when it is a negative signed value); 0 if not an integer. */
static int int_value(const gguf_value *v, uint64_t *u, int *neg) {
    *neg = 0;
    if (is_unsigned_int(v->type)) {
        *u = v->u64;
        return 1;
    }
    if (is_signed_int(v->type)) {
        *neg = v->i64 < 0;
        *u = (uint64_t)v->i64;
        return 1;
    }
    return 0;
}

/* ---- reader: the file ------------------------------------------------------------------------ */

/* A count from the header, against what the rest of the file could hold and an absolute cap. */
static msrnn_status check_count(const reader *r, uint64_t n, const char *what, size_t min_bytes,
                                uint32_t max) {
    if (n > max)
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: corrupt: the header claims %" PRIu64 " %s, more than the %u msrnn "
                           "accepts",
                           r->path, n, what, max);
    if (n > left(r) / min_bytes)
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: truncated: the header claims %" PRIu64
                           " %s, but the %zu bytes after it hold at most %zu",
                           r->path, n, what, left(r), left(r) / min_bytes);
    return MSRNN_OK;
}

static msrnn_status read_header(reader *r, gguf_file *f) {
    const uint8_t *magic = NULL;
    MSRNN_TRY(take(r, 4, "magic", &magic));
    if (memcmp(magic, "GGUF", 4) != 0)
        return status_fail(
            MSRNN_ERR_FORMAT,
            "%s: bad magic: expected \"GGUF\", found %02x %02x %02x %02x (not a GGUF "
            "file)",
            r->path, magic[0], magic[1], magic[2], magic[3]);
    MSRNN_TRY(read_u32(r, "version", &f->version));
    if (f->version != 2 && f->version != 3) {
        uint32_t swapped = __builtin_bswap32(f->version);
        if (swapped == 2 || swapped == 3)
            return status_fail(MSRNN_ERR_UNSUPPORTED,
                               "%s: a big-endian GGUF file (version %u byte-swapped); msrnn reads "
                               "only little-endian files",
                               r->path, swapped);
        return status_fail(MSRNN_ERR_UNSUPPORTED,
                           "%s: GGUF version %u is not supported (expected 2 or 3)", r->path,
                           f->version);
    }
    MSRNN_TRY(read_u64(r, "tensor count", &f->n_tensors));
    MSRNN_TRY(read_u64(r, "key/value count", &f->n_kv));
    MSRNN_TRY(check_count(r, f->n_kv, "key/value pairs", GGUF_MIN_KV_BYTES, GGUF_MAX_KV));
    MSRNN_TRY(check_count(r, f->n_tensors, "tensors", GGUF_MIN_TENSOR_BYTES, GGUF_MAX_TENSORS));
    return MSRNN_OK;
}

static msrnn_status read_kvs(reader *r, gguf_file *f) {
    store *s = r->store;
    f->kv = arena_alloc(s, f->n_kv, sizeof(gguf_kv));
    if (!f->kv || !index_init(s, &s->kv_index, f->kv, sizeof(gguf_kv), f->n_kv)) return nomem(r);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        gguf_kv *kv = &f->kv[i];
        uint32_t type;
        char name[96];
        snprintf(r->what, sizeof r->what, "key/value pair #%" PRIu64, i);
        MSRNN_TRY(read_str(r, "key", GGUF_MAX_NAME, &kv->key));
        if (kv->key.len == 0)
            return status_fail(MSRNN_ERR_FORMAT, "%s: key/value pair #%" PRIu64 " has an empty key",
                               r->path, i);
        quote(name, sizeof name, kv->key);
        snprintf(r->what, sizeof r->what, "key '%s'", name);
        MSRNN_TRY(read_u32(r, "value type", &type));
        if (type >= GGUF_TYPE_COUNT)
            return status_fail(MSRNN_ERR_FORMAT,
                               "%s: key '%s' has value type %u, expected a GGUF value type (0..%d)",
                               r->path, name, type, GGUF_TYPE_COUNT - 1);
        MSRNN_TRY(read_value(r, (gguf_type)type, 0, &kv->value));
        uint32_t dup = index_insert(&s->kv_index, (uint32_t)i);
        if (dup != UINT32_MAX)
            return status_fail(MSRNN_ERR_FORMAT,
                               "%s: duplicate key '%s' (pairs #%u and #%" PRIu64 ")", r->path, name,
                               dup, i);
    }

    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *a = gguf_find_kv(f, "general.alignment");
    if (a) {
        uint64_t v;
        int neg;
        if (!int_value(&a->value, &v, &neg))
            return status_fail(MSRNN_ERR_FORMAT,
                               "%s: general.alignment has type %s, expected uint32", r->path,
                               gguf_type_name(a->value.type));
        if (neg || !is_pow2(v) || v < GGUF_MIN_ALIGNMENT || v > GGUF_MAX_ALIGNMENT)
            return status_fail(
                MSRNN_ERR_FORMAT,
                "%s: general.alignment is %s%" PRIu64 ", expected a power of two from %d to %u",
                r->path, neg ? "-" : "", neg ? -v : v, GGUF_MIN_ALIGNMENT, GGUF_MAX_ALIGNMENT);
        f->alignment = v;
    }
    return MSRNN_OK;
}

/* Check a tensor's shape and type and work out its size; `name` is quoted for messages. */
static msrnn_status check_tensor_shape(const reader *r, gguf_tensor *t, uint32_t type,
                                       const char *name) {
    char shape[128];
    size_t o = 0;
    for (uint32_t d = 0; d < t->n_dims; d++)
        o += (size_t)snprintf(shape + o, sizeof shape - o, "%s%" PRIu64, d ? ", " : "", t->ne[d]);

    const type_traits_t *tr = type_traits(type);
    const char *tname = ggml_type_name(type);
    if (!tname)
        return status_fail(MSRNN_ERR_FORMAT, "%s: tensor '%s' has type %u, which is no GGML type",
                           r->path, name, type);
    if (!tr || !tr->supported)
        return status_fail(MSRNN_ERR_UNSUPPORTED,
                           "%s: tensor '%s' has type %s (%u), which msrnn does not support "
                           "(expected f32, f16, bf16, q8_0 or q4_0)",
                           r->path, name, tname, type);
    t->type = (tensor_type)type;

    uint64_t n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        if (t->ne[d] == 0)
            return status_fail(MSRNN_ERR_FORMAT,
                               "%s: tensor '%s' has shape [%s]: dimension %u is 0, expected >= 1",
                               r->path, name, shape, d);
        if (t->ne[d] > (uint64_t)INT64_MAX / n)
            return status_fail(MSRNN_ERR_FORMAT,
                               "%s: tensor '%s' has shape [%s], more than 2^63 elements", r->path,
                               name, shape);
        n *= t->ne[d];
    }
    if (t->ne[0] % (uint64_t)tr->block_size)
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: tensor '%s' of type %s has ne[0] = %" PRIu64
                           ", expected a multiple of the block size %d",
                           r->path, name, tr->name, t->ne[0], tr->block_size);
    uint64_t blocks = n / (uint64_t)tr->block_size;
    if (blocks > UINT64_MAX / tr->block_bytes)
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: tensor '%s' of type %s and shape [%s] needs more than 2^64 bytes",
                           r->path, name, tr->name, shape);
    t->n_elements = n;
    t->n_bytes = blocks * tr->block_bytes;
    return MSRNN_OK;
}

static msrnn_status read_tensor_infos(reader *r, gguf_file *f) {
    store *s = r->store;
    f->tensors = arena_alloc(s, f->n_tensors, sizeof(gguf_tensor));
    if (!f->tensors ||
        !index_init(s, &s->tensor_index, f->tensors, sizeof(gguf_tensor), f->n_tensors))
        return nomem(r);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        uint32_t type;
        char name[96];
        snprintf(r->what, sizeof r->what, "tensor #%" PRIu64, i);
        MSRNN_TRY(read_str(r, "name", GGUF_MAX_NAME, &t->name));
        if (t->name.len == 0)
            return status_fail(MSRNN_ERR_FORMAT, "%s: tensor #%" PRIu64 " has an empty name",
                               r->path, i);
        quote(name, sizeof name, t->name);
        snprintf(r->what, sizeof r->what, "tensor '%s'", name);
        MSRNN_TRY(read_u32(r, "dimension count", &t->n_dims));
        if (t->n_dims < 1 || t->n_dims > 4)
            return status_fail(MSRNN_ERR_FORMAT,
                               "%s: tensor '%s' has %u dimensions, expected 1 to 4", r->path, name,
                               t->n_dims);
        for (uint32_t d = 0; d < 4; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) MSRNN_TRY(read_u64(r, "shape", &t->ne[d]));
        MSRNN_TRY(read_u32(r, "type", &type));
        MSRNN_TRY(read_u64(r, "data offset", &t->offset));
        MSRNN_TRY(check_tensor_shape(r, t, type, name));
        if (t->offset % f->alignment)
            return status_fail(MSRNN_ERR_FORMAT,
                               "%s: tensor '%s' data offset %" PRIu64
                               " is not a multiple of the alignment %" PRIu64,
                               r->path, name, t->offset, f->alignment);
        uint32_t dup = index_insert(&s->tensor_index, (uint32_t)i);
        if (dup != UINT32_MAX)
            return status_fail(MSRNN_ERR_FORMAT,
                               "%s: duplicate tensor name '%s' (tensors #%u and #%" PRIu64 ")",
                               r->path, name, dup, i);
    }
    return MSRNN_OK;
}

typedef struct {
    uint64_t offset, n_bytes;
    uint32_t index;
} extent;

static int extent_cmp(const void *a, const void *b) {
    const extent *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Place the data section and check that every tensor lies inside it and none overlap. */
static msrnn_status place_tensor_data(reader *r, gguf_file *f) {
    char name[96], other[96];
    f->data_offset = align_up(r->pos, f->alignment);
    uint64_t avail = f->data_offset <= r->size ? r->size - f->data_offset : 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        if (t->offset > avail || t->n_bytes > avail - t->offset) {
            quote(name, sizeof name, t->name);
            return status_fail(MSRNN_ERR_FORMAT,
                               "%s: tensor '%s' data [offset %" PRIu64 ", %" PRIu64
                               " bytes] runs past the end of the file (data section at %" PRIu64
                               ", %" PRIu64 " bytes; file size %zu)",
                               r->path, name, t->offset, t->n_bytes, f->data_offset, avail,
                               r->size);
        }
        t->data = r->base + f->data_offset + t->offset;
    }
    if (f->n_tensors < 2) return MSRNN_OK;

    extent *e = malloc((size_t)f->n_tensors * sizeof *e);
    if (!e) return nomem(r);
    for (uint64_t i = 0; i < f->n_tensors; i++)
        e[i] = (extent){f->tensors[i].offset, f->tensors[i].n_bytes, (uint32_t)i};
    qsort(e, (size_t)f->n_tensors, sizeof *e, extent_cmp);
    for (uint64_t i = 1; i < f->n_tensors; i++) {
        if (e[i - 1].offset + e[i - 1].n_bytes <= e[i].offset) continue;
        quote(name, sizeof name, f->tensors[e[i - 1].index].name);
        quote(other, sizeof other, f->tensors[e[i].index].name);
        msrnn_status st =
            status_fail(MSRNN_ERR_FORMAT,
                        "%s: tensors '%s' [offset %" PRIu64 ", %" PRIu64
                        " bytes] and '%s' [offset %" PRIu64 "] overlap",
                        r->path, name, e[i - 1].offset, e[i - 1].n_bytes, other, e[i].offset);
        free(e);
        return st;
    }
    free(e);
    return MSRNN_OK;
}

/* Parse and validate base[0..size); on success *out owns path, arena and (if mapped) the map. */
static msrnn_status parse(const char *path, const uint8_t *base, size_t size, int mapped,
                          gguf_file **out) {
    gguf_file *f = calloc(1, sizeof *f);
    store *s = calloc(1, sizeof *s);
    char *owned_path = strdup(path);
    if (!f || !s || !owned_path) {
        free(f), free(s), free(owned_path);
        return status_fail(MSRNN_ERR_NOMEM, "%s: out of memory", path);
    }
    f->path = owned_path;
    f->base = base;
    f->size = size;
    f->arena = s;

    reader r = {.path = owned_path, .base = base, .size = size, .store = s};
    snprintf(r.what, sizeof r.what, "the header");
    msrnn_status st = read_header(&r, f);
    if (st == MSRNN_OK) st = read_kvs(&r, f);
    if (st == MSRNN_OK) st = read_tensor_infos(&r, f);
    if (st == MSRNN_OK) st = place_tensor_data(&r, f);
    if (st != MSRNN_OK) {
        gguf_close(f); /* does not unmap: mapped is still 0 */
        return st;
    }
    f->mapped = mapped;
    *out = f;
    return MSRNN_OK;
}

msrnn_status gguf_open(const char *path, gguf_file **out) {
    static const uint8_t empty[1];
    *out = NULL;
    int fd;
    struct stat sb;
    MSRNN_TRY(file_open_regular(path, &fd, &sb));
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return status_fail(MSRNN_ERR_NOMEM, "%s: %lld bytes do not fit in the address space", path,
                           (long long)sb.st_size);
    }
    size_t size = (size_t)sb.st_size;
    if (size == 0) { /* mmap cannot map nothing; parse() reports the truncation */
        close(fd);
        return parse(path, empty, 0, 0, out);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED)
        return status_fail(MSRNN_ERR_IO, "%s: cannot map: %s", path, strerror(e));
    msrnn_status st = parse(path, map, size, 1, out);
    if (st != MSRNN_OK) munmap(map, size);
    return st;
}

void gguf_prefault(const gguf_file *f) {
    if (!f || !f->mapped) return;
    void *p = (void *)f->base;
#ifdef MADV_POPULATE_READ
    if (madvise(p, f->size, MADV_POPULATE_READ) == 0) return;
#endif
    (void)madvise(p, f->size, MADV_WILLNEED); /* older kernels: read ahead, map on first touch */
}

msrnn_status gguf_open_memory(const void *data, size_t size, gguf_file **out) {
    static const uint8_t empty[1];
    *out = NULL;
    return parse("<memory>", data ? data : empty, data ? size : 0, 0, out);
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    if (f->mapped) munmap((void *)f->base, f->size);
    if (f->arena) arena_free(f->arena);
    free((void *)f->path);
    free(f);
}

/* ---- lookups and typed getters --------------------------------------------------------------- */

int gguf_str_eq(gguf_str s, const char *c) {
    size_t n = strlen(c);
    return s.len == n && memcmp(s.ptr, c, n) == 0;
}

const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key) {
    const store *s = f->arena;
    uint32_t i = index_find(&s->kv_index, key, strlen(key));
    return i == UINT32_MAX ? NULL : &f->kv[i];
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    const store *s = f->arena;
    uint32_t i = index_find(&s->tensor_index, name, strlen(name));
    return i == UINT32_MAX ? NULL : &f->tensors[i];
}

/* The pair for key; *kv NULL (and MSRNN_OK) when it is absent and not required. */
static msrnn_status lookup(const gguf_file *f, const char *key, int required, const gguf_kv **kv) {
    *kv = gguf_find_kv(f, key);
    if (!*kv && required)
        return status_fail(MSRNN_ERR_FORMAT, "%s: required key '%s' is missing", f->path, key);
    return MSRNN_OK;
}

static msrnn_status wrong_type(const gguf_file *f, const char *key, const gguf_value *v,
                               const char *expected) {
    return status_fail(MSRNN_ERR_FORMAT, "%s: key '%s' has type %s, expected %s", f->path, key,
                       gguf_type_name(v->type), expected);
}

msrnn_status gguf_get_u32(const gguf_file *f, const char *key, int required, uint32_t *out) {
    const gguf_kv *kv;
    uint64_t v;
    int neg;
    MSRNN_TRY(lookup(f, key, required, &kv));
    if (!kv) return MSRNN_OK;
    if (!int_value(&kv->value, &v, &neg)) return wrong_type(f, key, &kv->value, "an integer");
    if (neg || v > UINT32_MAX)
        return status_fail(MSRNN_ERR_FORMAT,
                           "%s: key '%s' is %s%" PRIu64 ", expected a value from 0 to %u", f->path,
                           key, neg ? "-" : "", neg ? -v : v, UINT32_MAX);
    *out = (uint32_t)v;
    return MSRNN_OK;
}

msrnn_status gguf_get_f32(const gguf_file *f, const char *key, int required, float *out) {
    const gguf_kv *kv;
    MSRNN_TRY(lookup(f, key, required, &kv));
    if (!kv) return MSRNN_OK;
    if (kv->value.type != GGUF_TYPE_FLOAT32 && kv->value.type != GGUF_TYPE_FLOAT64)
        return wrong_type(f, key, &kv->value, "float32");
    *out = (float)kv->value.f64;
    return MSRNN_OK;
}

msrnn_status gguf_get_bool(const gguf_file *f, const char *key, int required, int *out) {
    const gguf_kv *kv;
    MSRNN_TRY(lookup(f, key, required, &kv));
    if (!kv) return MSRNN_OK;
    if (kv->value.type != GGUF_TYPE_BOOL) return wrong_type(f, key, &kv->value, "bool");
    *out = kv->value.b;
    return MSRNN_OK;
}

msrnn_status gguf_get_str(const gguf_file *f, const char *key, int required, gguf_str *out) {
    const gguf_kv *kv;
    MSRNN_TRY(lookup(f, key, required, &kv));
    if (!kv) return MSRNN_OK;
    if (kv->value.type != GGUF_TYPE_STRING) return wrong_type(f, key, &kv->value, "string");
    *out = kv->value.str;
    return MSRNN_OK;
}

msrnn_status gguf_get_arr(const gguf_file *f, const char *key, int required, gguf_type elem,
                          const void **data, uint64_t *n) {
    const gguf_kv *kv;
    MSRNN_TRY(lookup(f, key, required, &kv));
    if (!kv) return MSRNN_OK;
    if (kv->value.type != GGUF_TYPE_ARRAY || kv->value.arr.type != elem) {
        char expected[64];
        snprintf(expected, sizeof expected, "an array of %s", gguf_type_name(elem));
        if (kv->value.type == GGUF_TYPE_ARRAY)
            return status_fail(MSRNN_ERR_FORMAT, "%s: key '%s' is an array of %s, expected %s",
                               f->path, key, gguf_type_name(kv->value.arr.type), expected);
        return wrong_type(f, key, &kv->value, expected);
    }
    *data = kv->value.arr.data;
    *n = kv->value.arr.n;
    return MSRNN_OK;
}

/* ---- writer ---------------------------------------------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t len, cap;
    int failed; /* an allocation failed: the contents are incomplete */
} bytes;

static void put(bytes *b, const void *data, size_t n) {
    if (b->failed) return;
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) {
                b->failed = 1;
                return;
            }
            cap *= 2;
        }
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void put_u32(bytes *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(bytes *b, uint64_t v) { put(b, &v, 8); }
static void put_str(bytes *b, const char *s, uint64_t n) {
    put_u64(b, n);
    put(b, s, (size_t)n);
}

typedef struct {
    char *key;
    bytes value; /* u32 type + the value, as in the file */
} writer_kv;

typedef struct {
    char *name;
    tensor_type type;
    uint32_t n_dims;
    uint64_t ne[4];
    uint64_t n_elements;
    uint64_t n_bytes; /* in the file */
    const void *data; /* the bytes to write; with from_f32, n_elements f32 values to convert */
    void *owned;      /* data, when gguf_writer_add_tensor copied it */
    int from_f32;     /* convert data from f32 to type while writing */
} writer_tensor;

struct gguf_writer {
    writer_kv *kv;
    size_t n_kv, cap_kv;
    writer_tensor *tensors;
    size_t n_tensors, cap_tensors;
};

gguf_writer *gguf_writer_new(void) { return calloc(1, sizeof(gguf_writer)); }

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) free(w->kv[i].key), free(w->kv[i].value.p);
    for (size_t i = 0; i < w->n_tensors; i++) free(w->tensors[i].name), free(w->tensors[i].owned);
    free(w->kv);
    free(w->tensors);
    free(w);
}

/* Grow an array of *cap elements of `each` bytes so that one more fits. */
static int grow(void **items, size_t *cap, size_t n, size_t each) {
    if (n < *cap) return 1;
    size_t c = *cap ? *cap * 2 : 16;
    if (c > SIZE_MAX / each) return 0;
    void *p = realloc(*items, c * each);
    if (!p) return 0;
    *items = p;
    *cap = c;
    return 1;
}

/* Store an encoded value under key (replacing an earlier one); takes ownership of v. */
static msrnn_status writer_put(gguf_writer *w, const char *key, bytes v) {
    size_t n = strlen(key);
    if (n == 0 || n > GGUF_MAX_NAME) {
        free(v.p);
        return status_fail(MSRNN_ERR_INVALID, "gguf writer: key '%.64s' must be 1 to %d bytes long",
                           key, GGUF_MAX_NAME);
    }
    if (v.failed) {
        free(v.p);
        return status_fail(MSRNN_ERR_NOMEM, "gguf writer: out of memory storing key '%s'", key);
    }
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0) {
            free(w->kv[i].value.p);
            w->kv[i].value = v;
            return MSRNN_OK;
        }
    char *k = strdup(key);
    if (!k || !grow((void **)&w->kv, &w->cap_kv, w->n_kv, sizeof *w->kv)) {
        free(k);
        free(v.p);
        return status_fail(MSRNN_ERR_NOMEM, "gguf writer: out of memory storing key '%s'", key);
    }
    w->kv[w->n_kv++] = (writer_kv){k, v};
    return MSRNN_OK;
}

static msrnn_status put_scalar(gguf_writer *w, const char *key, gguf_type t, const void *v) {
    bytes b = {0};
    put_u32(&b, t);
    put(&b, v, scalar_bytes(t));
    return writer_put(w, key, b);
}

msrnn_status gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v) {
    return put_scalar(w, key, GGUF_TYPE_UINT32, &v);
}
msrnn_status gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v) {
    return put_scalar(w, key, GGUF_TYPE_INT32, &v);
}
msrnn_status gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v) {
    return put_scalar(w, key, GGUF_TYPE_UINT64, &v);
}
msrnn_status gguf_writer_set_f32(gguf_writer *w, const char *key, float v) {
    return put_scalar(w, key, GGUF_TYPE_FLOAT32, &v);
}
msrnn_status gguf_writer_set_bool(gguf_writer *w, const char *key, int v) {
    uint8_t b = v != 0;
    return put_scalar(w, key, GGUF_TYPE_BOOL, &b);
}

msrnn_status gguf_writer_set_str(gguf_writer *w, const char *key, const char *v) {
    bytes b = {0};
    put_u32(&b, GGUF_TYPE_STRING);
    put_str(&b, v, strlen(v));
    return writer_put(w, key, b);
}

msrnn_status gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_type elem, const void *data,
                                 uint64_t n) {
    size_t each = scalar_bytes(elem);
    if (each == 0)
        return status_fail(MSRNN_ERR_INVALID,
                           "gguf writer: key '%s': gguf_writer_set_arr takes numbers or bools, not "
                           "%s (use gguf_writer_set_arr_str or gguf_writer_set_kv)",
                           key, gguf_type_name(elem));
    if (n > GGUF_MAX_ARRAY || (n && !data))
        return status_fail(MSRNN_ERR_INVALID, "gguf writer: key '%s': bad array of %" PRIu64 " %s",
                           key, n, gguf_type_name(elem));
    bytes b = {0};
    put_u32(&b, GGUF_TYPE_ARRAY);
    put_u32(&b, elem);
    put_u64(&b, n);
    if (elem == GGUF_TYPE_BOOL)
        for (uint64_t i = 0; i < n; i++) {
            uint8_t v = ((const uint8_t *)data)[i] != 0;
            put(&b, &v, 1);
        }
    else
        put(&b, data, (size_t)n * each);
    return writer_put(w, key, b);
}

msrnn_status gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                                     const uint64_t *lens, uint64_t n) {
    if (n > GGUF_MAX_ARRAY || (n && !strs))
        return status_fail(MSRNN_ERR_INVALID,
                           "gguf writer: key '%s': bad array of %" PRIu64 " strings", key, n);
    bytes b = {0};
    put_u32(&b, GGUF_TYPE_ARRAY);
    put_u32(&b, GGUF_TYPE_STRING);
    put_u64(&b, n);
    for (uint64_t i = 0; i < n; i++) put_str(&b, strs[i], lens ? lens[i] : strlen(strs[i]));
    return writer_put(w, key, b);
}

/* Encode an array's body (element type, count, elements) from a decoded value. */
static int encode_array(bytes *b, const gguf_value *v, int depth) {
    gguf_type t = v->arr.type;
    if (depth > GGUF_MAX_DEPTH || (unsigned)t >= GGUF_TYPE_COUNT) return 0;
    put_u32(b, t);
    put_u64(b, v->arr.n);
    if (t == GGUF_TYPE_STRING) {
        const gguf_str *s = v->arr.data;
        for (uint64_t i = 0; i < v->arr.n; i++) put_str(b, s[i].ptr, s[i].len);
    } else if (t == GGUF_TYPE_ARRAY) {
        const gguf_value *a = v->arr.data;
        for (uint64_t i = 0; i < v->arr.n; i++)
            if (!encode_array(b, &a[i], depth + 1)) return 0;
    } else {
        put(b, v->arr.data, (size_t)v->arr.n * scalar_bytes(t));
    }
    return 1;
}

msrnn_status gguf_writer_set_kv(gguf_writer *w, const gguf_kv *kv) {
    const gguf_value *v = &kv->value;
    if (kv->key.len == 0 || kv->key.len > GGUF_MAX_NAME ||
        memchr(kv->key.ptr, 0, (size_t)kv->key.len))
        return status_fail(MSRNN_ERR_INVALID,
                           "gguf writer: a copied key must be 1 to %d bytes without NUL",
                           GGUF_MAX_NAME);
    char *key = strndup(kv->key.ptr, (size_t)kv->key.len);
    if (!key) return status_fail(MSRNN_ERR_NOMEM, "gguf writer: out of memory copying a key");

    bytes b = {0};
    put_u32(&b, v->type);
    uint8_t u8 = (uint8_t)v->u64, bl = v->b != 0;
    uint16_t u16 = (uint16_t)v->u64;
    uint32_t u32 = (uint32_t)v->u64;
    float f32 = (float)v->f64;
    switch (v->type) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_INT8: put(&b, &u8, 1); break; /* i64 and u64 share their low bytes */
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_INT16: put(&b, &u16, 2); break;
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_INT32: put(&b, &u32, 4); break;
    case GGUF_TYPE_FLOAT32: put(&b, &f32, 4); break;
    case GGUF_TYPE_BOOL: put(&b, &bl, 1); break;
    case GGUF_TYPE_STRING: put_str(&b, v->str.ptr, v->str.len); break;
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_INT64: put(&b, &v->u64, 8); break;
    case GGUF_TYPE_FLOAT64: put(&b, &v->f64, 8); break;
    case GGUF_TYPE_ARRAY:
        if (encode_array(&b, v, 1)) break;
        /* fall through */
    default: {
        msrnn_status st =
            status_fail(MSRNN_ERR_INVALID, "gguf writer: key '%s' has a malformed value (type %d)",
                        key, (int)v->type);
        free(b.p);
        free(key);
        return st;
    }
    }
    msrnn_status st = writer_put(w, key, b);
    free(key);
    return st;
}

/* Check a tensor's description and fill t (all but its name and storage). */
static msrnn_status describe_tensor(const gguf_writer *w, const char *name, tensor_type type,
                                    uint32_t n_dims, const uint64_t *ne, const void *data,
                                    writer_tensor *t) {
    size_t len = strlen(name);
    if (len == 0 || len > GGUF_MAX_NAME)
        return status_fail(MSRNN_ERR_INVALID,
                           "gguf writer: tensor name '%.64s' must be 1 to %d "
                           "bytes long",
                           name, GGUF_MAX_NAME);
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return status_fail(MSRNN_ERR_INVALID, "gguf writer: tensor '%s' added twice", name);
    if (!data || !ne)
        return status_fail(MSRNN_ERR_INVALID, "gguf writer: tensor '%s' has no data or shape",
                           name);
    const type_traits_t *tr = type_traits(type);
    if (!tr || !tr->supported)
        return status_fail(MSRNN_ERR_INVALID, "gguf writer: tensor '%s' has unsupported type %d",
                           name, (int)type);
    if (n_dims < 1 || n_dims > 4)
        return status_fail(MSRNN_ERR_INVALID,
                           "gguf writer: tensor '%s' has %u dimensions, expected 1 to 4", name,
                           n_dims);
    *t = (writer_tensor){.type = type, .n_dims = n_dims, .ne = {1, 1, 1, 1}, .data = data};
    uint64_t n = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] == 0 || ne[d] > (uint64_t)INT64_MAX / n)
            return status_fail(MSRNN_ERR_INVALID,
                               "gguf writer: tensor '%s' dimension %u is %" PRIu64
                               " (0, or the tensor is too large)",
                               name, d, ne[d]);
        t->ne[d] = ne[d];
        n *= ne[d];
    }
    if (ne[0] % (uint64_t)tr->block_size)
        return status_fail(MSRNN_ERR_INVALID,
                           "gguf writer: tensor '%s' of type %s has ne[0] = %" PRIu64
                           ", expected a multiple of %d",
                           name, tr->name, ne[0], tr->block_size);
    uint64_t blocks = n / (uint64_t)tr->block_size;
    if (blocks > SIZE_MAX / tr->block_bytes || n > SIZE_MAX / sizeof(float))
        return status_fail(MSRNN_ERR_INVALID, "gguf writer: tensor '%s' is too large", name);
    t->n_elements = n;
    t->n_bytes = blocks * tr->block_bytes;
    return MSRNN_OK;
}

/* Append t under a copy of name (and, with copy, a copy of its data). */
static msrnn_status append_tensor(gguf_writer *w, const char *name, writer_tensor t, int copy) {
    t.name = strdup(name);
    if (copy) t.owned = malloc(t.n_bytes ? (size_t)t.n_bytes : 1);
    if (!t.name || (copy && !t.owned) ||
        !grow((void **)&w->tensors, &w->cap_tensors, w->n_tensors, sizeof *w->tensors)) {
        free(t.name), free(t.owned);
        return status_fail(MSRNN_ERR_NOMEM,
                           "gguf writer: out of memory adding tensor '%s' (%" PRIu64 " bytes)",
                           name, t.n_bytes);
    }
    if (copy) t.data = memcpy(t.owned, t.data, (size_t)t.n_bytes);
    w->tensors[w->n_tensors++] = t;
    return MSRNN_OK;
}

msrnn_status gguf_writer_add_tensor(gguf_writer *w, const char *name, tensor_type type,
                                    uint32_t n_dims, const uint64_t *ne, const void *data) {
    writer_tensor t;
    MSRNN_TRY(describe_tensor(w, name, type, n_dims, ne, data, &t));
    return append_tensor(w, name, t, 1);
}

msrnn_status gguf_writer_add_tensor_ref(gguf_writer *w, const char *name, tensor_type type,
                                        uint32_t n_dims, const uint64_t *ne, const void *data) {
    writer_tensor t;
    MSRNN_TRY(describe_tensor(w, name, type, n_dims, ne, data, &t));
    return append_tensor(w, name, t, 0);
}

msrnn_status gguf_writer_add_tensor_f32_as(gguf_writer *w, const char *name, tensor_type type,
                                           uint32_t n_dims, const uint64_t *ne, const float *src) {
    writer_tensor t;
    MSRNN_TRY(describe_tensor(w, name, type, n_dims, ne, src, &t));
    t.from_f32 = type != TYPE_F32; /* f32 to f32 is the bytes themselves */
    return append_tensor(w, name, t, 0);
}

/* The alignment the file will use: general.alignment if set (it must be a valid uint32), or 32. */
static msrnn_status writer_alignment(const gguf_writer *w, uint64_t *alignment) {
    *alignment = GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment") != 0) continue;
        uint32_t type, v;
        memcpy(&type, w->kv[i].value.p, 4);
        if (type != GGUF_TYPE_UINT32)
            return status_fail(MSRNN_ERR_INVALID,
                               "gguf writer: general.alignment has type %s, expected uint32",
                               gguf_type_name((gguf_type)type));
        memcpy(&v, w->kv[i].value.p + 4, 4);
        if (!is_pow2(v) || v < GGUF_MIN_ALIGNMENT || v > GGUF_MAX_ALIGNMENT)
            return status_fail(MSRNN_ERR_INVALID,
                               "gguf writer: general.alignment is %u, expected a power of two from "
                               "%d to %u",
                               v, GGUF_MIN_ALIGNMENT, GGUF_MAX_ALIGNMENT);
        *alignment = v;
    }
    return MSRNN_OK;
}

static void out_pad(atomic_file *o, uint64_t alignment) {
    static const uint8_t zeros[64];
    uint64_t pad = align_up(atomic_file_offset(o), alignment) - atomic_file_offset(o);
    while (pad) {
        size_t k = pad < sizeof zeros ? (size_t)pad : sizeof zeros;
        atomic_file_write(o, zeros, k);
        pad -= k;
    }
}

/* A tensor's bytes; an f32_as tensor is converted GGUF_WRITER_CHUNK elements at a time into
 * scratch (the chunk is a whole number of blocks of every type, so quantising chunk by chunk gives
 * the bytes quantising the whole tensor gives). */
static void write_tensor_data(atomic_file *o, const writer_tensor *t, void *scratch) {
    if (!t->from_f32) {
        atomic_file_write(o, t->data, (size_t)t->n_bytes);
        return;
    }
    const float *src = t->data;
    for (uint64_t i = 0; i < t->n_elements && !atomic_file_failed(o); i += GGUF_WRITER_CHUNK) {
        uint64_t k = t->n_elements - i < GGUF_WRITER_CHUNK ? t->n_elements - i : GGUF_WRITER_CHUNK;
        quantize_row(t->type, src + i, scratch, (int64_t)k);
        atomic_file_write(o, scratch, type_row_bytes(t->type, k));
    }
}

static void write_contents(const gguf_writer *w, atomic_file *o, uint64_t alignment,
                           void *scratch) {
    uint32_t version = GGUF_VERSION;
    uint64_t n_tensors = w->n_tensors, n_kv = w->n_kv, offset = 0;
    atomic_file_write(o, "GGUF", 4);
    atomic_file_write(o, &version, 4);
    atomic_file_write(o, &n_tensors, 8);
    atomic_file_write(o, &n_kv, 8);
    for (size_t i = 0; i < w->n_kv; i++) {
        uint64_t len = strlen(w->kv[i].key);
        atomic_file_write(o, &len, 8);
        atomic_file_write(o, w->kv[i].key, (size_t)len);
        atomic_file_write(o, w->kv[i].value.p, w->kv[i].value.len);
    }
    for (size_t i = 0; i < w->n_tensors; i++) {
        const writer_tensor *t = &w->tensors[i];
        uint64_t len = strlen(t->name);
        uint32_t type = t->type;
        atomic_file_write(o, &len, 8);
        atomic_file_write(o, t->name, (size_t)len);
        atomic_file_write(o, &t->n_dims, 4);
        atomic_file_write(o, t->ne, (size_t)t->n_dims * 8);
        atomic_file_write(o, &type, 4);
        atomic_file_write(o, &offset, 8);
        offset = align_up(offset + t->n_bytes, alignment);
    }
    out_pad(o, alignment);
    for (size_t i = 0; i < w->n_tensors && !atomic_file_failed(o); i++) {
        write_tensor_data(o, &w->tensors[i], scratch);
        out_pad(o, alignment);
    }
}

msrnn_status gguf_writer_write(gguf_writer *w, const char *path) {
    uint64_t alignment;
    MSRNN_TRY(writer_alignment(w, &alignment));
    void *scratch = NULL; /* one conversion chunk, if any tensor converts */
    for (size_t i = 0; i < w->n_tensors && !scratch; i++)
        if (w->tensors[i].from_f32 &&
            !(scratch = malloc(GGUF_WRITER_CHUNK * sizeof(float)))) /* >= any type's bytes */
            return status_fail(MSRNN_ERR_NOMEM, "%s: out of memory", path);
    atomic_file *o;
    msrnn_status st = atomic_file_open(path, &o);
    if (st == MSRNN_OK) {
        write_contents(w, o, alignment, scratch);
        st = atomic_file_commit(o);
    }
    free(scratch);
    return st;
}
