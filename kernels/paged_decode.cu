// paged_decode: attention of one query row per decoding sequence over that sequence's
// paged KV cache, split-K over the context ("flash decoding").
//
// For decoding sequence b (query row r = rows[b], ctx = context_lens[b] tokens in the
// cache, the last one being the current token), every query head h:
//   out[r, h, :] = softmax_j(q[r, h, :] . K[j, h / group, :] / sqrt(d)) V[j, h / group, :]
// over the visible keys j in [start, ctx), start = max(0, ctx - window) with a sliding
// window (window 0: none), K/V row of position j at
//   slot = block_tables[b, j / block_size] * block_size + j % block_size.
// Softmax and accumulation in f32; each output element is rounded once.
//
// Shapes (all contiguous): q [T, heads, d]; out [T, heads * d] (written only at the
// rows `rows` names); k_cache, v_cache [num_slots, kv_heads * d] (16-byte aligned);
// rows, context_lens [B] u32; block_tables [B, max_blocks] u32. group = heads / kv_heads;
// d a multiple of 8, at most 256. Guards for bad metadata (the host cannot see it; the
// CPU port fails on it instead): ctx is clamped to ctx_cap = min(max_blocks *
// block_size, num_parts * part_size), a row >= T is skipped, a context of 0 writes
// zeros. Block ids are trusted (< num_slots / block_size).
//
// Partitions: partition p covers absolute positions [p * part_size, (p + 1) * part_size).
// Sequence b owns partitions [start / part_size, ceil(ctx / part_size)) (seq_range below,
// shared by both kernels); the others (shorter sequences, or before the window) are not
// touched at all: their blocks return at once and the reducer never reads them.
//
// Kernel 1, paged_decode_h{H}_{f32,f16,bf16}: grid (num_parts, B, kv_heads * ntiles),
//   block 128 threads, dynamic shared memory smem_bytes (below; <= 48 KB, checked by the
//   wrapper). A block handles one partition of one sequence for a tile of `head_tile`
//   (<= H, H in 1, 2, 4, 8) query heads of one kv head's group, so each K/V row of the
//   partition is read once per tile (ntiles = ceil(group / head_tile), one tile when the
//   group is <= 8; head_tile = ceil(group / ntiles)). H is a compile-time bound sizing
//   the per-head registers: the wrapper launches the smallest H >= head_tile.
//   0. q of the tile's heads -> shared f32 (pre-multiplied by the scale); the slots of
//      the partition's tokens -> shared (one block-table read per token).
//   1. logits: sub-warps of 8 lanes take one key token at a time; lane l reads the
//      16-byte chunks l, l + 8, ... of the key row, dots them with every head's q, and
//      3 xor-shuffles sum the 8 lanes. logits[head][token] in shared memory.
//   2. per head (one warp each): max, exp(l - max) in place, sum.
//   3. p . V: thread t takes chunk c = t % nchunks of the head dim (nchunks = d / (16 /
//      sizeof(T))) and token group t / nchunks (tgroups = 128 / nchunks of them), and
//      accumulates p * v for every head of the tile in registers; the token groups are
//      summed through shared memory, one head at a time.
//   If the sequence owns a single partition the block writes out = acc / sum directly;
//   otherwise it writes f32 partials: part_max, part_sum [B, heads, num_parts] (the
//   partition's logit max and sum of exp(l - max)) and part_acc [B, heads, num_parts, d]
//   (the NORMALIZED partition output acc / sum).
//   (T* out, const T* q, const T* k_cache, const T* v_cache, const u32* rows,
//    const u32* block_tables, const u32* context_lens, float* part_max, float* part_sum,
//    float* part_acc, int num_tokens, int heads, int kv_heads, int d, int max_blocks,
//    int block_size, int ctx_cap, int window, int part_size, int num_parts,
//    int head_tile, int64 q_stride, float scale); q row r starts at q + r * q_stride
//    (the fused qkv rows: q_stride >= heads * d), out rows are heads * d
//   smem_bytes = 4 * (head_tile * d            q, f32
//                     + tgroups * d            token-group reduction, f32
//                     + head_tile * part_size  logits / probabilities, f32
//                     + 2 * head_tile          max, sum
//                     + part_size)             slots, u32
// Kernel 2, paged_decode_reduce_{f32,f16,bf16} (only when num_parts > 1): grid
//   (heads, B), block 128 threads. For a sequence owning more than one partition:
//   M = max_i m_i, w_i = s_i * exp(m_i - M), out = sum_i w_i acc_i / sum_i w_i.
//   (T* out, const u32* rows, const u32* context_lens, const float* part_max,
//    const float* part_sum, const float* part_acc, int num_tokens, int heads, int d,
//    int ctx_cap, int window, int part_size, int num_parts)
#include "common.cuh"

