/* test_gguf.c — the GGUF reader and writer (src/io/gguf.c).
 *
 * 1. Round trip: every value type (scalars, strings, arrays of every element type, nested arrays)
 *    and tensors of every supported type go through the writer and come back exactly, under a
 *    non-default alignment; copying a file key by key reproduces it byte for byte.
 * 2. Broken files, built byte by byte here from a valid one: each must fail with a specific status
 *    and a message naming what is wrong (truncation at every offset, bad magic/version, absurd
 *    counts and lengths, bad alignment, bad tensor shapes/types/offsets, duplicates, deep nesting).
 * 3. The writer is atomic: a failed write leaves nothing behind, a successful one replaces.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "files.h"
#include "io/gguf.h"

static int str_is(gguf_str s, const char *c, size_t n) {
    return s.len == n && !memcmp(s.ptr, c, n);
}

/* ---- 1. round trip --------------------------------------------------------------------------- */

#define N_ELEM 5

static const uint8_t u8s[N_ELEM] = {0, 1, 127, 200, 255};
static const int8_t i8s[N_ELEM] = {-128, -1, 0, 1, 127};
static const uint16_t u16s[N_ELEM] = {0, 1, 255, 256, 65535};
static const int16_t i16s[N_ELEM] = {-32768, -1, 0, 1, 32767};
static const uint32_t u32s[N_ELEM] = {0, 1, 65536, 0x7fffffff, 0xffffffff};
static const int32_t i32s[N_ELEM] = {INT32_MIN, -1, 0, 1, INT32_MAX};
static const float f32s[N_ELEM] = {-1.5f, 0.0f, 1e-30f, 3.25f, 1e30f};
static const uint8_t bools[N_ELEM] = {1, 0, 0, 1, 1};
static const uint64_t u64s[N_ELEM] = {0, 1, 1ull << 32, 1ull << 63, UINT64_MAX};
static const int64_t i64s[N_ELEM] = {INT64_MIN, -1, 0, 1, INT64_MAX};
static const double f64s[N_ELEM] = {-1e300, 0.0, 1.0 / 3.0, 2.5, 1e-300};

static const struct {
    const char *key;
    gguf_type type;
    const void *data;
} arrays[] = {
    {"arr.u8", GGUF_TYPE_UINT8, u8s},     {"arr.i8", GGUF_TYPE_INT8, i8s},
    {"arr.u16", GGUF_TYPE_UINT16, u16s},  {"arr.i16", GGUF_TYPE_INT16, i16s},
    {"arr.u32", GGUF_TYPE_UINT32, u32s},  {"arr.i32", GGUF_TYPE_INT32, i32s},
    {"arr.f32", GGUF_TYPE_FLOAT32, f32s}, {"arr.bool", GGUF_TYPE_BOOL, bools},
    {"arr.u64", GGUF_TYPE_UINT64, u64s},  {"arr.i64", GGUF_TYPE_INT64, i64s},
    {"arr.f64", GGUF_TYPE_FLOAT64, f64s},
};
#define N_ARRAYS (sizeof arrays / sizeof arrays[0])

