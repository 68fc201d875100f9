/* types.h — the element types a weight can have (GGML's numbering, as GGUF stores it), their
 * block layout, and scalar conversions. Per-type behaviour is data: see type_traits[]. */
#ifndef MSRNN_TENSOR_TYPES_H
#define MSRNN_TENSOR_TYPES_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    TYPE_F32 = 0,
    TYPE_F16 = 1,
    TYPE_Q4_0 = 2,
    TYPE_Q8_0 = 8,
    TYPE_BF16 = 30,
    TYPE_COUNT = 31, /* one past the largest GGML type number msrnn knows */
} tensor_type;

#define QK 32 /* elements per Q8_0 / Q4_0 block */

typedef struct {
    uint16_t d;    /* f16 scale */
    int8_t qs[QK]; /* value = qs[i] * d */
} block_q8_0;      /* 34 bytes */

typedef struct {
    uint16_t d;         /* f16 scale */
    uint8_t qs[QK / 2]; /* low nibbles: elements 0..15, high nibbles: 16..31; value = (q - 8) * d */
} block_q4_0;           /* 18 bytes */

typedef struct {
    const char *name;
    int block_size;     /* elements per block */
    size_t block_bytes; /* bytes per block */
    int supported;      /* 1 if msrnn can compute with it */
} type_traits_t;

/* Traits of a GGML type number, or NULL if msrnn does not know it (t outside 0..TYPE_COUNT-1 or
 * a number with no entry). */
const type_traits_t *type_traits(uint32_t t);

/* Bytes of a row of n elements (n must be a multiple of the block size), or 0 if it is not. */
size_t type_row_bytes(tensor_type t, uint64_t n);

float fp16_to_fp32_ref(uint16_t h); /* bit manipulation, no special instructions */
uint16_t fp32_to_fp16(float f);     /* round to nearest even */

#if defined(__F16C__)
#include <immintrin.h>
static inline float fp16_to_fp32(uint16_t h) { return _cvtsh_ss(h); }
#else
static inline float fp16_to_fp32(uint16_t h) { return fp16_to_fp32_ref(h); }
#endif
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f); /* round to nearest even */

/* Scalar reference conversions of n elements (n a multiple of the block size). */
void dequantize_row(tensor_type t, const void *src, float *dst, int64_t n);
void quantize_row(tensor_type t, const float *src, void *dst, int64_t n);

#endif
