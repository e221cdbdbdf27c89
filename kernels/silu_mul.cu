// silu_mul: out[r, i] = silu(gate_up[r, i]) * gate_up[r, I + i], silu(x) = x / (1 + exp(-x)).
//
// The activation of the Llama MLP (SwiGLU) on the fused gate/up projection's output
// (vLLM's silu_and_mul): each input row is [gate | up], 2 * I wide; each output row I
// wide. candle runs it as two kernels with a rounded intermediate over two separate
// matmul outputs; this is one pass over one GEMM's output, computed in f32 and rounded
// once.
//
// Shapes: gate_up [rows, 2 * I], out [rows, I], contiguous (n = rows * I outputs).
// Launch:  grid = (ceil(n / (8 * 256)) capped at 65535 * 32, 1, 1), block = (256, 1, 1),
//          grid-stride over outputs. Each thread moves 16-byte vectors (8 x bf16/f16,
//          4 x f32) when I is a multiple of the vector width and both pointers are
//          16-byte aligned (a vector then never straddles gate and up), else single
//          elements.
// Kernels: silu_mul_f32, silu_mul_f16, silu_mul_bf16
//          (const T* gate_up, T* out, int64 n, int64 i).
#include "common.cuh"

__device__ __forceinline__ float silu(float x) { return x / (1.f + expf(-x)); }

template <typename T>
__device__ void silu_mul(const T* __restrict__ gate_up, T* __restrict__ out, int64_t n,
                         int64_t inter) {
    constexpr int P = 16 / sizeof(T);
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t tid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const uintptr_t addr =
        reinterpret_cast<uintptr_t>(gate_up) | reinterpret_cast<uintptr_t>(out);
    if ((addr & 15) == 0 && inter % P == 0) {
        const int64_t row_vecs = inter / P, nv = n / P;
        for (int64_t v = tid; v < nv; v += stride) {
            const int64_t r = v / row_vecs, c = v - r * row_vecs;
            const uint4* row = reinterpret_cast<const uint4*>(gate_up + r * 2 * inter);
            uint4 g = row[c];
            uint4 u = row[row_vecs + c];
            uint4 o;
            const T* gp = reinterpret_cast<const T*>(&g);
            const T* upp = reinterpret_cast<const T*>(&u);
            T* op = reinterpret_cast<T*>(&o);
#pragma unroll
            for (int k = 0; k < P; ++k) op[k] = from_f32<T>(silu(to_f32(gp[k])) * to_f32(upp[k]));
            reinterpret_cast<uint4*>(out)[v] = o;
        }
        return;
    }
    for (int64_t j = tid; j < n; j += stride) {
        const int64_t r = j / inter, c = j - r * inter;
        const T* row = gate_up + r * 2 * inter;
        out[j] = from_f32<T>(silu(to_f32(row[c])) * to_f32(row[inter + c]));
    }
}

#define SILU_MUL(T, S)                                                                     \
    extern "C" __global__ void silu_mul_##S(const T* gate_up, T* out, int64_t n, int64_t i) { \
        silu_mul<T>(gate_up, out, n, i);                                                    \
    }
INSTANTIATE_FLOAT(SILU_MUL)
