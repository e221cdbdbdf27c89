// silu_mul: out[i] = silu(gate[i]) * up[i], silu(x) = x / (1 + exp(-x)).
//
// The activation of the Llama MLP (SwiGLU): down(silu(gate(x)) * up(x)). candle runs
// it as two kernels with a rounded intermediate; this is one pass, computed in f32 and
// rounded once.
//
// Shapes: gate, up, out: n elements, contiguous (any leading shape, e.g. [tokens, I]).
// Launch:  grid = (ceil(n / (8 * 256)) capped at 65535 * 32, 1, 1), block = (256, 1, 1),
//          grid-stride. Each thread moves 16-byte vectors (8 x bf16/f16, 4 x f32) when
//          all three pointers are 16-byte aligned, else single elements.
// Kernels: silu_mul_f32, silu_mul_f16, silu_mul_bf16
//          (const T* gate, const T* up, T* out, int64 n).
#include "common.cuh"

__device__ __forceinline__ float silu(float x) { return x / (1.f + expf(-x)); }

template <typename T>
__device__ void silu_mul(const T* __restrict__ gate, const T* __restrict__ up,
                         T* __restrict__ out, int64_t n) {
    constexpr int P = 16 / sizeof(T);
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t tid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const uintptr_t addr = reinterpret_cast<uintptr_t>(gate) | reinterpret_cast<uintptr_t>(up) |
                           reinterpret_cast<uintptr_t>(out);
    int64_t done = 0;
    if ((addr & 15) == 0) {
        const int64_t nv = n / P;
        for (int64_t i = tid; i < nv; i += stride) {
            uint4 g = reinterpret_cast<const uint4*>(gate)[i];
            uint4 u = reinterpret_cast<const uint4*>(up)[i];
            uint4 o;
            const T* gp = reinterpret_cast<const T*>(&g);
            const T* upp = reinterpret_cast<const T*>(&u);
            T* op = reinterpret_cast<T*>(&o);
#pragma unroll
            for (int k = 0; k < P; ++k) op[k] = from_f32<T>(silu(to_f32(gp[k])) * to_f32(upp[k]));
            reinterpret_cast<uint4*>(out)[i] = o;
        }
        done = nv * P;
    }
    for (int64_t i = done + tid; i < n; i += stride)
        out[i] = from_f32<T>(silu(to_f32(gate[i])) * to_f32(up[i]));
}

#define SILU_MUL(T, S)                                                                    \
    extern "C" __global__ void silu_mul_##S(const T* gate, const T* up, T* out, int64_t n) { \
        silu_mul<T>(gate, up, out, n);                                                     \
    }
INSTANTIATE_FLOAT(SILU_MUL)
