// reshape_and_cache: scatter new tokens' K (or V) rows into the paged cache by slot
// (slot = block_id * block_size + offset_in_block), a plain copy:
//   cache[slots[t], :] = src[t, :]   for every token t with slots[t] < num_slots
// A slot >= num_slots is skipped: u32::MAX marks padding tokens; any other out-of-range
// slot is an input error that the CPU port reports, and the kernel skips rather than
// write out of bounds. Two tokens with the same slot race (undefined which one wins).
//
// Shapes: cache: [num_slots, width] contiguous, written in place (width = kv_heads *
//         head_dim); src: rows of src_stride elements, `width` of them copied from each
//         (the host offsets src to the first column: K or V inside the fused qkv rows);
//         slots: [tokens] u32.
// Launch: grid = (tokens, 1, 1): one block per token;
//         block = (threads, 1, 1), threads = clamp(round_up(units, 32), 32, 512), units =
//         width / P with P = 16 / sizeof(T) when `vec` (width % P == 0 and the token's
//         cache and src rows 16-byte aligned: 16-byte vector copies), else units = width
//         (scalar copies);
//         block-stride over the row's units. No shared memory.
// Kernels: reshape_and_cache_f32, reshape_and_cache_f16, reshape_and_cache_bf16
//          (T* cache, const T* src, const uint32 slots*, int64 tokens, int64 width,
//           int64 src_stride, int64 num_slots, int vec).
#include "common.cuh"

template <typename T>
__device__ void reshape_and_cache(T* __restrict__ cache, const T* __restrict__ src,
                                  const uint32_t* __restrict__ slots, int64_t tokens,
                                  int64_t width, int64_t src_stride, int64_t num_slots,
                                  int vec) {
    const int64_t t = blockIdx.x;
    if (t >= tokens) return;
    const uint32_t slot = slots[t];
    if (!slot_writes(slot, num_slots)) return;  // padding (u32::MAX) or out of range
    copy_row(cache + (int64_t)slot * width, src + t * src_stride, width, vec);
}

#define RESHAPE_AND_CACHE(T, S)                                                           \
    extern "C" __global__ void __launch_bounds__(512)                                     \
        reshape_and_cache_##S(T* cache, const T* src, const uint32_t* slots, int64_t tokens, \
                              int64_t width, int64_t src_stride, int64_t num_slots,       \
                              int vec) {                                                  \
        reshape_and_cache<T>(cache, src, slots, tokens, width, src_stride, num_slots, vec); \
    }
INSTANTIATE_FLOAT(RESHAPE_AND_CACHE)
