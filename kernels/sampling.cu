// Logits processing on the device: CFG mix, temperature, top-k, softmax, top-p for every row of a
// draft block and batch in one launch; the result is the distribution tokens are drawn from and
// that speculative verification compares (kernels/accept.cu takes it as p and q). It computes
// what `SamplingParams::distribution` (src/sampling/logits.rs) computes, in LlamaGen's order.
// Exact CPU twin, bit for bit on every device: src/backend/cpu/sampling.rs.
//
// Output row r reads the conditional logits row cond = rows[r] and, with CFG (use_cfg != 0),
// the unconditional row uncond = rows[rows_out + r] of logits [rows_in, vocab] (index arrays, so
// the CFG pairs of a batched verification pass are mapped without copies), and writes row
// dst[r] of probs and nonfinite (so a draft block's slots are filled straight from the rows of
// the passes that computed them):
//  1. z = uncond + (cond - uncond) * cfg_scale with CFG, else cond. A non-finite z, or a
//     non-finite z / temperature, sets nonfinite[r] = 1 and fills the row with NaN (the host
//     returns Error::NonFiniteLogits for the first; for the second it would compute NaNs).
//  2. temperature == 0: the one-hot arg-max of z (first index on ties). Done.
//  3. x = z / temperature.
//  4. top-k (0 < top_k < vocab): the threshold T is the top_k-th largest x in f32 total order
//     (the host's `sorted[top_k - 1]`), found by a radix select over the order-preserving u32
//     keys of x: 4 passes of 8 bits, each a 256-bin shared-memory histogram (integer atomics, so
//     the counts do not depend on the order of the additions) of the elements that match the
//     digits chosen so far. Every x < T (IEEE comparison, as the host's) becomes -inf; ties at T
//     are kept.
//  5. softmax: m = max x, e = exp(x - m) in f64 from `exp_nonpositive` below (computed twice,
//     for the sum and for the division, rather than kept in the f32 row), S = sum e in f64,
//     p = (float)(e / S) (the host: the same in f64 throughout, with the library exp).
//  6. top-p (top_p < 1): the host sorts p descending and keeps the shortest prefix whose running
//     f64 sum exceeds top_p. The kept set is {p > v} plus the first `need` tokens with p == v,
//     where v is the largest value whose mass M(v) = sum{p : p >= v} exceeds top_p. v is found
//     by bisection on the bits of p (p >= 0, so the bits order like the values; 30 passes, each
//     one f64 block sum); need is the count of ties at v that the running sum from
//     M(> v) takes to exceed top_p. Ties at v straddling the cut (need < ties) are kept in index
//     order (a stable sort's order; the host's sort_unstable_by leaves it unspecified): one
//     ballot per stripe of SAMPLING_THREADS elements ranks them. No sort. If even the whole row
//     does not exceed top_p (rounding), everything is kept, as on the host. The kept mass is
//     renormalised in f64: p = (float)(p / sum kept).
//
// Determinism: every sum is in a fixed order that the twin replays (per thread over its own
// elements in index order, a butterfly over each warp, the warp totals in warp order), and every
// f32 operation that decides a value is an explicitly rounded intrinsic (__fadd_rn, __fmul_rn,
// __fdiv_rn, __fmaf_rn) or a conversion, which neither nvcc nor NVRTC fuses or approximates. The
// exponential is this file's own polynomial (exp_nonpositive) instead of expf, whose last bits
// differ between the GPU, glibc and Rust. So the twin gives the same bits on the emulator and on
// a GPU (ptxas sees only .rn adds, multiplies, fmas, divisions and conversions). Against the
// host's f64 softmax the difference is the exponential's error (below 2e-7 relative, down to the
// smallest subnormal result), so max |p_device - p_host| < 1e-6 (measured: 6e-8); kept sets are
// identical except when a running sum lands within rounding (~1e-7) of top_p, and for the order
// among ties at the top-p cut (above; identical to a host that sorts stably).
//
// Launch geometry: grid = (rows_out), block = (SAMPLING_THREADS). One block per output row;
// thread t owns the elements t, t + SAMPLING_THREADS, ... of the row (coalesced). The output row
// is the scratch space for z, x and p, and each pass reads back only the thread's own elements.
// Global traffic: one read of the logits (two with CFG) and one write of the row, plus re-reads
// of the row, which stay in L1/L2 (64 KiB at vocab 16384): 3 without top-k/top-p, +4 for top-k,
// +33 for top-p (31 mass sums, the tie count, the kept mass), each followed by one block
// reduction (2 barriers); a tie group straddling the top-p cut adds one ballot and 2 barriers per
// stripe of SAMPLING_THREADS elements. Top-p therefore costs about 33 passes over the row and
// 66 barriers per row, against 4 passes and 6 barriers for plain temperature sampling. Counting
// `need` is a serial f64 loop (in every thread) over the ties at v: one step without ties,
// up to vocab steps for a constant row.
#include "common.cuh"

