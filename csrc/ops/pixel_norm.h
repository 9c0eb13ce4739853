// Pixel norm's CUDA kernels as per-thread phase functions (the kernel shape of csrc/ops/phases.h), compiled by
// nvcc (csrc/cuda/pixel_norm.cu) and by g++ for the emulated family that runs every thread of the real launch.
//
// Work is split into "items" (one reduction each: a pixel of an NCHW tensor, a row of a channels_last one)
// and each item is shared by `lanes` cooperating threads of a 256-thread block:
//   rows   (reduced dim contiguous): the lanes of one item are consecutive threads reading consecutive
//          channels, so a warp reads whole rows;
//   planes (NCHW, channels `inner` apart): consecutive threads take consecutive pixels, so every load of a
//          channel is coalesced across the block; lanes split the channel loop when there are too few pixels
//          to fill the GPU (4x4 and 8x8 feature maps), one thread per pixel when there are enough.
// A kernel is three phases separated by block barriers: accumulate a partial sum per thread into shared
// memory, a tree reduction over the lanes (one barrier per halving), then every lane reads its item's total
// and writes its channels. The write phase re-reads x: a block's slice (items_per_block * channels elements)
// is kept small (kMaxBlockElems) so the slices of all resident blocks, about 8 per SM, stay in L2 (40-50 MB
// on A100/H100) and the second read does not go back to DRAM.
#pragma once
#include "ops/phases.h"

#if defined(__CUDACC__) || defined(PROGAN_FAST_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace progan_fast::pixel_norm_cuda {

using hd::opmath_t;

constexpr int kThreads = 256;
// Both layouts keep a block's slice of x (items_per_block * channels) within kMaxBlockElems where they can. In
// planes layout lanes also split the channel loop until the grid has kMinBlocks blocks (two waves of 2 blocks
// per SM on a 132-SM H100), as long as a block still covers kMinPixelsPerBlock pixels (a 32-byte sector of
// float32 per channel).
constexpr int64_t kMinBlocks = 512;
constexpr int64_t kMaxBlockElems = 4096;
constexpr int kMinPixelsPerBlock = 8;

struct LaunchConfig {
  int64_t items = 0;     // reductions: outer * inner
  int64_t channels = 1;  // length of each reduction
  int64_t inner = 1;     // distance between consecutive channels of an item (1: rows layout)
  int64_t blocks = 0;
  int lanes = 1;            // threads per item, a power of two <= kThreads
  int items_per_block = 1;  // kThreads / lanes
  bool rows = true;
};

// The launch geometry, shared by the launcher and the emulation so both run the same threads.
inline LaunchConfig launch_config(int64_t outer, int64_t channels, int64_t inner) {
  LaunchConfig cfg;
  cfg.items = outer * inner;
  cfg.channels = channels;
  cfg.inner = inner;
  cfg.rows = inner == 1;
  const int channel_lanes = hd::next_pow2(channels);
  if (cfg.rows) {
    // A warp per row (fewer lanes for short rows); wide rows get more of the block to bound its slice.
    cfg.lanes = channel_lanes < 32 ? channel_lanes : 32;
    while (cfg.lanes < channel_lanes && cfg.lanes < kThreads && (kThreads / cfg.lanes) * channels > kMaxBlockElems)
      cfg.lanes *= 2;
  } else {
    const int max_lanes = channel_lanes < kThreads / kMinPixelsPerBlock ? channel_lanes : kThreads / kMinPixelsPerBlock;
    cfg.lanes = 1;
    while (cfg.lanes < max_lanes && (hd::ceil_div(cfg.items, kThreads / cfg.lanes) < kMinBlocks ||
                                     (kThreads / cfg.lanes) * channels > kMaxBlockElems))
      cfg.lanes *= 2;
  }
  cfg.items_per_block = kThreads / cfg.lanes;
  cfg.blocks = hd::ceil_div(cfg.items, cfg.items_per_block);
  return cfg;
}

template <typename acc_t>
struct Shared {
  acc_t partial[kThreads];  // indexed by thread: a warp's accesses hit distinct banks in both layouts
};

// Where one thread works: its item, its lane, and the shared-memory slot of its item's lane 0.
struct Slot {
  int64_t item;
  int lane;
  int lane0;     // shared-memory slot of this item's lane 0
  bool active;   // item < items (the last block may be partial)
  int64_t base;  // element offset of the item's channel 0
};

PF_HD Slot slot_of(const LaunchConfig& cfg, int64_t block, int tid) {
  Slot s;
  int item_in_block;
  if (cfg.rows) {
    item_in_block = tid / cfg.lanes;
    s.lane = tid % cfg.lanes;
    s.lane0 = item_in_block * cfg.lanes;
  } else {
    item_in_block = tid % cfg.items_per_block;
    s.lane = tid / cfg.items_per_block;
    s.lane0 = item_in_block;
  }
  s.item = block * cfg.items_per_block + item_in_block;
  s.active = s.item < cfg.items;
  const int64_t outer = s.item / cfg.inner;
  s.base = outer * cfg.channels * cfg.inner + (s.item - outer * cfg.inner);
  return s;
}

