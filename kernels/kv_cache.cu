// The paged KV pool: fused append of the K and V parts of qkv rows, and slot-to-slot copies
// (fork / copy-on-write). CPU twins: src/backend/cpu/mod.rs `kv_write` and `kv_copy`.
//
// Pool layout on the device: one allocation of 2 * n_layer planes, keys of layers 0..n_layer then
// values of layers 0..n_layer; each plane is [num_blocks * block_size slots, n_head * head_dim].
// Slots are physical (the host resolves logical positions through the block table).
#include "common.cuh"

// keys[slots[r]] = qkv[r, width:2*width]; values[slots[r]] = qkv[r, 2*width:3*width], where the
// key and value planes of the layer start at pool + key_plane and pool + value_plane.
// Launch: grid = (rows), block = (256); threads stride over the row.
extern "C" __global__ void kv_write(const float* qkv, int width, const unsigned int* slots, float* pool,
                                    unsigned long long key_plane, unsigned long long value_plane) {
    const float* row = qkv + (size_t)blockIdx.x * 3 * width;
    const size_t dst = (size_t)slots[blockIdx.x] * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        pool[key_plane + dst + i] = row[width + i];
        pool[value_plane + dst + i] = row[2 * width + i];
    }
}

// For every plane: pool[plane][dst[i]] = pool[plane][src[i]]; a pair with a slot >= num_slots
// is skipped. The copies of one launch must be independent (no slot both read and written); the
// host splits an ordered list of copies into such batches (src/backend/copies.rs
// `independent_batches`).
// Launch: grid = (pairs, planes), block = (256); threads stride over the row.
extern "C" __global__ void kv_copy(float* pool, unsigned long long plane_len, int width, int num_slots, const unsigned int* src,
                                   const unsigned int* dst) {
    if (src[blockIdx.x] >= (unsigned int)num_slots || dst[blockIdx.x] >= (unsigned int)num_slots) {
        return;
    }
    float* plane = pool + blockIdx.y * plane_len;
    const size_t from = (size_t)src[blockIdx.x] * width;
    const size_t to = (size_t)dst[blockIdx.x] * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        plane[to + i] = plane[from + i];
    }
}