static const size_t elem_bytes[GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

/* Strings with an empty one, an embedded NUL and UTF-8. */
static const char *const strs[] = {"", "a", "with\0nul", "\xe2\x96\x81hello"};
static const uint64_t str_lens[] = {0, 1, 8, 8};

static const struct {
    const char *name;
    tensor_type type;
    uint32_t n_dims;
    uint64_t ne[4];
} tensors[] = {
    {"t.f32", TYPE_F32, 2, {5, 3}},          {"t.f16", TYPE_F16, 1, {7}},
    {"t.bf16", TYPE_BF16, 3, {4, 2, 2}},     {"t.q8_0", TYPE_Q8_0, 2, {64, 3}},
    {"t.q4_0", TYPE_Q4_0, 4, {32, 2, 1, 2}},
};
#define N_TENSORS (sizeof tensors / sizeof tensors[0])

static uint64_t tensor_bytes(int i) {
    uint64_t rows = 1;
    for (uint32_t d = 1; d < tensors[i].n_dims; d++) rows *= tensors[i].ne[d];
    return type_row_bytes(tensors[i].type, tensors[i].ne[0]) * rows;
}

/* Deterministic bytes for tensor i (the reader does not interpret them). */
static uint8_t *tensor_data(int i) {
    uint64_t n = tensor_bytes(i);
    uint8_t *p = malloc((size_t)n);
    uint32_t x = 2463534242u + (uint32_t)i;
    for (uint64_t k = 0; k < n; k++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        p[k] = (uint8_t)x;
    }
    return p;
}

/* The nested value [["x", "yy"], [], ["zzz"]] (an array of arrays of strings). */
static gguf_value nested_strings(void) {
    static const gguf_str s0[] = {{"x", 1}, {"yy", 2}}, s2[] = {{"zzz", 3}};
    static gguf_value inner[3];
    inner[0] = (gguf_value){.type = GGUF_TYPE_ARRAY, .arr = {GGUF_TYPE_STRING, 2, s0}};
    inner[1] = (gguf_value){.type = GGUF_TYPE_ARRAY, .arr = {GGUF_TYPE_STRING, 0, s0}};
    inner[2] = (gguf_value){.type = GGUF_TYPE_ARRAY, .arr = {GGUF_TYPE_STRING, 1, s2}};
    return (gguf_value){.type = GGUF_TYPE_ARRAY, .arr = {GGUF_TYPE_ARRAY, 3, inner}};
}

/* [[[1, -2], [3]], [[-4]]] as int16: three levels. */
static gguf_value nested_ints(void) {
    static const int16_t a[] = {1, -2}, b[] = {3}, c[] = {-4};
    static gguf_value l2a[2], l2b[1], l1[2];
    l2a[0] = (gguf_value){.type = GGUF_TYPE_ARRAY, .arr = {GGUF_TYPE_INT16, 2, a}};
    l2a[1] = (gguf_value){.type = GGUF_TYPE_ARRAY, .arr = {GGUF_TYPE_INT16, 1, b}};
    l2b[0] = (gguf_value){.type = GGUF_TYPE_ARRAY, .arr = {GGUF_TYPE_INT16, 1, c}};
    l1[0] = (gguf_value){.type = GGUF_TYPE_ARRAY, .arr = {GGUF_TYPE_ARRAY, 2, l2a}};
    l1[1] = (gguf_value){.type = GGUF_TYPE_ARRAY, .arr = {GGUF_TYPE_ARRAY, 1, l2b}};
    return (gguf_value){.type = GGUF_TYPE_ARRAY, .arr = {GGUF_TYPE_ARRAY, 2, l1}};
}

static msrnn_status set_value(gguf_writer *w, const char *key, gguf_value v) {
    gguf_kv kv = {{key, strlen(key)}, v};
    return gguf_writer_set_kv(w, &kv);
}

static gguf_writer *build_everything(void) {
    gguf_writer *w = gguf_writer_new();
    REQUIRE(w != NULL, "gguf_writer_new");
    REQUIRE_OK(gguf_writer_set_str(w, "general.architecture", "test"));
    REQUIRE_OK(gguf_writer_set_u32(w, "general.alignment", 64));
    REQUIRE_OK(gguf_writer_set_u32(w, "s.u32", 4000000000u));
    REQUIRE_OK(gguf_writer_set_i32(w, "s.i32", -123456));
    REQUIRE_OK(gguf_writer_set_u64(w, "s.u64", UINT64_MAX - 1));
    REQUIRE_OK(gguf_writer_set_f32(w, "s.f32", -0.1f));
    REQUIRE_OK(gguf_writer_set_bool(w, "s.bool", 7));
    REQUIRE_OK(gguf_writer_set_str(w, "s.str", "first value"));
    REQUIRE_OK(gguf_writer_set_str(w, "s.str", "replaced value")); /* a repeated key replaces */
    REQUIRE_OK(set_value(w, "s.u8", (gguf_value){.type = GGUF_TYPE_UINT8, .u64 = 250}));
    REQUIRE_OK(set_value(w, "s.i8", (gguf_value){.type = GGUF_TYPE_INT8, .i64 = -100}));
    REQUIRE_OK(set_value(w, "s.u16", (gguf_value){.type = GGUF_TYPE_UINT16, .u64 = 65000}));
    REQUIRE_OK(set_value(w, "s.i16", (gguf_value){.type = GGUF_TYPE_INT16, .i64 = -32000}));
    REQUIRE_OK(set_value(w, "s.i64", (gguf_value){.type = GGUF_TYPE_INT64, .i64 = INT64_MIN + 5}));
    REQUIRE_OK(set_value(w, "s.f64", (gguf_value){.type = GGUF_TYPE_FLOAT64, .f64 = 1.0 / 7.0}));
    for (size_t i = 0; i < N_ARRAYS; i++)
        REQUIRE_OK(gguf_writer_set_arr(w, arrays[i].key, arrays[i].type, arrays[i].data, N_ELEM));
    REQUIRE_OK(gguf_writer_set_arr(w, "arr.empty", GGUF_TYPE_FLOAT32, NULL, 0));
    REQUIRE_OK(gguf_writer_set_arr_str(w, "arr.str", strs, str_lens, 4));
    REQUIRE_OK(set_value(w, "arr.nested_str", nested_strings()));
    REQUIRE_OK(set_value(w, "arr.nested_i16", nested_ints()));
    for (size_t i = 0; i < N_TENSORS; i++) {
        uint8_t *d = tensor_data((int)i);
        REQUIRE_OK(gguf_writer_add_tensor(w, tensors[i].name, tensors[i].type, tensors[i].n_dims,
                                          tensors[i].ne, d));
        free(d);
    }
    return w;
}

static const gguf_value *value_of(const gguf_file *f, const char *key, gguf_type type) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    REQUIRE(kv != NULL, "key %s missing", key);
    REQUIRE(kv->value.type == type, "key %s has type %s", key, gguf_type_name(kv->value.type));
    return &kv->value;
}

