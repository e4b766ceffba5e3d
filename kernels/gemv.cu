// Decode-shaped GEMMs with bf16 weights: out[rows, n] = x[rows, k] . w[n, k]^T for at most
// SKINNY_ROWS rows, reading the f32 activations as they are (no f32 -> bf16 cast launch before
// the GEMM, as cuBLAS needs) and the bf16 weights with 128-bit loads, accumulating in f32. At
// decode a GEMM streams its weights once; x (at most SKINNY_ROWS x k f32) stays in L1/L2. CPU
// twin: src/backend/cpu (linear over the same bf16 weights widened exactly to f32); the sums run
// in another order, so results agree to f32 rounding, not bit for bit.
//
// Launch geometry: grid = (ceil(n / SKINNY_WARPS)), block = (SKINNY_WARPS * 32). Warp w of block
// b computes column j = b * SKINNY_WARPS + w for every row: lane l takes the 8-element groups
// l, l + 32, ... of the weight row (one uint4 each), multiplies them into one accumulator per
// row, and the lanes' sums are added by a butterfly. k must be a multiple of 8 and w 16-byte
// aligned (the host checks; other shapes take the cast + cuBLAS path).
#include "common.cuh"

static_assert(SKINNY_ROWS <= 32, "one accumulator per row and lane");

extern "C" __global__ void gemm_skinny_bf16(const float* x, const unsigned short* w, float* out, int rows, int k, int n) {
    const int warp = threadIdx.x / WARP;
    const int lane = threadIdx.x % WARP;
    const int j = blockIdx.x * SKINNY_WARPS + warp;
    if (j >= n) {
        return;  // uniform across the warp
    }
    float acc[SKINNY_ROWS];
#pragma unroll
    for (int r = 0; r < SKINNY_ROWS; ++r) {
        acc[r] = 0.0f;
    }
    const uint4* w_row = reinterpret_cast<const uint4*>(w + (size_t)j * k);
    for (int g = lane; g < k / 8; g += WARP) {
        const uint4 packed = w_row[g];
        const unsigned int words[4] = {packed.x, packed.y, packed.z, packed.w};
        float weights[8];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            weights[2 * i] = __uint_as_float(words[i] << 16);
            weights[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
        }
#pragma unroll
        for (int r = 0; r < SKINNY_ROWS; ++r) {
            if (r < rows) {
                const float* xr = x + (size_t)r * k + (size_t)g * 8;
#pragma unroll
                for (int i = 0; i < 8; ++i) {
                    acc[r] += weights[i] * xr[i];
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < SKINNY_ROWS; ++r) {
        if (r < rows) {
            const float sum = warp_sum(acc[r]);
            if (lane == 0) {
                out[(size_t)r * n + j] = sum;
            }
        }
    }
}
