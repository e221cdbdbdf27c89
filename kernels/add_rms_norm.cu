// add_rms_norm: the residual add and the RMSNorm that follows it, in one pass (vLLM's
// fused_add_rms_norm, but out of place):
//   sum[r, i]    = round(x[r, i] + residual[r, i])
//   normed[r, i] = round(sum[r, i] * rsqrt(mean_i(sum[r, i]^2) + eps) * weight[i])
// where round() rounds f32 to the storage type once; the norm is computed in f32 from
// the ROUNDED sum (what candle's `x = o + residual; rms_norm(x)` computes).
//
// Shapes: x, residual: [rows, hidden] contiguous; weight: [hidden]; normed, sum: [rows,
//         hidden] each (the Rust wrapper passes the two halves of one [2, rows, hidden]
//         output).
// Launch: grid = (rows, 1, 1): one block per row.
//         block = (threads, 1, 1), threads = clamp(round_up(ceil(units / 2), 32), 32, 1024)
//         where units = hidden / P with P = 16 / sizeof(T) when `vec` (hidden % P == 0 and
//         every pointer 16-byte aligned: 16-byte vector loads/stores), else units = hidden
//         (scalar loads); i.e. about two units per thread. Thread t handles units
//         t, t + threads, t + 2 * threads, ...
//         Pass 1 loads x and residual once, stores the rounded sum and keeps the first
//         CACHE (4) units of each thread in registers (as the rounded storage type);
//         a block reduction (block_sum) gives sum of squares; pass 2 normalizes from the
//         register cache, and, for rows longer than 4 * threads units (hidden > 32768 bf16,
//         > 16384 f32 with vectors; > 4096 scalar), re-reads the units beyond the cache
//         from `sum` (the same thread's own stores, so no synchronization is needed).
//         No shared memory besides block_sum's 32 floats.
// Kernels: add_rms_norm_f32, add_rms_norm_f16, add_rms_norm_bf16
//          (const T* x, const T* residual, const T* weight, T* normed, T* sum,
//           int64 rows, int64 hidden, float eps, int vec).
#include "common.cuh"

namespace {

constexpr int CACHE = 4;  // units per thread held in registers between the two passes

// W consecutive elements, loaded and stored as one access (16 bytes when W * sizeof(T)
// == 16 and the address is 16-byte aligned).
template <typename T, int W>
struct alignas(sizeof(T) * W) Pack {
    T v[W];
};

// x + residual rounded to T, element by element; adds the squares of the rounded values
// to `ss`.
template <typename T, int W>
__device__ __forceinline__ Pack<T, W> add_rounded(const Pack<T, W>& a, const Pack<T, W>& b,
                                                  float& ss) {
    Pack<T, W> s;
#pragma unroll
    for (int k = 0; k < W; ++k) {
        s.v[k] = from_f32<T>(to_f32(a.v[k]) + to_f32(b.v[k]));
        const float f = to_f32(s.v[k]);
        ss += f * f;
    }
    return s;
}

template <typename T, int W>
__device__ __forceinline__ void row(const T* __restrict__ x, const T* __restrict__ res,
                                    const T* __restrict__ w, T* __restrict__ normed,
                                    T* __restrict__ sum, int64_t units, float inv_hidden,
                                    float eps, float* scratch) {
    using P = Pack<T, W>;
    const P* xv = reinterpret_cast<const P*>(x);
    const P* rv = reinterpret_cast<const P*>(res);
    const P* wv = reinterpret_cast<const P*>(w);
    P* nv = reinterpret_cast<P*>(normed);
    P* sv = reinterpret_cast<P*>(sum);
    const int64_t step = blockDim.x;
    P cache[CACHE];
    float ss = 0.f;
    // Pass 1: rounded sum, stored and cached; sum of squares of the rounded values.
#pragma unroll
    for (int c = 0; c < CACHE; ++c) {
        const int64_t u = threadIdx.x + c * step;
        if (u < units) {
            const P s = add_rounded<T, W>(xv[u], rv[u], ss);
            sv[u] = s;
            cache[c] = s;
        }
    }
    for (int64_t u = threadIdx.x + CACHE * step; u < units; u += step)
        sv[u] = add_rounded<T, W>(xv[u], rv[u], ss);
    const float inv_rms = rsqrtf(block_sum(ss, scratch) * inv_hidden + eps);
    // Pass 2: normalize from the register cache, then from this thread's own stores.
#pragma unroll
    for (int c = 0; c < CACHE; ++c) {
        const int64_t u = threadIdx.x + c * step;
        if (u < units) {
            const P g = wv[u];
            P o;
#pragma unroll
            for (int k = 0; k < W; ++k)
                o.v[k] = from_f32<T>(to_f32(cache[c].v[k]) * inv_rms * to_f32(g.v[k]));
            nv[u] = o;
        }
    }
    for (int64_t u = threadIdx.x + CACHE * step; u < units; u += step) {
        const P s = sv[u], g = wv[u];
        P o;
#pragma unroll
        for (int k = 0; k < W; ++k)
            o.v[k] = from_f32<T>(to_f32(s.v[k]) * inv_rms * to_f32(g.v[k]));
        nv[u] = o;
    }
}

template <typename T>
__device__ void add_rms_norm(const T* __restrict__ x, const T* __restrict__ res,
                             const T* __restrict__ w, T* __restrict__ normed,
                             T* __restrict__ sum, int64_t rows, int64_t hidden, float eps,
                             int vec) {
    __shared__ float scratch[32];
    constexpr int P = 16 / sizeof(T);
    const int64_t r = blockIdx.x;
    if (r >= rows) return;  // uniform per block: before any barrier
    const uintptr_t addr = reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(res) |
                           reinterpret_cast<uintptr_t>(w) | reinterpret_cast<uintptr_t>(normed) |
                           reinterpret_cast<uintptr_t>(sum);
    const int64_t off = r * hidden;
    const float inv_hidden = 1.f / (float)hidden;
    // The host decides `vec` (it sizes the block from it); re-checked so that a wrong
    // flag can only cost speed, never a misaligned access.
    if (vec && hidden % P == 0 && (addr & 15) == 0)
        row<T, P>(x + off, res + off, w, normed + off, sum + off, hidden / P, inv_hidden, eps,
                  scratch);
    else
        row<T, 1>(x + off, res + off, w, normed + off, sum + off, hidden, inv_hidden, eps,
                  scratch);
}

}  // namespace

#define ADD_RMS_NORM(T, S)                                                                  \
    extern "C" __global__ void __launch_bounds__(1024)                                     \
        add_rms_norm_##S(const T* x, const T* residual, const T* weight, T* normed, T* sum, \
                         int64_t rows, int64_t hidden, float eps, int vec) {                \
        add_rms_norm<T>(x, residual, weight, normed, sum, rows, hidden, eps, vec);          \
    }
INSTANTIATE_FLOAT(ADD_RMS_NORM)
