// Shared by the quantized-matmul kernels (quant_matvec.cu, quant_dequant.cu): GGML
// blocks read byte-exact as in a GGUF file (the layouts are in
// crates/quant/src/block.rs), decoded 32 elements ("a part") at a time.
//
// A part of a weight row is 8 ints of 4 codes each (element 4t+i in byte i of q[t]),
// two scales and two additive terms (for elements 0..15 and 16..31: the K-quants with
// 16-element groups have two, the others repeat one) and an offset subtracted from
// every code:   value(e) = s[e/16] * (code(e) - off) + mn[e/16].
// Codes are below 128 except Q8_0's, which are signed bytes; __dp4a multiplies them as
// signed bytes either way.
#pragma once
#include <stdint.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

// GGUF type ids.
#define QT_Q4_0 2
#define QT_Q4_1 3
#define QT_Q5_0 6
#define QT_Q5_1 7
#define QT_Q8_0 8
#define QT_Q2_K 10
#define QT_Q3_K 11
#define QT_Q4_K 12
#define QT_Q5_K 13
#define QT_Q6_K 14

// An activation block: engine_quant::act::BlockQ8 (40 bytes): x[i] ~ d * qs[i],
// sum = sum of qs.
struct block_q8 {
    float d;
    int sum;
    int8_t qs[32];
};

// Bytes per block and 32-element parts per block of a type.
template <int T> struct qtype;
template <> struct qtype<QT_Q4_0> { static constexpr int bytes = 18, parts = 1; };
template <> struct qtype<QT_Q4_1> { static constexpr int bytes = 20, parts = 1; };
template <> struct qtype<QT_Q5_0> { static constexpr int bytes = 22, parts = 1; };
template <> struct qtype<QT_Q5_1> { static constexpr int bytes = 24, parts = 1; };
template <> struct qtype<QT_Q8_0> { static constexpr int bytes = 34, parts = 1; };
template <> struct qtype<QT_Q2_K> { static constexpr int bytes = 84, parts = 8; };
template <> struct qtype<QT_Q3_K> { static constexpr int bytes = 110, parts = 8; };
template <> struct qtype<QT_Q4_K> { static constexpr int bytes = 144, parts = 8; };
template <> struct qtype<QT_Q5_K> { static constexpr int bytes = 176, parts = 8; };
template <> struct qtype<QT_Q6_K> { static constexpr int bytes = 210, parts = 8; };

struct qpart {
    int q[8];
    float s[2];
    float mn[2];
    int off;
};

