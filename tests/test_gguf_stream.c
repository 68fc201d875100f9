/* test_gguf_stream.c — the GGUF writer's streaming entry points (src/io/gguf.c):
 * gguf_writer_add_tensor_ref (no copy) and gguf_writer_add_tensor_f32_as (f32 converted while
 * writing, chunk by chunk).
 *
 * 1. For every type (f32, f16, bf16, q8_0, q4_0), a file whose tensors were added by reference, and
 *    one whose tensors were added as f32 to be converted, are byte-identical to the file the
 * copying path writes from the same bytes (for f32_as: from quantize_row of the whole tensor), with
 *    tensors that are not whole numbers of conversion chunks, several tensors per file, and a
 *    non-default alignment; the tensors read back with the expected bytes.
 * 2. A referenced tensor is read when the file is written (changing it after adding changes the
 *    file, while the copying path keeps what it was given), and adding one by reference or as f32
 *    allocates nothing near its size (glibc's mallinfo2; skipped where the allocator does not
 *    report, as under ASan).
 * 3. The new entry points refuse what gguf_writer_add_tensor refuses, and a failed write leaves no
 *    file behind.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "files.h"
#include "io/gguf.h"

/* Deterministic values with zeros, tiny and large magnitudes (every quantiser's corner cases). */
static void fill(float *x, size_t n, uint32_t seed) {
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        float u = (float)(s >> 8) / (float)(1u << 24) * 4.0f - 2.0f;
        x[i] = i % 97 == 0 ? 0.0f : i % 89 == 0 ? u * 1e4f : i % 83 == 0 ? u * 1e-6f : u;
    }
}

static const tensor_type types[] = {TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0};
enum { N_TYPES = sizeof types / sizeof *types };

typedef struct {
    uint32_t n_dims;
    uint64_t ne[4];
} shape;

/* a big 2-D tensor of 3 chunks + one row, a small 3-D one, a 1-D one of one block */
static const shape shapes[] = {
    {2, {256, 3 * GGUF_WRITER_CHUNK / 256 + 1, 1, 1}}, {3, {64, 5, 3, 1}}, {1, {32, 1, 1, 1}}};
enum { N_SHAPES = sizeof shapes / sizeof *shapes };

static uint64_t n_of(const shape *s) { return s->ne[0] * s->ne[1] * s->ne[2] * s->ne[3]; }

typedef enum { BY_COPY, BY_REF, AS_F32 } how;

static gguf_writer *new_writer(void) {
    gguf_writer *w = gguf_writer_new();
    REQUIRE(w != NULL, "gguf_writer_new");
    REQUIRE_OK(gguf_writer_set_str(w, "general.name", "stream"));
    REQUIRE_OK(gguf_writer_set_u32(w, "general.alignment", 64));
    return w;
}

