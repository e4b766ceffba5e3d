// Decode-shaped GEMMs with bf16 weights: out[rows, n] = x[rows, k] . w[n, k]^T for at most
// SKINNY_ROWS rows, reading the f32 activations as they are (no f32 -> bf16 cast launch before
// the GEMM, as cuBLAS needs) and the bf16 weights with 128-bit loads, accumulating in f32. At
// decode a GEMM streams its weights once; x (at most SKINNY_ROWS x k f32) stays in L1/L2. Three
// epilogues (and an RMSNorm prologue), each saving a launch and a pass over the output:
//   gemm_skinny_bf16         out  = x . w^T
//   gemm_skinny_add_bf16     out += x . w^T                      (a projection into the residual)
//   gemm_skinny_norm_swiglu_bf16
//                            out  = silu(n . gate^T) * (n . up^T), n = rms_norm(x)
//                                                                (the SwiGLU feed-forward's first half)
//   gemm_skinny_norm_qkv_rope_kv_{f32,bf16}
//                            qkv  = rope(n . wqkv^T), n = rms_norm(x), and the rotated keys and
//                            the values appended to the paged KV pool (a decoder layer's whole
//                            attention prologue in one launch)
// The norm prologue: rms_norm(x)[i] = x[i] * g[i] / sqrt(mean(x^2) + eps), so
// n . w_j = (sum_i w_ji g_i x_i) / sqrt(mean(x^2) + eps): the loop that streams the weights
// multiplies each x element by g and also sums x^2, and the dot is scaled once at the end. Each
// warp sums x^2 for itself (x is read by every warp anyway), so the norm costs no launch, no
// pass over x and no barrier.
// The RoPE + KV epilogue: RoPE rotates the interleaved pairs (2c, 2c + 1) of each head of q and
// k, i.e. columns j and j ^ 1 of the same block (a block's SKINNY_WARPS columns start at a
// multiple of SKINNY_WARPS); the warps put their dots in shared memory, and lane 0 of column j
// rotates with its partner (as kernels/rope.cu's rotate_pair), writes qkv and, for the k and v
// columns, the pool element of slot slots[r] (kernels/kv_cache.cu's layout).
// CPU twins: src/backend/cpu (`rms_norm`, `linear` over the same bf16 weights widened exactly to
// f32, then `add_assign` / `swiglu` / `rope` + `kv_write`); the sums run in another order, so
// results agree to f32 rounding, not bit for bit.
//
// Launch geometry: grid = (ceil(n / SKINNY_WARPS)), block = (SKINNY_WARPS * 32). Warp w of block
// b computes column j = b * SKINNY_WARPS + w for every row: lane l takes the 8-element groups
// l, l + 32, ... of the weight row (one uint4 each), multiplies them into one accumulator per
// row, and the lanes' sums are added by a butterfly. k must be a multiple of 8 and the weights
// 16-byte aligned (the host checks; other shapes take the cast + cuBLAS path).
// Only the norm + QKV kernel synchronises its block (the RoPE partner exchange).
#include "common.cuh"

static_assert(SKINNY_ROWS <= 32, "one accumulator per row and lane");

// The RMSNorm folded into a skinny GEMM: its weight g ([k]) and epsilon; none when g is null.
struct NormPrologue {
    const float* g;
    float eps;
};

