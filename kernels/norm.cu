// RMSNorm of each row. CPU twin: src/backend/cpu/kernels.rs `rms_norm`. (At decode row counts a
// decoder layer's norms are folded into the GEMMs that follow them: kernels/gemv.cu.)
//
// Launch geometry: grid = (rows), block = (256). One block per row; threads stride over the row,
// sum x^2 with a block reduction, then scale. f32 throughout (the CPU accumulates in f64; the
// difference is far below the bf16 tolerance of the tests).
#include "common.cuh"

// out[rows, dim] = x / sqrt(mean(x^2) + eps) * weight[dim].
extern "C" __global__ void rms_norm(const float* x, const float* weight, float eps, int dim, float* out) {
    const size_t base = (size_t)blockIdx.x * dim;
    float sum_sq = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = x[base + i];
        sum_sq += v * v;
    }
    const float inv = rsqrtf(block_sum(sum_sq) / dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        out[base + i] = x[base + i] * inv * weight[i];
    }
}
