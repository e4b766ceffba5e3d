// Small data-movement ops of a decoder step: residual add, row concatenation, row gather, and
// the f32 -> bf16 cast of activations feeding a bf16 cuBLAS GEMM. CPU twins:
// src/backend/cpu/kernels.rs `add_assign`, src/backend/cpu/mod.rs `concat_rows` and
// `gather_rows` (the cast has none: the CPU GEMM is f32).
#include "common.cuh"

// acc += x. Launch: grid = (ceil(n / 256)), block = (256), one element per thread.
extern "C" __global__ void add_assign(float* acc, const float* x, unsigned long long n) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        acc[i] += x[i];
    }
}

// out[r] = concat(a[r], b[r]). Launch: grid = (rows), block = (256), threads stride over the row.
extern "C" __global__ void concat_rows(const float* a, int a_dim, const float* b, int b_dim, float* out) {
    const size_t r = blockIdx.x;
    const int width = a_dim + b_dim;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        out[r * width + i] = i < a_dim ? a[r * a_dim + i] : b[r * b_dim + (i - a_dim)];
    }
}

// out[r] = src[rows[r]] for rows of `width`; a row index >= src_rows gives a zero row.
// Launch: grid = (rows), block = (256), threads stride over the row.
extern "C" __global__ void gather_rows(const float* src, int src_rows, int width, const unsigned int* rows, float* out) {
    const unsigned int from = rows[blockIdx.x];
    const bool valid = from < (unsigned int)src_rows;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        out[(size_t)blockIdx.x * width + i] = valid ? src[(size_t)from * width + i] : 0.0f;
    }
}

// out = bf16(x), round to nearest even (NaN stays a quiet NaN).
// Launch: grid = (ceil(n / 256)), block = (256), one element per thread.
extern "C" __global__ void f32_to_bf16(const float* x, unsigned short* out, unsigned long long n) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        out[i] = f32_to_bf16_bits(x[i]);
    }
}
