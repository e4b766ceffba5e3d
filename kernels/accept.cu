// Fused verification of a whole draft block (chain or tree) for the whole batch: one launch per
// verification step; and the drawing of a tree level's children (`sample_children`, at the end),
// which shares its inverse-CDF draw. CPU twins, bit for bit: src/backend/cpu/accept.rs and
// src/backend/cpu/children.rs.
//
// Per sequence b, slot 0 is the pending token and slot 1 + n follows draft node n; p and q are the
// target and draft distributions at each slot ([batch, nodes + 1, vocab], already CFG-mixed and
// temperature-processed). Node n holds token tokens[b, n] and its parent node parents[b, n]
// (-1 for a child of the pending token; a value that names no node, such as -2, makes the node
// absent: a sequence drafting a smaller tree than the block's); siblings are tried in index
// order. A token >= vocab (NO_TOKEN: not drawn) is never accepted and leaves the residual as it
// is (its draft side has no mass).
//
// Walking down from the pending token, level d (0-based block depth) tries its children:
//  - the first child x is accepted with f(x) = min(1, omega[d] p(x) / q(x)) (omega = 1 is
//    lossless speculative sampling; COOL-SD / UniformRSD pass their relaxation factors);
//  - on rejection the target becomes the residual norm([p - q f]+), computed as
//    norm([p - min(q, omega p)]+), the same quantity with no rounding when omega = 1, where it is
//    exactly norm((p - q)+);
//  - siblings are drawn from q without replacement, so each further sibling x is accepted with
//    min(1, r(x) / q'(x)) against the current residual r, where q' is q renormalised without the
//    siblings already tried; r then becomes norm((r - q')+) (multi-draft speculative sampling for
//    draws without replacement, as the host verifier in src/decode/speculative/verify.rs).
// A residual with no mass keeps the previous distribution. If a child is accepted the walk goes
// down to it; a node with no children ends the block with a bonus token drawn from p there; a
// level that rejects every child ends it with a token drawn from the last residual. Draws use the
// pre-drawn uniforms u_accept[b, n] (trying node n) and u_sample[b] (the final token), by inverse
// CDF in the fixed summation order of `sample_inverse_cdf`, so the CPU twin matches exactly.
// Arithmetic that decides tokens uses the explicitly rounded intrinsics (__fmul_rn, ...), which
// the compiler never fuses into FMAs, for the same reason.
//
// Launch geometry: grid = (batch), block = (ACCEPT_THREADS). One block per sequence; thread t
// owns the contiguous vocabulary chunk [t * chunk, (t + 1) * chunk), chunk = ceil(vocab / 256),
// for residuals and partial sums; thread 0 does the short serial parts (tree walk bookkeeping,
// the scan over the 256 partial sums). `work` is scratch of [batch, 3, vocab] floats (two
// residual buffers and the draft distribution without the tried siblings, per sequence).
#include "common.cuh"

// min(1, target / draft); at draft = 0 the limit (1 if target > 0, else 0); NaN gives 0.
__device__ float ratio_accept(float target, float draft) {
    if (target != target || draft != draft) {
        return 0.0f;
    }
    float ratio;
    if (draft > 0.0f) {
        ratio = __fdiv_rn(target, draft);
    } else {
        ratio = target > 0.0f ? 1.0f : 0.0f;
    }
    return ratio >= 0.0f ? fminf(ratio, 1.0f) : 0.0f;
}

// This thread's vocabulary chunk [*begin, *end).
__device__ void chunk_range(int vocab, int* begin, int* end) {
    const int chunk = (vocab + ACCEPT_THREADS - 1) / ACCEPT_THREADS;
    *begin = min((int)threadIdx.x * chunk, vocab);
    *end = min(*begin + chunk, vocab);
}

// w[y], or 0 when y is one of the n tokens in `drawn` (siblings drawn before).
__device__ float weight(const float* w, int y, const unsigned int* drawn, int n) {
    for (int k = 0; k < n; ++k) {
        if (drawn[k] == (unsigned int)y) {
            return 0.0f;
        }
    }
    return w[y];
}

// Sum of the positive weights (`weight`: w without the n tokens of `drawn`) of each chunk into
// partial[t]; returns the block total (summed serially over the chunks), identical in every
// thread. Ends with a barrier.
__device__ float chunked_total(const float* w, int vocab, const unsigned int* drawn, int n, float* partial) {
    __shared__ float total;
    int begin, end;
    chunk_range(vocab, &begin, &end);
    float sum = 0.0f;
    for (int y = begin; y < end; ++y) {
        const float v = weight(w, y, drawn, n);
        if (v > 0.0f) {
            sum = __fadd_rn(sum, v);
        }
    }
    partial[threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0.0f;
        for (int i = 0; i < ACCEPT_THREADS; ++i) {
            t = __fadd_rn(t, partial[i]);
        }
        total = t;
    }
    __syncthreads();
    return total;
}

