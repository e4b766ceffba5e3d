// Stand-in for the CUDA toolkit's <cuda_fp16.h> in emulator builds (found through -I kernels/emu):
// cuda_emu.h already defines the 16-bit float types and conversions, so this header is empty.
#pragma once
