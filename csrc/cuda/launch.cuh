// The one __global__ template every progan_fast CUDA kernel runs through (see csrc/ops/phases.h): the kernel's
// phases in order with a block barrier between consecutive ones. Included only by .cu files.
#pragma once
#include <cuda_runtime_api.h>

#include "ops/phases.h"

namespace progan_fast::hd {

template <typename K>
__global__ void __launch_bounds__(K::kThreads) run_phases(const K kernel) {
  __shared__ typename K::Shared shared;
  const int phases = kernel.phases();
  for (int p = 0; p < phases; ++p) {
    if (p > 0) __syncthreads();
    kernel.phase(p, shared, blockIdx.x, threadIdx.x);
  }
}

// The executor the CUDA family hands to an op's `run`: enqueue on `stream`, return the launch error.
struct CudaLaunch {
  cudaStream_t stream;

  template <typename K>
  cudaError_t operator()(const K& kernel) const {
    const int64_t blocks = kernel.blocks();
    if (blocks == 0) return cudaSuccess;
    if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
    run_phases<K><<<static_cast<unsigned>(blocks), K::kThreads, 0, stream>>>(kernel);
    return cudaGetLastError();
  }
};

}  // namespace progan_fast::hd
