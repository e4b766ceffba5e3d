// 2-D RoPE, in place, on interleaved pairs (x[2k], x[2k+1]) of the first `n_rot_heads` heads of
// each row. CPU twin: src/backend/cpu/kernels.rs `rope`.
//
// The table holds, per position, head_dim / 2 (cos, sin) pairs (built on the host by
// src/model/rope.rs, class-token row all zero), so the kernel needs no trigonometry.
//
// Launch geometry: grid = (rows), block = (128). Threads stride over the n_rot_heads * head_dim/2
// pairs of the row.
#include "common.cuh"

extern "C" __global__ void rope(float* x, int row_stride, int n_rot_heads, int head_dim, const float* table,
                                const unsigned int* positions) {
    const int half = head_dim / 2;
    float* row = x + (size_t)blockIdx.x * row_stride;
    const float* cos_sin = table + (size_t)positions[blockIdx.x] * half * 2;
    for (int p = threadIdx.x; p < n_rot_heads * half; p += blockDim.x) {
        const int head = p / half;
        const int k = p % half;
        float* pair = row + head * head_dim + 2 * k;
        const float c = cos_sin[2 * k];
        const float s = cos_sin[2 * k + 1];
        const float x0 = pair[0];
        const float x1 = pair[1];
        pair[0] = x0 * c - x1 * s;
        pair[1] = x1 * c + x0 * s;
    }
}
