// The paged KV pool: fused append of the K and V parts of qkv rows, and slot-to-slot copies
// (fork / copy-on-write, tree-path compaction). CPU twins: src/backend/cpu/mod.rs `kv_write`
// and `kv_copy`.
//
// Pool layout on the device: one allocation of 2 * n_layer planes, keys of layers 0..n_layer then
// values of layers 0..n_layer; each plane is [num_blocks * block_size slots, n_head * head_dim].
// Slots are physical (the host resolves logical positions through the block table). The pool
// holds f32 or bf16 elements (the `_f32` and `_bf16` entry points); bf16 halves the bytes that
// attention reads, and the append rounds to nearest even (the CPU twin rounds the same way).
#include "common.cuh"

// keys[slots[r]] = qkv[r, width:2*width]; values[slots[r]] = qkv[r, 2*width:3*width], where the
// key and value planes of the layer start at pool + key_plane and pool + value_plane.
// Launch: grid = (rows), block = (256); threads stride over the row.
template <typename T>
__device__ void kv_write_rows(const float* qkv, int width, const unsigned int* slots, T* pool, unsigned long long key_plane,
                              unsigned long long value_plane) {
    const float* row = qkv + (size_t)blockIdx.x * 3 * width;
    const size_t dst = (size_t)slots[blockIdx.x] * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        store_element(pool, key_plane + dst + i, row[width + i]);
        store_element(pool, value_plane + dst + i, row[2 * width + i]);
    }
}

extern "C" __global__ void kv_write_f32(const float* qkv, int width, const unsigned int* slots, float* pool,
                                        unsigned long long key_plane, unsigned long long value_plane) {
    kv_write_rows(qkv, width, slots, pool, key_plane, value_plane);
}

extern "C" __global__ void kv_write_bf16(const float* qkv, int width, const unsigned int* slots, unsigned short* pool,
                                         unsigned long long key_plane, unsigned long long value_plane) {
    kv_write_rows(qkv, width, slots, pool, key_plane, value_plane);
}

// For every plane: pool[plane][dst[i]] = pool[plane][src[i]]; a pair with a slot >= num_slots
// is skipped. The copies of one launch must be independent (no slot both read and written); the
// host splits an ordered list of copies into such batches (src/backend/copies.rs
// `independent_batches`).
// Launch: grid = (pairs, planes), block = (256); threads stride over the row.
template <typename T>
__device__ void kv_copy_rows(T* pool, unsigned long long plane_len, int width, int num_slots, const unsigned int* src,
                             const unsigned int* dst) {
    if (src[blockIdx.x] >= (unsigned int)num_slots || dst[blockIdx.x] >= (unsigned int)num_slots) {
        return;
    }
    T* plane = pool + blockIdx.y * plane_len;
    const size_t from = (size_t)src[blockIdx.x] * width;
    const size_t to = (size_t)dst[blockIdx.x] * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        plane[to + i] = plane[from + i];
    }
}

extern "C" __global__ void kv_copy_f32(float* pool, unsigned long long plane_len, int width, int num_slots, const unsigned int* src,
                                       const unsigned int* dst) {
    kv_copy_rows(pool, plane_len, width, num_slots, src, dst);
}

extern "C" __global__ void kv_copy_bf16(unsigned short* pool, unsigned long long plane_len, int width, int num_slots,
                                        const unsigned int* src, const unsigned int* dst) {
    kv_copy_rows(pool, plane_len, width, num_slots, src, dst);
}
