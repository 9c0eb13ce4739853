// The one __global__ template every progan_fast CUDA kernel runs through (see csrc/ops/phases.h): the kernel's
// phases in order with a block barrier between consecutive ones. Included only by .cu files.
#pragma once
#include <cuda_runtime_api.h>

#include "ops/phases.h"

namespace progan_fast::hd {

// The sums of groups of `lanes` lanes `stride` apart (see csrc/ops/phases.h): every lane of the warp takes part.
template <typename T, int M>
__device__ __forceinline__ Sums<T, M> warp_sum(Sums<T, M> values, int lanes, int stride) {
  for (int offset = (lanes >> 1) * stride; offset >= stride; offset >>= 1) {
    Sums<T, M> partner;
    for (int m = 0; m < M; ++m) partner.v[m] = __shfl_xor_sync(0xffffffffu, values.v[m], offset);
    add_partner(values, partner);
  }
  return values;
}

template <typename K>
__global__ void __launch_bounds__(K::kThreads) run_phases(const K kernel) {
  static_assert(K::kThreads % kWarpSize == 0, "blocks are whole warps");
  __shared__ typename K::Shared shared;
  const int phases = kernel.phases();
  int p = 0;
  if constexpr (HasExchange<K>) {
    if (kernel.exchange_lanes()) {
      const auto values = kernel.before_exchange(shared, blockIdx.x, threadIdx.x);
      const auto sums = warp_sum(values, kernel.exchange_lanes(), exchange_stride(kernel));
      kernel.after_exchange(shared, blockIdx.x, threadIdx.x, sums);
      p = 1;
    }
  }
  if constexpr (HasPhases<K>)
    for (; p < phases; ++p) {
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