static void check_everything(const gguf_file *f) {
    REQUIRE(f->version == 3, "version %u", f->version);
    REQUIRE(f->alignment == 64, "alignment %llu", (unsigned long long)f->alignment);
    REQUIRE(f->data_offset % 64 == 0, "data offset %llu", (unsigned long long)f->data_offset);
    REQUIRE(f->n_kv == 18 + N_ARRAYS, "n_kv %llu", (unsigned long long)f->n_kv);
    REQUIRE(f->n_tensors == N_TENSORS, "n_tensors %llu", (unsigned long long)f->n_tensors);

    REQUIRE(value_of(f, "s.u32", GGUF_TYPE_UINT32)->u64 == 4000000000u, "s.u32");
    REQUIRE(value_of(f, "s.i32", GGUF_TYPE_INT32)->i64 == -123456, "s.i32");
    REQUIRE(value_of(f, "s.u64", GGUF_TYPE_UINT64)->u64 == UINT64_MAX - 1, "s.u64");
    REQUIRE(value_of(f, "s.f32", GGUF_TYPE_FLOAT32)->f64 == (double)-0.1f, "s.f32");
    REQUIRE(value_of(f, "s.bool", GGUF_TYPE_BOOL)->b == 1, "s.bool");
    REQUIRE(gguf_str_eq(value_of(f, "s.str", GGUF_TYPE_STRING)->str, "replaced value"), "s.str");
    REQUIRE(value_of(f, "s.u8", GGUF_TYPE_UINT8)->u64 == 250, "s.u8");
    REQUIRE(value_of(f, "s.i8", GGUF_TYPE_INT8)->i64 == -100, "s.i8");
    REQUIRE(value_of(f, "s.u16", GGUF_TYPE_UINT16)->u64 == 65000, "s.u16");
    REQUIRE(value_of(f, "s.i16", GGUF_TYPE_INT16)->i64 == -32000, "s.i16");
    REQUIRE(value_of(f, "s.i64", GGUF_TYPE_INT64)->i64 == INT64_MIN + 5, "s.i64");
    REQUIRE(value_of(f, "s.f64", GGUF_TYPE_FLOAT64)->f64 == 1.0 / 7.0, "s.f64");

    for (size_t i = 0; i < N_ARRAYS; i++) {
        const gguf_value *v = value_of(f, arrays[i].key, GGUF_TYPE_ARRAY);
        size_t each = elem_bytes[arrays[i].type];
        REQUIRE(v->arr.type == arrays[i].type && v->arr.n == N_ELEM, "%s: %s × %llu", arrays[i].key,
                gguf_type_name(v->arr.type), (unsigned long long)v->arr.n);
        REQUIRE((uintptr_t)v->arr.data % each == 0, "%s: data not aligned", arrays[i].key);
        REQUIRE(!memcmp(v->arr.data, arrays[i].data, N_ELEM * each), "%s: elements differ",
                arrays[i].key);
    }
    const gguf_value *e = value_of(f, "arr.empty", GGUF_TYPE_ARRAY);
    REQUIRE(e->arr.type == GGUF_TYPE_FLOAT32 && e->arr.n == 0 && e->arr.data, "arr.empty");

    const gguf_value *s = value_of(f, "arr.str", GGUF_TYPE_ARRAY);
    REQUIRE(s->arr.type == GGUF_TYPE_STRING && s->arr.n == 4, "arr.str");
    for (int i = 0; i < 4; i++)
        REQUIRE(str_is(((const gguf_str *)s->arr.data)[i], strs[i], str_lens[i]), "arr.str[%d]", i);

    const gguf_value *ns = value_of(f, "arr.nested_str", GGUF_TYPE_ARRAY);
    REQUIRE(ns->arr.type == GGUF_TYPE_ARRAY && ns->arr.n == 3, "arr.nested_str");
    const gguf_value *in = ns->arr.data;
    REQUIRE(in[0].arr.type == GGUF_TYPE_STRING && in[0].arr.n == 2 && in[1].arr.n == 0 &&
                in[2].arr.n == 1,
            "arr.nested_str shape");
    REQUIRE(str_is(((const gguf_str *)in[0].arr.data)[1], "yy", 2) &&
                str_is(((const gguf_str *)in[2].arr.data)[0], "zzz", 3),
            "arr.nested_str values");

    const gguf_value *ni = value_of(f, "arr.nested_i16", GGUF_TYPE_ARRAY);
    const gguf_value *l1 = ni->arr.data;
    const gguf_value *l2 = l1[0].arr.data;
    REQUIRE(ni->arr.n == 2 && l1[0].arr.type == GGUF_TYPE_ARRAY && l1[0].arr.n == 2 &&
                l2[0].arr.type == GGUF_TYPE_INT16 && l2[0].arr.n == 2,
            "arr.nested_i16 shape");
    REQUIRE(((const int16_t *)l2[0].arr.data)[1] == -2 &&
                ((const int16_t *)((const gguf_value *)l1[1].arr.data)[0].arr.data)[0] == -4,
            "arr.nested_i16 values");

    for (size_t i = 0; i < N_TENSORS; i++) {
        const gguf_tensor *t = gguf_find_tensor(f, tensors[i].name);
        REQUIRE(t != NULL && t == &f->tensors[i], "tensor %s", tensors[i].name);
        REQUIRE(t->type == tensors[i].type && t->n_dims == tensors[i].n_dims, "%s type/dims",
                tensors[i].name);
        uint64_t n = 1;
        for (uint32_t d = 0; d < 4; d++) {
            uint64_t want = d < tensors[i].n_dims ? tensors[i].ne[d] : 1;
            REQUIRE(t->ne[d] == want, "%s ne[%u] = %llu", tensors[i].name, d,
                    (unsigned long long)t->ne[d]);
            n *= want;
        }
        REQUIRE(t->n_elements == n && t->n_bytes == tensor_bytes((int)i), "%s sizes",
                tensors[i].name);
        REQUIRE(t->offset % 64 == 0 && (t->data == f->base + f->data_offset + t->offset),
                "%s offset %llu", tensors[i].name, (unsigned long long)t->offset);
        uint8_t *want = tensor_data((int)i);
        REQUIRE(!memcmp(t->data, want, (size_t)t->n_bytes), "%s data differs", tensors[i].name);
        free(want);
    }
    REQUIRE(gguf_find_tensor(f, "t.f3") == NULL && gguf_find_kv(f, "s.u3") == NULL, "find misses");
}

