// Fused verification of a whole draft block (chain or tree) for the whole batch: one launch per
// verification step; and the drawing of a tree level's children (`sample_children`, at the end),
// which shares its inverse-CDF draw. CPU twins, bit for bit: src/backend/cpu/accept.rs and
// src/backend/cpu/children.rs, over src/backend/cpu/block_cdf.rs (the ownership, reduction tree
// and draw below).
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
// pre-drawn uniforms u_accept[b, n] (trying node n) and u_sample[b] (the final token), by the
// inverse CDF below.
//
// Launch geometry: grid = (batch), block = (ACCEPT_THREADS = 256: 8 warps). One block per
// sequence, every thread working on every vocabulary pass; `work` is scratch of
// [batch, 3, vocab] floats (two residual buffers and the draft distribution without the tried
// siblings, per sequence).
//
// Ownership (coalesced): thread t owns the groups of GROUP = 4 consecutive elements starting at
// 4t + 1024k, k = 0, 1, ... (the last group cut at vocab); a warp reads 512 consecutive bytes per
// step. A row is read with 128-bit loads (float4) when vocab % 4 == 0 and the row is 16-byte
// aligned, else one element at a time; ownership and order are defined on indices, so both paths
// give the same bits. A thread's order is its groups by k, each group in index order.
//
// Reduction tree (fixed, so the twin reproduces every sum bit for bit):
//  1. lane sum: each thread adds its positive weights serially in its order, from +0 (NaN and
//     non-positive weights, and the excluded tokens of a draw without replacement, add nothing);
//  2. warp scan: the 32 lane sums of a warp, inclusive Hillis-Steele scan by __shfl_up_sync at
//     offsets 1, 2, 4, 8, 16 (lane l >= offset: x = x[l - offset] + x); the warp total is lane
//     31's inclusive value, so a warp's totals and its scan agree exactly; a lane's exclusive
//     prefix is the inclusive value of lane l - 1 (0 for lane 0);
//  3. block total: the 8 warp totals added serially in warp order from +0, by every thread
//     (from shared memory); the running value before warp w is its prefix.
// Residuals and q without a sibling are normalised by that total.
//
// Inverse CDF at u in [0, 1) (`inverse_cdf`): target = u * total; the first warp with mass whose
// running total (prefix + warp total) exceeds target; in it the first lane with mass whose
// (warp prefix + inclusive scan) exceeds target (__ballot_sync, __ffs); in that lane a serial
// scan of its own elements from (warp prefix + exclusive prefix): the first element whose running
// sum exceeds target, else the lane's last positive element. Fallbacks when rounding puts the
// target past the last positive mass (u -> 1, or the scan's tree sums and a lane's serial sum
// rounding apart): no warp crosses -> the last warp with mass; no lane of the warp crosses -> its
// last lane with mass; both take that lane's last positive element. No mass at all -> `empty`.
// The CDF runs in ownership order (warps, lanes, each lane's order), not index order (the same
// for vocab <= 1024): it is still an exact inverse-CDF draw of the same law, the weights being
// merely listed in another order (tests/gpu_kernels.rs checks the law with a chi-square test).
// Everything that decides a token (sums, scans, products, quotients) uses the explicitly rounded
// intrinsics (__fadd_rn, __fmul_rn, __fdiv_rn, ...), which the compiler never fuses into FMAs, so
// the emulator, a GPU and the twin agree bit for bit.
#include "common.cuh"

constexpr int GROUP = 4;  // elements per 128-bit load
constexpr int ACCEPT_WARPS = ACCEPT_THREADS / WARP;
constexpr int OWN_STRIDE = GROUP * ACCEPT_THREADS;  // between a thread's groups
static_assert(ACCEPT_THREADS % WARP == 0 && ACCEPT_THREADS <= 1024, "ACCEPT_THREADS: whole warps, one block");

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

