// 2-D RoPE on interleaved pairs (x[2k], x[2k+1]) of the first heads of each row: in place
// (`rope`), or fused with the paged KV append of a decoder layer's qkv rows (`rope_kv_write_*`:
// rotate q and k, write the rotated k and the v into the pool; one launch, each row read once).
// CPU twins: src/backend/cpu/kernels.rs `rope`, then src/backend/cpu/mod.rs `kv_write`.
//
// The table holds, per position, head_dim / 2 (cos, sin) pairs (built on the host by
// src/model/rope.rs, class-token row all zero), so the kernels need no trigonometry. Pool layout:
// kernels/kv_cache.cu.
//
// Launch geometry: grid = (rows), block = (ROPE_THREADS). Threads stride over the row's pairs.
#include "common.cuh"

// Rotate the pair at `pair` by the table entry of pair index k; the rotated values are returned
// in x0, x1 and written back.
__device__ __forceinline__ void rotate_pair(float* pair, const float* cos_sin, int k, float& x0, float& x1) {
    const float c = cos_sin[2 * k];
    const float s = cos_sin[2 * k + 1];
    const float a = pair[0];
    const float b = pair[1];
    x0 = a * c - b * s;
    x1 = b * c + a * s;
    pair[0] = x0;
    pair[1] = x1;
}

extern "C" __global__ void rope(float* x, int row_stride, int n_rot_heads, int head_dim, const float* table,
                                const unsigned int* positions) {
    const int half = head_dim / 2;
    float* row = x + (size_t)blockIdx.x * row_stride;
    const float* cos_sin = table + (size_t)positions[blockIdx.x] * half * 2;
    for (int p = threadIdx.x; p < n_rot_heads * half; p += blockDim.x) {
        float x0, x1;
        rotate_pair(row + 2 * p, cos_sin, p % half, x0, x1);
    }
}

// qkv rows [rows, 3 * width] (q | k | v, heads of head_dim): rotate the q and k pairs in place,
// then keys[slots[r]] = rotated k, values[slots[r]] = v, the layer's key and value planes
// starting at pool + key_plane and pool + value_plane.
template <typename T>
__device__ void rope_kv_write_rows(float* qkv, int width, int head_dim, const float* table, const unsigned int* positions,
                                   const unsigned int* slots, T* pool, unsigned long long key_plane, unsigned long long value_plane) {
    const int half = head_dim / 2;
    float* row = qkv + (size_t)blockIdx.x * 3 * width;
    const float* cos_sin = table + (size_t)positions[blockIdx.x] * half * 2;
    const size_t dst = (size_t)slots[blockIdx.x] * width;
    for (int p = threadIdx.x; p < width; p += blockDim.x) {  // width pairs: q's, then k's
        float x0, x1;
        rotate_pair(row + 2 * p, cos_sin, p % half, x0, x1);
        const int key = 2 * p - width;
        if (key >= 0) {
            store_element(pool, key_plane + dst + key, x0);
            store_element(pool, key_plane + dst + key + 1, x1);
        }
    }
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        store_element(pool, value_plane + dst + i, row[2 * width + i]);
    }
}

extern "C" __global__ void rope_kv_write_f32(float* qkv, int width, int head_dim, const float* table, const unsigned int* positions,
                                             const unsigned int* slots, float* pool, unsigned long long key_plane,
                                             unsigned long long value_plane) {
    rope_kv_write_rows(qkv, width, head_dim, table, positions, slots, pool, key_plane, value_plane);
}

extern "C" __global__ void rope_kv_write_bf16(float* qkv, int width, int head_dim, const float* table, const unsigned int* positions,
                                              const unsigned int* slots, unsigned short* pool, unsigned long long key_plane,
                                              unsigned long long value_plane) {
    rope_kv_write_rows(qkv, width, head_dim, table, positions, slots, pool, key_plane, value_plane);
}
