// Paged attention for decode and for batched tree verification, in one launch for all sequences.
// CPU twin: src/backend/cpu/attention.rs `paged_attention` (the same maths; sums in another
// order and the GPU's expf, so results agree to f32 rounding, not bit for bit).
//
// Visibility follows `AttentionLayout` (src/backend/layout.rs): query row r of sequence
// query_seq[r] sees logical positions [0, query_prefix[r]) in full, plus window_start[r] + j for
// each j < window_len with window_mask[r * window_len + j] != 0 (its ancestors in a draft tree).
// Logical position p of sequence s lives in physical slot
// block_tables[s * max_blocks + p / block_size] * block_size + p % block_size.
//
// Groups: consecutive rows with the same sequence, prefix and window start (the nodes of one
// draft tree, or one decoding row) read the same keys, so one block serves up to
// ATTN_GROUP_ROWS of them and reads each key and value once for all (a tree of W nodes reads
// its prefix once, not W times). A group starts at a row whose distance from the start of its
// run of equal rows is a multiple of ATTN_GROUP_ROWS; `attention_groups` in
// src/backend/gpu/paged.rs counts them by the same rule.
//
// Launch geometry: grid = (rows, n_head, splits), block = (ATTN_WARPS * 32), dynamic shared
// memory = 4 * (ATTN_GROUP_ROWS * head_dim + tile * (2 * head_dim + 1)) bytes. Block (r, h, z)
// returns at once unless row r starts a group; otherwise it takes the z-th of `splits` equal
// ranges of the group's candidate keys (split-KV, flash-decoding style: at batch 1 a step has
// too few (group, head) pairs to fill the GPU) in tiles of `tile` <= 32 keys. Per tile, the
// block loads the keys and values into shared memory (128-bit loads when head_dim allows,
// bf16 widened to f32), then warp w serves rows w, w + ATTN_WARPS, ... of the group: lane l
// computes the score of key l of the tile (a whole dot product, no shuffle per key), one warp
// max and one warp sum per tile update the row's online softmax (running max m, normaliser l,
// weighted value sums, lane l holding elements l, l + 32, ...), and each visible key's weight is
// broadcast by a shuffle into the value sums. With one split the warp writes the row's output.
// With several, it writes the row's state to `partials` ([rows * n_head * splits] states of
// head_dim + 3 floats: m, l, keys seen, sums); the block then counts itself in
// `arrivals[r * n_head + h]`, and the last block of the group to arrive merges every row's
// states in split order, writes the outputs and resets the count to zero (so the next launch,
// or graph replay, starts from zero: no second kernel, no memset).
// head_dim <= MAX_HEAD_DIM (checked on the host).
// A row that sees no key gets zeros, as on the CPU. NaN and infinity propagate as on the CPU: a
// state is merged whenever it saw a key (counted, not inferred from its sum, which a NaN score
// makes NaN), and keys a row cannot see are skipped rather than weighted by zero, so a NaN key
// or an infinite query gives a NaN output where the CPU's does, never a silently finite one.
// Keys and values are f32 or bf16 (the `_f32` and `_bf16` entry points); the arithmetic is f32
// either way.
#include "common.cuh"

#define PER_LANE (MAX_HEAD_DIM / WARP)
#define ROWS_PER_WARP (ATTN_GROUP_ROWS / ATTN_WARPS)
// One online-softmax state in `partials`: m, l, keys seen (a float: exact below 2^24), then
// head_dim sums.
#define STATE_HEAD 3

static_assert(ATTN_GROUP_ROWS % ATTN_WARPS == 0, "a group's rows are dealt out evenly to the warps");

// Rows a and b read the same keys: same sequence, prefix and window start.
__device__ __forceinline__ bool same_keys(const unsigned int* query_seq, const unsigned int* query_prefix,
                                          const unsigned int* window_start, int a, int b) {
    return query_seq[a] == query_seq[b] && query_prefix[a] == query_prefix[b] && window_start[a] == window_start[b];
}

// The larger of a and b, NaN if either is (fmaxf drops a NaN; a NaN score must reach the output).
__device__ __forceinline__ float max_nan(float a, float b) { return (a > b || a != a) ? a : b; }

