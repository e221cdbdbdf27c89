// rope_and_cache: the decoder's rope of q and k and its K/V cache writes in one launch
// (it was rope + reshape_and_cache twice). Per token t, in the fused qkv projection's row
//   qkv[t] = [q: heads * d | k: kv_heads * d | v: kv_heads * d]   (row stride `width`):
// - q and k heads rotated in place by the angle of positions[t], as rope.cu does (same
//   units, same arithmetic: rope_common.cuh); a position >= max_pos is not rotated (rope.cu
//   skips it too; the CPU port reports it as an error);
// - when slots[t] writes (slot_writes, common.cuh: u32::MAX marks padding), the k heads
//   as rotated (stored from the registers that rotated them) go to k_cache[slot] and the
//   v heads to v_cache[slot]; otherwise no cache element is written.
// The result equals rope then reshape_and_cache of k and of v, bit for bit.
//
// Shapes: qkv: [tokens, width] contiguous, width >= (heads + 2 kv_heads) * d, d even;
//         k_cache, v_cache: [num_slots, kv_heads * d] contiguous;
//         cos_sin: [max_pos, d] contiguous (cos in columns 0..d/2, sin in d/2..d);
//         positions, slots: [tokens] u32.
// Launch: grid = (tokens, 1, 1): one block per token;
//         block = (threads, 1, 1), threads = clamp(round_up(max(rope units, v units), 32),
//         32, 512): rope units = (heads + kv_heads) * (d/2) / V (V as in rope.cu), v units =
//         kv_heads * d / (16 / sizeof(T)) (16-byte copies) or kv_heads * d (scalar);
//         block-stride over each;
//         shared = d * 4 bytes: the token's cos/sin row as f32.
//         `vec` (host: qkv, both caches and their rows 16-byte aligned) allows 16-byte units
//         (re-checked per row here).
// Kernels: rope_and_cache_f32, rope_and_cache_f16, rope_and_cache_bf16
//          (T* qkv, T* k_cache, T* v_cache, const T* cos_sin, const uint32 positions*,
//           const uint32 slots*, int64 tokens, int64 width, int heads, int kv_heads, int d,
//           int64 max_pos, int64 num_slots, int neox, int vec).
#include "rope_common.cuh"

namespace {

template <typename T>
__device__ void rope_and_cache(T* __restrict__ qkv, T* __restrict__ k_cache,
                               T* __restrict__ v_cache, const T* __restrict__ cos_sin,
                               const uint32_t* __restrict__ positions,
                               const uint32_t* __restrict__ slots, int64_t tokens,
                               int64_t width, int heads, int kv_heads, int d, int64_t max_pos,
                               int64_t num_slots, int neox, int vec) {
    extern __shared__ float cs[];  // d floats
    const int64_t t = blockIdx.x;
    if (t >= tokens) return;
    const uint32_t pos = positions[t], slot = slots[t];
    const int64_t kv_width = (int64_t)kv_heads * d;
    const bool writes = slot_writes(slot, num_slots);  // uniform per block
    T* xt = qkv + t * width;
    T* kc = writes ? k_cache + (int64_t)slot * kv_width : nullptr;
    if ((int64_t)pos < max_pos) {  // uniform per block
        load_cos_sin(cs, cos_sin + (int64_t)pos * d, d);
        rope_token(xt, kc, heads, cs, heads + kv_heads, d, neox, vec);
    } else if (writes) {
        copy_row(kc, xt + (int64_t)heads * d, kv_width, vec);  // k as it is
    }
    if (writes)
        copy_row(v_cache + (int64_t)slot * kv_width, xt + (int64_t)(heads + kv_heads) * d,
                 kv_width, vec);
}

}  // namespace

#define ROPE_AND_CACHE(T, S)                                                                   \
    extern "C" __global__ void __launch_bounds__(512) rope_and_cache_##S(                      \
        T* qkv, T* k_cache, T* v_cache, const T* cos_sin, const uint32_t* positions,           \
        const uint32_t* slots, int64_t tokens, int64_t width, int heads, int kv_heads, int d,  \
        int64_t max_pos, int64_t num_slots, int neox, int vec) {                               \
        rope_and_cache<T>(qkv, k_cache, v_cache, cos_sin, positions, slots, tokens, width,     \
                          heads, kv_heads, d, max_pos, num_slots, neox, vec);                  \
    }
INSTANTIATE_FLOAT(ROPE_AND_CACHE)
