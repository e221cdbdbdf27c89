// Dequantize GGML blocks (byte-exact GGUF) into a dense matrix for the large-batch path
// (prefill): the result feeds cuBLAS (candle's matmul). Reference: the decoder in
// crates/quant/src/dequant.rs; values are the same f32 expressions, rounded once to the
// output type.
//
// dequant_<type>_<out>(w [rows, k] GGUF bytes, y [rows, k] out, n_parts = rows * k / 32):
//   one thread per 32-element part; grid (ceil(n_parts / 256)), block 256.
#include "quant_common.cuh"

template <typename O> __device__ __forceinline__ O from_f32(float v);
template <> __device__ __forceinline__ float from_f32(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32(float v) { return __float2half(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32(float v) { return __float2bfloat16(v); }

template <int T, typename O>
__device__ void dequant(const uint8_t *__restrict__ w, O *__restrict__ y, long n_parts) {
    const long p = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= n_parts) return;
    const long blk = p / qtype<T>::parts;
    const qpart q = decode_part<T>(w + blk * qtype<T>::bytes, (int)(p % qtype<T>::parts));
    O *out = y + p * 32;
    for (int t = 0; t < 8; t++) {
        for (int i = 0; i < 4; i++) {
            const int e = 4 * t + i, h = e / 16;
            out[e] = from_f32<O>(q.s[h] * (float)(code_at<T>(q.q[t], i) - q.off) + q.mn[h]);
        }
    }
}

#define DEQ(NAME, T, ONAME, O)                                                                   \
    extern "C" __global__ void dequant_##NAME##_##ONAME(const uint8_t *w, O *y, long n_parts) { \
        dequant<T, O>(w, y, n_parts);                                                           \
    }
#define DEQ_ALL(NAME, T) DEQ(NAME, T, f32, float) DEQ(NAME, T, f16, __half) DEQ(NAME, T, bf16, __nv_bfloat16)

DEQ_ALL(q4_0, QT_Q4_0)
DEQ_ALL(q4_1, QT_Q4_1)
DEQ_ALL(q5_0, QT_Q5_0)
DEQ_ALL(q5_1, QT_Q5_1)
DEQ_ALL(q8_0, QT_Q8_0)
DEQ_ALL(q2_k, QT_Q2_K)
DEQ_ALL(q3_k, QT_Q3_K)
DEQ_ALL(q4_k, QT_Q4_K)
DEQ_ALL(q5_k, QT_Q5_K)
DEQ_ALL(q6_k, QT_Q6_K)
