// sample: per row of logits, temperature -> top-k -> top-p -> min-p (vLLM's order), one
// draw, the chosen token's logprob and the top-n logprobs; every row of a batch in one
// launch, greedy and sampled rows alike. The CPU port is crates/kernels/src/sample_cpu.rs.
//
// Selection: radix select on 64-bit keys, no sort. A token's key is the monotone bits of
// its cleaned logit (NaN -> -inf, +inf -> FLT_MAX, -0 -> +0) above `id_max - id`, so keys
// are distinct, "more likely first" is "larger key", ties go to the lowest id, and every
// filter keeps the tokens whose key is >= one threshold. A select finds that threshold by
// count (top-k, top-n) or by mass (top-p, over the top-k set): level by level, a shared
// histogram of the next 11-bit digit (counts, and integer masses trunc(w * 2^40)) over the
// tokens matching the digits chosen so far picks the bin where the running total crosses
// the target. Early levels scan the row; once the chosen bin holds <= 2048 tokens their
// keys move to shared memory (one scan) and the remaining levels read only those. So a row
// costs a bounded number of scans (pass 1, typically two per select, one for the draw),
// whatever the temperature or the shape of the distribution. Why not FlashInfer's
// pivot/rejection sampling: its round count is random, its float pivots need extra care
// for ties, and its token depends on the rounding of float sums in each round; the radix
// select is exact (ties by lowest id, as the engine's host sampler), and with integer
// histograms its thresholds do not depend on the order of atomics, so the kernel, any
// rerun and the CPU port agree bit for bit.
//
// Draw: an exponential race, the kept token with the largest w / E (w = exp((x - max) /
// T), E ~ Exp(1)), ties to the lowest id: exactly a draw with probability w / sum(w), and
// order-free, so no prefix sum over the vocabulary. E comes from Philox4x32-10 keyed by
// the row's seed at counter (output position, id / 4, 0, 0), word id % 4; only kept tokens
// pay for it. The element math (weights, masses, E) uses explicit round-to-nearest
// operations (no contraction into FMA) and the constants' bits, the same as the port.
//
// Shapes:  logits [rows, vocab] (f32 / f16 / bf16, contiguous); params [rows, 8] u32:
//          temperature (f32 bits), top_k, top_p (f32 bits), min_p (f32 bits), seed lo,
//          seed hi, output position, flags (bits 0-15 n_logprobs, bit 16 processed
//          logprobs, bit 17 greedy); out [rows, 2 + 2 n_top] u32: token, its logprob (f32
//          bits), n_top ids, n_top logprobs (f32 bits); entries past n: (u32 max, -inf).
// Launch:  grid = (rows), block = (512), static shared memory about 41 KB.
// Kernels: sample_f32, sample_f16, sample_bf16
//          (const T* logits, const uint32_t* params, uint32_t* out, int32 vocab, int32 n_top).
#include "common.cuh"
#define SAMPLE_FN static __device__ __forceinline__
#include "sample_math.cuh"

