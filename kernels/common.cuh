// Shared device helpers for the kernels in this directory.
//
// - load/store between the storage types (float, __half, __nv_bfloat16) and float:
//   every kernel computes in f32 and rounds once when it stores;
// - warp and block reductions (sum, max) for blocks of up to 1024 threads;
// - paged_slot / first_visible: the paged cache's slot formula and visibility rule;
// - INSTANTIATE_FLOAT(macro): stamp out one extern "C" kernel per dtype, named
//   NAME_f32, NAME_f16, NAME_bf16 (the suffix the Rust wrappers ask for).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum of `v` over the block; every thread gets the result. `scratch` holds 32 floats.
// Every thread of the block must call it (it synchronizes).
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int warps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.f;
    return warp_sum(v);
}

// Max of `v` over the block; every thread gets the result. Same contract as block_sum.
__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int warps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -INFINITY;
    return warp_max(v);
}

// The paged cache's two rules, as crates/kernels/src/paged.rs writes them for the host:
// the slot of position `pos` through a sequence's block table, and the first key a
// query at `pos` sees (window 0: none; else Hugging Face's p - j < window).
__device__ __forceinline__ int64_t paged_slot(const uint32_t* table, int block_size, int pos) {
    return (int64_t)table[pos / block_size] * block_size + pos % block_size;
}

__device__ __forceinline__ int first_visible(int pos, int window) {
    return window > 0 ? max(0, pos + 1 - window) : 0;
}

#define INSTANTIATE_FLOAT(M) M(float, f32) M(__half, f16) M(__nv_bfloat16, bf16)