template <typename scalar_t>
struct ForwardArgs {
  using acc_t = opmath_t<scalar_t>;
  const scalar_t* x;
  scalar_t* y;
  acc_t* rsqrt;  // one per item
  acc_t eps;

  PF_HD void accumulate(const LaunchConfig& cfg, Shared<acc_t>& sh, int64_t block, int tid) const;
  PF_HD void write(const LaunchConfig& cfg, const Shared<acc_t>& sh, int64_t block, int tid) const;
};

template <typename scalar_t>
struct BackwardArgs {
  using acc_t = opmath_t<scalar_t>;
  const scalar_t* grad_y;
  const scalar_t* x;
  const acc_t* rsqrt;
  scalar_t* grad_x;

  PF_HD void accumulate(const LaunchConfig& cfg, Shared<acc_t>& sh, int64_t block, int tid) const;
  PF_HD void write(const LaunchConfig& cfg, const Shared<acc_t>& sh, int64_t block, int tid) const;
};

// Phase 2, shared by both directions: one step of the tree reduction over an item's lanes (called for
// half = lanes/2, lanes/4, ..., 1 with a barrier before each).
template <typename acc_t>
PF_HD void reduce_step(const LaunchConfig& cfg, Shared<acc_t>& sh, int tid, int half) {
  const int lane = cfg.rows ? tid % cfg.lanes : tid / cfg.items_per_block;
  const int lane_stride = cfg.rows ? 1 : cfg.items_per_block;
  if (lane < half) sh.partial[tid] += sh.partial[tid + half * lane_stride];
}

// Forward phase 1: this lane's share of sum(x^2).
template <typename scalar_t>
PF_HD void forward_accumulate(const ForwardArgs<scalar_t>& a, const LaunchConfig& cfg,
                              Shared<opmath_t<scalar_t>>& sh, int64_t block, int tid) {
  using acc_t = opmath_t<scalar_t>;
  const Slot s = slot_of(cfg, block, tid);
  acc_t acc = 0;
  if (s.active) {
    for (int64_t c = s.lane; c < cfg.channels; c += cfg.lanes) {
      const acc_t v = hd::to_acc(a.x[s.base + c * cfg.inner]);
      acc += v * v;
    }
  }
  sh.partial[tid] = acc;
}

// Forward phase 3: y = x * rsqrt(mean(x^2) + eps); lane 0 stores the rsqrt for backward.
template <typename scalar_t>
PF_HD void forward_write(const ForwardArgs<scalar_t>& a, const LaunchConfig& cfg, const Shared<opmath_t<scalar_t>>& sh,
                         int64_t block, int tid) {
  using acc_t = opmath_t<scalar_t>;
  const Slot s = slot_of(cfg, block, tid);
  if (!s.active) return;
  const acc_t rs = hd::rsqrt_acc(sh.partial[s.lane0] / acc_t(cfg.channels) + a.eps);
  if (s.lane == 0) a.rsqrt[s.item] = rs;
  for (int64_t c = s.lane; c < cfg.channels; c += cfg.lanes) {
    const int64_t off = s.base + c * cfg.inner;
    a.y[off] = hd::from_acc<scalar_t>(hd::to_acc(a.x[off]) * rs);
  }
}

// Backward phase 1: this lane's share of sum(dy * x).
template <typename scalar_t>
PF_HD void backward_accumulate(const BackwardArgs<scalar_t>& a, const LaunchConfig& cfg,
                               Shared<opmath_t<scalar_t>>& sh, int64_t block, int tid) {
  using acc_t = opmath_t<scalar_t>;
  const Slot s = slot_of(cfg, block, tid);
  acc_t acc = 0;
  if (s.active) {
    for (int64_t c = s.lane; c < cfg.channels; c += cfg.lanes) {
      const int64_t off = s.base + c * cfg.inner;
      acc += hd::to_acc(a.grad_y[off]) * hd::to_acc(a.x[off]);
    }
  }
  sh.partial[tid] = acc;
}

// Backward phase 3: dx = r * dy - x * r^3 * mean(dy * x).
template <typename scalar_t>
PF_HD void backward_write(const BackwardArgs<scalar_t>& a, const LaunchConfig& cfg, const Shared<opmath_t<scalar_t>>& sh,
                          int64_t block, int tid) {
  using acc_t = opmath_t<scalar_t>;
  const Slot s = slot_of(cfg, block, tid);
  if (!s.active) return;
  const acc_t rs = a.rsqrt[s.item];
  const acc_t k = rs * rs * rs * sh.partial[s.lane0] / acc_t(cfg.channels);
  for (int64_t c = s.lane; c < cfg.channels; c += cfg.lanes) {
    const int64_t off = s.base + c * cfg.inner;
    a.grad_x[off] = hd::from_acc<scalar_t>(rs * hd::to_acc(a.grad_y[off]) - k * hd::to_acc(a.x[off]));
  }
}

