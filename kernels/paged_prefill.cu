// paged_prefill: varlen causal attention of the prefilling sequences' new tokens over
// their paged K/V cache, flash-attention style (tiles + online softmax; the
// [query_len, context_len] score matrix is never materialized), so chunked prefill works.
//
// For sequence s with n = query_len[s] new tokens and c = context_len[s] cached tokens
// (new ones included), new token i sits at position p = c - n + i and row
// query_start[s] + i of q / out. Head h (kv head h / (heads / kv_heads), GQA) attends to
// keys j with j <= p and, with a window W > 0, p - j < W (Hugging Face convention):
//   out[row, h, :] = softmax_j(q[row, h, :] . K[j, kvh, :] / sqrt(d)) @ V[j, kvh, :]
// K/V of position j live at slot block_tables[s, j / block_size] * block_size +
// j % block_size of k_cache / v_cache. Softmax in f32 (exp2 of log2e-prescaled scores),
// accumulation in f32, one rounding when storing. Only the sequences' rows of `out` are
// written; every other row is left untouched.
//
// Shapes (contiguous): q [T, heads, d]; out [T, heads * d]; k_cache, v_cache
//          [num_slots, kv_heads * d]; query_start, query_len, context_len [S] u32;
//          block_tables [S, max_blocks] u32. d a multiple of 8, at most 256.
// Launch:  grid = (ceil(max_query_len / 16), S, heads), block = (128, 1, 1),
//          dynamic shared memory (16 + 32) * d * 4 bytes (48 KiB at d = 256).
//          A block owns a tile of BM = 16 query rows of one (sequence, head); blocks whose
//          tile starts past the sequence's query_len exit. Warp w owns rows 4w..4w+3.
//          The tile loops over key tiles of BN = 32 keys from its first row's first
//          visible key (window) to its last row's position (causal). Per key tile:
//          K^T [d][32] is loaded to shared memory (lane j = key j: scores S[r][j] of the
//          warp's 4 rows, conflict-free), masked, online softmax (running max per row,
//          per-lane partial sums rescaled alongside, summed over the warp at the end),
//          then V [32][d] replaces K in the same buffer and acc[r][lane + 32k] += P V
//          (P broadcast from lane j by shuffles).
//          This first version uses scalar f32 FMAs (no tensor cores) and no double
//          buffering: correctness first.
// Kernels: paged_prefill_f32, paged_prefill_f16, paged_prefill_bf16
//          (T* out, const T* q, const T* k_cache, const T* v_cache,
//           const uint32* query_start, const uint32* query_len, const uint32* context_len,
//           const uint32* block_tables, int max_blocks, int heads, int kv_heads, int d,
//           int block_size, int window /* 0: none */, int64 q_stride /* >= heads * d: q row
//           r starts at q + r * q_stride, e.g. inside the fused qkv rows; out rows are
//           heads * d */, float scale_log2 /* log2(e)/sqrt(d) */).
#include "common.cuh"

#define PP_BM 16
#define PP_BN 32
#define PP_THREADS 128
#define PP_ROWS 4  // rows per warp: PP_BM / (PP_THREADS / 32)
#define PP_DMAX 256
#define PP_CK (PP_DMAX / 32)  // output columns per lane: lane + 32 k, k < PP_CK

extern __shared__ __align__(16) float pp_smem[];

// 8 consecutive elements as f32; `vec`: p is 16-byte aligned.
template <typename T>
__device__ __forceinline__ void load8(const T* __restrict__ p, float* o, bool vec) {
    if (vec) {
        if constexpr (sizeof(T) == 4) {
            const float4 a = reinterpret_cast<const float4*>(p)[0];
            const float4 b = reinterpret_cast<const float4*>(p)[1];
            o[0] = a.x; o[1] = a.y; o[2] = a.z; o[3] = a.w;
            o[4] = b.x; o[5] = b.y; o[6] = b.z; o[7] = b.w;
        } else {
            const uint4 u = *reinterpret_cast<const uint4*>(p);
            const T* e = reinterpret_cast<const T*>(&u);
#pragma unroll
            for (int k = 0; k < 8; ++k) o[k] = to_f32(e[k]);
        }
    } else {
#pragma unroll
        for (int k = 0; k < 8; ++k) o[k] = to_f32(p[k]);
    }
}