namespace {

constexpr int THREADS = 512;
constexpr int WARPS = THREADS / 32;
constexpr int DIGIT = 11;
constexpr int NBINS = 1 << DIGIT;
constexpr int BINS_PER_THREAD = NBINS / THREADS;
constexpr int CAP = 2048;
constexpr int MAX_TOP = 64;
constexpr uint32_t FLAG_PROCESSED = 1u << 16;
constexpr uint32_t FLAG_GREEDY = 1u << 17;
typedef unsigned long long u64;

struct Keys {
    int id_bits;
    u64 id_max;
    __device__ explicit Keys(int vocab) {
        id_bits = max(1, 32 - __clz(vocab - 1));
        id_max = (1ull << id_bits) - 1;
    }
    __device__ int bits() const { return 32 + id_bits; }
    __device__ u64 key(float x, uint32_t id) const {
        return ((u64)key_ord(x) << id_bits) | (id_max - id);
    }
    __device__ float value(u64 k) const { return key_unord((uint32_t)(k >> id_bits)); }
    __device__ uint32_t id(u64 k) const { return (uint32_t)(id_max - (k & id_max)); }
};

// ---- the row ---------------------------------------------------------------------------

template <typename T>
struct Row {
    const T* x;
    int vocab, quads;
    bool vec;  // the row start allows one vector load per quad
    Keys keys;
    float max, t;  // set after pass 1
    __device__ Row(const T* x_, int vocab_)
        : x(x_), vocab(vocab_), quads((vocab_ + 3) / 4),
          vec((reinterpret_cast<uintptr_t>(x_) & (4 * sizeof(T) - 1)) == 0), keys(vocab_),
          max(0.f), t(1.f) {}
    // Raw logits 4q .. 4q + 3 into v; returns how many exist.
    __device__ int load_raw(int q, float v[4]) const {
        const int i = 4 * q, n = min(4, vocab - i);
        if (vec && n == 4) {
            if constexpr (sizeof(T) == 4) {
                const float4 f = *reinterpret_cast<const float4*>(x + i);
                v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
            } else {
                const uint2 u = *reinterpret_cast<const uint2*>(x + i);
                const T* h = reinterpret_cast<const T*>(&u);
#pragma unroll
                for (int k = 0; k < 4; ++k) v[k] = to_f32(h[k]);
            }
        } else {
            for (int k = 0; k < n; ++k) v[k] = to_f32(x[i + k]);
        }
        return n;
    }
    // Cleaned logits 4q .. 4q + 3 into v; returns how many exist.
    __device__ int load(int q, float v[4]) const {
        const int n = load_raw(q, v);
        for (int k = 0; k < n; ++k) v[k] = clean(v[k]);
        return n;
    }
    __device__ u64 mass_of(u64 key) const { return mass(weight(keys.value(key), max, t)); }
};

struct Shared {
    uint32_t cnt[NBINS];
    u64 mass[NBINS];
    u64 buf[CAP];
    u64 top[MAX_TOP];
    u64 warp_u64[WARPS];
    float warp_f[2][WARPS];
    uint32_t warp_u[WARPS];
    uint32_t warp_inf[WARPS];
    u64 sel_need;
    uint32_t sel_bin, sel_pop, n_buf, n_top;
};

// Exclusive prefix of v over the block in thread order; *total gets the sum.
__device__ u64 block_scan(u64 v, Shared& sm, u64* total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    u64 x = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const u64 y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
    }
    __syncthreads();
    if (lane == 31) sm.warp_u64[warp] = x;
    __syncthreads();
    u64 before = 0, sum = 0;
    for (int w = 0; w < WARPS; ++w) {
        const u64 s = sm.warp_u64[w];
        before += w < warp ? s : 0;
        sum += s;
    }
    *total = sum;
    return before + x - v;
}

