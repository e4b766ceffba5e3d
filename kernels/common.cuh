// Helpers shared by every spire kernel. No system headers: the same text compiles with nvcc and,
// prepended by the loader in place of the #include line, with NVRTC at run time.
#pragma once

// Launch-geometry constants come from one Rust file, src/backend/gpu/geometry.rs, as -D flags
// (build.rs for nvcc and the emulator, the NVRTC loader, tools/check_kernels.sh).
#if !defined(ROW_THREADS) || !defined(ROPE_THREADS) || !defined(ATTN_WARPS) || !defined(MAX_HEAD_DIM) || !defined(ATTN_GROUP_ROWS) || !defined(ACCEPT_THREADS) || !defined(SAMPLING_THREADS) || !defined(SKINNY_ROWS) || !defined(SKINNY_WARPS)
#error "compile with the -D flags of src/backend/gpu/geometry.rs (ROW_THREADS, ROPE_THREADS, ATTN_WARPS, MAX_HEAD_DIM, ATTN_GROUP_ROWS, ACCEPT_THREADS, SAMPLING_THREADS, SKINNY_ROWS, SKINNY_WARPS)"
#endif

#define WARP 32
// The token of a draft-tree node that could not be drawn (src/backend/ops.rs NO_TOKEN).
#define NO_TOKEN 0xffffffffu
#define FULL_MASK 0xffffffffu

// -infinity, without <math.h> (NVRTC compiles with no system headers).
__device__ __forceinline__ float neg_inf() { return __uint_as_float(0xff800000u); }

// SwiGLU's gate: silu(g) * u. CPU twin: src/backend/cpu/kernels.rs `swiglu`.
__device__ __forceinline__ float silu_gate(float g, float u) { return g / (1.0f + expf(-g)) * u; }

// Sum of `v` over the 32 lanes of a warp; every lane gets the result.
__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = WARP / 2; offset > 0; offset /= 2) {
        v += __shfl_xor_sync(FULL_MASK, v, offset);
    }
    return v;
}

// Sum of `v` over a block whose size is a multiple of 32 (at most 1024); every thread gets the
// result. Contains __syncthreads: call it from all threads of the block.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[WARP];
    __shared__ float total;
    const int lane = threadIdx.x % WARP;
    const int warp = threadIdx.x / WARP;
    v = warp_sum(v);
    if (lane == 0) {
        partial[warp] = v;
    }
    __syncthreads();
    if (warp == 0) {
        const int warps = blockDim.x / WARP;
        float w = lane < warps ? partial[lane] : 0.0f;
        w = warp_sum(w);
        if (lane == 0) {
            total = w;
        }
    }
    __syncthreads();
    return total;
}

// bfloat16 bits (the upper half of an IEEE f32) to f32; exact.
__device__ __forceinline__ float bf16_bits_to_f32(unsigned short bits) {
    return __uint_as_float(((unsigned int)bits) << 16);
}

// f32 to bfloat16 bits, round to nearest even (a NaN stays a quiet NaN); the half crate's
// `bf16::from_f32` (CPU twins) rounds the same way.
__device__ __forceinline__ unsigned short f32_to_bf16_bits(float x) {
    const unsigned int bits = __float_as_uint(x);
    if ((bits & 0x7fffffffu) > 0x7f800000u) {
        return (unsigned short)((bits >> 16) | 0x40u);
    }
    return (unsigned short)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

// Element stores: one overload per storage type (bf16 rounds to nearest even).
__device__ __forceinline__ void store_element(float* p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store_element(unsigned short* p, size_t i, float v) { p[i] = f32_to_bf16_bits(v); }

// Weight element loaders: one overload per storage type, so a kernel template reads either.
__device__ __forceinline__ float load_weight(const float* w, size_t i) { return w[i]; }
__device__ __forceinline__ float load_weight(const unsigned short* w, size_t i) { return bf16_bits_to_f32(w[i]); }
