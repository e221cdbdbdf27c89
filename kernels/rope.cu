// rope: rotary position embedding, in place, of the first `heads` heads of every row of
// x (the decoder rotates q and k together inside the fused qkv projection's output,
// rows [q heads | k heads | v heads]). Each pair (x1, x2) of a head is rotated by its
// token's angle:
//   x1' = x1 * cos - x2 * sin,   x2' = x2 * cos + x1 * sin
// computed in f32 from the stored (dtype) cos/sin values, rounded once on store.
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
#include "common.cuh"

namespace {

template <typename T, int W>
struct alignas(sizeof(T) * W) Pack {
    T v[W];
};

// Rotate unit u (V consecutive pairs of one head) of one token. cs: cos | sin as f32.
template <typename T, int V, bool NEOX>
__device__ __forceinline__ void rotate(T* __restrict__ xt, const float* cs, int units_per_head,
                                       int half, int d, int u) {
    const int h = u / units_per_head;
    const int i0 = (u - h * units_per_head) * V;  // first pair
    T* xh = xt + (int64_t)h * d;
    if constexpr (NEOX) {
        Pack<T, V> a = *reinterpret_cast<const Pack<T, V>*>(xh + i0);
        Pack<T, V> b = *reinterpret_cast<const Pack<T, V>*>(xh + half + i0);
#pragma unroll
        for (int k = 0; k < V; ++k) {
            const float c = cs[i0 + k], s = cs[half + i0 + k];
            const float x1 = to_f32(a.v[k]), x2 = to_f32(b.v[k]);
            a.v[k] = from_f32<T>(x1 * c - x2 * s);
            b.v[k] = from_f32<T>(x2 * c + x1 * s);
        }
        *reinterpret_cast<Pack<T, V>*>(xh + i0) = a;
        *reinterpret_cast<Pack<T, V>*>(xh + half + i0) = b;
    } else {
        Pack<T, 2 * V> a = *reinterpret_cast<const Pack<T, 2 * V>*>(xh + 2 * i0);
#pragma unroll
        for (int k = 0; k < V; ++k) {
            const float c = cs[i0 + k], s = cs[half + i0 + k];
            const float x1 = to_f32(a.v[2 * k]), x2 = to_f32(a.v[2 * k + 1]);
            a.v[2 * k] = from_f32<T>(x1 * c - x2 * s);
            a.v[2 * k + 1] = from_f32<T>(x2 * c + x1 * s);
        }
        *reinterpret_cast<Pack<T, 2 * V>*>(xh + 2 * i0) = a;
    }
}

template <typename T, int V, bool NEOX>
__device__ __forceinline__ void token(T* xt, const float* cs, int heads, int d) {
    const int half = d / 2;
    const int per_head = half / V;
    const int units = heads * per_head;
    for (int u = threadIdx.x; u < units; u += blockDim.x)
        rotate<T, V, NEOX>(xt, cs, per_head, half, d, u);
}

template <typename T>
__device__ void rope(T* __restrict__ x, const T* __restrict__ cos_sin,
                     const uint32_t* __restrict__ positions, int64_t tokens, int64_t width,
                     int heads, int d, int64_t max_pos, int neox, int vec) {
    extern __shared__ float cs[];  // d floats
    const int64_t t = blockIdx.x;
    if (t >= tokens) return;
    const uint32_t pos = positions[t];
    if ((int64_t)pos >= max_pos) return;  // uniform per block: skip, read nothing out of bounds
    const T* row = cos_sin + (int64_t)pos * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) cs[i] = to_f32(row[i]);
    __syncthreads();
    T* xt = x + t * width;
    constexpr int VN = 16 / sizeof(T);  // neox: V pairs = V x1s (16 bytes) + V x2s
    constexpr int VI = 8 / sizeof(T);   // interleaved: V pairs = 2V elements (16 bytes)
    const int half = d / 2;
    // The host decides `vec` (it sizes the block from it); re-checked here so that a wrong
    // flag can only cost speed, never a misaligned access.
    const bool aligned = (reinterpret_cast<uintptr_t>(xt) & 15) == 0;
    if (neox) {
        if (vec && aligned && half % VN == 0) token<T, VN, true>(xt, cs, heads, d);
        else token<T, 1, true>(xt, cs, heads, d);
    } else {
        if (vec && aligned && half % VI == 0) token<T, VI, false>(xt, cs, heads, d);
        else token<T, 1, false>(xt, cs, heads, d);
    }
}

}  // namespace

#define ROPE(T, S)                                                                             \
    extern "C" __global__ void __launch_bounds__(512)                                          \
        rope_##S(T* x, const T* cos_sin, const uint32_t* positions, int64_t tokens,             \
                 int64_t width, int heads, int d, int64_t max_pos, int neox, int vec) {          \
        rope<T>(x, cos_sin, positions, tokens, width, heads, d, max_pos, neox, vec);            \
    }
INSTANTIATE_FLOAT(ROPE)
