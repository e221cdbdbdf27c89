// copy: dst[i] = src[i] over 16-byte words; the device's copy-bandwidth ceiling that
// `engine kernels bench` reports every kernel against (candle's own copy kernel reaches
// well under the hardware's bandwidth on an H100, so it is not used as the ceiling).
//
// Shapes:  src, dst: n 16-byte words (uint4), 16-byte aligned.
// Launch:  grid = (4 * SMs, 1, 1)... any size, grid-stride; block = (256, 1, 1).
// Kernels: copy_u4(const uint4* src, uint4* dst, int64 n).
#include <stdint.h>

extern "C" __global__ void copy_u4(const uint4* __restrict__ src, uint4* __restrict__ dst,
                                   int64_t n) {
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dst[i] = src[i];
}