// Whether a row of vocab floats at w can be read and written with 128-bit accesses.
__device__ __forceinline__ bool vectorisable(const float* w, int vocab) {
    return vocab % GROUP == 0 && reinterpret_cast<size_t>(w) % 16 == 0;
}

// Elements [g, g + GROUP) of w into v (0 past vocab): one 128-bit load when vec, else one by one.
__device__ __forceinline__ void load_group(const float* w, int g, int vocab, bool vec, float* v) {
    if (vec) {
        const float4 x = *reinterpret_cast<const float4*>(w + g);
        v[0] = x.x;
        v[1] = x.y;
        v[2] = x.z;
        v[3] = x.w;
    } else {
#pragma unroll
        for (int i = 0; i < GROUP; ++i) {
            v[i] = g + i < vocab ? w[g + i] : 0.0f;
        }
    }
}

// v into elements [g, g + GROUP) of w (those below vocab): one 128-bit store when vec.
__device__ __forceinline__ void store_group(float* w, int g, int vocab, bool vec, const float* v) {
    if (vec) {
        *reinterpret_cast<float4*>(w + g) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
#pragma unroll
        for (int i = 0; i < GROUP; ++i) {
            if (g + i < vocab) {
                w[g + i] = v[i];
            }
        }
    }
}

// Whether weight v of token y counts: positive (not NaN) and y not one of the n tokens of
// `drawn` (siblings drawn before).
__device__ __forceinline__ bool counts(float v, int y, const unsigned int* drawn, int n) {
    if (!(v > 0.0f)) {
        return false;
    }
    for (int k = 0; k < n; ++k) {
        if (drawn[k] == (unsigned int)y) {
            return false;
        }
    }
    return true;
}

// sum plus the weights that count of group v (elements g, g + 1, ...), in index order.
__device__ __forceinline__ float add_group(float sum, const float* v, int g, const unsigned int* drawn, int n) {
#pragma unroll
    for (int i = 0; i < GROUP; ++i) {
        if (counts(v[i], g + i, drawn, n)) {
            sum = __fadd_rn(sum, v[i]);
        }
    }
    return sum;
}

// Step 1: this thread's serial sum of the weights of w that count, in its order.
__device__ float lane_sum(const float* w, int vocab, const unsigned int* drawn, int n) {
    const bool vec = vectorisable(w, vocab);
    float sum = 0.0f;
    for (int g = GROUP * (int)threadIdx.x; g < vocab; g += OWN_STRIDE) {
        float v[GROUP];
        load_group(w, g, vocab, vec, v);
        sum = add_group(sum, v, g, drawn, n);
    }
    return sum;
}

// This thread's first element (in its order) whose running sum of the weights that count, from
// acc, exceeds target; else its last element that counts; else -1.
__device__ int lane_scan(const float* w, int vocab, const unsigned int* drawn, int n, float acc, float target) {
    const bool vec = vectorisable(w, vocab);
    int last = -1;
    for (int g = GROUP * (int)threadIdx.x; g < vocab; g += OWN_STRIDE) {
        float v[GROUP];
        load_group(w, g, vocab, vec, v);
        for (int i = 0; i < GROUP; ++i) {
            if (counts(v[i], g + i, drawn, n)) {
                acc = __fadd_rn(acc, v[i]);
                last = g + i;
                if (target < acc) {
                    return last;
                }
            }
        }
    }
    return last;
}

// Steps 2 and 3 for the lane sums `sum` of the whole block: this lane's inclusive warp scan and
// the block total (identical in every thread); the warp totals are left in warp_totals. Contains
// one barrier; the caller passes another before the next block_scan overwrites warp_totals.
struct BlockScan {
    float inclusive;
    float total;
};
__device__ BlockScan block_scan(float sum, float* warp_totals) {
    const int lane = threadIdx.x % WARP;
    float inclusive = sum;
#pragma unroll
    for (int offset = 1; offset < WARP; offset *= 2) {
        const float up = __shfl_up_sync(FULL_MASK, inclusive, offset);
        if (lane >= offset) {
            inclusive = __fadd_rn(up, inclusive);
        }
    }
    if (lane == WARP - 1) {
        warp_totals[threadIdx.x / WARP] = inclusive;
    }
    __syncthreads();
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < ACCEPT_WARPS; ++w) {
        total = __fadd_rn(total, warp_totals[w]);
    }
    return {inclusive, total};
}

