// The one shape of every CUDA kernel in progan_fast: a sequence of per-thread phases separated by block
// barriers, over a block's shared-memory struct. A kernel is a small struct K (its arguments and launch geometry)
// with
//   static constexpr int kThreads;                 threads per block
//   struct Shared;                                 the block's shared memory (trivially constructible)
//   int64_t blocks() const;                        grid size (1-D)
//   int phases() const;                            phase count; a barrier stands between consecutive phases
//   void phase(int p, Shared&, int64_t block, int tid) const;   thread `tid`'s work in phase p (PF_HD)
// The GPU runs it with one __global__ template (csrc/cuda/launch.cuh: the phases in order, __syncthreads()
// between them); the tests run the SAME phase functions on the CPU with `emulate` below: every thread of a block
// finishes phase p before any thread starts phase p + 1, which is exactly what the barriers guarantee. An
// elementwise kernel is one phase; a reduction is accumulate -> reduction steps -> write.
//
// Inside a phase, a thread's loops over its tensors belong in (inlined) functions taking the tensors as
// __restrict__ parameters: nvcc ignores __restrict__ on the members of K, so without them no load may be issued
// before an earlier store, and none takes the read-only path. They move 16 bytes per access where the tensors are
// aligned (csrc/ops/vec.h) and divide indices by powers of two with shifts (hd::Divisor). Pixel norm, the epilogue
// and the fade-in blends do all three; fade_from_rgb and minibatch stddev do not yet.
#pragma once
#include "ops/hd.h"

#if !defined(__CUDACC__)
#include <cstring>

namespace progan_fast::hd {

// Runs kernel k for every thread of its real launch, block by block, phase by phase. Shared memory starts as
// all-ones bytes (NaN for floats) in every block, as uninitialised as on the GPU, so a phase that reads a slot
// no earlier phase wrote shows up in the results.
template <typename K>
void emulate(const K& k) {
  typename K::Shared shared;
  const int phases = k.phases();
  for (int64_t block = 0; block < k.blocks(); ++block) {
    std::memset(static_cast<void*>(&shared), 0xff, sizeof(shared));
    for (int p = 0; p < phases; ++p)
      for (int tid = 0; tid < K::kThreads; ++tid) k.phase(p, shared, block, tid);
  }
}

// The executor the emulated family hands to an op's `run` (the CUDA family hands CudaLaunch).
struct Emulate {
  template <typename K>
  int operator()(const K& k) const {
    emulate(k);
    return 0;
  }
};

}  // namespace progan_fast::hd
#endif
