// Quantized mat-vec for small batches: y[c][row] = sum_k W[row][k] * x[c][k] for up to
// 8 activation rows c, W in a GGML type (byte-exact GGUF blocks), x quantized to
// block_q8 (32 values, f32 scale, code sum) by quantize_q8_*. The CPU reference:
// engine_quant::reference::matmul with Q8 activations (crates/quant).
//
// quantize_q8_{f32,f16,bf16}(x [m, k], out [m, k/32] block_q8, n_blocks = m * k / 32)
//   one warp per block of 32 values; grid (ceil(n_blocks / 8)), block 256.
// qmv_<type>_c<NC>(w [rows, k] GGUF bytes, a [NC, k/32] block_q8, y [NC, rows] f32,
//   rows, k): one warp per output row, lanes stride over the row's 32-element parts
//   (dp4a on 4 codes at a time), NC accumulators per lane, a warp shuffle reduction;
//   grid (ceil(rows / 4)), block 128. NC in {1, 2, 4, 8}: other batch sizes are split.
#include "quant_common.cuh"

template <typename T> __device__ __forceinline__ float to_f32(T v);
template <> __device__ __forceinline__ float to_f32(float v) { return v; }
template <> __device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ void quantize_q8(const T *__restrict__ x, block_q8 *__restrict__ out, long n_blocks) {
    const long blk = (long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (blk >= n_blocks) return;
    const float v = to_f32(x[blk * 32 + lane]);
    float amax = fabsf(v);
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffff, amax, o));
    const float d = amax / 127.0f;
    const int q = d > 0.0f ? __float2int_rn(v / d) : 0;
    int sum = q;
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffff, sum, o);
    out[blk].qs[lane] = (int8_t)q;
    if (lane == 0) {
        out[blk].d = d;
        out[blk].sum = sum;
    }
}

extern "C" __global__ void quantize_q8_f32(const float *x, block_q8 *out, long n) { quantize_q8(x, out, n); }
extern "C" __global__ void quantize_q8_f16(const __half *x, block_q8 *out, long n) { quantize_q8(x, out, n); }
extern "C" __global__ void quantize_q8_bf16(const __nv_bfloat16 *x, block_q8 *out, long n) {
    quantize_q8(x, out, n);
}

// One part against one activation block.
__device__ __forceinline__ float part_dot(const qpart &w, const block_q8 &a) {
    const int *aq = (const int *)a.qs;
    float r = 0.0f;
    for (int h = 0; h < 2; h++) {
        int dot = 0, asum = 0;
        for (int t = 4 * h; t < 4 * h + 4; t++) {
            const int av = aq[t];
            dot = __dp4a(w.q[t], av, dot);
            asum = __dp4a(0x01010101, av, asum);
        }
        r += w.s[h] * (float)(dot - w.off * asum) + w.mn[h] * (float)asum;
    }
    return a.d * r;
}

template <int T, int NC>
__device__ void qmv(const uint8_t *__restrict__ w, const block_q8 *__restrict__ a, float *__restrict__ y,
                    int rows, int k) {
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const int parts = k / 32;
    const uint8_t *wr = w + (long)row * (parts / qtype<T>::parts) * qtype<T>::bytes;
    float acc[NC];
    for (int c = 0; c < NC; c++) acc[c] = 0.0f;
    for (int p = lane; p < parts; p += 32) {
        const qpart q = decode_part<T>(wr + (p / qtype<T>::parts) * qtype<T>::bytes, p % qtype<T>::parts);
        for (int c = 0; c < NC; c++) acc[c] += part_dot(q, a[(long)c * parts + p]);
    }
    for (int c = 0; c < NC; c++) {
        float v = acc[c];
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
        if (lane == 0) y[(long)c * rows + row] = v;
    }
}

#define QMV(NAME, T, NC)                                                                          \
    extern "C" __global__ void qmv_##NAME##_c##NC(const uint8_t *w, const block_q8 *a, float *y, \
                                                 int rows, int k) {                              \
        qmv<T, NC>(w, a, y, rows, k);                                                            \
    }
#define QMV_ALL(NAME, T) QMV(NAME, T, 1) QMV(NAME, T, 2) QMV(NAME, T, 4) QMV(NAME, T, 8)

QMV_ALL(q4_0, QT_Q4_0)
QMV_ALL(q4_1, QT_Q4_1)
QMV_ALL(q5_0, QT_Q5_0)
QMV_ALL(q5_1, QT_Q5_1)
QMV_ALL(q8_0, QT_Q8_0)
QMV_ALL(q2_k, QT_Q2_K)
QMV_ALL(q3_k, QT_Q3_K)
QMV_ALL(q4_k, QT_Q4_K)
QMV_ALL(q5_k, QT_Q5_K)
QMV_ALL(q6_k, QT_Q6_K)