static void check_getters(const gguf_file *f) {
    uint32_t u = 99;
    float x = 0;
    int b = 0;
    gguf_str s = {0};
    const void *data;
    uint64_t n;
    REQUIRE_OK(gguf_get_u32(f, "s.u32", 1, &u));
    REQUIRE(u == 4000000000u, "u32 %u", u);
    REQUIRE_OK(gguf_get_u32(f, "s.u8", 1, &u)); /* any integer type whose value fits */
    REQUIRE(u == 250, "u8 as u32 %u", u);
    REQUIRE_OK(gguf_get_u32(f, "missing", 0, &u));
    REQUIRE(u == 250, "optional missing key changed the output");
    REQUIRE(gguf_get_u32(f, "missing", 1, &u) == MSRNN_ERR_FORMAT &&
                strstr(msrnn_last_error(), "required key 'missing' is missing"),
            "%s", msrnn_last_error());
    REQUIRE(gguf_get_u32(f, "s.i32", 1, &u) == MSRNN_ERR_FORMAT &&
                strstr(msrnn_last_error(), "key 's.i32' is -123456, expected a value from 0"),
            "%s", msrnn_last_error());
    REQUIRE(gguf_get_u32(f, "s.u64", 1, &u) == MSRNN_ERR_FORMAT &&
                strstr(msrnn_last_error(), "is 18446744073709551614, expected"),
            "%s", msrnn_last_error());
    REQUIRE(gguf_get_u32(f, "s.str", 1, &u) == MSRNN_ERR_FORMAT &&
                strstr(msrnn_last_error(), "key 's.str' has type string, expected an integer"),
            "%s", msrnn_last_error());
    REQUIRE_OK(gguf_get_f32(f, "s.f32", 1, &x));
    REQUIRE(x == -0.1f, "f32 %g", x);
    REQUIRE(gguf_get_f32(f, "s.bool", 1, &x) == MSRNN_ERR_FORMAT &&
                strstr(msrnn_last_error(), "has type bool, expected float32"),
            "%s", msrnn_last_error());
    REQUIRE_OK(gguf_get_bool(f, "s.bool", 1, &b));
    REQUIRE(b == 1, "bool");
    REQUIRE_OK(gguf_get_str(f, "s.str", 1, &s));
    REQUIRE(gguf_str_eq(s, "replaced value"), "str");
    REQUIRE_OK(gguf_get_arr(f, "arr.i32", 1, GGUF_TYPE_INT32, &data, &n));
    REQUIRE(n == N_ELEM && ((const int32_t *)data)[0] == INT32_MIN, "arr.i32");
    REQUIRE(gguf_get_arr(f, "arr.i32", 1, GGUF_TYPE_UINT32, &data, &n) == MSRNN_ERR_FORMAT &&
                strstr(msrnn_last_error(), "is an array of int32, expected an array of uint32"),
            "%s", msrnn_last_error());
    REQUIRE(gguf_get_arr(f, "s.u8", 1, GGUF_TYPE_UINT8, &data, &n) == MSRNN_ERR_FORMAT &&
                strstr(msrnn_last_error(), "has type uint8, expected an array of uint8"),
            "%s", msrnn_last_error());
}

static void test_round_trip(void) {
    gguf_writer *w = build_everything();
    const char *path = tmp_path("everything.gguf");
    REQUIRE_OK(gguf_writer_write(w, path));
    gguf_writer_free(w);

    gguf_file *f;
    REQUIRE_OK(gguf_open(path, &f));
    REQUIRE(f->mapped && !strcmp(f->path, path), "mapped %d path %s", f->mapped, f->path);
    check_everything(f);
    check_getters(f);

    /* copying every pair and tensor reproduces the file byte for byte */
    gguf_writer *copy = gguf_writer_new();
    for (uint64_t i = 0; i < f->n_kv; i++) REQUIRE_OK(gguf_writer_set_kv(copy, &f->kv[i]));
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        REQUIRE_OK(gguf_writer_add_tensor(copy, name, t->type, t->n_dims, t->ne, t->data));
    }
    const char *path2 = tmp_path("copy.gguf");
    REQUIRE_OK(gguf_writer_write(copy, path2));
    gguf_writer_free(copy);
    size_t n1, n2;
    uint8_t *b1 = read_all(path, &n1), *b2 = read_all(path2, &n2);
    REQUIRE(n1 == n2 && !memcmp(b1, b2, n1), "copy differs (%zu vs %zu bytes)", n1, n2);
    REQUIRE(n1 % 64 == 0, "file size %zu is not padded to the alignment", n1);

    /* the same bytes through gguf_open_memory */
    gguf_file *m;
    REQUIRE_OK(gguf_open_memory(b1, n1, &m));
    REQUIRE(!m->mapped && !strcmp(m->path, "<memory>"), "memory file");
    check_everything(m);
    gguf_close(m);
    gguf_close(f);
    free(b1);
    free(b2);

    /* the writer refuses what it cannot write correctly */
    w = gguf_writer_new();
    uint64_t ne33[] = {33}, ne0[] = {0, 2}, ne32[] = {32};
    float zeros[64] = {0};
    REQUIRE(gguf_writer_add_tensor(w, "q", TYPE_Q8_0, 1, ne33, zeros) == MSRNN_ERR_INVALID &&
                strstr(msrnn_last_error(), "multiple of 32"),
            "%s", msrnn_last_error());
    REQUIRE(gguf_writer_add_tensor(w, "z", TYPE_F32, 2, ne0, zeros) == MSRNN_ERR_INVALID, "ne 0");
    REQUIRE(gguf_writer_add_tensor(w, "d", TYPE_F32, 5, ne32, zeros) == MSRNN_ERR_INVALID, "dims");
    REQUIRE(gguf_writer_add_tensor(w, "u", (tensor_type)12, 1, ne32, zeros) == MSRNN_ERR_INVALID,
            "unknown type");
    REQUIRE_OK(gguf_writer_add_tensor(w, "a", TYPE_F32, 1, ne32, zeros));
    REQUIRE(gguf_writer_add_tensor(w, "a", TYPE_F32, 1, ne32, zeros) == MSRNN_ERR_INVALID &&
                strstr(msrnn_last_error(), "tensor 'a' added twice"),
            "%s", msrnn_last_error());
    REQUIRE(gguf_writer_set_arr(w, "s", GGUF_TYPE_STRING, strs, 1) == MSRNN_ERR_INVALID, "str arr");
    REQUIRE(gguf_writer_set_u32(w, "", 1) == MSRNN_ERR_INVALID, "empty key");
    REQUIRE_OK(gguf_writer_set_u32(w, "general.alignment", 48));
    REQUIRE(gguf_writer_write(w, tmp_path("bad-align.gguf")) == MSRNN_ERR_INVALID &&
                strstr(msrnn_last_error(), "general.alignment is 48"),
            "%s", msrnn_last_error());
    REQUIRE(access(tmp_path("bad-align.gguf"), F_OK) != 0, "a refused write created the file");
    gguf_writer_free(w);
}