// Thread 0 only: the first index y of chunk i whose running sum of weights (starting at `acc`)
// exceeds `target`, else the chunk's last positive index, else -1.
__device__ int scan_chunk(const float* w, int vocab, const unsigned int* drawn, int n, int i, float acc, float target) {
    const int chunk = (vocab + ACCEPT_THREADS - 1) / ACCEPT_THREADS;
    const int begin = min(i * chunk, vocab);
    const int end = min(begin + chunk, vocab);
    int last = -1;
    for (int y = begin; y < end; ++y) {
        const float v = weight(w, y, drawn, n);
        if (v > 0.0f) {
            acc = __fadd_rn(acc, v);
            last = y;
            if (target < acc) {
                return y;
            }
        }
    }
    return last;
}

// Draw an index with probability proportional to the positive weights (w without the n tokens
// of `drawn`) by inverse CDF at u in [0, 1): the chunk whose cumulative partial sum first exceeds
// u * total, then the index inside it. Falls back to the last positive index (rounding at
// u -> 1), or `empty` with no mass. Returns the same index in every thread.
__device__ int sample_inverse_cdf(const float* w, int vocab, const unsigned int* drawn, int n, float u, int empty, float* partial) {
    __shared__ int choice;
    const float total = chunked_total(w, vocab, drawn, n, partial);
    if (threadIdx.x == 0) {
        const float target = __fmul_rn(u, total);
        float acc = 0.0f;
        int found = -1;
        int last_chunk = -1;
        for (int i = 0; i < ACCEPT_THREADS && found < 0; ++i) {
            if (partial[i] > 0.0f) {
                last_chunk = i;
            }
            const float next = __fadd_rn(acc, partial[i]);
            if (target < next) {
                found = scan_chunk(w, vocab, drawn, n, i, acc, target);
            }
            acc = next;
        }
        if (found < 0) {
            found = last_chunk < 0 ? empty : scan_chunk(w, vocab, drawn, n, last_chunk, 0.0f, __uint_as_float(0x7f800000u));
        }
        choice = found;
    }
    __syncthreads();
    return choice;
}

// dst = [cur - emitted]+ with emitted = min(q, omega cur) (omega >= 0) or q (omega < 0, the
// plain multi-draft residual), normalised in place when it has mass. Returns its mass.
__device__ float residual(const float* cur, const float* q, float omega, int vocab, float* dst, float* partial) {
    int begin, end;
    chunk_range(vocab, &begin, &end);
    for (int y = begin; y < end; ++y) {
        const float emitted = omega >= 0.0f ? fminf(q[y], __fmul_rn(omega, cur[y])) : q[y];
        dst[y] = fmaxf(__fsub_rn(cur[y], emitted), 0.0f);
    }
    const float total = chunked_total(dst, vocab, nullptr, 0, partial);
    if (total > 0.0f) {
        for (int y = begin; y < end; ++y) {
            dst[y] = __fdiv_rn(dst[y], total);
        }
    }
    __syncthreads();
    return total;
}

// dst = q without token x, renormalised (copied from q first when dst != q). Ends with a barrier.
__device__ void drop_token(const float* q, unsigned int x, int vocab, float* dst, float* partial) {
    int begin, end;
    chunk_range(vocab, &begin, &end);
    for (int y = begin; y < end; ++y) {
        dst[y] = (unsigned int)y == x ? 0.0f : q[y];
    }
    const float total = chunked_total(dst, vocab, nullptr, 0, partial);
    if (total > 0.0f) {
        for (int y = begin; y < end; ++y) {
            dst[y] = __fdiv_rn(dst[y], total);
        }
    }
    __syncthreads();
}