template <typename T>
__device__ void paged_prefill(T* __restrict__ out, const T* __restrict__ q,
                              const T* __restrict__ k_cache, const T* __restrict__ v_cache,
                              const uint32_t* __restrict__ query_start,
                              const uint32_t* __restrict__ query_len,
                              const uint32_t* __restrict__ context_len,
                              const uint32_t* __restrict__ block_tables, int max_blocks,
                              int heads, int kv_heads, int d, int block_size, int window,
                              int64_t q_stride, float scale_log2) {
    const int s = blockIdx.y, h = blockIdx.z;
    const int qlen = (int)query_len[s];
    const int q0 = blockIdx.x * PP_BM;
    if (q0 >= qlen) return;  // block-uniform
    const int ctx = (int)context_len[s];
    const int64_t row0 = query_start[s];
    const int q1 = min(q0 + PP_BM, qlen);
    const int first_pos = ctx - qlen;  // position of new token 0
    const int p_lo = first_pos + q0, p_hi = first_pos + q1 - 1;
    const int kv_begin = first_visible(p_lo, window);
    const int kv_end = p_hi + 1;  // exclusive
    const int kvh = h / (heads / kv_heads);
    const int64_t out_stride = (int64_t)heads * d;
    const int64_t kv_stride = (int64_t)kv_heads * d;
    const int64_t kv_off = (int64_t)kvh * d;
    const uint32_t* table = block_tables + (int64_t)s * max_blocks;

    float* qs = pp_smem;               // [BM][d], scaled by log2(e)/sqrt(d)
    float* kv = pp_smem + PP_BM * d;   // K^T [d][BN], then V [BN][d]
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int d8 = d >> 3;
    const bool vec = ((reinterpret_cast<uintptr_t>(q) | reinterpret_cast<uintptr_t>(k_cache) |
                       reinterpret_cast<uintptr_t>(v_cache)) & 15) == 0 &&
                     (q_stride * (int64_t)sizeof(T)) % 16 == 0;

    // Q tile; rows past query_len are zeros (computed, never stored).
    for (int i = tid; i < PP_BM * d8; i += PP_THREADS) {
        const int r = i / d8, c8 = i - r * d8;
        float x[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        if (q0 + r < qlen) {
            load8(q + (row0 + q0 + r) * q_stride + (int64_t)h * d + c8 * 8, x, vec);
#pragma unroll
            for (int e = 0; e < 8; ++e) x[e] *= scale_log2;
        }
        float4* dst = reinterpret_cast<float4*>(qs + r * d + c8 * 8);
        dst[0] = make_float4(x[0], x[1], x[2], x[3]);
        dst[1] = make_float4(x[4], x[5], x[6], x[7]);
    }

    float m[PP_ROWS], l[PP_ROWS], acc[PP_ROWS][PP_CK];
#pragma unroll
    for (int i = 0; i < PP_ROWS; ++i) {
        m[i] = -INFINITY;
        l[i] = 0.f;
#pragma unroll
        for (int k = 0; k < PP_CK; ++k) acc[i][k] = 0.f;
    }
    const int kv_chunks = PP_BN * d8;
    const int kv_iters = (kv_chunks + PP_THREADS - 1) / PP_THREADS;

    for (int kt = kv_begin; kt < kv_end; kt += PP_BN) {
        // Lane j owns key kt + j (PP_BN == 32): its slot, or -1 past the tile's last key.
        const int key = kt + lane;
        const int64_t slot = key < kv_end ? paged_slot(table, block_size, key) : -1;
        __syncthreads();  // the previous tile's V reads are done
        // K^T: thread (lane j, c8 = warp + 4 n) loads 8 elements of key j.
        for (int c8 = warp; c8 < d8; c8 += PP_THREADS / 32) {
            float x[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
            if (slot >= 0) load8(k_cache + slot * kv_stride + kv_off + c8 * 8, x, vec);
#pragma unroll
            for (int e = 0; e < 8; ++e) kv[(c8 * 8 + e) * PP_BN + lane] = x[e];
        }
        __syncthreads();
        float sc[PP_ROWS] = {0.f, 0.f, 0.f, 0.f};
        for (int c = 0; c < d; c += 4) {
            const float k0 = kv[c * PP_BN + lane], k1 = kv[(c + 1) * PP_BN + lane];
            const float k2 = kv[(c + 2) * PP_BN + lane], k3 = kv[(c + 3) * PP_BN + lane];
#pragma unroll
            for (int i = 0; i < PP_ROWS; ++i) {
                const float4 qv = *reinterpret_cast<const float4*>(qs + (warp * PP_ROWS + i) * d + c);
                sc[i] = fmaf(qv.x, k0, sc[i]);
                sc[i] = fmaf(qv.y, k1, sc[i]);
                sc[i] = fmaf(qv.z, k2, sc[i]);
                sc[i] = fmaf(qv.w, k3, sc[i]);
            }
        }
        // Mask and online softmax (a row with nothing visible yet keeps m = -inf, p = 0).
        float p[PP_ROWS];
#pragma unroll
        for (int i = 0; i < PP_ROWS; ++i) {
            const int qi = q0 + warp * PP_ROWS + i;
            const int pos = first_pos + qi;
            const bool ok =
                qi < qlen && key < kv_end && key <= pos && key >= first_visible(pos, window);
            const float sv = ok ? sc[i] : -INFINITY;
            const float mn = fmaxf(m[i], warp_max(sv));
            const float mu = mn == -INFINITY ? 0.f : mn;
            const float alpha = exp2f(m[i] - mu);
            p[i] = exp2f(sv - mu);
            l[i] = fmaf(l[i], alpha, p[i]);
            m[i] = mn;
#pragma unroll
            for (int k = 0; k < PP_CK; ++k) acc[i][k] *= alpha;
        }
        __syncthreads();  // K^T reads are done
        // V [BN][d]: chunk i = (key j, c8); zeros past the tile's last key. The slot of
        // key j comes from lane j (every lane runs the same number of iterations).
        for (int n = 0; n < kv_iters; ++n) {
            const int i = tid + n * PP_THREADS;
            const int j = min(i / d8, PP_BN - 1);
            const int64_t sj = __shfl_sync(0xffffffffu, (long long)slot, j);
            if (i < kv_chunks) {
                const int c8 = i - j * d8;
                float x[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
                if (sj >= 0) load8(v_cache + sj * kv_stride + kv_off + c8 * 8, x, vec);
                float4* dst = reinterpret_cast<float4*>(kv + j * d + c8 * 8);
                dst[0] = make_float4(x[0], x[1], x[2], x[3]);
                dst[1] = make_float4(x[4], x[5], x[6], x[7]);
            }
        }
        __syncthreads();
        for (int j = 0; j < PP_BN; ++j) {
            float pj[PP_ROWS];
#pragma unroll
            for (int i = 0; i < PP_ROWS; ++i) pj[i] = __shfl_sync(0xffffffffu, p[i], j);
#pragma unroll
            for (int k = 0; k < PP_CK; ++k) {
                const int c = lane + 32 * k;
                if (c < d) {
                    const float v = kv[j * d + c];
#pragma unroll
                    for (int i = 0; i < PP_ROWS; ++i) acc[i][k] = fmaf(pj[i], v, acc[i][k]);
                }
            }
        }
    }

#pragma unroll
    for (int i = 0; i < PP_ROWS; ++i) {
        const int qi = q0 + warp * PP_ROWS + i;
        const float lt = warp_sum(l[i]);
        if (qi < qlen) {  // a real row sees at least its own key: lt > 0
            const float inv = 1.f / lt;
            T* o = out + (row0 + qi) * out_stride + (int64_t)h * d;
#pragma unroll
            for (int k = 0; k < PP_CK; ++k) {
                const int c = lane + 32 * k;
                if (c < d) o[c] = from_f32<T>(acc[i][k] * inv);
            }
        }
    }
}

#define PAGED_PREFILL(T, S)                                                                   \
    extern "C" __global__ void __launch_bounds__(PP_THREADS) paged_prefill_##S(                \
        T* out, const T* q, const T* k_cache, const T* v_cache, const uint32_t* query_start,  \
        const uint32_t* query_len, const uint32_t* context_len, const uint32_t* block_tables, \
        int max_blocks, int heads, int kv_heads, int d, int block_size, int window,           \
        int64_t q_stride, float scale_log2) {                                                 \
        paged_prefill<T>(out, q, k_cache, v_cache, query_start, query_len, context_len,       \
                         block_tables, max_blocks, heads, kv_heads, d, block_size, window,    \
                         q_stride, scale_log2);                                               \
    }
INSTANTIATE_FLOAT(PAGED_PREFILL)