/* ---- 2. broken files ------------------------------------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} buf;

static void put(buf *b, const void *data, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void pad(buf *b, size_t a) {
    static const uint8_t zeros[64];
    put(b, zeros, (a - b->len % a) % a);
}

typedef struct {
    int dup_key, dup_tensor, empty_key, nest_depth;
} variant;

/* Where the fields of the base file are, for patching. */
typedef struct {
    size_t version, n_tensors, n_kv, key0_len, str_len, align_value, arr_elem_type, arr_count;
    size_t kv3_type, bool_value, n_dims[3], ne[3], type[3], offset[3];
    size_t info_end, data_end;
} layout;

/* A valid v3 file: 5+ pairs (a string, general.alignment = 32, an array of strings, an array of
 * f32, a bool) and tensors t.f32 [4, 2] f32, t.q8 [32] q8_0, t.f16 [8] f16. */
static buf build_base(variant v, layout *at) {
    buf b = {0};
    layout l;
    put(&b, "GGUF", 4);
    l.version = b.len, put_u32(&b, 3);
    l.n_tensors = b.len, put_u64(&b, 3);
    l.n_kv = b.len;
    put_u64(&b, 5 + (uint64_t)v.dup_key + (uint64_t)v.empty_key + (v.nest_depth > 0));

    l.key0_len = b.len, put_str(&b, "general.architecture"), put_u32(&b, GGUF_TYPE_STRING);
    l.str_len = b.len, put_str(&b, "llama");
    put_str(&b, "general.alignment"), put_u32(&b, GGUF_TYPE_UINT32);
    l.align_value = b.len, put_u32(&b, 32);
    put_str(&b, "tok.list"), put_u32(&b, GGUF_TYPE_ARRAY);
    l.arr_elem_type = b.len, put_u32(&b, GGUF_TYPE_STRING);
    l.arr_count = b.len, put_u64(&b, 2), put_str(&b, "a"), put_str(&b, "bc");
    put_str(&b, "tok.scores");
    l.kv3_type = b.len, put_u32(&b, GGUF_TYPE_ARRAY);
    put_u32(&b, GGUF_TYPE_FLOAT32), put_u64(&b, 3);
    const float scores[3] = {1, 2, 3};
    put(&b, scores, sizeof scores);
    put_str(&b, "flag"), put_u32(&b, GGUF_TYPE_BOOL);
    l.bool_value = b.len, put(&b, "\1", 1);
    if (v.dup_key) put_str(&b, "flag"), put_u32(&b, GGUF_TYPE_BOOL), put(&b, "\0", 1);
    if (v.empty_key) put_str(&b, ""), put_u32(&b, GGUF_TYPE_UINT32), put_u32(&b, 1);
    if (v.nest_depth > 0) {
        put_str(&b, "nested"), put_u32(&b, GGUF_TYPE_ARRAY);
        for (int d = 1; d < v.nest_depth; d++) put_u32(&b, GGUF_TYPE_ARRAY), put_u64(&b, 1);
        put_u32(&b, GGUF_TYPE_UINT32), put_u64(&b, 1), put_u32(&b, 7);
    }

    static const char *const names[3] = {"t.f32", "t.q8", "t.f16"};
    static const uint32_t types[3] = {TYPE_F32, TYPE_Q8_0, TYPE_F16};
    static const uint64_t ne0[3] = {4, 32, 8}, offsets[3] = {0, 32, 96}, sizes[3] = {32, 34, 16};
    for (int i = 0; i < 3; i++) {
        put_str(&b, i == 2 && v.dup_tensor ? "t.f32" : names[i]);
        l.n_dims[i] = b.len, put_u32(&b, i == 0 ? 2 : 1);
        l.ne[i] = b.len, put_u64(&b, ne0[i]);
        if (i == 0) put_u64(&b, 2);
        l.type[i] = b.len, put_u32(&b, types[i]);
        l.offset[i] = b.len, put_u64(&b, offsets[i]);
    }
    l.info_end = b.len;
    pad(&b, 32);
    size_t data = b.len;
    for (int i = 0; i < 3; i++) {
        for (uint64_t k = 0; k < sizes[i]; k++) put(&b, &(uint8_t){(uint8_t)(k + 1)}, 1);
        pad(&b, 32);
    }
    l.data_end = data + 96 + 16;
    if (at) *at = l;
    return b;
}

static void patch32(buf *b, size_t at, uint32_t v) { memcpy(b->p + at, &v, 4); }
static void patch64(buf *b, size_t at, uint64_t v) { memcpy(b->p + at, &v, 8); }

