// Paged attention for decode and for batched tree verification, in one launch for all sequences.
// CPU twin: src/backend/cpu/attention.rs `paged_attention`.
//
// Visibility follows `AttentionLayout` (src/backend/layout.rs): query row r of sequence
// query_seq[r] sees logical positions [0, query_prefix[r]) in full, plus window_start[r] + j for
// each j < window_len with window_mask[r * window_len + j] != 0 (its ancestors in a draft tree).
// Logical position p of sequence s lives in physical slot
// block_tables[s * max_blocks + p / block_size] * block_size + p % block_size.
//
// Launch geometry: grid = (rows, n_head), block = (ATTN_WARPS * 32). One block per (query row,
// head). Warp w takes the visible keys w, w + ATTN_WARPS, ...; for each key the warp computes
// q.k with the head split across lanes (lane l holds elements l, l + 32, ...), then updates its
// online softmax (running max m, normaliser l, weighted value sum). The warps' partial states
// are merged through shared memory at the end. head_dim <= MAX_HEAD_DIM (checked on the host).
// A row that sees no key gets zeros, as on the CPU. NaN and infinity propagate as on the CPU: a
// warp's state is merged whenever the warp saw a key (counted, not inferred from its sum, which
// a NaN score makes NaN), so a NaN key or an infinite query gives a NaN output, never a
// silently finite one. Keys and values are f32 or bf16 (the `_f32` and `_bf16` entry points);
// the arithmetic is f32 either way.
#include "common.cuh"

#define PER_LANE (MAX_HEAD_DIM / WARP)

template <typename T>
__device__ void attend(const float* qkv, const T* keys, const T* values, float* out, int n_head, int head_dim, int block_size,
                       int max_blocks, const unsigned int* block_tables, const unsigned int* query_seq,
                       const unsigned int* query_prefix, const unsigned int* window_start, int window_len,
                       const unsigned char* window_mask, float scale) {
    const int row = blockIdx.x;
    const int head = blockIdx.y;
    const int warp = threadIdx.x / WARP;
    const int lane = threadIdx.x % WARP;
    const int width = n_head * head_dim;
    const size_t head_offset = (size_t)head * head_dim;

    float q[PER_LANE];
    float acc[PER_LANE];
    const float* q_row = qkv + (size_t)row * 3 * width + head_offset;
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) {
        const int d = lane + i * WARP;
        q[i] = d < head_dim ? q_row[d] : 0.0f;
        acc[i] = 0.0f;
    }

    const unsigned int* table = block_tables + (size_t)query_seq[row] * max_blocks;
    const int prefix = query_prefix[row];
    const unsigned char* mask = window_mask + (size_t)row * window_len;
    float m = neg_inf();
    float l = 0.0f;
    int seen = 0;  // keys this warp processed
    for (int j = warp; j < prefix + window_len; j += ATTN_WARPS) {
        int pos = j;
        if (j >= prefix) {
            if (!mask[j - prefix]) {
                continue;  // uniform across the warp: every lane has the same j
            }
            pos = window_start[row] + (j - prefix);
        }
        const size_t slot = (size_t)table[pos / block_size] * block_size + pos % block_size;
        const T* k = keys + slot * width + head_offset;
        const T* v = values + slot * width + head_offset;
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < PER_LANE; ++i) {
            const int d = lane + i * WARP;
            dot += d < head_dim ? q[i] * load_weight(k, d) : 0.0f;
        }
        const float score = warp_sum(dot) * scale;
        // Not fmaxf, which drops a NaN score: a NaN must reach the output.
        const float m_new = (score > m || score != score) ? score : m;
        const float correction = expf(m - m_new);  // 0 on the first key (m = -inf)
        const float weight = expf(score - m_new);
        l = l * correction + weight;
#pragma unroll
        for (int i = 0; i < PER_LANE; ++i) {
            const int d = lane + i * WARP;
            acc[i] = acc[i] * correction + (d < head_dim ? weight * load_weight(v, d) : 0.0f);
        }
        m = m_new;
        ++seen;
    }

    __shared__ float warp_m[ATTN_WARPS];
    __shared__ float warp_l[ATTN_WARPS];
    __shared__ int warp_seen[ATTN_WARPS];
    __shared__ float warp_acc[ATTN_WARPS][MAX_HEAD_DIM];
    if (lane == 0) {
        warp_m[warp] = m;
        warp_l[warp] = l;
        warp_seen[warp] = seen;
    }
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) {
        const int d = lane + i * WARP;
        if (d < head_dim) {
            warp_acc[warp][d] = acc[i];
        }
    }
    __syncthreads();

    float m_all = neg_inf();
    int seen_all = 0;
    for (int w = 0; w < ATTN_WARPS; ++w) {
        if (warp_seen[w] > 0) {
            m_all = (warp_m[w] > m_all || warp_m[w] != warp_m[w]) ? warp_m[w] : m_all;
            seen_all += warp_seen[w];
        }
    }
    float* out_head = out + (size_t)row * width + head_offset;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float total = 0.0f;
        float value = 0.0f;
        for (int w = 0; w < ATTN_WARPS; ++w) {
            if (warp_seen[w] > 0) {  // warps that saw no key hold m = -inf and add nothing
                const float f = expf(warp_m[w] - m_all);
                total += warp_l[w] * f;
                value += warp_acc[w][d] * f;
            }
        }
        out_head[d] = seen_all > 0 ? value / total : 0.0f;
    }
}

extern "C" __global__ void paged_attention_f32(const float* qkv, const float* keys, const float* values, float* out, int n_head,
                                               int head_dim, int block_size, int max_blocks, const unsigned int* block_tables,
                                               const unsigned int* query_seq, const unsigned int* query_prefix,
                                               const unsigned int* window_start, int window_len,
                                               const unsigned char* window_mask, float scale) {
    attend(qkv, keys, values, out, n_head, head_dim, block_size, max_blocks, block_tables, query_seq, query_prefix, window_start,
           window_len, window_mask, scale);
}

extern "C" __global__ void paged_attention_bf16(const float* qkv, const unsigned short* keys, const unsigned short* values,
                                                float* out, int n_head, int head_dim, int block_size, int max_blocks,
                                                const unsigned int* block_tables, const unsigned int* query_seq,
                                                const unsigned int* query_prefix, const unsigned int* window_start,
                                                int window_len, const unsigned char* window_mask, float scale) {
    attend(qkv, keys, values, out, n_head, head_dim, block_size, max_blocks, block_tables, query_seq, query_prefix, window_start,
           window_len, window_mask, scale);
}
