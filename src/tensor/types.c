/* types.c — the type table and the scalar (reference) conversions: f16, bf16, Q8_0, Q4_0.
 * The SIMD kernels in kernels.c are tested against these. */
#include "tensor/types.h"

#include <math.h>
#include <string.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

static const type_traits_t traits[TYPE_COUNT] = {
    [TYPE_F32] = {"f32", 1, 4, 1},
    [TYPE_F16] = {"f16", 1, 2, 1},
    [TYPE_Q4_0] = {"q4_0", QK, sizeof(block_q4_0), 1},
    [TYPE_Q8_0] = {"q8_0", QK, sizeof(block_q8_0), 1},
    [TYPE_BF16] = {"bf16", 1, 2, 1},
};

_Static_assert(sizeof(block_q8_0) == 34, "Q8_0 block is 34 bytes");
_Static_assert(sizeof(block_q4_0) == 18, "Q4_0 block is 18 bytes");

const type_traits_t *type_traits(uint32_t t) {
    if (t >= TYPE_COUNT || traits[t].name == NULL) return NULL;
    return &traits[t];
}

size_t type_row_bytes(tensor_type t, uint64_t n) {
    const type_traits_t *tr = type_traits(t);
    if (!tr || n % (uint64_t)tr->block_size) return 0;
    return (size_t)(n / (uint64_t)tr->block_size) * tr->block_bytes;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float fp16_to_fp32_ref(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13)); /* inf / nan */
    if (exp == 0) {
        if (man == 0) return bits_f32(sign);
        float v = ldexpf((float)man, -24); /* subnormal */
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t fp32_to_fp16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0); /* inf/nan */
    if (ax >= 0x477ff000u) return sign | 0x7c00; /* rounds to >= 65520: inf */
    if (ax < 0x38800000u) {                      /* below the smallest normal: subnormal or 0 */
        float v = bits_f32(ax) * 16777216.0f;    /* in units of 2^-24 */
        return sign | (uint16_t)lrintf(v);       /* rint: nearest even */
    }
    uint32_t r = ax + 0xfff + ((ax >> 13) & 1); /* round to nearest even at bit 13 */
    return sign | (uint16_t)((r - 0x38000000u) >> 13);
}

float bf16_to_fp32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t fp32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 64); /* quiet nan */
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

void dequantize_row(tensor_type t, const void *src, float *dst, int64_t n) {
    switch (t) {
    case TYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case TYPE_F16: {
        const uint16_t *s = src;
        int64_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
        for (; i + 8 <= n; i += 8) /* exact, as the scalar conversion */
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
#endif
        for (; i < n; i++) dst[i] = fp16_to_fp32(s[i]);
    } break;
    case TYPE_BF16: {
        const uint16_t *s = src;
        int64_t i = 0;
#if defined(__AVX2__)
        for (; i + 8 <= n; i += 8) {
            const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + i)));
            _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
        }
#endif
        for (; i < n; i++) dst[i] = bf16_to_fp32(s[i]);
    } break;
    case TYPE_Q8_0: {
        const block_q8_0 *b = src;
        for (int64_t i = 0; i < n / QK; i++) {
            float d = fp16_to_fp32(b[i].d);
            for (int j = 0; j < QK; j++) dst[i * QK + j] = b[i].qs[j] * d;
        }
    } break;
    case TYPE_Q4_0: {
        const block_q4_0 *b = src;
        for (int64_t i = 0; i < n / QK; i++) {
            float d = fp16_to_fp32(b[i].d);
            for (int j = 0; j < QK / 2; j++) {
                dst[i * QK + j] = ((b[i].qs[j] & 0xf) - 8) * d;
                dst[i * QK + j + QK / 2] = ((b[i].qs[j] >> 4) - 8) * d;
            }
        }
    } break;
    default: break;
    }
}

/* Quantisers follow ggml's reference rounding so that files msrnn writes quantise like llama.cpp's.
 */
void quantize_row(tensor_type t, const float *src, void *dst, int64_t n) {
    switch (t) {
    case TYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case TYPE_F16: {
        uint16_t *d = dst;
        for (int64_t i = 0; i < n; i++) d[i] = fp32_to_fp16(src[i]);
    } break;
    case TYPE_BF16: {
        uint16_t *d = dst;
        for (int64_t i = 0; i < n; i++) d[i] = fp32_to_bf16(src[i]);
    } break;
    case TYPE_Q8_0: {
        block_q8_0 *b = dst;
        for (int64_t i = 0; i < n / QK; i++) {
            const float *x = src + i * QK;
            float amax = 0;
            for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(x[j]));
            float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
            b[i].d = fp32_to_fp16(d);
            for (int j = 0; j < QK; j++) b[i].qs[j] = (int8_t)roundf(x[j] * id);
        }
    } break;
    case TYPE_Q4_0: {
        block_q4_0 *b = dst;
        for (int64_t i = 0; i < n / QK; i++) {
            const float *x = src + i * QK;
            float amax = 0, max = 0; /* the value of largest magnitude, with its sign */
            for (int j = 0; j < QK; j++)
                if (fabsf(x[j]) > amax) amax = fabsf(x[j]), max = x[j];
            float d = max / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
            b[i].d = fp32_to_fp16(d);
            for (int j = 0; j < QK / 2; j++) {
                int q0 = (int)(int8_t)(x[j] * id + 8.5f),
                    q1 = (int)(int8_t)(x[j + QK / 2] * id + 8.5f);
                q0 = q0 > 15 ? 15 : q0;
                q1 = q1 > 15 ? 15 : q1;
                b[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
            }
        }
    } break;
    default: break;
    }
}