// Threshold key of the count `need` (by_mass false) or of top_p's mass (by_mass true)
// over the tokens with key >= lo; sample_cpu.rs `select` has the same levels.
template <typename T>
__device__ u64 select(const Row<T>& row, bool by_mass, float top_p, u64 need, u64 lo,
                      Shared& sm) {
    const int tid = threadIdx.x, kb = row.keys.bits();
    u64 prefix = 0;
    int done = 0;
    bool in_buf = false;
    while (done < kb) {
        const int width = min(DIGIT, kb - done), shift = kb - done - width, hs = shift + width;
        const u64 dmask = (1ull << width) - 1;
        for (int b = tid; b < NBINS; b += THREADS) sm.cnt[b] = 0, sm.mass[b] = 0;
        __syncthreads();
        auto visit = [&](u64 key) {
            if (key < lo || (key >> hs) != (prefix >> hs)) return;
            const uint32_t d = (uint32_t)((key >> shift) & dmask);
            atomicAdd(&sm.cnt[d], 1u);
            if (by_mass) atomicAdd(&sm.mass[d], row.mass_of(key));
        };
        if (in_buf) {
            for (uint32_t j = tid; j < sm.n_buf; j += THREADS) visit(sm.buf[j]);
        } else {
            for (int q = tid; q < row.quads; q += THREADS) {
                float v[4];
                const int n = row.load(q, v);
                for (int k = 0; k < n; ++k) visit(row.keys.key(v[k], 4 * q + k));
            }
        }
        __syncthreads();
        // Thread tid owns bins NBINS-1-4tid downwards: a scan in thread order walks keys
        // from the largest.
        u64 local[BINS_PER_THREAD], lsum = 0;
#pragma unroll
        for (int j = 0; j < BINS_PER_THREAD; ++j) {
            const int b = NBINS - 1 - (tid * BINS_PER_THREAD + j);
            local[j] = by_mass ? sm.mass[b] : (u64)sm.cnt[b];
            lsum += local[j];
        }
        u64 total;
        const u64 before = block_scan(lsum, sm, &total);
        if (by_mass && done == 0) need = (u64)fmax(ceil(__dmul_rn((double)top_p, __ull2double_rn(total))), 1.0);
        if (total < need) return lo;  // block-uniform
        if (before < need && before + lsum >= need) {
            u64 acc = before;
            for (int j = 0; j < BINS_PER_THREAD; ++j) {
                if (acc + local[j] >= need) {
                    const int b = NBINS - 1 - (tid * BINS_PER_THREAD + j);
                    sm.sel_bin = b, sm.sel_need = need - acc, sm.sel_pop = sm.cnt[b];
                    break;
                }
                acc += local[j];
            }
        }
        __syncthreads();
        need = sm.sel_need;
        prefix |= (u64)sm.sel_bin << shift;
        done += width;
        if (!in_buf && sm.sel_pop <= CAP && done < kb) {
            __syncthreads();  // everyone has read sel_*
            if (tid == 0) sm.n_buf = 0;
            __syncthreads();
            for (int q = tid; q < row.quads; q += THREADS) {
                float v[4];
                const int n = row.load(q, v);
                for (int k = 0; k < n; ++k) {
                    const u64 key = row.keys.key(v[k], 4 * q + k);
                    if (key >= lo && (key >> shift) == (prefix >> shift))
                        sm.buf[atomicAdd(&sm.n_buf, 1u)] = key;
                }
            }
            in_buf = true;
        }
        __syncthreads();
    }
    return prefix;
}

// inf_id: the lowest id whose raw logit is +inf (0xffffffff if none). Cleaning maps +inf
// to FLT_MAX, so the argmax of cleaned logits alone would tie a +inf with a real FLT_MAX;
// the engine's argmax rule (crates/kernels/src/argmax.rs) ranks +inf above it.
struct Stats {
    float max, sum;
    uint32_t argmax, inf_id;
};

__device__ __forceinline__ Stats merge(Stats a, Stats b) {
    const float m = fmaxf(a.max, b.max);
    const uint32_t am = (a.max == m && b.max == m) ? min(a.argmax, b.argmax)
                        : (a.max == m)             ? a.argmax
                                                   : b.argmax;
    const float s = __fadd_rn(__fmul_rn(a.sum, exp_nonpos(__fsub_rn(a.max, m))),
                              __fmul_rn(b.sum, exp_nonpos(__fsub_rn(b.max, m))));
    return {m, s, am, min(a.inf_id, b.inf_id)};
}

