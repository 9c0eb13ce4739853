// upsample_blend's CUDA kernels as phase structs (csrc/ops/phases.h), compiled by nvcc (csrc/cuda/
// upsample_blend.cu) and by g++ for the emulated family. Tensors are dense in the layout the host chose and seen
// as rows of `row` values (a row of one channel's pixels for NCHW, of all channels' for channels_last, `vec` values
// per pixel): high row r lies over low row r / factor.
//   forward:  one thread per high value, y = lerp(low value above it, high value, alpha). Consecutive threads
//             write consecutive values; the low value is re-read from L1/L2 by the factor^2 threads that share it.
//   backward: an item per low value; `lanes` threads share its factor x factor window (a 2x2 window: 4 lanes,
//             so a warp reads 2 x 16 consecutive values of two rows), each writes alpha * g for its window values
//             and sums them; a tree over the lanes in shared memory then gives grad_low = (1 - alpha) * sum.
#pragma once
#include "ops/fade_common.h"
#include "ops/phases.h"

#if defined(__CUDACC__) || defined(PROGAN_FAST_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace progan_fast::upsample_blend_cuda {

using hd::opmath_t;

constexpr int kThreads = 256;
constexpr int kMaxLanes = 32;

struct Geometry {
  int64_t low_rows = 0;   // planes * low height
  int64_t low_width = 0;  // pixels per low row
  int64_t vec = 1;        // values per pixel
  int64_t factor = 1;

  PF_HD int64_t low_row() const { return low_width * vec; }
  PF_HD int64_t high_row() const { return low_width * factor * vec; }
  PF_HD int64_t low_numel() const { return low_rows * low_row(); }
  PF_HD int64_t high_numel() const { return low_numel() * factor * factor; }
  // The low value under high value `i`.
  PF_HD int64_t low_of(int64_t i) const {
    const int64_t r = i / high_row(), j = i - r * high_row();
    const int64_t x = j / vec, k = j - x * vec;
    return (r / factor) * low_row() + (x / factor) * vec + k;
  }
};

struct ForwardParams {
  const void* low;
  const void* high;
  void* y;
  Geometry geo;
  fade_cuda::Alpha alpha;
  hd::DType dtype;
};

struct BackwardParams {
  const void* grad_y;
  void* grad_low;
  void* grad_high;
  Geometry geo;
  fade_cuda::Alpha alpha;
  hd::DType dtype;
};

template <typename scalar_t>
struct ForwardKernel {
  static constexpr int kThreads = upsample_blend_cuda::kThreads;
  struct Shared {};
  const scalar_t* low;
  const scalar_t* high;
  scalar_t* y;
  Geometry geo;
  fade_cuda::Alpha alpha;

  PF_HD int64_t blocks() const { return hd::ceil_div(geo.high_numel(), kThreads); }
  PF_HD int phases() const { return 1; }
  PF_HD void phase(int, Shared&, int64_t block, int tid) const {
    using acc_t = opmath_t<scalar_t>;
    const int64_t i = block * kThreads + tid;
    if (i >= geo.high_numel()) return;
    const acc_t a = alpha.load<acc_t>();
    y[i] = hd::from_acc<scalar_t>(fade_cuda::lerp(hd::to_acc(low[geo.low_of(i)]), hd::to_acc(high[i]), a));
  }
};

// Backward launch geometry: lanes per low value (a power of two <= the window), items per block.
struct BackwardConfig {
  int lanes = 1;
  int items_per_block = kThreads;
  int reduce_steps = 0;
  int64_t blocks = 0;
};

inline BackwardConfig backward_config(const Geometry& geo) {
  BackwardConfig cfg;
  const int64_t window = geo.factor * geo.factor;
  while (cfg.lanes < window && cfg.lanes < kMaxLanes) {
    cfg.lanes *= 2;
    ++cfg.reduce_steps;
  }
  cfg.items_per_block = kThreads / cfg.lanes;
  cfg.blocks = hd::ceil_div(geo.low_numel(), cfg.items_per_block);
  return cfg;
}

template <typename scalar_t>
struct BackwardKernel {
  static constexpr int kThreads = upsample_blend_cuda::kThreads;
  using acc_t = opmath_t<scalar_t>;
  struct Shared {
    acc_t partial[kThreads];
  };
  const scalar_t* grad_y;
  scalar_t* grad_low;
  scalar_t* grad_high;
  Geometry geo;
  fade_cuda::Alpha alpha;
  BackwardConfig cfg;

  PF_HD int64_t blocks() const { return cfg.blocks; }
  PF_HD int phases() const { return cfg.reduce_steps + 2; }

  // Phase 0: this lane's window values: grad_high = alpha * g, and their sum.
  PF_HD void accumulate(Shared& sh, int64_t block, int tid) const {
    const int lane = tid % cfg.lanes;
    const int64_t item = block * cfg.items_per_block + tid / cfg.lanes;
    acc_t sum = 0;
    if (item < geo.low_numel()) {
      const acc_t a = alpha.load<acc_t>();
      const int64_t row = item / geo.low_row(), j = item - row * geo.low_row();
      const int64_t x = j / geo.vec, k = j - x * geo.vec;
      const int64_t window = geo.factor * geo.factor;
      for (int64_t e = lane; e < window; e += cfg.lanes) {
        const int64_t ty = e / geo.factor, tx = e - ty * geo.factor;
        const int64_t i = (row * geo.factor + ty) * geo.high_row() + (x * geo.factor + tx) * geo.vec + k;
        const acc_t g = hd::to_acc(grad_y[i]);
        grad_high[i] = hd::from_acc<scalar_t>(a * g);
        sum += g;
      }
    }
    sh.partial[tid] = sum;
  }

  PF_HD void phase(int p, Shared& sh, int64_t block, int tid) const {
    if (p == 0) {
      accumulate(sh, block, tid);
    } else if (p <= cfg.reduce_steps) {
      const int half = cfg.lanes >> p;
      if (tid % cfg.lanes < half) sh.partial[tid] += sh.partial[tid + half];
    } else if (tid % cfg.lanes == 0) {
      const int64_t item = block * cfg.items_per_block + tid / cfg.lanes;
      if (item < geo.low_numel())
        grad_low[item] = hd::from_acc<scalar_t>((acc_t(1) - alpha.load<acc_t>()) * sh.partial[tid]);
    }
  }
};

template <typename Exec>
auto run(const ForwardParams& p, const Exec& exec) {
  return hd::dispatch(p.dtype, [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    return exec(ForwardKernel<scalar_t>{static_cast<const scalar_t*>(p.low), static_cast<const scalar_t*>(p.high),
                                        static_cast<scalar_t*>(p.y), p.geo, p.alpha});
  });
}

template <typename Exec>
auto run(const BackwardParams& p, const Exec& exec) {
  return hd::dispatch(p.dtype, [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    return exec(BackwardKernel<scalar_t>{static_cast<const scalar_t*>(p.grad_y), static_cast<scalar_t*>(p.grad_low),
                                         static_cast<scalar_t*>(p.grad_high), p.geo, p.alpha,
                                         backward_config(p.geo)});
  });
}

#if defined(__CUDACC__) || defined(PROGAN_FAST_WITH_CUDA)
// Defined in csrc/cuda/upsample_blend.cu: enqueue on `stream`, return the launch error.
cudaError_t cuda_launch(const ForwardParams& p, cudaStream_t stream);
cudaError_t cuda_launch(const BackwardParams& p, cudaStream_t stream);
#endif

}  // namespace progan_fast::upsample_blend_cuda