template <typename scalar_t>
PF_HD void ForwardArgs<scalar_t>::accumulate(const LaunchConfig& cfg, Shared<acc_t>& sh, int64_t block, int tid) const {
  forward_accumulate(*this, cfg, sh, block, tid);
}
template <typename scalar_t>
PF_HD void ForwardArgs<scalar_t>::write(const LaunchConfig& cfg, const Shared<acc_t>& sh, int64_t block,
                                        int tid) const {
  forward_write(*this, cfg, sh, block, tid);
}
template <typename scalar_t>
PF_HD void BackwardArgs<scalar_t>::accumulate(const LaunchConfig& cfg, Shared<acc_t>& sh, int64_t block,
                                              int tid) const {
  backward_accumulate(*this, cfg, sh, block, tid);
}
template <typename scalar_t>
PF_HD void BackwardArgs<scalar_t>::write(const LaunchConfig& cfg, const Shared<acc_t>& sh, int64_t block,
                                         int tid) const {
  backward_write(*this, cfg, sh, block, tid);
}

// Both kernels: accumulate, log2(lanes) tree-reduction steps, write. `Args` (ForwardArgs or BackwardArgs) brings
// its direction's accumulate and write phases.
template <typename Args>
struct LaneReductionKernel {
  static constexpr int kThreads = pixel_norm_cuda::kThreads;
  using Shared = pixel_norm_cuda::Shared<typename Args::acc_t>;
  Args args;
  LaunchConfig cfg;
  int reduce_steps;

  PF_HD int64_t blocks() const { return cfg.blocks; }
  PF_HD int phases() const { return reduce_steps + 2; }
  PF_HD void phase(int p, Shared& sh, int64_t block, int tid) const {
    if (p == 0) args.accumulate(cfg, sh, block, tid);
    else if (p <= reduce_steps) reduce_step(cfg, sh, tid, cfg.lanes >> p);
    else args.write(cfg, sh, block, tid);
  }
};

inline int log2_of(int pow2) {
  int steps = 0;
  while ((1 << steps) < pow2) ++steps;
  return steps;
}

// Type-erased launch parameters: what the host side (csrc/host/pixel_norm.h) hands to a family's executor.
struct ForwardParams {
  const void* x;
  void* y;
  void* rsqrt;
  int64_t outer, channels, inner;
  double eps;
  hd::DType dtype;
};

struct BackwardParams {
  const void* grad_y;
  const void* x;
  const void* rsqrt;
  void* grad_x;
  int64_t outer, channels, inner;
  hd::DType dtype;
};

// Builds the kernel for p's dtype and hands it to `exec` (hd::CudaLaunch on the GPU, hd::Emulate in tests).
template <typename Exec>
auto run(const ForwardParams& p, const Exec& exec) {
  return hd::dispatch(p.dtype, [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    using acc_t = opmath_t<scalar_t>;
    const LaunchConfig cfg = launch_config(p.outer, p.channels, p.inner);
    const ForwardArgs<scalar_t> args{static_cast<const scalar_t*>(p.x), static_cast<scalar_t*>(p.y),
                                     static_cast<acc_t*>(p.rsqrt), static_cast<acc_t>(p.eps)};
    return exec(LaneReductionKernel<ForwardArgs<scalar_t>>{args, cfg, log2_of(cfg.lanes)});
  });
}

template <typename Exec>
auto run(const BackwardParams& p, const Exec& exec) {
  return hd::dispatch(p.dtype, [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    using acc_t = opmath_t<scalar_t>;
    const LaunchConfig cfg = launch_config(p.outer, p.channels, p.inner);
    const BackwardArgs<scalar_t> args{static_cast<const scalar_t*>(p.grad_y), static_cast<const scalar_t*>(p.x),
                                      static_cast<const acc_t*>(p.rsqrt), static_cast<scalar_t*>(p.grad_x)};
    return exec(LaneReductionKernel<BackwardArgs<scalar_t>>{args, cfg, log2_of(cfg.lanes)});
  });
}

#if defined(__CUDACC__) || defined(PROGAN_FAST_WITH_CUDA)
// Defined in csrc/cuda/pixel_norm.cu: enqueue on `stream`, return the launch error.
cudaError_t cuda_launch(const ForwardParams& p, cudaStream_t stream);
cudaError_t cuda_launch(const BackwardParams& p, cudaStream_t stream);
#endif

}  // namespace progan_fast::pixel_norm_cuda