// sums[m][r] = n[r, :] . w_rows[m] for r < rows and each of the W weight rows, in every lane of
// the warp, where n = x, or rms_norm(x) with the prologue's g and eps (NORM). The W rows are
// streamed in the same loop, so a lane has W 128-bit loads in flight and reads x once.
template <int W, bool NORM>
__device__ __forceinline__ void skinny_dots(const float* x, const unsigned short* const (&w_rows)[W], NormPrologue norm, int rows, int k,
                                            int lane, float (&sums)[W][SKINNY_ROWS]) {
    float squares[SKINNY_ROWS];  // per row, this lane's share of sum x^2 (NORM)
#pragma unroll
    for (int r = 0; r < SKINNY_ROWS; ++r) {
        squares[r] = 0.0f;
#pragma unroll
        for (int m = 0; m < W; ++m) {
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
        float scale[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            scale[i] = NORM ? norm.g[g * 8 + i] : 1.0f;
        }
#pragma unroll
        for (int r = 0; r < SKINNY_ROWS; ++r) {
            if (r < rows) {
                const float* xr = x + (size_t)r * k + (size_t)g * 8;
#pragma unroll
                for (int i = 0; i < 8; ++i) {
                    float xi = xr[i];
                    if (NORM) {
                        squares[r] += xi * xi;
                        xi *= scale[i];
                    }
#pragma unroll
                    for (int m = 0; m < W; ++m) {
                        sums[m][r] += weights[m][i] * xi;
                    }
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < SKINNY_ROWS; ++r) {
        if (r < rows) {
            const float inv = NORM ? rsqrtf(warp_sum(squares[r]) / k + norm.eps) : 1.0f;
#pragma unroll
            for (int m = 0; m < W; ++m) {
                sums[m][r] = warp_sum(sums[m][r]) * inv;
            }
        }
    }
}

// The skinny GEMM of this warp's output column j over the W weights `weights` ([n, k] each):
// then, on lane 0, `store(r * n + j, dots)` for every row r, dots[m] = n[r, :] . weights[m][j, :]
// (n = x, or rms_norm(x) with NORM).
template <int W, bool NORM, typename Store>
__device__ __forceinline__ void skinny_gemm(const float* x, const unsigned short* const (&weights)[W], NormPrologue norm, int rows, int k, int n,
                                            Store store) {
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
    skinny_dots<W, NORM>(x, w_rows, norm, rows, k, lane, sums);
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
    skinny_gemm<1, false>(x, weights, NormPrologue{nullptr, 0.0f}, rows, k, n, [&](size_t i, const float (&dots)[1]) { out[i] = dots[0]; });
}

extern "C" __global__ void gemm_skinny_add_bf16(const float* x, const unsigned short* w, float* acc, int rows, int k, int n) {
    const unsigned short* const weights[1] = {w};
    skinny_gemm<1, false>(x, weights, NormPrologue{nullptr, 0.0f}, rows, k, n, [&](size_t i, const float (&dots)[1]) { acc[i] += dots[0]; });
}

extern "C" __global__ void gemm_skinny_norm_swiglu_bf16(const float* x, const float* norm, float eps, const unsigned short* gate,
                                                        const unsigned short* up, float* out, int rows, int k, int n) {
    const unsigned short* const weights[2] = {gate, up};
    skinny_gemm<2, true>(x, weights, NormPrologue{norm, eps}, rows, k, n,
                         [&](size_t i, const float (&dots)[2]) { out[i] = silu_gate(dots[0], dots[1]); });
}

// qkv rows [rows, 3 * width] = rope(rms_norm(x) . w^T) (q | k | v, heads of head_dim; RoPE on
// q and k by the table row positions[r]), and the rotated k and the v of row r written to slot
// slots[r] of the layer's key and value planes (pool + key_plane, pool + value_plane).
template <typename T>
__device__ void skinny_qkv_rope_kv(const float* x, NormPrologue norm, const unsigned short* w, float* qkv, int rows, int k, int width,
                                   int head_dim, const float* table, const unsigned int* positions, const unsigned int* slots, T* pool,
                                   unsigned long long key_plane, unsigned long long value_plane) {
    __shared__ float dots[SKINNY_WARPS][SKINNY_ROWS];
    const int n = 3 * width;
    const int warp = threadIdx.x / WARP;
    const int lane = threadIdx.x % WARP;
    const int j = blockIdx.x * SKINNY_WARPS + warp;
    if (j < n) {  // uniform across the warp
        const unsigned short* const w_row[1] = {w + (size_t)j * k};
        float sums[1][SKINNY_ROWS];
        skinny_dots<1, true>(x, w_row, norm, rows, k, lane, sums);
#pragma unroll
        for (int r = 0; r < SKINNY_ROWS; ++r) {
            if (r < rows && lane == 0) {
                dots[warp][r] = sums[0][r];
            }
        }
    }
    __syncthreads();  // the partner column's dots are in shared memory
    if (j >= n || lane != 0) {
        return;
    }
    const int even = warp & ~1;  // the pair (2c, 2c + 1) of this column: warps even, even + 1
    const int pair = (j % head_dim) / 2;
    for (int r = 0; r < rows; ++r) {
        float v = dots[warp][r];
        if (j < 2 * width) {  // q or k: rotate (kernels/rope.cu rotate_pair)
            const float* cos_sin = table + (size_t)positions[r] * head_dim + 2 * pair;
            const float c = cos_sin[0];
            const float s = cos_sin[1];
            const float a = dots[even][r];
            const float b = dots[even + 1][r];
            v = (j & 1) == 0 ? a * c - b * s : b * c + a * s;
        }
        qkv[(size_t)r * n + j] = v;
        if (j >= width) {
            const bool key = j < 2 * width;
            const size_t element = (size_t)slots[r] * width + (key ? j - width : j - 2 * width);
            store_element(pool, (key ? key_plane : value_plane) + element, v);
        }
    }
}

extern "C" __global__ void gemm_skinny_norm_qkv_rope_kv_f32(const float* x, const float* norm, float eps, const unsigned short* w, float* qkv,
                                                            int rows, int k, int width, int head_dim, const float* table,
                                                            const unsigned int* positions, const unsigned int* slots, float* pool,
                                                            unsigned long long key_plane, unsigned long long value_plane) {
    skinny_qkv_rope_kv(x, NormPrologue{norm, eps}, w, qkv, rows, k, width, head_dim, table, positions, slots, pool, key_plane, value_plane);
}

extern "C" __global__ void gemm_skinny_norm_qkv_rope_kv_bf16(const float* x, const float* norm, float eps, const unsigned short* w,
                                                             float* qkv, int rows, int k, int width, int head_dim, const float* table,
                                                             const unsigned int* positions, const unsigned int* slots, unsigned short* pool,
                                                             unsigned long long key_plane, unsigned long long value_plane) {
    skinny_qkv_rope_kv(x, NormPrologue{norm, eps}, w, qkv, rows, k, width, head_dim, table, positions, slots, pool, key_plane, value_plane);
}
