// Embedding gather: out[out_rows[i]] = table[ids[i]] for rows of width `dim`, from an f32 or a
// bf16 table. CPU twin: src/backend/cpu/mod.rs `embedding` (ids are range-checked on the host).
//
// Launch geometry: grid = (number of ids), block = (256). Threads stride over the row.
#include "common.cuh"

template <typename T>
__device__ void gather_row(const T* table, const unsigned int* ids, const unsigned int* out_rows, int dim, float* out) {
    const size_t src = (size_t)ids[blockIdx.x] * dim;
    const size_t dst = (size_t)out_rows[blockIdx.x] * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        out[dst + i] = load_weight(table, src + i);
    }
}

extern "C" __global__ void embedding_f32(const float* table, const unsigned int* ids, const unsigned int* out_rows, int dim,
                                         float* out) {
    gather_row(table, ids, out_rows, dim, out);
}

extern "C" __global__ void embedding_bf16(const unsigned short* table, const unsigned int* ids, const unsigned int* out_rows,
                                          int dim, float* out) {
    gather_row(table, ids, out_rows, dim, out);
}