// 4 bytes at any address, little-endian.
__device__ __forceinline__ uint32_t ld4(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

__device__ __forceinline__ float ldh(const uint8_t *p) {
    return __half2float(__ushort_as_half((unsigned short)(p[0] | (p[1] << 8))));
}

// Bits e..e+3 of `bits`, each moved to bit `at` of its byte.
__device__ __forceinline__ uint32_t spread4(uint32_t bits, int e, int at) {
    uint32_t b = bits >> e;
    return (((b >> 0) & 1) << at) | (((b >> 1) & 1) << (8 + at)) | (((b >> 2) & 1) << (16 + at)) |
           (((b >> 3) & 1) << (24 + at));
}

// The (scale, min) pair g of Q4_K/Q5_K's 12 scale bytes.
__device__ __forceinline__ void k4_scale_min(const uint8_t *s, int g, int &sc, int &m) {
    if (g < 4) {
        sc = s[g] & 63;
        m = s[g + 4] & 63;
    } else {
        sc = (s[g + 4] & 15) | ((s[g - 4] >> 6) << 4);
        m = (s[g + 4] >> 4) | ((s[g] >> 6) << 4);
    }
}

// Q3_K's scale g (signed, -32..31).
__device__ __forceinline__ int q3_scale(const uint8_t *s, int g) {
    int low = g < 8 ? (s[g] & 15) : (s[g - 8] >> 4);
    int high = (s[8 + g % 4] >> (2 * (g / 4))) & 3;
    return (low | (high << 4)) - 32;
}

// Decode part `p` of the block at `b`.
template <int T> __device__ __forceinline__ qpart decode_part(const uint8_t *b, int p) {
    qpart r;
    r.off = 0;
    if (T == QT_Q4_0 || T == QT_Q4_1 || T == QT_Q5_0 || T == QT_Q5_1) {
        const bool has_m = T == QT_Q4_1 || T == QT_Q5_1, five = T == QT_Q5_0 || T == QT_Q5_1;
        float d = ldh(b), m = has_m ? ldh(b + 2) : 0.0f;
        const uint8_t *qh = b + (has_m ? 4 : 2);
        const uint8_t *qs = qh + (five ? 4 : 0);
        uint32_t h = five ? ld4(qh) : 0;
        for (int t = 0; t < 8; t++) {
            uint32_t x = ld4(qs + 4 * (t % 4));
            uint32_t v = t < 4 ? (x & 0x0F0F0F0F) : ((x >> 4) & 0x0F0F0F0F);
            r.q[t] = (int)(v | (five ? spread4(h, 4 * t, 4) : 0));
        }
        r.s[0] = r.s[1] = d;
        r.mn[0] = r.mn[1] = m;
        r.off = has_m ? 0 : (five ? 16 : 8);
    } else if (T == QT_Q8_0) {
        float d = ldh(b);
        for (int t = 0; t < 8; t++) r.q[t] = (int)ld4(b + 2 + 4 * t);
        r.s[0] = r.s[1] = d;
        r.mn[0] = r.mn[1] = 0.0f;
    } else if (T == QT_Q4_K || T == QT_Q5_K) {
        // Part p = 2c + hi: nibble hi of qs[32c + l] (+ bit p of qh[l]).
        float d = ldh(b), dmin = ldh(b + 2);
        int sc, m;
        k4_scale_min(b + 4, p, sc, m);
        const int c = p / 2, hi = p % 2;
        const uint8_t *qs = b + (T == QT_Q5_K ? 48 : 16) + 32 * c;
        for (int t = 0; t < 8; t++) {
            uint32_t v = (ld4(qs + 4 * t) >> (4 * hi)) & 0x0F0F0F0F;
            if (T == QT_Q5_K) {
                uint32_t h = (ld4(b + 16 + 4 * t) >> p) & 0x01010101;
                v |= h << 4;
            }
            r.q[t] = (int)v;
        }
        r.s[0] = r.s[1] = d * sc;
        r.mn[0] = r.mn[1] = -dmin * m;
    } else if (T == QT_Q6_K) {
        // Part p = 4h + j: low nibble j/2 of ql[64h + 32(j%2) + l], bits 2j of qh[32h + l].
        const int h = p / 4, j = p % 4;
        float d = ldh(b + 208);
        const uint8_t *ql = b + 64 * h + 32 * (j % 2), *qh = b + 128 + 32 * h;
        for (int t = 0; t < 8; t++) {
            uint32_t lo = (ld4(ql + 4 * t) >> (4 * (j / 2))) & 0x0F0F0F0F;
            uint32_t hi = (ld4(qh + 4 * t) >> (2 * j)) & 0x03030303;
            r.q[t] = (int)(lo | (hi << 4));
        }
        r.s[0] = d * (int8_t)b[192 + 8 * h + 2 * j];
        r.s[1] = d * (int8_t)b[192 + 8 * h + 2 * j + 1];
        r.mn[0] = r.mn[1] = 0.0f;
        r.off = 32;
    } else {
        // Q2_K / Q3_K: part p = 4h + j: bits 2j of qs[32h + l] (+ Q3_K's bit 4h + j of
        // hmask[l]); groups of 16: 8h + 2j + l/16.
        const int h = p / 4, j = p % 4;
        const uint8_t *qs = b + (T == QT_Q2_K ? 16 : 32) + 32 * h;
        for (int t = 0; t < 8; t++) {
            uint32_t v = (ld4(qs + 4 * t) >> (2 * j)) & 0x03030303;
            if (T == QT_Q3_K) v |= ((ld4(b + 4 * t) >> (4 * h + j)) & 0x01010101) << 2;
            r.q[t] = (int)v;
        }
        for (int half = 0; half < 2; half++) {
            const int g = 8 * h + 2 * j + half;
            if (T == QT_Q2_K) {
                float d = ldh(b + 80), dmin = ldh(b + 82);
                r.s[half] = d * (b[g] & 15);
                r.mn[half] = -dmin * (b[g] >> 4);
            } else {
                r.s[half] = ldh(b + 108) * q3_scale(b + 96, g);
                r.mn[half] = 0.0f;
            }
        }
        r.off = T == QT_Q3_K ? 4 : 0;
    }
    return r;
}

// Code i (0..3) of int v: unsigned byte, or signed for Q8_0.
template <int T> __device__ __forceinline__ int code_at(int v, int i) {
    return T == QT_Q8_0 ? (int)(int8_t)(v >> (8 * i)) : (v >> (8 * i)) & 0xFF;
}