#define PD_THREADS 128

// Minimum resident blocks per SM asked of the register allocator: 8 (<= 64 registers,
// 1024 threads per SM) where that does not spill (checked with ptxas -v for sm_90).
template <typename T, int H>
constexpr int pd_min_blocks() {
    return (sizeof(T) == 2 && H <= 4) || H <= 2 ? 8 : 1;
}

struct SeqRange {
    int ctx;         // tokens of the sequence (clamped to ctx_cap)
    int start;       // first visible position (sliding window)
    int first_part;  // first partition the sequence owns
    int end_part;    // one past its last
};

__device__ __forceinline__ SeqRange seq_range(uint32_t ctx_raw, int ctx_cap, int window,
                                              int part_size) {
    SeqRange r;
    r.ctx = (int)min(ctx_raw, (uint32_t)ctx_cap);
    r.start = r.ctx > 0 ? first_visible(r.ctx - 1, window) : 0;
    r.first_part = r.start / part_size;
    r.end_part = (r.ctx + part_size - 1) / part_size;
    return r;
}

// The P elements of a 16-byte chunk as f32.
template <typename T, int P>
__device__ __forceinline__ void unpack(const uint4& raw, float (&f)[P]) {
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int k = 0; k < P; ++k) f[k] = to_f32(e[k]);
}

