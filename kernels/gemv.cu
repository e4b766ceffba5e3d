// Decode-shaped GEMMs with bf16 weights: out[rows, n] = x[rows, k] . w[n, k]^T for at most
// SKINNY_ROWS rows, reading the f32 activations as they are (no f32 -> bf16 cast launch before
// the GEMM, as cuBLAS needs) and the bf16 weights with 128-bit loads, accumulating in f32. At
// decode a GEMM streams its weights once; x (at most SKINNY_ROWS x k f32) stays in L1/L2. Three
// epilogues, each saving a launch and a pass over the output:
//   gemm_skinny_bf16         out  = x . w^T
//   gemm_skinny_add_bf16     out += x . w^T                      (a projection into the residual)
//   gemm_skinny_swiglu_bf16  out  = silu(x . gate^T) * (x . up^T)  (the SwiGLU feed-forward's first half)
// CPU twins: src/backend/cpu (`linear` over the same bf16 weights widened exactly to f32, then
// `add_assign` / `swiglu`); the sums run in another order, so results agree to f32 rounding, not
// bit for bit.
//
// Launch geometry: grid = (ceil(n / SKINNY_WARPS)), block = (SKINNY_WARPS * 32). Warp w of block
// b computes column j = b * SKINNY_WARPS + w for every row: lane l takes the 8-element groups
// l, l + 32, ... of the weight row (one uint4 each), multiplies them into one accumulator per
// row, and the lanes' sums are added by a butterfly. k must be a multiple of 8 and the weights
// 16-byte aligned (the host checks; other shapes take the cast + cuBLAS path).
#include "common.cuh"

static_assert(SKINNY_ROWS <= 32, "one accumulator per row and lane");

// sums[m][r] = x[r, :] . w_rows[m] for r < rows and each of the W weight rows, in every lane
// of the warp. The W rows are streamed in the same loop, so a lane has W 128-bit loads in flight
// and reads x once.
template <int W>
__device__ __forceinline__ void skinny_dots(const float* x, const unsigned short* const (&w_rows)[W], int rows, int k, int lane,
                                            float (&sums)[W][SKINNY_ROWS]) {
#pragma unroll
    for (int m = 0; m < W; ++m) {
#pragma unroll
        for (int r = 0; r < SKINNY_ROWS; ++r) {
            sums[m][r] = 0.0f;
        }
    }
    for (int g = lane; g < k / 8; g += WARP) {
        float weights[W][8];
#pragma unroll
        for (int m = 0; m < W; ++m) {
            const uint4 packed = reinterpret_cast<const uint4*>(w_rows[m])[g];
            const unsigned int words[4] = {packed.x, packed.y, packed.z, packed.w};
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                weights[m][2 * i] = __uint_as_float(words[i] << 16);
                weights[m][2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
            }
        }
#pragma unroll
        for (int r = 0; r < SKINNY_ROWS; ++r) {
            if (r < rows) {
                const float* xr = x + (size_t)r * k + (size_t)g * 8;
#pragma unroll
                for (int i = 0; i < 8; ++i) {
                    const float xi = xr[i];
#pragma unroll
                    for (int m = 0; m < W; ++m) {
                        sums[m][r] += weights[m][i] * xi;
                    }
                }
            }
        }
    }
#pragma unroll
    for (int m = 0; m < W; ++m) {
#pragma unroll
        for (int r = 0; r < SKINNY_ROWS; ++r) {
            if (r < rows) {
                sums[m][r] = warp_sum(sums[m][r]);
            }
        }
    }
}

// The skinny GEMM of this warp's output column j over the W weights `weights` ([n, k] each):
// then, on lane 0, `store(r * n + j, dots)` for every row r, dots[m] = x[r, :] . weights[m][j, :].
template <int W, typename Store>
__device__ __forceinline__ void skinny_gemm(const float* x, const unsigned short* const (&weights)[W], int rows, int k, int n, Store store) {
    const int j = blockIdx.x * SKINNY_WARPS + threadIdx.x / WARP;
    if (j >= n) {
        return;  // uniform across the warp
    }
    const int lane = threadIdx.x % WARP;
    const unsigned short* w_rows[W];
#pragma unroll
    for (int m = 0; m < W; ++m) {
        w_rows[m] = weights[m] + (size_t)j * k;
    }
    float sums[W][SKINNY_ROWS];
    skinny_dots(x, w_rows, rows, k, lane, sums);
#pragma unroll
    for (int r = 0; r < SKINNY_ROWS; ++r) {
        if (r < rows && lane == 0) {
            float dots[W];
#pragma unroll
            for (int m = 0; m < W; ++m) {
                dots[m] = sums[m][r];
            }
            store((size_t)r * n + j, dots);
        }
    }
}

extern "C" __global__ void gemm_skinny_bf16(const float* x, const unsigned short* w, float* out, int rows, int k, int n) {
    const unsigned short* const weights[1] = {w};
    skinny_gemm(x, weights, rows, k, n, [&](size_t i, const float (&dots)[1]) { out[i] = dots[0]; });
}

extern "C" __global__ void gemm_skinny_add_bf16(const float* x, const unsigned short* w, float* acc, int rows, int k, int n) {
    const unsigned short* const weights[1] = {w};
    skinny_gemm(x, weights, rows, k, n, [&](size_t i, const float (&dots)[1]) { acc[i] += dots[0]; });
}

extern "C" __global__ void gemm_skinny_swiglu_bf16(const float* x, const unsigned short* gate, const unsigned short* up, float* out, int rows,
                                                   int k, int n) {
    const unsigned short* const weights[2] = {gate, up};
    skinny_gemm(x, weights, rows, k, n, [&](size_t i, const float (&dots)[2]) { out[i] = silu_gate(dots[0], dots[1]); });
}