// Pass 1: max, lowest argmax, sum exp(x - max) over the row; every thread gets them. The
// returned argmax is the engine's greedy token: the lowest +inf if any, else the lowest
// id of the cleaned maximum.
template <typename T>
__device__ Stats pass1(const Row<T>& row, Shared& sm) {
    Stats s = {-INFINITY, 0.f, 0xffffffffu, 0xffffffffu};
    for (int q = threadIdx.x; q < row.quads; q += THREADS) {
        float v[4];
        const int n = row.load_raw(q, v);
        for (int k = 0; k < n; ++k) {
            if (v[k] == INFINITY && s.inf_id == 0xffffffffu) s.inf_id = 4 * q + k;
            const float x = clean(v[k]);
            if (x > s.max) {
                s.sum = __fadd_rn(__fmul_rn(s.sum, exp_nonpos(__fsub_rn(s.max, x))), 1.f);
                s.max = x, s.argmax = 4 * q + k;
            } else {
                s.sum = __fadd_rn(s.sum, exp_nonpos(__fsub_rn(x, s.max)));
            }
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const Stats b = {__shfl_xor_sync(0xffffffffu, s.max, o), __shfl_xor_sync(0xffffffffu, s.sum, o),
                         __shfl_xor_sync(0xffffffffu, s.argmax, o),
                         __shfl_xor_sync(0xffffffffu, s.inf_id, o)};
        s = merge(s, b);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) {
        sm.warp_f[0][warp] = s.max, sm.warp_f[1][warp] = s.sum;
        sm.warp_u[warp] = s.argmax, sm.warp_inf[warp] = s.inf_id;
    }
    __syncthreads();
    Stats r = {sm.warp_f[0][0], sm.warp_f[1][0], sm.warp_u[0], sm.warp_inf[0]};
    for (int w = 1; w < WARPS; ++w)
        r = merge(r, {sm.warp_f[0][w], sm.warp_f[1][w], sm.warp_u[w], sm.warp_inf[w]});
    if (r.inf_id != 0xffffffffu) r.argmax = r.inf_id;
    return r;
}

// The kept set: key >= thr, weight > 0 and >= min_w; returns the weight or 0.
template <typename T>
__device__ __forceinline__ float kept_weight(const Row<T>& row, u64 thr, float min_w, float x,
                                             uint32_t id) {
    if (row.keys.key(x, id) < thr) return 0.f;
    const float w = weight(x, row.max, row.t);
    return (w > 0.f && w >= min_w) ? w : 0.f;
}

// The draw (exponential race, when draw) and the kept weight's sum; every thread gets
// both. Returns 0xffffffff when nothing is kept.
template <typename T>
__device__ uint32_t draw_pass(const Row<T>& row, u64 thr, float min_w, bool draw, uint32_t position,
                              uint32_t seed_lo, uint32_t seed_hi, float* kept_sum, Shared& sm) {
    float best = -1.f, sum = 0.f;
    uint32_t best_id = 0xffffffffu;
    for (int q = threadIdx.x; q < row.quads; q += THREADS) {
        float v[4];
        const int n = row.load(q, v);
        uint4 words = make_uint4(0, 0, 0, 0);
        bool have = false;
        for (int k = 0; k < n; ++k) {
            const uint32_t id = 4 * q + k;
            const float w = kept_weight(row, thr, min_w, v[k], id);
            if (w == 0.f) continue;
            sum = __fadd_rn(sum, w);
            if (!draw) continue;
            if (!have) words = philox4x32_10(position, q, 0, 0, seed_lo, seed_hi), have = true;
            const uint32_t b = k == 0 ? words.x : k == 1 ? words.y : k == 2 ? words.z : words.w;
            const float r = __fdiv_rn(w, exponential(b));
            if (r > best || (r == best && id < best_id)) best = r, best_id = id;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float r = __shfl_xor_sync(0xffffffffu, best, o);
        const uint32_t i = __shfl_xor_sync(0xffffffffu, best_id, o);
        if (r > best || (r == best && i < best_id)) best = r, best_id = i;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) sm.warp_f[0][warp] = best, sm.warp_u[warp] = best_id;
    __syncthreads();
    best = sm.warp_f[0][0], best_id = sm.warp_u[0];
    for (int w = 1; w < WARPS; ++w) {
        const float r = sm.warp_f[0][w];
        const uint32_t i = sm.warp_u[w];
        if (r > best || (r == best && i < best_id)) best = r, best_id = i;
    }
    *kept_sum = block_sum(sum, sm.warp_f[1]);
    return best_id;
}

template <typename T>
__device__ void sample_row(const T* logits, const uint32_t* params, uint32_t* out, int vocab,
                           int n_top) {
    __shared__ Shared sm;
    const int tid = threadIdx.x;
    const uint32_t* pw = params + (size_t)blockIdx.x * 8;
    const float temperature = __uint_as_float(pw[0]), top_p = __uint_as_float(pw[2]);
    const float min_p = __uint_as_float(pw[3]);
    const uint32_t top_k = pw[1], flags = pw[7];
    const bool greedy = (flags & FLAG_GREEDY) || !(temperature > 0.f);
    const bool processed = flags & FLAG_PROCESSED;
    const int n = min(min((int)(flags & 0xffffu), n_top), vocab);
    uint32_t* o = out + (size_t)blockIdx.x * (2 + 2 * n_top);
    Row<T> row(logits + (size_t)blockIdx.x * vocab, vocab);

    for (int j = n + tid; j < n_top; j += THREADS)
        o[2 + j] = 0xffffffffu, o[2 + n_top + j] = __float_as_uint(-INFINITY);
    const Stats st = pass1(row, sm);
    if (st.max == -INFINITY) {  // every logit -inf or NaN
        if (tid == 0) o[0] = 0, o[1] = __float_as_uint(-INFINITY);
        for (int j = tid; j < n; j += THREADS) o[2 + j] = j, o[2 + n_top + j] = __float_as_uint(-INFINITY);
        return;
    }
    row.max = st.max;
    row.t = greedy ? 1.f : temperature;
    u64 thr = 0;
    float min_w = 0.f, kept_sum = 1.f;
    uint32_t drawn = 0xffffffffu;
    if (!greedy || processed) {
        if (top_k > 0 && top_k < (uint32_t)vocab) thr = select(row, false, 0.f, top_k, 0, sm);
        if (top_p < 1.f) thr = select(row, true, top_p, 0, thr, sm);
        min_w = fmaxf(min_p, 0.f);
        drawn = draw_pass(row, thr, min_w, !greedy, pw[6], pw[4], pw[5], &kept_sum, sm);
    }
    const uint32_t token = (greedy || drawn == 0xffffffffu) ? st.argmax : drawn;
    const float lse = logf(st.sum), ln_kept = logf(kept_sum);
    auto logprob = [&](uint32_t id) {
        const float x = clean(to_f32(row.x[id]));
        if (!processed) return __fsub_rn(__fsub_rn(x, row.max), lse);
        if (kept_weight(row, thr, min_w, x, id) == 0.f) return -INFINITY;
        return __fsub_rn(__fdiv_rn(__fsub_rn(x, row.max), row.t), ln_kept);
    };
    if (tid == 0) o[0] = token, o[1] = __float_as_uint(logprob(token));
    if (n == 0) return;
    const u64 thr_n = select(row, false, 0.f, (u64)n, 0, sm);
    if (tid == 0) sm.n_top = 0;
    __syncthreads();
    for (int q = tid; q < row.quads; q += THREADS) {
        float v[4];
        const int c = row.load(q, v);
        for (int k = 0; k < c; ++k) {
            const u64 key = row.keys.key(v[k], 4 * q + k);
            if (key >= thr_n) {
                const uint32_t j = atomicAdd(&sm.n_top, 1u);
                if (j < MAX_TOP) sm.top[j] = key;
            }
        }
    }
    __syncthreads();
    for (int j = tid; j < n; j += THREADS) {
        const u64 key = sm.top[j];
        int rank = 0;
        for (int i = 0; i < n; ++i) rank += sm.top[i] > key;
        const uint32_t id = row.keys.id(key);
        o[2 + rank] = id, o[2 + n_top + rank] = __float_as_uint(logprob(id));
    }
}

}  // namespace

#define SAMPLE(T, S)                                                                      \
    extern "C" __global__ void __launch_bounds__(THREADS)                                 \
        sample_##S(const T* logits, const uint32_t* params, uint32_t* out, int vocab, int n_top) { \
        sample_row<T>(logits, params, out, vocab, n_top);                                 \
    }
INSTANTIATE_FLOAT(SAMPLE)
