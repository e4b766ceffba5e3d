// SwiGLU gate of the LlamaGen feed-forward: out = silu(gate) * up, elementwise.
// CPU twin: src/backend/cpu/kernels.rs `swiglu`.
//
// Launch geometry: grid = (ceil(n / 256)), block = (256), one element per thread.
#include "common.cuh"

extern "C" __global__ void swiglu(const float* gate, const float* up, float* out, unsigned long long n) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        out[i] = silu_gate(gate[i], up[i]);
    }
}