// Draw an index with probability proportional to the weights of w that count (without the n
// tokens of `drawn`) by inverse CDF at u in [0, 1), as described at the top; `empty` when none
// counts. Every thread of the block calls it and gets the same index; ends with a barrier.
__device__ int inverse_cdf(const float* w, int vocab, const unsigned int* drawn, int n, float u, int empty, float* warp_totals) {
    __shared__ int choice;
    const float sum = lane_sum(w, vocab, drawn, n);
    const BlockScan scan = block_scan(sum, warp_totals);
    const float target = __fmul_rn(u, scan.total);
    // The warp: every thread walks the 8 warp totals the way block_scan added them.
    float running = 0.0f;
    float prefix = 0.0f;
    int warp = -1;
    int last_warp = -1;
    for (int i = 0; i < ACCEPT_WARPS; ++i) {
        const float next = __fadd_rn(running, warp_totals[i]);
        if (warp_totals[i] > 0.0f) {
            last_warp = i;
            if (warp < 0 && target < next) {
                warp = i;
                prefix = running;
            }
        }
        running = next;
    }
    const bool crossed = warp >= 0;
    if (!crossed) {
        warp = last_warp;
    }
    if (warp < 0) {
        if (threadIdx.x == 0) {
            choice = empty;
        }
    } else if ((int)threadIdx.x / WARP == warp) {  // one whole warp
        const int lane = threadIdx.x % WARP;
        const float up = __shfl_up_sync(FULL_MASK, scan.inclusive, 1);
        const float exclusive = lane == 0 ? 0.0f : up;
        const bool mass = sum > 0.0f;
        const unsigned int with_mass = __ballot_sync(FULL_MASK, mass);
        const unsigned int crossing = __ballot_sync(FULL_MASK, crossed && mass && target < __fadd_rn(prefix, scan.inclusive));
        const int owner = crossing != 0 ? __ffs((int)crossing) - 1 : WARP - 1 - __clz((int)with_mass);
        if (lane == owner) {
            choice = crossing != 0 ? lane_scan(w, vocab, drawn, n, __fadd_rn(prefix, exclusive), target)
                                   : lane_scan(w, vocab, drawn, n, 0.0f, __uint_as_float(0x7f800000u));
        }
    }
    __syncthreads();
    return choice;
}

// The block total of dst from this thread's lane sum `sum` of it; when positive, dst divided by
// it (each thread its own elements, which it wrote). Returns the total; ends with a barrier.
__device__ float normalise(float* dst, int vocab, bool vec, float sum, float* warp_totals) {
    const float total = block_scan(sum, warp_totals).total;
    if (total > 0.0f) {
        for (int g = GROUP * (int)threadIdx.x; g < vocab; g += OWN_STRIDE) {
            float v[GROUP];
            load_group(dst, g, vocab, vec, v);
#pragma unroll
            for (int i = 0; i < GROUP; ++i) {
                v[i] = __fdiv_rn(v[i], total);
            }
            store_group(dst, g, vocab, vec, v);
        }
    }
    __syncthreads();
    return total;
}

