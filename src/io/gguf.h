/* gguf.h — GGUF v3 files: a bounds-checked reader over a read-only mapping, and a writer.
 *
 * Layout (little-endian): magic "GGUF", u32 version (3; 2 also read), u64 n_tensors, u64 n_kv,
 * n_kv × (string key, u32 value type, value), n_tensors × (string name, u32 n_dims, u64 ne[n_dims],
 * u32 type, u64 offset), padding to general.alignment (default 32), tensor data. A string is
 * u64 length + bytes (no NUL); an array is u32 element type + u64 count + elements (arrays nest).
 *
 * The reader validates everything before anything is used: every length against the bytes left,
 * every count against an absolute cap, every tensor's extent against the data section. Values are
 * decoded into aligned, owned storage (so no caller reads unaligned memory); strings point into the
 * mapping and are NOT NUL-terminated. Tensor data points into the mapping.
 */
#ifndef MSRNN_IO_GGUF_H
#define MSRNN_IO_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "tensor/types.h"

typedef enum {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
} gguf_type;

typedef struct {
    const char *ptr; /* not NUL-terminated */
    uint64_t len;
} gguf_str;

typedef struct gguf_value gguf_value;
struct gguf_value {
    gguf_type type;
    union {
        uint64_t u64; /* UINT8/16/32/64 */
        int64_t i64;  /* INT8/16/32/64 */
        double f64;   /* FLOAT32/64 */
        int b;        /* BOOL */
        gguf_str str; /* STRING */
        struct {
            gguf_type type; /* element type */
            uint64_t n;
            /* elements, natively typed and aligned: uint8_t/int8_t/uint16_t/.../float/double for
             * numbers, uint8_t (0/1) for BOOL, gguf_str for STRING, gguf_value for nested ARRAY */
            const void *data;
        } arr;
    };
};

typedef struct {
    gguf_str key;
    gguf_value value;
} gguf_kv;

typedef struct {
    gguf_str name;
    uint32_t n_dims; /* 1..4 */
    uint64_t ne[4];  /* elements per dimension, fastest first; unused dims are 1 */
    tensor_type type;
    uint64_t offset; /* from the start of the data section */
    uint64_t n_elements;
    uint64_t n_bytes;
    const void *data; /* into the mapping */
} gguf_tensor;

typedef struct {
    const char *path; /* owned copy, for messages ("<memory>" for gguf_open_memory) */
    uint32_t version;
    uint64_t n_kv;
    gguf_kv *kv;
    uint64_t n_tensors;
    gguf_tensor *tensors;
    uint64_t alignment;
    uint64_t data_offset; /* start of the data section in the file */
    const uint8_t *base;  /* the whole file */
    size_t size;
    int mapped;  /* base is an mmap to unmap on close */
    void *arena; /* owned storage for decoded values (implementation detail) */
} gguf_file;

/* Open and fully validate a file (mmap, read-only). */
msrnn_status gguf_open(const char *path, gguf_file **out);
/* The same over a caller-owned buffer that must outlive the result (used by the fuzzer). */
/* Advice, no error: map every page of a mapped file now (MADV_POPULATE_READ; MADV_WILLNEED where
 * the kernel lacks it), so that a model whose weights are read at random places (MemoryFormer's
 * tables) does not take its page faults one at a time inside the token loop. */
void gguf_prefault(const gguf_file *f);
msrnn_status gguf_open_memory(const void *data, size_t size, gguf_file **out);
void gguf_close(gguf_file *f);

const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);
int gguf_str_eq(gguf_str s, const char *c);

/* Typed getters: MSRNN_ERR_FORMAT naming the file and key if the key is missing (when required)
 * or has another type; if not required and missing, *out is left unchanged and MSRNN_OK returned.
 * Integer getters accept any integer type whose value fits. */
msrnn_status gguf_get_u32(const gguf_file *f, const char *key, int required, uint32_t *out);
msrnn_status gguf_get_f32(const gguf_file *f, const char *key, int required, float *out);
msrnn_status gguf_get_bool(const gguf_file *f, const char *key, int required, int *out);
msrnn_status gguf_get_str(const gguf_file *f, const char *key, int required, gguf_str *out);
/* An array of the given element type (numeric types must match exactly). */
msrnn_status gguf_get_arr(const gguf_file *f, const char *key, int required, gguf_type elem,
                          const void **data, uint64_t *n);

const char *gguf_type_name(gguf_type t);

/* ---- writer ---------------------------------------------------------------------------------- */

typedef struct gguf_writer gguf_writer;

gguf_writer *gguf_writer_new(void); /* NULL on allocation failure */
void gguf_writer_free(gguf_writer *w);
/* Each setter copies what it is given; keys must be unique (a repeated key replaces). */
msrnn_status gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v);
msrnn_status gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v);
msrnn_status gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v);
msrnn_status gguf_writer_set_f32(gguf_writer *w, const char *key, float v);
msrnn_status gguf_writer_set_bool(gguf_writer *w, const char *key, int v);
msrnn_status gguf_writer_set_str(gguf_writer *w, const char *key, const char *v);
/* A numeric or BOOL array (elements natively typed, as in gguf_value.arr.data). */
msrnn_status gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_type elem, const void *data,
                                 uint64_t n);
msrnn_status gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                                     const uint64_t *lens, uint64_t n);
/* Copy a whole key/value (nested arrays included) from a file being read. */
msrnn_status gguf_writer_set_kv(gguf_writer *w, const gguf_kv *kv);
/* Tensors are written in the order they are added. Three ways to add one, whose files are
 * byte-identical for the same values:
 *   gguf_writer_add_tensor         copies data (n_bytes = type_row_bytes(type, ne[0]) * rows) now;
 *   gguf_writer_add_tensor_ref     keeps the pointer: no copy, and data must stay valid and
 *                                  unchanged until gguf_writer_write returns;
 *   gguf_writer_add_tensor_f32_as  keeps a pointer to n f32 values (n = the product of ne) and
 *                                  converts them to `type` (quantize_row: f16, bf16, q8_0, q4_0;
 *                                  f32 is written as is) while writing, in chunks of
 *                                  GGUF_WRITER_CHUNK elements, so a model in f32 master weights is
 *                                  saved in f16 without a second copy of it in memory.
 * Each refuses (MSRNN_ERR_INVALID, naming the tensor) an empty or repeated name, a NULL pointer,
 * an unsupported type, 0 or more than 4 dimensions, a zero dimension, or ne[0] not a multiple of
 * the type's block size. */
msrnn_status gguf_writer_add_tensor(gguf_writer *w, const char *name, tensor_type type,
                                    uint32_t n_dims, const uint64_t *ne, const void *data);
msrnn_status gguf_writer_add_tensor_ref(gguf_writer *w, const char *name, tensor_type type,
                                        uint32_t n_dims, const uint64_t *ne, const void *data);
msrnn_status gguf_writer_add_tensor_f32_as(gguf_writer *w, const char *name, tensor_type type,
                                           uint32_t n_dims, const uint64_t *ne, const float *src);
#define GGUF_WRITER_CHUNK (1 << 16) /* elements converted at a time by the f32_as tensors */

/* Write to path atomically (base/atomic_file.h: a temporary file beside it, fsync, rename). Beyond
 * what was added, it allocates only bounded buffers (the file buffer and one conversion chunk). */
msrnn_status gguf_writer_write(gguf_writer *w, const char *path);

#endif
