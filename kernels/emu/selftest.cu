// Self-test kernels of the CUDA-on-CPU emulator (kernels/emu). Valid CUDA: they compile with nvcc
// too, but they exist to check the emulator: its results, its shared-memory poisoning and its
// misuse detection. Each kernel documents its launch geometry and its expected outcome (result,
// or the launch failing with a message containing the quoted text). No system headers.

#define ST_FULL 0xffffffffu

__device__ __forceinline__ float st_warp_sum(float v) {
    for (int offset = 16; offset > 0; offset /= 2) {
        v += __shfl_xor_sync(ST_FULL, v, offset);
    }
    return v;
}

// Sum of x[blockIdx.x * n + i] over i < n, strided over the block's threads.
__device__ __forceinline__ float st_row_sum(const float* x, int n) {
    float v = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        v += x[(size_t)blockIdx.x * n + i];
    }
    return v;
}

// (a) common.cuh's block_sum with its first __syncthreads removed: warp 0 reads the other warps'
// partial sums before they are written.
// Launch: grid = (rows), block = (256). out[rows]: out[b] = sum of row b.
// Expected in the emulator: succeeds (rc 0) and every out[b] is NaN, deterministically: the
// scheduler runs thread 0 first and, after each completed warp rendezvous, the released lanes of
// that warp before any other thread, so warp 0 finishes its warp_sum, lane 0 writes partial[0]
// and warp 0 reads partial[1..7] while warps 1..7 have not run a single instruction yet; those
// slots hold the 0xFF poison written before every block, a NaN, and the NaN propagates to
// `total`. Under ThreadSanitizer: a data race report on partial[] between the write
// (`partial[warp] = v`) and the read (`partial[lane]`) lines below.
extern "C" __global__ void racy_block_sum(const float* x, int n, float* out) {
    __shared__ float partial[32];
    __shared__ float total;
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    float v = st_warp_sum(st_row_sum(x, n));
    if (lane == 0) {
        partial[warp] = v;
    }
    // (the __syncthreads() that belongs here is missing)
    if (warp == 0) {
        const int warps = blockDim.x / 32;
        float w = lane < warps ? partial[lane] : 0.0f;
        w = st_warp_sum(w);
        if (lane == 0) {
            total = w;
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        out[blockIdx.x] = total;
    }
}

// (b) The correct twin of (a). Launch: grid = (rows), block = (256) (any multiple of 32 up to
// 1024). Expected: rc 0, out[b] = sum of row b (exact for small integers); clean under TSAN.
extern "C" __global__ void block_sum_ok(const float* x, int n, float* out) {
    __shared__ float partial[32];
    __shared__ float total;
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    float v = st_warp_sum(st_row_sum(x, n));
    if (lane == 0) {
        partial[warp] = v;
    }
    __syncthreads();
    if (warp == 0) {
        const int warps = blockDim.x / 32;
        float w = lane < warps ? partial[lane] : 0.0f;
        w = st_warp_sum(w);
        if (lane == 0) {
            total = w;
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        out[blockIdx.x] = total;
    }
}

// (c) Divergent barrier: even threads wait at one __syncthreads, odd threads at another.
// Launch: grid = (1), block = (64). Expected: rc != 0, message containing "divergent barrier in
// block (0,0,0): thread (0,0,0) waits at __syncthreads at <path>selftest.cu:<even line> but
// thread (1,0,0) reached __syncthreads at <path>selftest.cu:<odd line>".
extern "C" __global__ void divergent_sync(int* out) {
    if (threadIdx.x % 2 == 0) {
        __syncthreads();  // even threads
    } else {
        __syncthreads();  // odd threads
    }
    out[threadIdx.x] = 1;
}

// (d) Early return before a barrier: threads >= n return, the others reach __syncthreads.
// Launch: grid = (1), block = (64), n = 40. Expected: rc != 0, message containing "thread
// (40,0,0) of block (0,0,0) returned while 40 threads wait at __syncthreads at
// <path>selftest.cu:<line>".
extern "C" __global__ void early_return(int n, float* out) {
    if ((int)threadIdx.x >= n) {
        return;
    }
    out[threadIdx.x] = 1.0f;
    __syncthreads();
    out[threadIdx.x] += out[(threadIdx.x + 1) % n];
}

// (e) A shuffle whose calling lane is not in its mask: lane 0 passes 0xfffffffe.
// Launch: grid = (1), block = (32). Expected: rc != 0, message containing "thread (0,0,0) (lane 0)
// of block (0,0,0) called __shfl_sync(mask 0xfffffffe) at <path>selftest.cu:<line> with a mask
// that does not include its own lane".
extern "C" __global__ void shfl_lane_not_in_mask(float* out) {
    const unsigned int mask = threadIdx.x == 0 ? 0xfffffffeu : ST_FULL;
    out[threadIdx.x] = __shfl_sync(mask, (float)threadIdx.x, 1);
}

// (f) Shuffles with disagreeing masks: lanes 0..15 pass the full mask, lanes 16..31 pass
// 0xffff0000. Launch: grid = (1), block = (32). Expected: rc != 0, message containing "lanes of
// warp 0 of block (0,0,0) disagree at a warp rendezvous: thread (16,0,0) (lane 16) called
// __shfl_xor_sync(mask 0xffff0000)" and "while thread (0,0,0) (lane 0) waits in
// __shfl_xor_sync(mask 0xffffffff)".
extern "C" __global__ void shfl_mask_mismatch(float* out) {
    const unsigned int mask = threadIdx.x < 16 ? ST_FULL : 0xffff0000u;
    out[threadIdx.x] = __shfl_xor_sync(mask, (float)threadIdx.x, 1);
}

// (g) Dynamic shared memory: each block reverses its n-element slice of `in` through
// extern __shared__, and records what its slot held before it wrote it.
// Launch: grid = (2), block = (n), shared_bytes = n * 4, n = 128 (any n <= 1024).
// Expected: rc 0; out[b * n + t] = in[b * n + n - 1 - t]; before[b * n + t] = 0xffffffff for
// both blocks (the buffer is poisoned before every block, so block 1 does not see block 0's data).
extern "C" __global__ void dynamic_shared_reverse(const float* in, int n, float* out, unsigned int* before) {
    extern __shared__ float buf[];
    const int t = threadIdx.x;
    const size_t base = (size_t)blockIdx.x * n;
    const unsigned int old = __float_as_uint(buf[t]);
    buf[t] = in[base + t];
    __syncthreads();
    out[base + t] = buf[n - 1 - t];
    before[base + t] = old;
}

// (h) Atomics from all threads of several blocks, on zero-initialised counters. With N = total
// threads (launch: grid = (4), block = (256), N = 1024) and g = the global thread index:
// Expected: rc 0; *fsum = 0.5 * N = 512.0f (exact), *isum = N (N - 1) / 2 = 523776,
// *umax = N - 1 = 1023, *imin = -(N - 1) = -1023, *ucount = N = 1024, *bits = 0xffffffff,
// *cas = N = 1024 (an atomicCAS increment loop), *exch = 0 (every thread atomicExch'es a 0).
extern "C" __global__ void atomics_test(float* fsum, int* isum, unsigned int* umax, int* imin, unsigned long long* ucount,
                                        unsigned int* bits, int* cas, unsigned int* exch) {
    const unsigned int g = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(fsum, 0.5f);
    atomicAdd(isum, (int)g);
    atomicMax(umax, g);
    atomicMin(imin, -(int)g);
    atomicAdd(ucount, 1ull);
    atomicOr(bits, 1u << (g % 32));
    int old = atomicAdd(cas, 0);
    while (true) {
        const int seen = atomicCAS(cas, old, old + 1);
        if (seen == old) {
            break;
        }
        old = seen;
    }
    atomicExch(exch, 0u);
}

// (i) Warp intrinsics. Launch: grid = (1), block = (64) (two warps). out has 16 * 64 ints;
// row k (out[k * 64 + t]) holds, for thread t with lane l = t % 32:
//   k=0  __ballot_sync(full, l % 3 == 0)           = 0x49249249 (as int: 1227133513)
//   k=1  __any_sync(full, l == 5)                   = 1
//   k=2  __all_sync(full, l < 31)                   = 0
//   k=3  __shfl_up_sync(full, 10 l, 1)              = l == 0 ? 0 : 10 (l - 1)
//   k=4  __shfl_down_sync(full, 10 l, 2)            = l >= 30 ? 10 l : 10 (l + 2)
//   k=5  __shfl_xor_sync(full, l, 5)                = l ^ 5
//   k=6  __shfl_sync(full, 7 l, 3)                  = 21
//   k=7  __shfl_sync(full, l, l + 1, 8)             = (l & ~7) | ((l + 1) & 7)
//   k=8  __shfl_down_sync(full, l, 1, 16)           = l % 16 == 15 ? l : l + 1
//   k=9  __activemask() inside if (l < 10) / else   = l < 10 ? 0x3ff : (int)0xfffffc00 (-1024)
//   k=10 s[t] = 3 t; __syncwarp(); s[t ^ 1]         = 3 (t ^ 1)
//   k=11 __syncthreads_count(t % 4 == 0)            = 16
//   k=12 __syncthreads_and(t < 63) * 10 + __syncthreads_or(t == 63) = 1
//   k=13 (int)(2 * __shfl_xor_sync(full, 0.5 * l (double), 1)) = l ^ 1
//   k=14 (int)(__shfl_sync(full, (long long)l << 40, 31) >> 40)  = 31
//   k=15 __ballot_sync(0x0000ffff, 1) for l < 16, else __ballot_sync(0xffff0000, l & 1)
//                                                   = l < 16 ? 0xffff : (int)0xaaaa0000 (-1431699456)
extern "C" __global__ void warp_intrinsics(int* out) {
    __shared__ int s[64];
    const int t = threadIdx.x;
    const int l = t % 32;
    int* o = out + t;
    o[0 * 64] = (int)__ballot_sync(ST_FULL, l % 3 == 0);
    o[1 * 64] = __any_sync(ST_FULL, l == 5);
    o[2 * 64] = __all_sync(ST_FULL, l < 31);
    o[3 * 64] = __shfl_up_sync(ST_FULL, 10 * l, 1);
    o[4 * 64] = __shfl_down_sync(ST_FULL, 10 * l, 2);
    o[5 * 64] = __shfl_xor_sync(ST_FULL, l, 5);
    o[6 * 64] = __shfl_sync(ST_FULL, 7 * l, 3);
    o[7 * 64] = __shfl_sync(ST_FULL, l, l + 1, 8);
    o[8 * 64] = __shfl_down_sync(ST_FULL, l, 1, 16);
    unsigned int active;
    if (l < 10) {
        active = __activemask();
    } else {
        active = __activemask();
    }
    o[9 * 64] = (int)active;
    __syncwarp();
    s[t] = 3 * t;
    __syncwarp();
    o[10 * 64] = s[t ^ 1];
    o[11 * 64] = __syncthreads_count(t % 4 == 0);
    const int all_below = __syncthreads_and(t < 63);
    const int any_last = __syncthreads_or(t == 63);
    o[12 * 64] = all_below * 10 + any_last;
    o[13 * 64] = (int)(2.0 * __shfl_xor_sync(ST_FULL, 0.5 * (double)l, 1));
    o[14 * 64] = (int)(__shfl_sync(ST_FULL, (long long)l << 40, 31) >> 40);
    if (l < 16) {
        o[15 * 64] = (int)__ballot_sync(0x0000ffffu, 1);
    } else {
        o[15 * 64] = (int)__ballot_sync(0xffff0000u, l & 1);
    }
}

// (j) f32 -> bf16 / half conversions of special values (inputs are built in, as bit patterns).
// Launch: grid = (1), block = (32). Outputs have ST_CONV_N = 20 entries; threads >= 20 do nothing.
// bf[i], hf[i]: the 16-bit results; bf_back[i], hf_back[i]: those converted back to f32.
// The expected bits are listed in kernels/emu/README.md (table "selftest conversions").
#define ST_CONV_N 20
extern "C" __global__ void convert_special(unsigned short* bf, unsigned short* hf, float* bf_back, float* hf_back) {
    const unsigned int inputs[ST_CONV_N] = {
        0x00000000u,  //  0: +0
        0x80000000u,  //  1: -0
        0x3f800000u,  //  2: 1
        0xc0200000u,  //  3: -2.5
        0x477fe000u,  //  4: 65504 (largest half)
        0x477ff000u,  //  5: 65520 (half: ties away from 65504 to infinity)
        0x477fefffu,  //  6: just below 65520 (half: 65504)
        0x33800000u,  //  7: 2^-24 (smallest half subnormal)
        0x33000000u,  //  8: 2^-25 (half: tie to even -> +0)
        0x33000001u,  //  9: just above 2^-25 (half: 2^-24)
        0x387fc000u,  // 10: 2^-14 - 2^-24 (largest half subnormal)
        0x3f808000u,  // 11: 1 + 2^-8 (bf16: tie to even -> 1)
        0x3f818000u,  // 12: 1 + 3 * 2^-8 (bf16: tie to even -> 1 + 2^-6)
        0x7f7fffffu,  // 13: largest float (bf16: rounds to infinity)
        0x7f800000u,  // 14: +infinity
        0xff800000u,  // 15: -infinity
        0x7fc00000u,  // 16: quiet NaN
        0xff800001u,  // 17: signalling NaN with the sign bit
        0x00000001u,  // 18: smallest f32 subnormal
        0x807fffffu,  // 19: largest negative f32 subnormal (bf16: -2^-126)
    };
    const int i = threadIdx.x;
    if (i >= ST_CONV_N) {
        return;
    }
    const float x = __uint_as_float(inputs[i]);
    const __nv_bfloat16 b = __float2bfloat16(x);
    const __half h = __float2half(x);
    bf[i] = __bfloat16_as_ushort(b);
    hf[i] = __half_as_ushort(h);
    bf_back[i] = __bfloat162float(__ushort_as_bfloat16(bf[i]));
    hf_back[i] = __half2float(__ushort_as_half(hf[i]));
}

// (k) Deadlock between a warp rendezvous and a block barrier: lanes 0..15 shuffle with the full
// mask while lanes 16..31 go to __syncthreads. Launch: grid = (1), block = (32).
// Expected: rc != 0, message containing "deadlock in block (0,0,0): no thread can proceed." and
// "16 threads of warp 0 wait at __shfl_xor_sync(mask 0xffffffff)" and "lane 16 (thread
// (16,0,0)) is at __syncthreads at".
extern "C" __global__ void warp_deadlock(float* out) {
    float v = (float)threadIdx.x;
    if (threadIdx.x < 16) {
        v = __shfl_xor_sync(ST_FULL, v, 1);
    }
    __syncthreads();
    out[threadIdx.x] = v;
}

// (l) A shuffle reading a lane outside its mask: lanes 0..15 read lane 20 with mask 0x0000ffff.
// Launch: grid = (1), block = (32). Expected: rc != 0, message containing "reads lane 20 in
// __shfl_sync(mask 0x0000ffff)" and "lane 20 is not in the mask".
extern "C" __global__ void shfl_src_not_in_mask(float* out) {
    if (threadIdx.x < 16) {
        out[threadIdx.x] = __shfl_sync(0x0000ffffu, (float)threadIdx.x, 20);
    }
}

// (m) A lane named in the mask returns while the others wait in a shuffle.
// Launch: grid = (1), block = (32). Expected: rc != 0, message containing "thread (31,0,0)
// (lane 31) of block (0,0,0) returned while thread (0,0,0) (lane 0) waits for it in
// __shfl_xor_sync(mask 0xffffffff)".
extern "C" __global__ void shfl_partner_exited(float* out) {
    if (threadIdx.x == 31) {
        return;
    }
    out[threadIdx.x] = __shfl_xor_sync(ST_FULL, (float)threadIdx.x, 1);
}

// (n) Block geometry and built-in variables: every thread writes its linear index, computed from
// threadIdx/blockIdx/blockDim/gridDim. Launch: grid = (2, 3, 1), block = (4, 2, 3) (24 threads).
// Expected: rc 0; out[i] = i for i < 144 (each block covers 24 consecutive entries, blocks in
// x-fastest order), warp[i] = (i % 24) / 32 * 1000 + __popc(__activemask()) = 24 (one partial warp).
extern "C" __global__ void geometry_ids(int* out, int* warp) {
    const int block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const int threads = blockDim.x * blockDim.y * blockDim.z;
    const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    out[block * threads + t] = block * threads + t;
    warp[block * threads + t] = t / 32 * 1000 + __popc(__activemask());
}
