// The rotation rope.cu and rope_and_cache.cu share: one unit of V consecutive pairs of
// one head, rotated in place, with explicit round-to-nearest f32 arithmetic (no FMA
// contraction), so both kernels and the CPU ports (crates/kernels/src/rope.rs) compute
// the very same bits:
//   x1' = x1 * cos - x2 * sin,   x2' = x2 * cos + x1 * sin
//   NEOX: pair i is (x[i], x[i + d/2]); else (x[2i], x[2i + 1]); cs = [cos | sin] (d f32).
// A unit with `dst` not null also stores its rotated values there, at the same offsets
// within the head (rope_and_cache: the k heads' cache row).
#pragma once
#include "common.cuh"

template <typename T, int W>
struct alignas(sizeof(T) * W) Pack {
    T v[W];
};

__device__ __forceinline__ float rope_x1(float x1, float x2, float c, float s) {
    return __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s));
}
__device__ __forceinline__ float rope_x2(float x1, float x2, float c, float s) {
    return __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s));
}

// Rotate pairs i0..i0+V of the head at xh (and store them at dst when not null).
template <typename T, int V, bool NEOX>
__device__ __forceinline__ void rope_unit(T* __restrict__ xh, T* __restrict__ dst,
                                          const float* cs, int half, int i0) {
    if constexpr (NEOX) {
        Pack<T, V> a = *reinterpret_cast<const Pack<T, V>*>(xh + i0);
        Pack<T, V> b = *reinterpret_cast<const Pack<T, V>*>(xh + half + i0);
#pragma unroll
        for (int k = 0; k < V; ++k) {
            const float c = cs[i0 + k], s = cs[half + i0 + k];
            const float x1 = to_f32(a.v[k]), x2 = to_f32(b.v[k]);
            a.v[k] = from_f32<T>(rope_x1(x1, x2, c, s));
            b.v[k] = from_f32<T>(rope_x2(x1, x2, c, s));
        }
        *reinterpret_cast<Pack<T, V>*>(xh + i0) = a;
        *reinterpret_cast<Pack<T, V>*>(xh + half + i0) = b;
        if (dst) {
            *reinterpret_cast<Pack<T, V>*>(dst + i0) = a;
            *reinterpret_cast<Pack<T, V>*>(dst + half + i0) = b;
        }
    } else {
        Pack<T, 2 * V> a = *reinterpret_cast<const Pack<T, 2 * V>*>(xh + 2 * i0);
#pragma unroll
        for (int k = 0; k < V; ++k) {
            const float c = cs[i0 + k], s = cs[half + i0 + k];
            const float x1 = to_f32(a.v[2 * k]), x2 = to_f32(a.v[2 * k + 1]);
            a.v[2 * k] = from_f32<T>(rope_x1(x1, x2, c, s));
            a.v[2 * k + 1] = from_f32<T>(rope_x2(x1, x2, c, s));
        }
        *reinterpret_cast<Pack<T, 2 * V>*>(xh + 2 * i0) = a;
        if (dst) *reinterpret_cast<Pack<T, 2 * V>*>(dst + 2 * i0) = a;
    }
}

// The token's cos/sin row as f32 into shared memory (every thread must call it).
template <typename T>
__device__ __forceinline__ void load_cos_sin(float* cs, const T* __restrict__ row, int d) {
    for (int i = threadIdx.x; i < d; i += blockDim.x) cs[i] = to_f32(row[i]);
    __syncthreads();
}

template <typename T, int V, bool NEOX>
__device__ __forceinline__ void rope_units(T* xt, T* kc, int first_cached, const float* cs,
                                           int heads, int d) {
    const int half = d / 2;
    const int per_head = half / V;
    const int units = heads * per_head;
    for (int u = threadIdx.x; u < units; u += blockDim.x) {
        const int h = u / per_head;
        T* dst = (kc != nullptr && h >= first_cached) ? kc + (int64_t)(h - first_cached) * d
                                                      : nullptr;
        rope_unit<T, V, NEOX>(xt + (int64_t)h * d, dst, cs, half, (u - h * per_head) * V);
    }
}

// Rotate heads 0..heads of one token's row xt by cs; with kc not null, heads
// first_cached.. are also stored at kc (head first_cached at kc[0..d]). Units of V pairs:
// with `vec` and xt (and kc) 16-byte aligned and (d/2) % V == 0, neox takes V = 16 /
// sizeof(T) (one 16-byte load of x1s and one of x2s), interleaved V = 8 / sizeof(T) (one
// 16-byte load of V pairs); else V = 1. The host decides `vec` (it sizes the block from
// it); it is re-checked here so that a wrong flag can only cost speed, never a misaligned
// access. (V only groups the memory accesses: the arithmetic is the same either way.)
template <typename T>
__device__ __forceinline__ void rope_token(T* xt, T* kc, int first_cached, const float* cs,
                                           int heads, int d, int neox, int vec) {
    constexpr int VN = 16 / sizeof(T);
    constexpr int VI = 8 / sizeof(T);
    const int half = d / 2;
    const bool aligned =
        ((reinterpret_cast<uintptr_t>(xt) | reinterpret_cast<uintptr_t>(kc)) & 15) == 0;
    if (neox) {
        if (vec && aligned && half % VN == 0) rope_units<T, VN, true>(xt, kc, first_cached, cs, heads, d);
        else rope_units<T, 1, true>(xt, kc, first_cached, cs, heads, d);
    } else {
        if (vec && aligned && half % VI == 0) rope_units<T, VI, false>(xt, kc, first_cached, cs, heads, d);
        else rope_units<T, 1, false>(xt, kc, first_cached, cs, heads, d);
    }
}