#define SAMPLING_WARPS (SAMPLING_THREADS / WARP)
static_assert(SAMPLING_THREADS % WARP == 0 && SAMPLING_THREADS <= 1024, "SAMPLING_THREADS must be a multiple of 32, at most 1024");

// exp(x) for x <= 0 or -inf, with no library function: x = j ln2 + f, |f| <= ln2 / 2, by
// Cody-Waite reduction with a two-part ln2; exp(f) by a degree-7 polynomial in f32 (N. Juffa's
// expf coefficients, max relative error 1.73e-7); then 2^j * exp(f) exactly, in f64, so that
// values far below f32's normal range keep their 24 bits until the final division by the sum
// rounds them once (as the host's f64 softmax does). 0 below -104, where the host's
// probability rounds to 0 in f32 (e^-104 / S < 2^-150 for S >= 1).
__device__ __forceinline__ double exp_nonpositive(float x) {
    if (!(x > -104.0f)) {
        return 0.0;
    }
    const float magic = __uint_as_float(0x4b400000u);  // 1.5 * 2^23: adding it rounds to an integer
    const float j = __fsub_rn(__fmaf_rn(__uint_as_float(0x3fb8aa3bu), x, magic), magic);  // rint(x log2 e)
    float f = __fmaf_rn(j, __uint_as_float(0xbf317200u), x);  // - j ln2_hi
    f = __fmaf_rn(j, __uint_as_float(0xb5bfbe8eu), f);        // - j ln2_lo
    float r = __uint_as_float(0x3ab4a000u);
    r = __fmaf_rn(r, f, __uint_as_float(0x3c092f6eu));
    r = __fmaf_rn(r, f, __uint_as_float(0x3d2aadadu));
    r = __fmaf_rn(r, f, __uint_as_float(0x3e2aaa28u));
    r = __fmaf_rn(r, f, __uint_as_float(0x3efffffbu));
    r = __fmaf_rn(r, f, 1.0f);
    r = __fmaf_rn(r, f, 1.0f);
    const long long i = (long long)j;  // in [-150, 0]
    return __dmul_rn((double)r, __longlong_as_double((i + 1023) << 52));
}

__device__ __forceinline__ bool is_finite_f32(float v) {
    return (__float_as_uint(v) & 0x7f800000u) != 0x7f800000u;
}

// An unsigned key that orders like f32 total order (-NaN < -inf < ... < -0 < +0 < ... < +NaN).
__device__ __forceinline__ unsigned int order_key(float v) {
    const unsigned int b = __float_as_uint(v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float key_value(unsigned int key) {
    return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

// Sum over the block in the twin's fixed order: a butterfly over each warp's lanes (xor offsets
// 16, 8, 4, 2, 1; both partners compute the same sum), then the warp totals in warp order.
// Every thread gets the same value. Contains two barriers: call it from every thread.
__device__ double block_sum_f64(double v) {
    __shared__ double warp_total[SAMPLING_WARPS];
    for (int offset = WARP / 2; offset > 0; offset /= 2) {
        v = __dadd_rn(v, __shfl_xor_sync(FULL_MASK, v, offset));
    }
    if (threadIdx.x % WARP == 0) {
        warp_total[threadIdx.x / WARP] = v;
    }
    __syncthreads();
    double total = 0.0;
    for (int w = 0; w < SAMPLING_WARPS; ++w) {
        total = __dadd_rn(total, warp_total[w]);
    }
    __syncthreads();
    return total;
}

// Maximum over the block (order-independent); every thread gets it.
__device__ float block_max(float v) {
    __shared__ float warp_max[SAMPLING_WARPS];
    for (int offset = WARP / 2; offset > 0; offset /= 2) {
        v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, offset));
    }
    if (threadIdx.x % WARP == 0) {
        warp_max[threadIdx.x / WARP] = v;
    }
    __syncthreads();
    float m = warp_max[0];
    for (int w = 1; w < SAMPLING_WARPS; ++w) {
        m = fmaxf(m, warp_max[w]);
    }
    __syncthreads();
    return m;
}

// Integer sum over the block (exact); every thread gets it.
__device__ unsigned int block_count(unsigned int v) {
    __shared__ unsigned int warp_count[SAMPLING_WARPS];
    for (int offset = WARP / 2; offset > 0; offset /= 2) {
        v += __shfl_xor_sync(FULL_MASK, v, offset);
    }
    if (threadIdx.x % WARP == 0) {
        warp_count[threadIdx.x / WARP] = v;
    }
    __syncthreads();
    unsigned int total = 0;
    for (int w = 0; w < SAMPLING_WARPS; ++w) {
        total += warp_count[w];
    }
    __syncthreads();
    return total;
}

// Whether (value b, index ib) beats (a, ia) for the arg-max: larger, or equal and earlier.
__device__ __forceinline__ bool beats(float b, int ib, float a, int ia) {
    return b > a || (b == a && ib < ia);
}

// First index of the largest of z[0..vocab) (all finite); every thread gets it.
__device__ int block_argmax(const float* z, int vocab) {
    __shared__ float warp_value[SAMPLING_WARPS];
    __shared__ int warp_index[SAMPLING_WARPS];
    float best = neg_inf();
    int index = vocab;  // no element yet
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        if (z[i] > best) {
            best = z[i];
            index = i;
        }
    }
    for (int offset = WARP / 2; offset > 0; offset /= 2) {
        const float other = __shfl_xor_sync(FULL_MASK, best, offset);
        const int other_index = __shfl_xor_sync(FULL_MASK, index, offset);
        if (beats(other, other_index, best, index)) {
            best = other;
            index = other_index;
        }
    }
    if (threadIdx.x % WARP == 0) {
        warp_value[threadIdx.x / WARP] = best;
        warp_index[threadIdx.x / WARP] = index;
    }
    __syncthreads();
    best = warp_value[0];
    index = warp_index[0];
    for (int w = 1; w < SAMPLING_WARPS; ++w) {
        if (beats(warp_value[w], warp_index[w], best, index)) {
            best = warp_value[w];
            index = warp_index[w];
        }
    }
    __syncthreads();
    return index;
}