extern "C" __global__ void accept_block(const float* p, const float* q, const unsigned int* tokens, const int* parents,
                                        const float* omega, const float* u_accept, const float* u_sample, int nodes,
                                        int vocab, float* work, float* accept_prob, int* path,
                                        unsigned int* accepted_len, unsigned int* next_token) {
    __shared__ float partial[ACCEPT_THREADS];
    const size_t b = blockIdx.x;
    const unsigned int* tok = tokens + b * nodes;
    const int* parent = parents + b * nodes;
    for (int n = threadIdx.x; n < nodes; n += blockDim.x) {
        accept_prob[b * nodes + n] = -1.0f;
        path[b * nodes + n] = -1;
    }
    __syncthreads();

    int node = -1;  // the last accepted node (-1: the pending token)
    int depth = 0;
    int spare = 0;  // which of the two work buffers the next residual goes to
    while (true) {
        const float* p_row = p + (b * (nodes + 1) + (node + 1)) * vocab;
        const float* q_row = q + (b * (nodes + 1) + (node + 1)) * vocab;
        const float* cur = p_row;
        float* q_left = work + (b * 3 + 2) * vocab;  // q without the siblings tried so far
        const float om = depth < nodes ? omega[depth] : 0.0f;  // a leaf level reads no omega
        const float level_omega = (om - om == 0.0f && om >= 0.0f) ? om : 0.0f;  // non-finite/negative: never accept
        bool first = true;
        int accepted = -1;
        for (int n = 0; n < nodes && depth < nodes; ++n) {  // depth < nodes: a malformed tree still ends
            if (parent[n] != node) {
                continue;
            }
            const unsigned int x = tok[n];
            float a = 0.0f;
            if (x < (unsigned int)vocab) {
                a = first ? ratio_accept(__fmul_rn(level_omega, p_row[x]), q_row[x]) : ratio_accept(cur[x], q_left[x]);
            }
            if (threadIdx.x == 0) {
                accept_prob[b * nodes + n] = a;
            }
            if (u_accept[b * nodes + n] < a) {
                accepted = n;
                break;
            }
            float* dst = work + (b * 3 + spare) * vocab;
            if (residual(cur, first ? q_row : q_left, first ? level_omega : -1.0f, vocab, dst, partial) > 0.0f) {
                cur = dst;
                spare ^= 1;
            }
            drop_token(first ? q_row : q_left, x, vocab, q_left, partial);
            first = false;
        }
        if (accepted >= 0) {
            if (threadIdx.x == 0) {
                path[b * nodes + depth] = accepted;
            }
            node = accepted;
            depth += 1;
            continue;
        }
        // No child accepted: cur is p_row (a leaf, or no child at all) or the last residual.
        const int token = sample_inverse_cdf(cur, vocab, nullptr, 0, u_sample[b], 0, partial);
        if (threadIdx.x == 0) {
            accepted_len[b] = depth;
            next_token[b] = token;
        }
        return;
    }
}

// Children of one tree level, drawn without replacement (the law kernels/accept.cu's walk and
// src/acceptance/siblings.rs assume): parent i draws up to `width` distinct tokens from row
// rows[i] of probs [probs_rows, vocab], child j by inverse CDF at uniforms[i * width + j] over
// the row without the children drawn before it (`sample_inverse_cdf` with those excluded), into
// tokens[first[i] + j] (skipped beyond tokens_len). Once the remaining mass is zero (the
// support is exhausted, or the row is NaN) the rest are NO_TOKEN; a row index beyond probs gives
// NO_TOKEN children. At most ACCEPT_THREADS children per parent (larger widths are clamped).
// CPU twin, bit for bit: src/backend/cpu/children.rs.
// Launch geometry: grid = (parents), block = (ACCEPT_THREADS).
extern "C" __global__ void sample_children(const float* probs, int probs_rows, int vocab, const unsigned int* rows,
                                           const unsigned int* first, const float* uniforms, int width, int tokens_len,
                                           unsigned int* tokens) {
    __shared__ float partial[ACCEPT_THREADS];
    __shared__ unsigned int drawn[ACCEPT_THREADS];
    const unsigned int row = rows[blockIdx.x];
    const size_t base = first[blockIdx.x];
    const int n = min(width, ACCEPT_THREADS);
    const float* w = probs + (size_t)row * vocab;
    bool exhausted = row >= (unsigned int)probs_rows;
    for (int j = 0; j < n; ++j) {
        int token = -1;
        if (!exhausted) {
            token = sample_inverse_cdf(w, vocab, drawn, j, uniforms[(size_t)blockIdx.x * width + j], -1, partial);
        }
        exhausted = token < 0;
        const unsigned int out = exhausted ? NO_TOKEN : (unsigned int)token;
        if (threadIdx.x == 0) {
            drawn[j] = out;
            if (base + j < (size_t)tokens_len) {
                tokens[base + j] = out;
            }
        }
        __syncthreads();
    }
}