// dst = [cur - emitted]+ with emitted = min(q, omega cur) (omega >= 0) or q (omega < 0, the
// plain multi-draft residual), normalised in place when it has mass. Returns its mass (the block
// total of dst); ends with a barrier.
__device__ float residual(const float* cur, const float* q, float omega, int vocab, float* dst, float* warp_totals) {
    const bool vec = vectorisable(cur, vocab) && vectorisable(q, vocab) && vectorisable(dst, vocab);
    float sum = 0.0f;
    for (int g = GROUP * (int)threadIdx.x; g < vocab; g += OWN_STRIDE) {
        float c[GROUP];
        float r[GROUP];
        load_group(cur, g, vocab, vec, c);
        load_group(q, g, vocab, vec, r);
#pragma unroll
        for (int i = 0; i < GROUP; ++i) {
            const float emitted = omega >= 0.0f ? fminf(r[i], __fmul_rn(omega, c[i])) : r[i];
            r[i] = fmaxf(__fsub_rn(c[i], emitted), 0.0f);
        }
        sum = add_group(sum, r, g, nullptr, 0);
        store_group(dst, g, vocab, vec, r);
    }
    return normalise(dst, vocab, vec, sum, warp_totals);
}

// dst = q without token x, renormalised (dst may be q). Ends with a barrier.
__device__ void drop_token(const float* q, unsigned int x, int vocab, float* dst, float* warp_totals) {
    const bool vec = vectorisable(q, vocab) && vectorisable(dst, vocab);
    float sum = 0.0f;
    for (int g = GROUP * (int)threadIdx.x; g < vocab; g += OWN_STRIDE) {
        float v[GROUP];
        load_group(q, g, vocab, vec, v);
        sum = add_group(sum, v, g, &x, 1);  // the lane sum of dst: x has no weight there
#pragma unroll
        for (int i = 0; i < GROUP; ++i) {
            if ((unsigned int)(g + i) == x) {
                v[i] = 0.0f;
            }
        }
        store_group(dst, g, vocab, vec, v);
    }
    normalise(dst, vocab, vec, sum, warp_totals);
}

extern "C" __global__ void accept_block(const float* p, const float* q, const unsigned int* tokens, const int* parents,
                                        const float* omega, const float* u_accept, const float* u_sample, int nodes,
                                        int vocab, float* work, float* accept_prob, int* path,
                                        unsigned int* accepted_len, unsigned int* next_token) {
    __shared__ float warp_totals[ACCEPT_WARPS];
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
            if (residual(cur, first ? q_row : q_left, first ? level_omega : -1.0f, vocab, dst, warp_totals) > 0.0f) {
                cur = dst;
                spare ^= 1;
            }
            drop_token(first ? q_row : q_left, x, vocab, q_left, warp_totals);
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
        const int token = inverse_cdf(cur, vocab, nullptr, 0, u_sample[b], 0, warp_totals);
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
// the row without the children drawn before it (`inverse_cdf` with those excluded), into
// tokens[first[i] + j] (skipped beyond tokens_len). Once the remaining mass is zero (the
// support is exhausted, or the row is NaN) the rest are NO_TOKEN; a row index beyond probs gives
// NO_TOKEN children. At most ACCEPT_THREADS children per parent (larger widths are clamped).
// CPU twin, bit for bit: src/backend/cpu/children.rs.
// Launch geometry: grid = (parents), block = (ACCEPT_THREADS).
extern "C" __global__ void sample_children(const float* probs, int probs_rows, int vocab, const unsigned int* rows,
                                           const unsigned int* first, const float* uniforms, int width, int tokens_len,
                                           unsigned int* tokens) {
    __shared__ float warp_totals[ACCEPT_WARPS];
    __shared__ unsigned int drawn[ACCEPT_THREADS];
    const unsigned int row = rows[blockIdx.x];
    const size_t base = first[blockIdx.x];
    const int n = min(width, ACCEPT_THREADS);
    const float* w = probs + (size_t)row * vocab;
    bool exhausted = row >= (unsigned int)probs_rows;
    for (int j = 0; j < n; ++j) {
        int token = -1;
        if (!exhausted) {
            token = inverse_cdf(w, vocab, drawn, j, uniforms[(size_t)blockIdx.x * width + j], -1, warp_totals);
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
