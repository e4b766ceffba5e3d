// Paged attention for decode and for batched tree verification, in one launch for all sequences.
// CPU twin: src/backend/cpu/attention.rs `paged_attention`.
//
// Visibility follows `AttentionLayout` (src/backend/layout.rs): query row r of sequence
// query_seq[r] sees logical positions [0, query_prefix[r]) in full, plus window_start[r] + j for
// each j < window_len with window_mask[r * window_len + j] != 0 (its ancestors in a draft tree).
// Logical position p of sequence s lives in physical slot
// block_tables[s * max_blocks + p / block_size] * block_size + p % block_size.
//
// Launch geometry: grid = (rows, n_head, splits), block = (ATTN_WARPS * 32). Block (r, h, z)
// takes the z-th of `splits` equal ranges of row r's candidate keys (split-KV, flash-decoding
// style: at batch 1 a step has too few (row, head) pairs to fill the GPU). Warp w of the block
// takes the keys w, w + ATTN_WARPS, ... of its range; for each key the warp computes q.k with the
// head split across lanes (lane l holds elements l, l + 32, ...), then updates its online
// softmax state (running max m, normaliser l, weighted value sum). The warps' states are merged
// through shared memory. With one split the block writes the output. With several, each block
// writes its merged state to `partials` ([rows * n_head * splits] states of head_dim + 3
// floats: m, l, keys seen, sums), then counts itself in `arrivals[r * n_head + h]`; the last
// block of the pair to arrive merges the pair's states, writes the output and resets the count
// to zero (so the next launch, or graph replay, starts from zero: no second kernel, no memset).
// head_dim <= MAX_HEAD_DIM (checked on the host).
// A row that sees no key gets zeros, as on the CPU. NaN and infinity propagate as on the CPU: a
// state is merged whenever it saw a key (counted, not inferred from its sum, which a NaN score
// makes NaN), so a NaN key or an infinite query gives a NaN output, never a silently finite one.
// Keys and values are f32 or bf16 (the `_f32` and `_bf16` entry points); the arithmetic is f32
// either way.
#include "common.cuh"

#define PER_LANE (MAX_HEAD_DIM / WARP)
// One online-softmax state: m, l, keys seen (a float: exact below 2^24), then head_dim sums.
#define STATE_HEAD 3

// Merge the n states at `states` (`stride` floats apart) of the pair into one: written to `dst`
// as a state (normalise = false; thread 0 writes its head) or as the attention output sums / l
// (normalise = true; zeros when no state saw a key). Threads stride over head_dim.
__device__ void merge_states(const float* states, int n, int stride, int head_dim, float* dst, bool normalise) {
    float m_all = neg_inf();
    float seen_all = 0.0f;
    for (int w = 0; w < n; ++w) {
        const float* st = states + (size_t)w * stride;
        if (st[2] > 0.0f) {
            m_all = (st[0] > m_all || st[0] != st[0]) ? st[0] : m_all;
            seen_all += st[2];
        }
    }
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float total = 0.0f;
        float value = 0.0f;
        for (int w = 0; w < n; ++w) {
            const float* st = states + (size_t)w * stride;
            if (st[2] > 0.0f) {  // states that saw no key hold m = -inf and add nothing
                const float f = expf(st[0] - m_all);
                total += st[1] * f;
                value += st[STATE_HEAD + d] * f;
            }
        }
        if (normalise) {
            dst[d] = seen_all > 0.0f ? value / total : 0.0f;
        } else {
            dst[STATE_HEAD + d] = value;
            if (d == 0) {
                dst[0] = m_all;
                dst[1] = total;
                dst[2] = seen_all;
            }
        }
    }
}

template <typename T>
__device__ void attend(const float* qkv, const T* keys, const T* values, float* out, int n_head, int head_dim, int block_size,
                       int max_blocks, const unsigned int* block_tables, const unsigned int* query_seq,
                       const unsigned int* query_prefix, const unsigned int* window_start, int window_len,
                       const unsigned char* window_mask, float scale, float* partials, unsigned int* arrivals) {
    const int row = blockIdx.x;
    const int head = blockIdx.y;
    const int split = blockIdx.z;
    const int splits = gridDim.z;
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
    const int candidates = prefix + window_len;
    const int chunk = (candidates + splits - 1) / splits;
    const int begin = split * chunk;
    const int end = min(candidates, begin + chunk);
    float m = neg_inf();
    float l = 0.0f;
    int seen = 0;  // keys this warp processed
    for (int j = begin + warp; j < end; j += ATTN_WARPS) {
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

    __shared__ float warp_states[ATTN_WARPS][STATE_HEAD + MAX_HEAD_DIM];
    if (lane == 0) {
        warp_states[warp][0] = m;
        warp_states[warp][1] = l;
        warp_states[warp][2] = (float)seen;
    }
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) {
        const int d = lane + i * WARP;
        if (d < head_dim) {
            warp_states[warp][STATE_HEAD + d] = acc[i];
        }
    }
    __syncthreads();

    float* out_head = out + (size_t)row * width + head_offset;
    const int stride = STATE_HEAD + MAX_HEAD_DIM;
    if (splits == 1) {
        merge_states(&warp_states[0][0], ATTN_WARPS, stride, head_dim, out_head, true);
        return;
    }
    const size_t pair = (size_t)row * n_head + head;
    const int split_stride = STATE_HEAD + head_dim;
    float* pair_states = partials + pair * splits * split_stride;
    merge_states(&warp_states[0][0], ATTN_WARPS, stride, head_dim, pair_states + (size_t)split * split_stride, false);
    __threadfence();  // this block's state is visible before it is counted
    __shared__ int last;
    __syncthreads();
    if (threadIdx.x == 0) {
        last = atomicAdd(&arrivals[pair], 1u) == (unsigned int)(splits - 1);
    }
    __syncthreads();
    if (last) {
        __threadfence();  // every other block's state is read after its count
        merge_states(pair_states, splits, split_stride, head_dim, out_head, true);
        if (threadIdx.x == 0) {
            arrivals[pair] = 0;
        }
    }
}

extern "C" __global__ void paged_attention_f32(const float* qkv, const float* keys, const float* values, float* out, int n_head,
                                               int head_dim, int block_size, int max_blocks, const unsigned int* block_tables,
                                               const unsigned int* query_seq, const unsigned int* query_prefix,
                                               const unsigned int* window_start, int window_len,
                                               const unsigned char* window_mask, float scale, float* partials,
                                               unsigned int* arrivals) {
    attend(qkv, keys, values, out, n_head, head_dim, block_size, max_blocks, block_tables, query_seq, query_prefix, window_start,
           window_len, window_mask, scale, partials, arrivals);
}

extern "C" __global__ void paged_attention_bf16(const float* qkv, const unsigned short* keys, const unsigned short* values,
                                                float* out, int n_head, int head_dim, int block_size, int max_blocks,
                                                const unsigned int* block_tables, const unsigned int* query_seq,
                                                const unsigned int* query_prefix, const unsigned int* window_start,
                                                int window_len, const unsigned char* window_mask, float scale, float* partials,
                                                unsigned int* arrivals) {
    attend(qkv, keys, values, out, n_head, head_dim, block_size, max_blocks, block_tables, query_seq, query_prefix, window_start,
           window_len, window_mask, scale, partials, arrivals);
}