// max_nan over the 32 lanes of a warp; every lane gets the result.
__device__ __forceinline__ float warp_max_nan(float v) {
    for (int offset = WARP / 2; offset > 0; offset /= 2) {
        v = max_nan(v, __shfl_xor_sync(FULL_MASK, v, offset));
    }
    return v;
}

// One 128-bit load of consecutive elements (4 f32 or 8 bf16), widened to f32.
__device__ __forceinline__ void load_vector(const float* src, float* dst) {
    const float4 v = *reinterpret_cast<const float4*>(src);
    dst[0] = v.x;
    dst[1] = v.y;
    dst[2] = v.z;
    dst[3] = v.w;
}
__device__ __forceinline__ void load_vector(const unsigned short* src, float* dst) {
    const uint4 v = *reinterpret_cast<const uint4*>(src);
    const unsigned int words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        dst[2 * i] = __uint_as_float(words[i] << 16);
        dst[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
    }
}

// Where a group's keys are: its sequence's block table, the pool's geometry and the tree window.
struct KeySource {
    const unsigned int* table;
    int block_size;
    int width;
    int head_offset;
    int head_dim;
    int prefix;
    int window_start;
};

// Keys and values of the group's candidates [first, first + n) into k_tile ([n][head_dim + 1]:
// lane l's dot product reads row l, and the padding puts the lanes in different banks) and
// v_tile ([n][head_dim]), widened to f32, by every thread of the block: 128-bit loads when
// head_dim is a multiple of their width (the rows are then 16-byte aligned), else one element at
// a time.
template <typename T>
__device__ void load_tile(const T* keys, const T* values, const KeySource& src, int first, int n, float* k_tile, float* v_tile) {
    constexpr int VEC = 16 / sizeof(T);
    const int unit = src.head_dim % VEC == 0 ? VEC : 1;
    const int per_key = src.head_dim / unit;
    for (int e = threadIdx.x; e < n * per_key; e += blockDim.x) {
        const int i = e / per_key;
        const int d = (e % per_key) * unit;
        const int j = first + i;
        const int pos = j < src.prefix ? j : src.window_start + (j - src.prefix);
        const size_t slot = (size_t)src.table[pos / src.block_size] * src.block_size + pos % src.block_size;
        const size_t at = slot * src.width + src.head_offset + d;
        float* k_dst = k_tile + i * (src.head_dim + 1) + d;
        float* v_dst = v_tile + i * src.head_dim + d;
        if (unit == VEC) {
            float k[VEC];
            float v[VEC];
            load_vector(keys + at, k);
            load_vector(values + at, v);
#pragma unroll
            for (int u = 0; u < VEC; ++u) {
                k_dst[u] = k[u];
                v_dst[u] = v[u];
            }
        } else {
            *k_dst = load_weight(keys, at);
            *v_dst = load_weight(values, at);
        }
    }
}

// The output of one row from its `n` split states (`stride` floats apart, in split order):
// dst[d] = sum of the sums / sum of the normalisers, each state scaled to the common maximum;
// zeros when no state saw a key. The lanes of one warp stride over head_dim.
__device__ void merge_splits(const float* states, int n, int stride, int head_dim, float* dst, int lane) {
    float m_all = neg_inf();
    float seen_all = 0.0f;
    for (int s = 0; s < n; ++s) {
        const float* st = states + (size_t)s * stride;
        if (st[2] > 0.0f) {  // states that saw no key hold m = -inf and add nothing
            m_all = max_nan(st[0], m_all);
            seen_all += st[2];
        }
    }
    for (int d = lane; d < head_dim; d += WARP) {
        float total = 0.0f;
        float value = 0.0f;
        for (int s = 0; s < n; ++s) {
            const float* st = states + (size_t)s * stride;
            if (st[2] > 0.0f) {
                const float f = expf(st[0] - m_all);
                total += st[1] * f;
                value += st[STATE_HEAD + d] * f;
            }
        }
        dst[d] = seen_all > 0.0f ? value / total : 0.0f;
    }
}