template <typename T, int H>
__device__ void paged_decode_part(T* __restrict__ out, const T* __restrict__ q,
                                  const T* __restrict__ kc, const T* __restrict__ vc,
                                  const uint32_t* __restrict__ rows,
                                  const uint32_t* __restrict__ tables,
                                  const uint32_t* __restrict__ ctx_lens,
                                  float* __restrict__ part_max, float* __restrict__ part_sum,
                                  float* __restrict__ part_acc, int num_tokens, int heads,
                                  int kv_heads, int d, int max_blocks, int block_size,
                                  int ctx_cap, int window, int part_size, int num_parts,
                                  int head_tile, int64_t q_stride, float scale) {
    constexpr int P = 16 / sizeof(T);   // elements per 16-byte chunk
    constexpr int CPL = 256 / P / 8;    // most chunks per lane of a key row (d <= 256)
    constexpr int U = 2;                // V rows in flight per thread in phase 3
    extern __shared__ float4 smem4[];
    float* smem = reinterpret_cast<float*>(smem4);

    const int part = blockIdx.x, b = blockIdx.y, tid = threadIdx.x;
    const int group = heads / kv_heads;
    const int ntiles = (group + head_tile - 1) / head_tile;
    const int kvh = blockIdx.z / ntiles, g0 = (blockIdx.z % ntiles) * head_tile;
    const int gn = min(head_tile, group - g0);  // heads of this tile, <= H
    const int64_t row = rows[b];
    if (row >= num_tokens) return;
    const SeqRange r = seq_range(ctx_lens[b], ctx_cap, window, part_size);
    T* orow = out + (row * heads + kvh * group + g0) * d;
    if (r.ctx == 0) {
        if (part == 0)
            for (int i = tid; i < gn * d; i += blockDim.x) orow[i] = from_f32<T>(0.f);
        return;
    }
    if (part < r.first_part || part >= r.end_part) return;
    const int p0 = max(part * part_size, r.start);
    const int n = min((part + 1) * part_size, r.ctx) - p0;  // >= 1
    const bool direct = r.end_part - r.first_part == 1;

    const int nchunks = d / P, tgroups = PD_THREADS / nchunks;
    float* q_s = smem;                                 // [head_tile][d]
    float* red = q_s + head_tile * d;                  // [tgroups][d]
    float* logits = red + tgroups * d;                 // [head_tile][part_size]
    float* st_max = logits + head_tile * part_size;    // [head_tile]
    float* st_sum = st_max + head_tile;                // [head_tile]
    uint32_t* slots = reinterpret_cast<uint32_t*>(st_sum + head_tile);  // [part_size]

    // 0. q (scaled) and the partition's slots.
    const T* qrow = q + row * q_stride + (int64_t)(kvh * group + g0) * d;
    for (int i = tid; i < gn * d; i += blockDim.x) q_s[i] = to_f32(qrow[i]) * scale;
    const uint32_t* table = tables + (int64_t)b * max_blocks;
    for (int i = tid; i < n; i += blockDim.x) {
        const int pos = p0 + i;
        slots[i] = (uint32_t)paged_slot(table, block_size, pos);
    }
    __syncthreads();

    const int64_t kvw = (int64_t)kv_heads * d;
    const T* kbase = kc + (int64_t)kvh * d;
    const T* vbase = vc + (int64_t)kvh * d;

    // 1. logits. The loop bound depends on the warp only, so the shuffles see full warps.
    {
        const int lane8 = tid & 7, sub = (tid >> 3) & 3, warp = tid >> 5;
        const int nwarps = blockDim.x >> 5;
        for (int i0 = warp * 4; i0 < n; i0 += nwarps * 4) {
            const int i = i0 + sub;
            float dot[H];
#pragma unroll
            for (int g = 0; g < H; ++g) dot[g] = 0.f;
            if (i < n) {
                const uint4* krow = reinterpret_cast<const uint4*>(kbase + (int64_t)slots[i] * kvw);
                uint4 kr[CPL];
#pragma unroll
                for (int j = 0; j < CPL; ++j)
                    if (lane8 + 8 * j < nchunks) kr[j] = krow[lane8 + 8 * j];
#pragma unroll
                for (int j = 0; j < CPL; ++j) {
                    const int c = lane8 + 8 * j;
                    if (c < nchunks) {
                        float kf[P];
                        unpack<T, P>(kr[j], kf);
#pragma unroll
                        for (int g = 0; g < H; ++g) {
                            if (g < gn) {
                                const float4* q4 = reinterpret_cast<const float4*>(q_s + g * d + c * P);
                                float s = 0.f;
#pragma unroll
                                for (int k = 0; k < P / 4; ++k) {
                                    const float4 x = q4[k];
                                    s += x.x * kf[4 * k] + x.y * kf[4 * k + 1] + x.z * kf[4 * k + 2] +
                                         x.w * kf[4 * k + 3];
                                }
                                dot[g] += s;
                            }
                        }
                    }
                }
            }
#pragma unroll
            for (int g = 0; g < H; ++g) {
                if (g < gn) {
                    float v = dot[g];
                    v += __shfl_xor_sync(0xffffffffu, v, 4);
                    v += __shfl_xor_sync(0xffffffffu, v, 2);
                    v += __shfl_xor_sync(0xffffffffu, v, 1);
                    if (lane8 == 0 && i < n) logits[g * part_size + i] = v;
                }
            }
        }
    }
    __syncthreads();

    // 2. softmax statistics, one warp per head; logits become exp(l - max).
    {
        const int lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5;
        for (int g = warp; g < gn; g += nwarps) {
            float* lg = logits + g * part_size;
            float m = -INFINITY;
            for (int i = lane; i < n; i += 32) m = fmaxf(m, lg[i]);
            m = warp_max(m);
            float s = 0.f;
            for (int i = lane; i < n; i += 32) {
                const float e = expf(lg[i] - m);
                lg[i] = e;
                s += e;
            }
            s = warp_sum(s);
            if (lane == 0) {
                st_max[g] = m;
                st_sum[g] = s;
            }
        }
    }
    __syncthreads();

    // 3. p . V in registers, U rows in flight per thread.
    const int c = tid % nchunks, tg = tid / nchunks;
    float acc[H][P];
#pragma unroll
    for (int g = 0; g < H; ++g)
#pragma unroll
        for (int k = 0; k < P; ++k) acc[g][k] = 0.f;
    if (tg < tgroups) {
        const T* vcol = vbase + c * P;
        for (int i0 = tg; i0 < n; i0 += tgroups * U) {
            uint4 vr[U];
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const int i = i0 + u * tgroups;
                if (i < n) vr[u] = *reinterpret_cast<const uint4*>(vcol + (int64_t)slots[i] * kvw);
            }
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const int i = i0 + u * tgroups;
                if (i < n) {
                    float vf[P];
                    unpack<T, P>(vr[u], vf);
#pragma unroll
                    for (int g = 0; g < H; ++g) {
                        if (g < gn) {
                            const float p = logits[g * part_size + i];
#pragma unroll
                            for (int k = 0; k < P; ++k) acc[g][k] += p * vf[k];
                        }
                    }
                }
            }
        }
    }

    // Sum the token groups, one head at a time, and store.
    const int64_t pbase = ((int64_t)b * heads + kvh * group + g0) * num_parts + part;