static void test_identical(void) {
    float *src[N_SHAPES];
    void *q[N_TYPES][N_SHAPES]; /* the whole tensor quantised at once */
    for (int s = 0; s < N_SHAPES; s++) {
        src[s] = malloc(n_of(&shapes[s]) * sizeof(float));
        fill(src[s], n_of(&shapes[s]), (uint32_t)s + 1);
        for (int t = 0; t < N_TYPES; t++) {
            q[t][s] = malloc(type_row_bytes(types[t], n_of(&shapes[s])));
            quantize_row(types[t], src[s], q[t][s], (int64_t)n_of(&shapes[s]));
        }
    }
    static const char *const names[] = {"copy.gguf", "ref.gguf", "f32as.gguf"};
    for (how h = BY_COPY; h <= AS_F32; h++) {
        gguf_writer *w = new_writer();
        for (int t = 0; t < N_TYPES; t++)
            for (int s = 0; s < N_SHAPES; s++) {
                char name[64];
                snprintf(name, sizeof name, "t%d.s%d", (int)types[t], s);
                const shape *sh = &shapes[s];
                if (h == BY_COPY)
                    REQUIRE_OK(
                        gguf_writer_add_tensor(w, name, types[t], sh->n_dims, sh->ne, q[t][s]));
                else if (h == BY_REF)
                    REQUIRE_OK(
                        gguf_writer_add_tensor_ref(w, name, types[t], sh->n_dims, sh->ne, q[t][s]));
                else
                    REQUIRE_OK(gguf_writer_add_tensor_f32_as(w, name, types[t], sh->n_dims, sh->ne,
                                                             src[s]));
            }
        REQUIRE_OK(gguf_writer_write(w, tmp_path(names[h])));
        gguf_writer_free(w);
    }
    size_t n0, n1, n2;
    uint8_t *a = read_all(tmp_path(names[0]), &n0);
    uint8_t *b = read_all(tmp_path(names[1]), &n1);
    uint8_t *c = read_all(tmp_path(names[2]), &n2);
    CHECK(n0 == n1 && !memcmp(a, b, n0), "by reference: %zu bytes vs %zu, or different bytes", n1,
          n0);
    CHECK(n0 == n2 && !memcmp(a, c, n0), "f32 converted: %zu bytes vs %zu, or different bytes", n2,
          n0);
    size_t first = 0; /* where they part, for the message */
    while (first < n0 && first < n2 && a[first] == c[first]) first++;
    CHECK(first == n0, "f32 converted: the first differing byte is at %zu", first);
    free(a), free(b), free(c);

    /* what was written reads back as the bytes quantised whole */
    gguf_file *f;
    REQUIRE_OK(gguf_open(tmp_path(names[2]), &f));
    CHECK(f->alignment == 64, "alignment %llu", (unsigned long long)f->alignment);
    for (int t = 0; t < N_TYPES; t++)
        for (int s = 0; s < N_SHAPES; s++) {
            char name[64];
            snprintf(name, sizeof name, "t%d.s%d", (int)types[t], s);
            const gguf_tensor *g = gguf_find_tensor(f, name);
            REQUIRE(g != NULL, "tensor %s missing", name);
            CHECK(g->type == types[t] && g->n_elements == n_of(&shapes[s]) &&
                      !memcmp(g->data, q[t][s], (size_t)g->n_bytes),
                  "tensor %s: type %d, %llu elements, or other bytes", name, (int)g->type,
                  (unsigned long long)g->n_elements);
        }
    gguf_close(f);
    for (int s = 0; s < N_SHAPES; s++) {
        free(src[s]);
        for (int t = 0; t < N_TYPES; t++) free(q[t][s]);
    }
    for (int i = 0; i < 3; i++) unlink(tmp_path(names[i]));
}

/* Bytes the C heap holds now (arena and mmapped blocks); 0 growth where the allocator does not
 * report through mallinfo2. */