template <typename T>
__device__ void attend(const float* qkv, const T* keys, const T* values, float* out, int n_head, int head_dim, int block_size,
                       int max_blocks, const unsigned int* block_tables, const unsigned int* query_seq,
                       const unsigned int* query_prefix, const unsigned int* window_start, int window_len,
                       const unsigned char* window_mask, float scale, int tile, float* partials, unsigned int* arrivals) {
    const int row0 = blockIdx.x;
    int run_start = row0;
    while (run_start > 0 && same_keys(query_seq, query_prefix, window_start, run_start - 1, row0)) {
        --run_start;
    }
    if ((row0 - run_start) % ATTN_GROUP_ROWS != 0) {
        return;  // the row belongs to the group of an earlier block (uniform: no barrier passed yet)
    }
    int rows = 1;
    while (rows < ATTN_GROUP_ROWS && row0 + rows < (int)gridDim.x && same_keys(query_seq, query_prefix, window_start, row0 + rows, row0)) {
        ++rows;
    }

    extern __shared__ float tiles[];
    float* q_tile = tiles;                                 // [ATTN_GROUP_ROWS][head_dim]
    float* k_tile = q_tile + ATTN_GROUP_ROWS * head_dim;   // [tile][head_dim + 1]
    float* v_tile = k_tile + tile * (head_dim + 1);        // [tile][head_dim]
    const int head = blockIdx.y;
    const int split = blockIdx.z;
    const int splits = gridDim.z;
    const int warp = threadIdx.x / WARP;
    const int lane = threadIdx.x % WARP;
    const int width = n_head * head_dim;
    for (int e = threadIdx.x; e < rows * head_dim; e += blockDim.x) {
        q_tile[e] = qkv[(size_t)(row0 + e / head_dim) * 3 * width + head * head_dim + e % head_dim];
    }
    const KeySource src{block_tables + (size_t)query_seq[row0] * max_blocks, block_size, width, head * head_dim, head_dim,
                        (int)query_prefix[row0], (int)window_start[row0]};
    const int candidates = src.prefix + window_len;
    const int chunk = (candidates + splits - 1) / splits;
    const int begin = min(candidates, split * chunk);
    const int end = min(candidates, begin + chunk);

    // The online-softmax state of this warp's rows warp, warp + ATTN_WARPS, ...
    float m[ROWS_PER_WARP];
    float l[ROWS_PER_WARP];
    int seen[ROWS_PER_WARP];  // keys the row saw
    float acc[ROWS_PER_WARP][PER_LANE];
#pragma unroll
    for (int k = 0; k < ROWS_PER_WARP; ++k) {
        m[k] = neg_inf();
        l[k] = 0.0f;
        seen[k] = 0;
#pragma unroll
        for (int i = 0; i < PER_LANE; ++i) {
            acc[k][i] = 0.0f;
        }
    }
    for (int first = begin; first < end; first += tile) {
        const int n = min(tile, end - first);
        __syncthreads();  // the previous tile has been read (and q_tile written)
        load_tile(keys, values, src, first, n, k_tile, v_tile);
        __syncthreads();
#pragma unroll
        for (int k = 0; k < ROWS_PER_WARP; ++k) {
            const int i = warp + k * ATTN_WARPS;
            if (i >= rows) {
                break;  // uniform across the warp
            }
            const int j = first + lane;
            const bool visible = lane < n && (j < src.prefix || window_mask[(size_t)(row0 + i) * window_len + (j - src.prefix)] != 0);
            const unsigned int vis = __ballot_sync(FULL_MASK, visible);
            if (vis == 0) {
                continue;  // uniform: the row sees none of this tile's keys
            }
            float score = neg_inf();
            if (visible) {
                const float* q_row = q_tile + i * head_dim;
                const float* k_row = k_tile + lane * (head_dim + 1);
                float dot = 0.0f;
                for (int d = 0; d < head_dim; ++d) {
                    dot += q_row[d] * k_row[d];
                }
                score = dot * scale;
            }
            const float m_new = max_nan(m[k], warp_max_nan(score));
            const float correction = expf(m[k] - m_new);  // 0 on the row's first keys (m = -inf)
            const float weight = visible ? expf(score - m_new) : 0.0f;
            l[k] = l[k] * correction + warp_sum(weight);
#pragma unroll
            for (int i2 = 0; i2 < PER_LANE; ++i2) {
                acc[k][i2] *= correction;
            }
            for (int key = 0; key < n; ++key) {
                const float w = __shfl_sync(FULL_MASK, weight, key);
                if ((vis >> key) & 1u) {  // skipped, not weighted by 0: an unseen NaN value stays unseen
                    const float* v_row = v_tile + key * head_dim;
#pragma unroll
                    for (int i2 = 0; i2 < PER_LANE; ++i2) {
                        const int d = lane + i2 * WARP;
                        if (d < head_dim) {
                            acc[k][i2] += w * v_row[d];
                        }
                    }
                }
            }
            m[k] = m_new;
            seen[k] += __popc(vis);
        }
    }

    const int state_len = STATE_HEAD + head_dim;
#pragma unroll
    for (int k = 0; k < ROWS_PER_WARP; ++k) {
        const int i = warp + k * ATTN_WARPS;
        if (i >= rows) {
            break;
        }
        const size_t row = row0 + i;
        float* dst = splits == 1 ? out + row * width + head * head_dim : partials + ((row * n_head + head) * splits + split) * state_len;
        if (splits > 1 && lane == 0) {
            dst[0] = m[k];
            dst[1] = l[k];
            dst[2] = (float)seen[k];
        }
#pragma unroll
        for (int i2 = 0; i2 < PER_LANE; ++i2) {
            const int d = lane + i2 * WARP;
            if (d < head_dim) {
                if (splits == 1) {
                    dst[d] = seen[k] > 0 ? acc[k][i2] / l[k] : 0.0f;
                } else {
                    dst[STATE_HEAD + d] = acc[k][i2];
                }
            }
        }
    }
    if (splits == 1) {
        return;
    }
    __threadfence();  // this block's states are visible before it is counted
    __shared__ int last;
    __syncthreads();
    const size_t counter = (size_t)row0 * n_head + head;
    if (threadIdx.x == 0) {
        last = atomicAdd(&arrivals[counter], 1u) == (unsigned int)(splits - 1);
    }
    __syncthreads();
    if (!last) {
        return;
    }
    __threadfence();  // every other block's states are read after its count
    for (int i = warp; i < rows; i += ATTN_WARPS) {
        const size_t row = row0 + i;
        merge_splits(partials + (row * n_head + head) * splits * state_len, splits, state_len, head_dim, out + row * width + head * head_dim, lane);
    }
    if (threadIdx.x == 0) {
        arrivals[counter] = 0;
    }
}