// The top_k-th largest of x[0..vocab) in total order (1 <= top_k <= vocab), by radix select on
// order_key; every thread gets it.
__device__ float top_k_threshold(const float* x, int vocab, int top_k) {
    __shared__ unsigned int hist[256];
    __shared__ unsigned int chosen_prefix;
    __shared__ unsigned int chosen_rank;
    unsigned int prefix = 0;  // digits chosen so far
    unsigned int mask = 0;    // which bits of the key they cover
    unsigned int rank = (unsigned int)top_k;  // rank of the target among the keys matching prefix
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int d = threadIdx.x; d < 256; d += blockDim.x) {
            hist[d] = 0;
        }
        __syncthreads();
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            const unsigned int key = order_key(x[i]);
            if ((key & mask) == prefix) {
                atomicAdd(&hist[(key >> shift) & 255u], 1u);
            }
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            // The digit, from the top, at which the count of larger-or-equal keys reaches rank.
            unsigned int above = 0;
            int d = 255;
            while (d > 0 && above + hist[d] < rank) {
                above += hist[d];
                --d;
            }
            chosen_prefix = prefix | ((unsigned int)d << shift);
            chosen_rank = rank - above;
        }
        __syncthreads();
        prefix = chosen_prefix;
        rank = chosen_rank;
        mask |= 255u << shift;
    }
    return key_value(prefix);
}

// Sum of this thread's p >= the value with bits `cut`, over the block (the twin's fixed order).
__device__ double mass_at_least(const float* p, int vocab, unsigned int cut) {
    double sum = 0.0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        if (__float_as_uint(p[i]) >= cut) {
            sum = __dadd_rn(sum, (double)p[i]);
        }
    }
    return block_sum_f64(sum);
}

// Nucleus filtering of the normalised row p (values >= +0), in place; see the header, step 6.
__device__ void apply_top_p(float* p, int vocab, float top_p) {
    __shared__ unsigned int stripe_ties[SAMPLING_WARPS];
    const double limit = (double)top_p;
    if (!(mass_at_least(p, vocab, 0u) > limit)) {
        return;  // the whole row does not exceed top_p: keep everything
    }
    // Invariant: M(lo) > top_p >= M(hi) = mass_hi. The bits of a probability are at most those
    // of 1.0f.
    unsigned int lo = 0u;
    unsigned int hi = 0x3f800001u;
    double mass_hi = 0.0;
    while (hi - lo > 1u) {
        const unsigned int mid = lo + (hi - lo) / 2u;
        const double m = mass_at_least(p, vocab, mid);
        if (m > limit) {
            lo = mid;
        } else {
            hi = mid;
            mass_hi = m;
        }
    }
    // lo is the bits of v (M(lo) > M(lo + 1): lo is a value of the row); mass_hi = M(> v).
    unsigned int mine = 0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        mine += __float_as_uint(p[i]) == lo ? 1u : 0u;
    }
    const unsigned int ties = block_count(mine);
    const double v = (double)__uint_as_float(lo);
    unsigned int need = ties;
    double running = mass_hi;
    for (unsigned int j = 1; j <= ties; ++j) {
        running = __dadd_rn(running, v);
        if (running > limit) {
            need = j;
            break;
        }
    }
    if (need < ties) {
        // Keep the first `need` ties in index order: rank them one stripe of the row at a time.
        const int lane = threadIdx.x % WARP;
        const int warp = threadIdx.x / WARP;
        unsigned int before = 0;  // ties in the earlier stripes
        for (int base = 0; base < vocab; base += blockDim.x) {
            const int i = base + threadIdx.x;
            const bool tie = i < vocab && __float_as_uint(p[i]) == lo;
            const unsigned int ballot = __ballot_sync(FULL_MASK, tie);
            if (lane == 0) {
                stripe_ties[warp] = __popc(ballot);
            }
            __syncthreads();
            unsigned int rank = before + __popc(ballot & ((1u << lane) - 1u));
            for (int w = 0; w < SAMPLING_WARPS; ++w) {
                rank += w < warp ? stripe_ties[w] : 0u;
                before += stripe_ties[w];
            }
            if (tie && rank >= need) {
                p[i] = 0.0f;  // below v from here on
            }
            __syncthreads();
        }
    }
    double kept = 0.0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        if (__float_as_uint(p[i]) >= lo) {
            kept = __dadd_rn(kept, (double)p[i]);
        } else {
            p[i] = 0.0f;
        }
    }
    const double total = block_sum_f64(kept);
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        p[i] = (float)((double)p[i] / total);
    }
}