#pragma unroll
    for (int g = 0; g < H; ++g) {
        if (g < gn) {  // uniform over the block
            __syncthreads();
            if (tg < tgroups)
#pragma unroll
                for (int k = 0; k < P; ++k) red[tg * d + c * P + k] = acc[g][k];
            __syncthreads();
            const float sum = st_sum[g];
            const int64_t pi = pbase + (int64_t)g * num_parts;
            for (int t = tid; t < d; t += blockDim.x) {
                float s = 0.f;
                for (int k = 0; k < tgroups; ++k) s += red[k * d + t];
                if (direct)
                    orow[g * d + t] = from_f32<T>(s / sum);
                else
                    part_acc[pi * d + t] = s / sum;
            }
            if (!direct && tid == 0) {
                part_max[pi] = st_max[g];
                part_sum[pi] = sum;
            }
        }
    }
}

template <typename T>
__device__ void paged_decode_reduce(T* __restrict__ out, const uint32_t* __restrict__ rows,
                                    const uint32_t* __restrict__ ctx_lens,
                                    const float* __restrict__ part_max,
                                    const float* __restrict__ part_sum,
                                    const float* __restrict__ part_acc, int num_tokens,
                                    int heads, int d, int ctx_cap, int window, int part_size,
                                    int num_parts) {
    const int h = blockIdx.x, b = blockIdx.y;
    const int64_t row = rows[b];
    if (row >= num_tokens) return;
    const SeqRange r = seq_range(ctx_lens[b], ctx_cap, window, part_size);
    if (r.end_part - r.first_part <= 1) return;  // written directly by kernel 1
    const int64_t base = ((int64_t)b * heads + h) * num_parts;
    float m = -INFINITY;
    for (int p = r.first_part; p < r.end_part; ++p) m = fmaxf(m, part_max[base + p]);
    for (int t = threadIdx.x; t < d; t += blockDim.x) {
        float s = 0.f, a = 0.f;
        for (int p = r.first_part; p < r.end_part; ++p) {
            const float w = part_sum[base + p] * expf(part_max[base + p] - m);
            s += w;
            a += w * part_acc[(base + p) * d + t];
        }
        out[(row * heads + h) * d + t] = from_f32<T>(a / s);
    }
}

#define PD_PART(T, S, H)                                                                       \
    extern "C" __global__ void __launch_bounds__(PD_THREADS, (pd_min_blocks<T, H>()))          \
        paged_decode_h##H##_##S(                                                               \
        T* out, const T* q, const T* kc, const T* vc, const uint32_t* rows,                    \
        const uint32_t* tables, const uint32_t* ctx_lens, float* part_max, float* part_sum,    \
        float* part_acc, int num_tokens, int heads, int kv_heads, int d, int max_blocks,       \
        int block_size, int ctx_cap, int window, int part_size, int num_parts, int head_tile,  \
        int64_t q_stride, float scale) {                                                       \
        paged_decode_part<T, H>(out, q, kc, vc, rows, tables, ctx_lens, part_max, part_sum,    \
                                part_acc, num_tokens, heads, kv_heads, d, max_blocks,          \
                                block_size, ctx_cap, window, part_size, num_parts, head_tile,  \
                                q_stride, scale);                                              \
    }
#define PD_PART_ALL(T, S) PD_PART(T, S, 1) PD_PART(T, S, 2) PD_PART(T, S, 4) PD_PART(T, S, 8)
INSTANTIATE_FLOAT(PD_PART_ALL)

#define PD_REDUCE(T, S)                                                                         \
    extern "C" __global__ void paged_decode_reduce_##S(                                          \
        T* out, const uint32_t* rows, const uint32_t* ctx_lens, const float* part_max,           \
        const float* part_sum, const float* part_acc, int num_tokens, int heads, int d,          \
        int ctx_cap, int window, int part_size, int num_parts) {                                 \
        paged_decode_reduce<T>(out, rows, ctx_lens, part_max, part_sum, part_acc, num_tokens,    \
                               heads, d, ctx_cap, window, part_size, num_parts);                 \
    }
INSTANTIATE_FLOAT(PD_REDUCE)
