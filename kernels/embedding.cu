// Embedding gather: out[out_rows[i]] = table[ids[i]] for rows of width `dim`, from an f32 or a
// bf16 table of `table_rows` rows; with `tokens` (not null: an indirect gather of drafted
// tokens) the id is tokens[ids[i]], and an index >= tokens_len or an id >= table_rows (such as
// NO_TOKEN) gives a zero row. CPU twin: src/backend/cpu/mod.rs `embedding` (direct ids are
// range-checked on the host).
//
// Launch geometry: grid = (number of ids), block = (256). Threads stride over the row.
#include "common.cuh"

template <typename T>
__device__ void gather_row(const T* table, int table_rows, const unsigned int* ids, const unsigned int* tokens, int tokens_len,
                           const unsigned int* out_rows, int dim, float* out) {
    unsigned int id = ids[blockIdx.x];
    if (tokens != nullptr) {
        id = id < (unsigned int)tokens_len ? tokens[id] : NO_TOKEN;
    }
    const size_t dst = (size_t)out_rows[blockIdx.x] * dim;
    const bool valid = id < (unsigned int)table_rows;
    const size_t src = valid ? (size_t)id * dim : 0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        out[dst + i] = valid ? load_weight(table, src + i) : 0.0f;
    }
}

extern "C" __global__ void embedding_f32(const float* table, int table_rows, const unsigned int* ids, const unsigned int* tokens,
                                         int tokens_len, const unsigned int* out_rows, int dim, float* out) {
    gather_row(table, table_rows, ids, tokens, tokens_len, out_rows, dim, out);
}

extern "C" __global__ void embedding_bf16(const unsigned short* table, int table_rows, const unsigned int* ids,
                                          const unsigned int* tokens, int tokens_len, const unsigned int* out_rows, int dim,
                                          float* out) {
    gather_row(table, table_rows, ids, tokens, tokens_len, out_rows, dim, out);
}