// probs[probs_rows, vocab] and nonfinite[probs_rows] from logits[rows_in, vocab] (see the
// header): output row r is written to row dst[r] of both; a destination >= probs_rows is
// skipped. rows holds rows_out conditional row indices, then (use_cfg != 0) rows_out
// unconditional ones; a row index >= rows_in is not read: the row is filled with NaN and flagged
// 2. The caller guarantees temperature >= 0, 0 < top_p <= 1, top_k >= 0, and that probs does not
// overlap logits.
extern "C" __global__ void process_logits(const float* logits, int rows_in, const unsigned int* rows, int rows_out,
                                          int vocab, int use_cfg, float cfg_scale, float temperature, int top_k,
                                          float top_p, const unsigned int* dst, int probs_rows, float* probs,
                                          unsigned int* nonfinite) {
    const unsigned int r = dst[blockIdx.x];
    if (r >= (unsigned int)probs_rows) {
        return;
    }
    float* out = probs + (size_t)r * vocab;
    const unsigned int cond_row = rows[blockIdx.x];
    const unsigned int uncond_row = use_cfg ? rows[rows_out + blockIdx.x] : cond_row;
    if (cond_row >= (unsigned int)rows_in || uncond_row >= (unsigned int)rows_in) {
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            out[i] = __uint_as_float(0x7fc00000u);
        }
        if (threadIdx.x == 0) {
            nonfinite[r] = 2u;
        }
        return;
    }
    const float* cond = logits + (size_t)cond_row * vocab;
    const float* uncond = logits + (size_t)uncond_row * vocab;
    const bool greedy = temperature == 0.0f;

    // 1 and 3: mix, check, scale by the temperature.
    bool bad = false;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        float z = cond[i];
        if (use_cfg) {
            const float u = uncond[i];
            z = __fadd_rn(u, __fmul_rn(__fsub_rn(z, u), cfg_scale));
        }
        bad = bad || !is_finite_f32(z);
        if (!greedy) {
            z = __fdiv_rn(z, temperature);
            bad = bad || !is_finite_f32(z);
        }
        out[i] = z;
    }
    if (__syncthreads_or(bad)) {
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            out[i] = __uint_as_float(0x7fc00000u);
        }
        if (threadIdx.x == 0) {
            nonfinite[r] = 1u;
        }
        return;
    }
    if (threadIdx.x == 0) {
        nonfinite[r] = 0u;
    }

    // 2: greedy.
    if (greedy) {
        const int best = block_argmax(out, vocab);
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            out[i] = i == best ? 1.0f : 0.0f;
        }
        return;
    }

    // 4: top-k.
    if (top_k > 0 && top_k < vocab) {
        const float threshold = top_k_threshold(out, vocab, top_k);
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            if (out[i] < threshold) {
                out[i] = neg_inf();
            }
        }
    }

    // 5: softmax.
    float m = neg_inf();
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        m = fmaxf(m, out[i]);
    }
    m = block_max(m);
    double sum = 0.0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        sum = __dadd_rn(sum, exp_nonpositive(__fsub_rn(out[i], m)));
    }
    const double total = block_sum_f64(sum);
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        out[i] = (float)(exp_nonpositive(__fsub_rn(out[i], m)) / total);  // recomputed: f32 scratch would round it
    }

    // 6: top-p.
    if (top_p < 1.0f) {
        apply_top_p(out, vocab, top_p);
    }
}
