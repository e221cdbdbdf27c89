// argmax: ids[r] = the greedy token of logits row r, by the engine's one rule:
// NaN is never chosen (it counts as -inf), among equal maxima the lowest id wins, and a
// row with nothing above -inf (all -inf / NaN) gives id 0. The host sampler and the CPU
// port (crates/kernels/src/argmax.rs, `argmax_row`) follow the same rule, so a greedy
// token does not depend on which path took it.
//
// Shapes: logits [rows, vocab] f32, contiguous; ids [rows] u32.
// Launch:  grid = (rows, 1, 1), block = (256, 1, 1). Each thread scans a strided slice
//          of the row keeping (best, id) with strict > (so its lowest id wins ties),
//          then a warp butterfly and a block reduction over (value, id) pairs, larger
//          value first, lower id on ties.
// Kernels: argmax_f32 (const float* logits, uint32* ids, int64 vocab).
#include "common.cuh"

// (a, ia) better than (b, ib) under the rule (values already NaN-free).
__device__ __forceinline__ bool better(float a, uint32_t ia, float b, uint32_t ib) {
    return a > b || (a == b && ia < ib);
}

extern "C" __global__ void argmax_f32(const float* __restrict__ logits, uint32_t* __restrict__ ids,
                                      int64_t vocab) {
    const float* row = logits + (int64_t)blockIdx.x * vocab;
    float best = -INFINITY;
    uint32_t id = 0xFFFFFFFFu;
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
        float v = row[i];
        if (isnan(v)) v = -INFINITY;
        if (id == 0xFFFFFFFFu || v > best) {
            best = v;
            id = (uint32_t)i;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ob = __shfl_xor_sync(0xffffffffu, best, o);
        const uint32_t oi = __shfl_xor_sync(0xffffffffu, id, o);
        if (better(ob, oi, best, id)) {
            best = ob;
            id = oi;
        }
    }
    __shared__ float s_best[32];
    __shared__ uint32_t s_id[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int warps = (blockDim.x + 31) >> 5;
    if (lane == 0) {
        s_best[warp] = best;
        s_id[warp] = id;
    }
    __syncthreads();
    if (warp == 0) {
        best = lane < warps ? s_best[lane] : -INFINITY;
        id = lane < warps ? s_id[lane] : 0xFFFFFFFFu;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ob = __shfl_xor_sync(0xffffffffu, best, o);
            const uint32_t oi = __shfl_xor_sync(0xffffffffu, id, o);
            if (better(ob, oi, best, id)) {
                best = ob;
                id = oi;
            }
        }
        // A row of only -inf keeps every thread's first id; the lowest is 0.
        if (lane == 0) ids[blockIdx.x] = id == 0xFFFFFFFFu ? 0u : id;
    }
}
