// rope: rotary position embedding, in place, of the first `heads` heads of every row of
// x (the decoder rotates q and k together inside the fused qkv projection's output,
// rows [q heads | k heads | v heads]). Each pair (x1, x2) of a head is rotated by its
// token's angle:
//   x1' = x1 * cos - x2 * sin,   x2' = x2 * cos + x1 * sin
// computed in f32 from the stored (dtype) cos/sin values (round-to-nearest products and
// sums, no FMA: rope_common.cuh), rounded once on store.
//   neox = 1: half-split (Hugging Face / GPT-NeoX): pair i is (x[i], x[i + d/2]);
//   neox = 0: interleaved (GPT-J / original Meta):  pair i is (x[2i], x[2i + 1]);
// pair i uses cos_sin[pos, i] and cos_sin[pos, d/2 + i], i in 0..d/2.
//
// Shapes: x: [tokens, width] contiguous (width >= heads * d), heads 0..heads of each row
//         modified in place, the rest untouched; d even;
//         cos_sin: [max_pos, d] contiguous (cos in columns 0..d/2, sin in d/2..d);
//         positions: [tokens] u32. A token whose position is >= max_pos is SKIPPED (left
//         as it is, nothing out of bounds is read); the CPU port reports it as an error.
// Launch: grid = (tokens, 1, 1): one block per token;
//         block = (threads, 1, 1), threads = clamp(round_up(units, 32), 32, 512), units =
//         heads * (d/2) / V (one unit of V consecutive pairs per thread, grid-stride over
//         the token's heads);
//         shared = d * 4 bytes: the token's cos/sin row as f32, loaded once per block.
//         V (pairs per unit): with `vec` (the row 16-byte aligned and (d/2) % V == 0) neox takes
//         V = 16 / sizeof(T) (one 16-byte load of x1s and one of x2s), interleaved V = 8 /
//         sizeof(T) (one 16-byte load of V pairs); else V = 1 (scalar).
// Kernels: rope_f32, rope_f16, rope_bf16
//          (T* x, const T* cos_sin, const uint32 positions*, int64 tokens, int64 width,
//           int heads, int d, int64 max_pos, int neox, int vec).
#include "rope_common.cuh"

namespace {

template <typename T>
__device__ void rope(T* __restrict__ x, const T* __restrict__ cos_sin,
                     const uint32_t* __restrict__ positions, int64_t tokens, int64_t width,
                     int heads, int d, int64_t max_pos, int neox, int vec) {
    extern __shared__ float cs[];  // d floats
    const int64_t t = blockIdx.x;
    if (t >= tokens) return;
    const uint32_t pos = positions[t];
    if ((int64_t)pos >= max_pos) return;  // uniform per block: skip, read nothing out of bounds
    load_cos_sin(cs, cos_sin + (int64_t)pos * d, d);
    rope_token(x + t * width, (T*)nullptr, heads, cs, heads, d, neox, vec);
}

}  // namespace

#define ROPE(T, S)                                                                             \
    extern "C" __global__ void __launch_bounds__(512)                                          \
        rope_##S(T* x, const T* cos_sin, const uint32_t* positions, int64_t tokens,             \
                 int64_t width, int heads, int d, int64_t max_pos, int neox, int vec) {          \
        rope<T>(x, cos_sin, positions, tokens, width, heads, d, max_pos, neox, vec);            \
    }
INSTANTIATE_FLOAT(ROPE)
