// fade_reals' CUDA kernel as a phase struct (csrc/ops/phases.h), compiled by nvcc (csrc/cuda/fade_reals.cu) and
// by g++ for the emulated family. One thread per 2x2 block of one channel: it reads the 4 values, and writes
// lerp(their mean, each value, alpha): one read and one write of x, nothing else. Consecutive threads take
// consecutive blocks of a row pair (NCHW) or consecutive channels of a pixel pair (channels_last), so a warp's
// loads and stores cover contiguous runs of both rows.
#pragma once
#include "ops/fade_common.h"
#include "ops/phases.h"

#if defined(__CUDACC__) || defined(PROGAN_FAST_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace progan_fast::fade_reals_cuda {

using hd::opmath_t;

constexpr int kThreads = 256;

struct Params {
  const void* x;
  void* y;
  int64_t row_pairs;  // planes * height / 2
  int64_t width;      // pixels per row (even)
  int64_t vec;        // values per pixel (1 for NCHW, C for channels_last)
  fade_cuda::Alpha alpha;
  hd::DType dtype;
};

template <typename scalar_t>
struct Kernel {
  static constexpr int kThreads = fade_reals_cuda::kThreads;
  struct Shared {};
  const scalar_t* x;
  scalar_t* y;
  int64_t row_pairs, width, vec;
  fade_cuda::Alpha alpha;

  PF_HD int64_t items() const { return row_pairs * (width / 2) * vec; }
  PF_HD int64_t blocks() const { return hd::ceil_div(items(), kThreads); }
  PF_HD int phases() const { return 1; }
  PF_HD void phase(int, Shared&, int64_t block, int tid) const {
    using acc_t = opmath_t<scalar_t>;
    const int64_t item = block * kThreads + tid;
    if (item >= items()) return;
    const int64_t per_pair = (width / 2) * vec, row = width * vec;
    const int64_t pair = item / per_pair, j = item - pair * per_pair;
    const int64_t bx = j / vec, k = j - bx * vec;
    const int64_t top = 2 * pair * row + 2 * bx * vec + k;
    const int64_t offsets[4] = {top, top + vec, top + row, top + row + vec};
    acc_t v[4];
    for (int e = 0; e < 4; ++e) v[e] = hd::to_acc(x[offsets[e]]);
    const acc_t mean = ((v[0] + v[1]) + (v[2] + v[3])) * acc_t(0.25);
    const acc_t a = alpha.load<acc_t>();
    for (int e = 0; e < 4; ++e) y[offsets[e]] = hd::from_acc<scalar_t>(fade_cuda::lerp(mean, v[e], a));
  }
};

template <typename Exec>
auto run(const Params& p, const Exec& exec) {
  return hd::dispatch(p.dtype, [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    return exec(Kernel<scalar_t>{static_cast<const scalar_t*>(p.x), static_cast<scalar_t*>(p.y), p.row_pairs, p.width,
                                 p.vec, p.alpha});
  });
}

#if defined(__CUDACC__) || defined(PROGAN_FAST_WITH_CUDA)
// Defined in csrc/cuda/fade_reals.cu: enqueue on `stream`, return the launch error.
cudaError_t cuda_launch(const Params& p, cudaStream_t stream);
#endif

}  // namespace progan_fast::fade_reals_cuda