/* Open len bytes (copied into a buffer of exactly that size, so that ASan sees any overread) and
 * check the status and that the message contains want. */
static void expect_error(const char *label, const uint8_t *data, size_t len, msrnn_status status,
                         const char *want) {
    uint8_t *copy = malloc(len ? len : 1);
    if (len) memcpy(copy, data, len);
    gguf_file *f = (gguf_file *)1;
    msrnn_status st = gguf_open_memory(copy, len, &f);
    REQUIRE(st == status, "%s: got %s (%s), expected %s", label, msrnn_status_name(st),
            msrnn_last_error(), msrnn_status_name(status));
    REQUIRE(f == NULL, "%s: *out not cleared on failure", label);
    REQUIRE(strstr(msrnn_last_error(), want) != NULL, "%s: message \"%s\" lacks \"%s\"", label,
            msrnn_last_error(), want);
    REQUIRE(strncmp(msrnn_last_error(), "<memory>: ", 10) == 0, "%s: message \"%s\" lacks the path",
            label, msrnn_last_error());
    free(copy);
}

/* The base file with one u32 or u64 field changed, expected to fail. */
static void expect_patched(const char *label, size_t at, int bits, uint64_t v, msrnn_status status,
                           const char *want) {
    layout l;
    buf b = build_base((variant){0}, &l);
    if (bits == 32)
        patch32(&b, at, (uint32_t)v);
    else
        patch64(&b, at, v);
    expect_error(label, b.p, b.len, status, want);
    free(b.p);
}