extern "C" __global__ void paged_attention_f32(const float* qkv, const float* keys, const float* values, float* out, int n_head,
                                               int head_dim, int block_size, int max_blocks, const unsigned int* block_tables,
                                               const unsigned int* query_seq, const unsigned int* query_prefix,
                                               const unsigned int* window_start, int window_len,
                                               const unsigned char* window_mask, float scale, int tile, float* partials,
                                               unsigned int* arrivals) {
    attend(qkv, keys, values, out, n_head, head_dim, block_size, max_blocks, block_tables, query_seq, query_prefix, window_start,
           window_len, window_mask, scale, tile, partials, arrivals);
}

extern "C" __global__ void paged_attention_bf16(const float* qkv, const unsigned short* keys, const unsigned short* values,
                                                float* out, int n_head, int head_dim, int block_size, int max_blocks,
                                                const unsigned int* block_tables, const unsigned int* query_seq,
                                                const unsigned int* query_prefix, const unsigned int* window_start,
                                                int window_len, const unsigned char* window_mask, float scale, int tile,
                                                float* partials, unsigned int* arrivals) {
    attend(qkv, keys, values, out, n_head, head_dim, block_size, max_blocks, block_tables, query_seq, query_prefix, window_start,
           window_len, window_mask, scale, tile, partials, arrivals);
}