static size_t heap_bytes(void) {
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static void test_no_copy(void) {
    /* the file is written from the referenced memory as it is at gguf_writer_write */
    enum { N = 1024 };
    float *x = malloc(N * sizeof *x);
    fill(x, N, 7);
    const uint64_t ne[1] = {N};
    gguf_writer *by_ref = new_writer(), *by_copy = new_writer(), *as_f16 = new_writer();
    REQUIRE_OK(gguf_writer_add_tensor_ref(by_ref, "x", TYPE_F32, 1, ne, x));
    REQUIRE_OK(gguf_writer_add_tensor(by_copy, "x", TYPE_F32, 1, ne, x));
    REQUIRE_OK(gguf_writer_add_tensor_f32_as(as_f16, "x", TYPE_F16, 1, ne, x));
    const float before = x[5];
    x[5] = 1234.0f;
    REQUIRE_OK(gguf_writer_write(by_ref, tmp_path("ref.gguf")));
    REQUIRE_OK(gguf_writer_write(by_copy, tmp_path("copy.gguf")));
    REQUIRE_OK(gguf_writer_write(as_f16, tmp_path("f16.gguf")));
    gguf_writer_free(by_ref), gguf_writer_free(by_copy), gguf_writer_free(as_f16);
    gguf_file *f;
    REQUIRE_OK(gguf_open(tmp_path("ref.gguf"), &f));
    CHECK(((const float *)gguf_find_tensor(f, "x")->data)[5] == 1234.0f,
          "by reference: the file holds the value at add time, not at write time");
    gguf_close(f);
    REQUIRE_OK(gguf_open(tmp_path("copy.gguf"), &f));
    CHECK(((const float *)gguf_find_tensor(f, "x")->data)[5] == before,
          "by copy: the file holds the value at write time, not at add time");
    gguf_close(f);
    REQUIRE_OK(gguf_open(tmp_path("f16.gguf"), &f));
    CHECK(fp16_to_fp32_ref(((const uint16_t *)gguf_find_tensor(f, "x")->data)[5]) == 1234.0f,
          "f32_as: the file holds the value at add time, not at write time");
    gguf_close(f);
    unlink(tmp_path("ref.gguf")), unlink(tmp_path("copy.gguf")), unlink(tmp_path("f16.gguf"));
    free(x);

    /* adding 64 MiB by reference or as f32 allocates nothing near that; copying does */
    const uint64_t big_ne[2] = {4096, 4096};
    const size_t big = 4096u * 4096u * sizeof(float);
    float *y = calloc(4096u * 4096u, sizeof *y);
    REQUIRE(y != NULL, "out of memory");
    gguf_writer *w = new_writer();
    size_t h0 = heap_bytes();
    REQUIRE_OK(gguf_writer_add_tensor_ref(w, "ref", TYPE_F32, 2, big_ne, y));
    REQUIRE_OK(gguf_writer_add_tensor_f32_as(w, "f16", TYPE_F16, 2, big_ne, y));
    size_t h1 = heap_bytes();
    REQUIRE_OK(gguf_writer_add_tensor(w, "copy", TYPE_F32, 2, big_ne, y));
    size_t h2 = heap_bytes();
    if (h2 - h1 >= big) /* the allocator reports */
        CHECK(h1 - h0 < (1u << 20), "adding 2 tensors of %zu bytes without copy took %zu bytes",
              big, h1 - h0);
    else
        printf("test_gguf_stream: mallinfo2 does not see allocations here; heap check skipped\n");
    gguf_writer_free(w);
    free(y);
}

static void test_refusals(void) {
    float x[64] = {0};
    const uint64_t ne32[1] = {32}, ne33[1] = {33}, ne0[2] = {32, 0};
    gguf_writer *w = new_writer();
    CHECK(gguf_writer_add_tensor_ref(w, "n", TYPE_F32, 1, ne32, NULL) == MSRNN_ERR_INVALID,
          "ref: NULL data");
    CHECK(gguf_writer_add_tensor_f32_as(w, "n", TYPE_F16, 1, ne32, NULL) == MSRNN_ERR_INVALID,
          "f32_as: NULL data");
    CHECK(gguf_writer_add_tensor_f32_as(w, "q", TYPE_Q8_0, 1, ne33, x) == MSRNN_ERR_INVALID &&
              strstr(msrnn_last_error(), "multiple of 32"),
          "f32_as: q8_0 row of 33: %s", msrnn_last_error());
    CHECK(gguf_writer_add_tensor_ref(w, "z", TYPE_F32, 2, ne0, x) == MSRNN_ERR_INVALID, "ne 0");
    CHECK(gguf_writer_add_tensor_ref(w, "d", TYPE_F32, 5, ne32, x) == MSRNN_ERR_INVALID, "dims");
    CHECK(gguf_writer_add_tensor_f32_as(w, "u", (tensor_type)12, 1, ne32, x) == MSRNN_ERR_INVALID,
          "unknown type");
    CHECK(gguf_writer_add_tensor_ref(w, "", TYPE_F32, 1, ne32, x) == MSRNN_ERR_INVALID,
          "empty name");
    REQUIRE_OK(gguf_writer_add_tensor_ref(w, "a", TYPE_F32, 1, ne32, x));
    CHECK(gguf_writer_add_tensor_f32_as(w, "a", TYPE_F16, 1, ne32, x) == MSRNN_ERR_INVALID &&
              strstr(msrnn_last_error(), "added twice"),
          "a name used by a referenced tensor: %s", msrnn_last_error());
    REQUIRE_OK(gguf_writer_add_tensor_f32_as(w, "b", TYPE_Q4_0, 1, ne32, x));
    CHECK(gguf_writer_add_tensor(w, "b", TYPE_F32, 1, ne32, x) == MSRNN_ERR_INVALID,
          "a name used by a converted tensor");

    /* no folder to write in: an error naming the path, and nothing left behind */
    const char *bad = tmp_path("absent/m.gguf");
    CHECK(gguf_writer_write(w, bad) == MSRNN_ERR_IO && strstr(msrnn_last_error(), "absent/m.gguf"),
          "%s", msrnn_last_error());
    CHECK(n_files_in_tmp(COUNT_DOT_FILES) == 0, "a failed write left a file");
    gguf_writer_free(w);
}

int main(void) {
    make_tmp_dir("/tmp/test_gguf_stream.XXXXXX");
    test_identical();
    test_no_copy();
    test_refusals();
    CHECK(n_files_in_tmp(COUNT_DOT_FILES) == 0, "files left in %s", tmp_dir);
    rmdir(tmp_dir);
    printf("test_gguf_stream: %d passed, %d failed\n", checks - failures, failures);
    return failures != 0;
}