static void test_broken(void) {
    layout l;
    buf b = build_base((variant){0}, &l);
    gguf_file *f;
    REQUIRE_OK(gguf_open_memory(b.p, b.len, &f));
    REQUIRE(f->n_kv == 5 && f->n_tensors == 3 && f->alignment == 32, "base file");
    REQUIRE(f->tensors[1].n_bytes == 34 && ((const uint8_t *)f->tensors[1].data)[33] == 34,
            "base tensor data");
    gguf_close(f);

    /* truncation at every offset: inside the header and descriptions it is reported as a
     * truncation; inside the data it is a tensor running past the end; after the last tensor's
     * bytes (only padding is missing) the file is still whole */
    for (size_t cut = 0; cut < b.len; cut++) {
        char label[64];
        snprintf(label, sizeof label, "cut at %zu of %zu", cut, b.len);
        if (cut < l.info_end) {
            expect_error(label, b.p, cut, MSRNN_ERR_FORMAT, "truncated");
        } else if (cut < l.data_end) {
            expect_error(label, b.p, cut, MSRNN_ERR_FORMAT, "runs past the end of the file");
        } else {
            REQUIRE(gguf_open_memory(b.p, cut, &f) == MSRNN_OK, "%s: %s", label,
                    msrnn_last_error());
            gguf_close(f);
        }
    }
    {
        char want[128]; /* inside the key "flag" (4 bytes, then the type, then the bool) */
        snprintf(want, sizeof want,
                 "truncated: the key of key/value pair #4 needs 4 bytes at offset %zu, but only 2 "
                 "remain (file size %zu)",
                 l.bool_value - 8, l.bool_value - 6);
        expect_error("truncated in a key", b.p, l.bool_value - 6, MSRNN_ERR_FORMAT, want);
    }
    expect_error("truncated in tensor 1", b.p, l.ne[1] + 3, MSRNN_ERR_FORMAT,
                 "truncated: the shape of tensor 't.q8' needs 8 bytes");
    expect_error("truncated in tensor data", b.p, l.data_end - 1, MSRNN_ERR_FORMAT,
                 "tensor 't.f16' data [offset 96, 16 bytes] runs past the end of the file");

    /* header */
    expect_patched("magic", 0, 32, 0x58554747 /* "GGUX" */, MSRNN_ERR_FORMAT,
                   "bad magic: expected \"GGUF\", found 47 47 55 58 (not a GGUF file)");
    expect_patched("version 4", l.version, 32, 4, MSRNN_ERR_UNSUPPORTED,
                   "GGUF version 4 is not supported (expected 2 or 3)");
    expect_patched("version 1", l.version, 32, 1, MSRNN_ERR_UNSUPPORTED, "version 1 is not");
    expect_patched("big-endian", l.version, 32, 0x03000000, MSRNN_ERR_UNSUPPORTED,
                   "big-endian GGUF file");
    expect_patched("huge n_kv", l.n_kv, 64, 1ull << 60, MSRNN_ERR_FORMAT,
                   "corrupt: the header claims 1152921504606846976 key/value pairs");
    expect_patched("huge n_tensors", l.n_tensors, 64, UINT64_MAX, MSRNN_ERR_FORMAT,
                   "corrupt: the header claims 18446744073709551615 tensors");
    expect_patched("too many kv for the file", l.n_kv, 64, 1000, MSRNN_ERR_FORMAT,
                   "key/value pairs, but the");
    {
        buf v2 = build_base((variant){0}, NULL);
        patch32(&v2, l.version, 2);
        REQUIRE_OK(gguf_open_memory(v2.p, v2.len, &f));
        REQUIRE(f->version == 2, "version 2 is read");
        gguf_close(f);
        free(v2.p);
    }

    /* key/value pairs */
    expect_patched("huge key length", l.key0_len, 64, UINT64_MAX, MSRNN_ERR_FORMAT,
                   "corrupt: the key of key/value pair #0 claims 18446744073709551615 bytes");
    expect_patched(
        "huge string length", l.str_len, 64, 1ull << 62, MSRNN_ERR_FORMAT,
        "corrupt: the string of key 'general.architecture' claims 4611686018427387904 bytes");
    expect_patched(
        "string length off by one", l.str_len, 64, 6, MSRNN_ERR_FORMAT,
        "corrupt: the key of key/value pair #1 claims 7421932185906577408 bytes"); /* 'g' << 56 */
    expect_patched("huge array count", l.arr_count, 64, 1ull << 61, MSRNN_ERR_FORMAT,
                   "corrupt: key 'tok.list' claims an array of 2305843009213693952 elements, more "
                   "than the");
    expect_patched("bad array element type", l.arr_elem_type, 32, 99, MSRNN_ERR_FORMAT,
                   "key 'tok.list': array element type is 99, expected a GGUF value type (0..12)");
    expect_patched("bad value type", l.kv3_type, 32, 13, MSRNN_ERR_FORMAT,
                   "key 'tok.scores' has value type 13, expected a GGUF value type (0..12)");
    {
        buf bb = build_base((variant){0}, NULL);
        bb.p[l.bool_value] = 2;
        expect_error("bool 2", bb.p, bb.len, MSRNN_ERR_FORMAT, "key 'flag': a bool is 2 at offset");
        free(bb.p);
    }
    {
        buf d = build_base((variant){.dup_key = 1}, NULL);
        expect_error("duplicate key", d.p, d.len, MSRNN_ERR_FORMAT,
                     "duplicate key 'flag' (pairs #4 and #5)");
        free(d.p);
        d = build_base((variant){.empty_key = 1}, NULL);
        expect_error("empty key", d.p, d.len, MSRNN_ERR_FORMAT,
                     "key/value pair #5 has an empty key");
        free(d.p);
        d = build_base((variant){.nest_depth = 8}, NULL);
        REQUIRE_OK(gguf_open_memory(d.p, d.len, &f));
        const gguf_value *v = &gguf_find_kv(f, "nested")->value;
        for (int k = 1; k < 8; k++) v = v->arr.data;
        REQUIRE(v->arr.type == GGUF_TYPE_UINT32 && ((const uint32_t *)v->arr.data)[0] == 7,
                "8 levels of arrays");
        gguf_close(f);
        free(d.p);
        d = build_base((variant){.nest_depth = 9}, NULL);
        expect_error("9 levels", d.p, d.len, MSRNN_ERR_FORMAT,
                     "key 'nested': arrays nested more than 8 levels deep");
        free(d.p);
    }
    static const uint64_t bad_alignments[] = {0, 4, 48, 1u << 21, 0xffffffff};
    for (size_t i = 0; i < sizeof bad_alignments / sizeof *bad_alignments; i++) {
        char want[96];
        snprintf(want, sizeof want,
                 "general.alignment is %llu, expected a power of two from 8 to 1048576",
                 (unsigned long long)bad_alignments[i]);
        expect_patched("bad alignment", l.align_value, 32, bad_alignments[i], MSRNN_ERR_FORMAT,
                       want);
    }
    {
        /* alignment 64: t.q8's offset 32 is no longer aligned */
        expect_patched("alignment 64", l.align_value, 32, 64, MSRNN_ERR_FORMAT,
                       "tensor 't.q8' data offset 32 is not a multiple of the alignment 64");
    }

    /* tensors */
    expect_patched("n_dims 0", l.n_dims[1], 32, 0, MSRNN_ERR_FORMAT,
                   "tensor 't.q8' has 0 dimensions, expected 1 to 4");
    expect_patched("n_dims 5", l.n_dims[2], 32, 5, MSRNN_ERR_FORMAT,
                   "tensor 't.f16' has 5 dimensions, expected 1 to 4");
    expect_patched("ne 0", l.ne[0] + 8, 64, 0, MSRNN_ERR_FORMAT,
                   "tensor 't.f32' has shape [4, 0]: dimension 1 is 0, expected >= 1");
    expect_patched("ne overflow", l.ne[0] + 8, 64, 1ull << 62, MSRNN_ERR_FORMAT,
                   "tensor 't.f32' has shape [4, 4611686018427387904], more than 2^63 elements");
    expect_patched("ne[0] not a block multiple", l.ne[1], 64, 48, MSRNN_ERR_FORMAT,
                   "tensor 't.q8' of type q8_0 has ne[0] = 48, expected a multiple of the block "
                   "size 32");
    expect_patched("q4_K", l.type[1], 32, 12, MSRNN_ERR_UNSUPPORTED,
                   "tensor 't.q8' has type q4_K (12), which msrnn does not support");
    expect_patched("type 1000", l.type[1], 32, 1000, MSRNN_ERR_FORMAT,
                   "tensor 't.q8' has type 1000, which is no GGML type");
    expect_patched("unaligned offset", l.offset[2], 64, 100, MSRNN_ERR_FORMAT,
                   "tensor 't.f16' data offset 100 is not a multiple of the alignment 32");
    expect_patched("offset past the end", l.offset[2], 64, 128, MSRNN_ERR_FORMAT,
                   "tensor 't.f16' data [offset 128, 16 bytes] runs past the end of the file");
    expect_patched("huge offset", l.offset[2], 64, UINT64_MAX - 31, MSRNN_ERR_FORMAT,
                   "tensor 't.f16' data [offset 18446744073709551584, 16 bytes] runs past");
    expect_patched("huge ne", l.ne[2], 64, 1ull << 40, MSRNN_ERR_FORMAT,
                   "tensor 't.f16' data [offset 96, 2199023255552 bytes] runs past");
    expect_patched("overlap", l.offset[2], 64, 0, MSRNN_ERR_FORMAT,
                   "tensors 't.f32' [offset 0, 32 bytes] and 't.f16' [offset 0] overlap");
    {
        buf d = build_base((variant){.dup_tensor = 1}, NULL);
        expect_error("duplicate tensor", d.p, d.len, MSRNN_ERR_FORMAT,
                     "duplicate tensor name 't.f32' (tensors #0 and #2)");
        free(d.p);
    }

    /* through gguf_open: the message names the file */
    const char *path = tmp_path("broken.gguf");
    patch32(&b, l.type[1], 12);
    write_all(path, b.p, b.len);
    REQUIRE(gguf_open(path, &f) == MSRNN_ERR_UNSUPPORTED, "broken file opened");
    REQUIRE(strncmp(msrnn_last_error(), path, strlen(path)) == 0, "message \"%s\" lacks the path",
            msrnn_last_error());
    write_all(path, b.p, 0);
    REQUIRE(gguf_open(path, &f) == MSRNN_ERR_FORMAT &&
                strstr(msrnn_last_error(), "truncated: the magic of the header needs 4 bytes"),
            "empty file: %s", msrnn_last_error());
    REQUIRE(gguf_open(tmp_path("absent.gguf"), &f) == MSRNN_ERR_IO &&
                strstr(msrnn_last_error(), "absent.gguf: cannot open: No such file"),
            "%s", msrnn_last_error());
    REQUIRE(gguf_open(tmp_dir, &f) == MSRNN_ERR_IO &&
                strstr(msrnn_last_error(), "not a regular file"),
            "%s", msrnn_last_error());
    unlink(path);
    free(b.p);
}

