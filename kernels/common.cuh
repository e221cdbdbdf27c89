// Shared device helpers for the kernels in this directory.
//
// - load/store between the storage types (float, __half, __nv_bfloat16) and float:
//   every kernel computes in f32 and rounds once when it stores;
// - warp and block reductions (sum, max) for blocks of up to 1024 threads;
// - copy_row: one row copied by the block's threads, 16-byte vectors when aligned;
// - paged_slot / slot_writes / first_visible: the paged cache's slot formula, padding
//   rule and visibility rule;
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

// The paged cache's rules, as crates/kernels/src/paged.rs writes them for the host: the
// slot of position `pos` through a sequence's block table, which slots a row writes, and
// the first key a query at `pos` sees (window 0: none; else Hugging Face's p - j < window).
__device__ __forceinline__ int64_t paged_slot(const uint32_t* table, int block_size, int pos) {
    return (int64_t)table[pos / block_size] * block_size + pos % block_size;
}

// A row writes the cache at its slot when slot < num_slots; any other slot writes nowhere
// (u32::MAX marks padding rows: SKIP_SLOT in crates/kernels/src/paged.rs; another
// out-of-range slot is an input error the host reports and the kernels skip).
__device__ __forceinline__ bool slot_writes(uint32_t slot, int64_t num_slots) {
    return (int64_t)slot < num_slots;
}

__device__ __forceinline__ int first_visible(int pos, int window) {
    return window > 0 ? max(0, pos + 1 - window) : 0;
}

// Copy `width` elements from s to d with the threads of the block (block-stride): 16-byte
// vectors when `vec`, width % (16 / sizeof(T)) == 0 and both rows 16-byte aligned (the
// host sets `vec`, sizing the block from it; re-checked here, so a wrong flag only costs
// speed), else single elements.
template <typename T>
__device__ __forceinline__ void copy_row(T* __restrict__ d, const T* __restrict__ s,
                                         int64_t width, int vec) {
    constexpr int P = 16 / sizeof(T);
    const uintptr_t addr = reinterpret_cast<uintptr_t>(d) | reinterpret_cast<uintptr_t>(s);
    if (vec && width % P == 0 && (addr & 15) == 0) {
        const int64_t n = width / P;
        const uint4* sv = reinterpret_cast<const uint4*>(s);
        uint4* dv = reinterpret_cast<uint4*>(d);
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) dv[i] = sv[i];
    } else {
        for (int64_t i = threadIdx.x; i < width; i += blockDim.x) d[i] = s[i];
    }
}

#define INSTANTIATE_FLOAT(M) M(float, f32) M(__half, f16) M(__nv_bfloat16, bf16)