/* ---- 3. atomic writes ------------------------------------------------------------------------ */

static gguf_writer *small_writer(const char *name) {
    gguf_writer *w = gguf_writer_new();
    uint64_t ne[] = {8};
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    REQUIRE_OK(gguf_writer_set_str(w, "general.name", name));
    REQUIRE_OK(gguf_writer_add_tensor(w, "x", TYPE_F32, 1, ne, x));
    return w;
}

static void test_atomic(void) {
    char dir[128], path[320], names[512];
    snprintf(dir, sizeof dir, "%s/atomic", tmp_dir);
    REQUIRE(mkdir(dir, 0755) == 0, "mkdir %s", dir);
    snprintf(path, sizeof path, "%s/model.gguf", dir);

    gguf_writer *w = small_writer("first");
    REQUIRE_OK(gguf_writer_write(w, path));
    gguf_writer_free(w);
    w = small_writer("second");
    REQUIRE_OK(gguf_writer_write(w, path)); /* replaces */
    gguf_writer_free(w);
    REQUIRE(list_dir(dir, COUNT_DOT_FILES, names, sizeof names) == 1, "left behind: %s", names);
    gguf_file *f;
    gguf_str s;
    REQUIRE_OK(gguf_open(path, &f));
    REQUIRE_OK(gguf_get_str(f, "general.name", 1, &s));
    REQUIRE(gguf_str_eq(s, "second"), "the second write did not replace the first");
    struct stat sb;
    REQUIRE(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0644, "mode %o", sb.st_mode & 0777);
    gguf_close(f);

    /* the destination is a folder: refused before anything is written, nothing left behind */
    char sub[224];
    snprintf(sub, sizeof sub, "%s/is-a-dir", dir);
    REQUIRE(mkdir(sub, 0755) == 0, "mkdir %s", sub);
    w = small_writer("third");
    REQUIRE(gguf_writer_write(w, sub) == MSRNN_ERR_IO && strstr(msrnn_last_error(), "a folder"),
            "%s", msrnn_last_error());
    REQUIRE(list_dir(dir, COUNT_DOT_FILES, names, sizeof names) == 2, "left behind: %s", names);
    rmdir(sub);

    /* no folder to write in */
    snprintf(sub, sizeof sub, "%s/absent/model.gguf", dir);
    REQUIRE(gguf_writer_write(w, sub) == MSRNN_ERR_IO &&
                strstr(msrnn_last_error(), "cannot create a temporary file"),
            "%s", msrnn_last_error());

    /* an unwritable folder (root writes anyway, so only as another user) */
    if (geteuid() != 0) {
        snprintf(sub, sizeof sub, "%s/ro", dir);
        REQUIRE(mkdir(sub, 0555) == 0, "mkdir %s", sub);
        snprintf(path, sizeof path, "%s/model.gguf", sub);
        REQUIRE(gguf_writer_write(w, path) == MSRNN_ERR_IO, "wrote into a read-only folder");
        REQUIRE(list_dir(sub, COUNT_DOT_FILES, names, sizeof names) == 0, "left behind: %s", names);
        rmdir(sub);
        snprintf(path, sizeof path, "%s/model.gguf", dir);
    }
    gguf_writer_free(w);
    REQUIRE_OK(gguf_open(path, &f)); /* the earlier file is intact */
    REQUIRE_OK(gguf_get_str(f, "general.name", 1, &s));
    REQUIRE(gguf_str_eq(s, "second"), "a failed write changed the file");
    gguf_close(f);
    unlink(path);
    rmdir(dir);
}

int main(void) {
    make_tmp_dir("/tmp/test_gguf.XXXXXX");
    test_round_trip();
    test_broken();
    test_atomic();
    unlink(tmp_path("everything.gguf"));
    unlink(tmp_path("copy.gguf"));
    REQUIRE(rmdir(tmp_dir) == 0, "temporary folder %s not empty", tmp_dir);
    printf("test_gguf: %d checks passed\n", checks);
    return 0;
}
