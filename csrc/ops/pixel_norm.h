// Pixel norm's CUDA kernels as per-thread phase functions (the kernel shape of csrc/ops/phases.h), compiled by
// nvcc (csrc/cuda/pixel_norm.cu) and by g++ for the emulated family that runs every thread of the real launch.
//
// Work is split into "items" (one reduction each: a pixel of an NCHW tensor, a row of a channels_last one)
// and each item is shared by `lanes` cooperating threads of a 256-thread block:
//   rows   (reduced dim contiguous): the lanes of one item are consecutive threads reading consecutive
//          channels, so a warp reads whole rows (a row takes several warps where its channels are many or the
//          rows are too few to fill the GPU);
//   planes (NCHW, channels `inner` apart): consecutive threads take consecutive pixels, so every load of a
//          channel is coalesced across the block; lanes split the channel loop when there are too few pixels
//          to fill the GPU (4x4 and 8x8 feature maps), one thread per pixel when there are enough (hd::item_lanes).
// Each lane sums its channels, the item's lanes add their sums, then every lane writes its channels with the
// item's total. They add them with a warp exchange (csrc/ops/phases.h), in registers, over the lanes each warp holds
// (hd::LaneSum: consecutive lanes of a row, strided lanes of the pixels of planes): one phase, no barrier, for an
// item within one warp (rows of up to 32 lanes, a pixel per thread); an item in several warps (wider rows, NCHW
// pixels split over lanes) then adds its warps' sums in shared memory after one barrier.
// Rows move 16 bytes per access where they are aligned (csrc/ops/vec.h): a lane takes whole vectors of channels,
// except on small maps where single elements give more lanes and blocks (hd::filling_geometry).
// The write phase re-reads x: a block's slice (items_per_block * channels elements) is kept small (kMaxBlockElems)
// so the slices of all resident blocks, about 8 per SM, stay in L2 (40-50 MB on A100/H100) and the second read does
// not go back to DRAM.
#pragma once
#include "common/pixel_norm_math.h"
#include "ops/item_lanes.h"
#include "ops/phases.h"
#include "ops/vec.h"

#if defined(__CUDACC__) || defined(PROGAN_FAST_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace progan_fast::pixel_norm_cuda {

using hd::opmath_t;

constexpr int kThreads = 256;
// A block's slice of x (items_per_block * channels) stays within kMaxBlockElems where it can (hd::item_lanes).
constexpr int64_t kMaxBlockElems = 4096;

// The item geometry (hd::ChannelItems) and the mean's factor.
struct LaunchConfig : hd::ChannelItems<kThreads> {
  double inv_channels = 1;  // the mean multiplies by it: a float division is a subroutine call on the GPU
};

// The launch geometry, shared by the launcher and the emulation (hd::channel_items_config).
inline LaunchConfig launch_config(int64_t outer, int64_t channels, int64_t inner, int vector) {
  return hd::channel_items_config<kThreads>(outer, channels, inner, vector, kMaxBlockElems, [&](const auto& items) {
    return LaunchConfig{items, 1.0 / static_cast<double>(channels)};
  });
}

template <typename acc_t>
struct Shared {
  acc_t partial[kThreads];  // indexed by thread: a warp's accesses hit distinct banks in both layouts
};

// The kernels' arguments, with what they are instantiated for: N elements per access (hd::rows_vector_width), and
// whether `inner` is a power of two (hd::Divisor).
template <typename scalar_t, int N, bool kPow2Inner>
struct ForwardArgs {
  using acc_t = opmath_t<scalar_t>;
  static constexpr int kVector = N;
  static constexpr bool kShiftInner = kPow2Inner;
  const scalar_t* x;
  scalar_t* y;
  acc_t* rsqrt;  // one per item
  acc_t eps;

  PF_HD acc_t partial(const LaunchConfig& cfg, int64_t block, int tid) const;
  PF_HD void write(const LaunchConfig& cfg, acc_t total, int64_t block, int tid) const;
};

template <typename scalar_t, int N, bool kPow2Inner>
struct BackwardArgs {
  using acc_t = opmath_t<scalar_t>;
  static constexpr int kVector = N;
  static constexpr bool kShiftInner = kPow2Inner;
  const scalar_t* grad_y;
  const scalar_t* x;
  const acc_t* rsqrt;
  scalar_t* grad_x;
  acc_t eps;

  PF_HD acc_t partial(const LaunchConfig& cfg, int64_t block, int tid) const;
  PF_HD void write(const LaunchConfig& cfg, acc_t total, int64_t block, int tid) const;
};

// A lane's accesses: vectors lane, lane + lanes, ... of its item's cfg.vectors, N elements each, the pointers
// stepped from one to the next. The tensors come in as __restrict__ parameters of these (inlined) functions because
// nvcc ignores __restrict__ on struct members: only then are the loads read-only (ld.global.nc) and free to be
// issued ahead of the stores.

template <int N, typename scalar_t, typename acc_t = opmath_t<scalar_t>>
PF_HD acc_t lane_sum_squares(const scalar_t* __restrict__ x, const LaunchConfig& cfg, const hd::ItemSlot& s) {
  const int64_t first = s.base + s.lane * cfg.vector_stride, step = cfg.lanes * cfg.vector_stride;
  acc_t acc = 0;
  x += first;
  for (int64_t v = s.lane; v < cfg.vectors; v += cfg.lanes, x += step) {
    const hd::Vec<scalar_t, N> xv = hd::load_vec<N>(x);
    for (int i = 0; i < N; ++i) {
      const acc_t e = hd::to_acc(xv.e[i]);
      acc = hd::mul_add(e, e, acc);
    }
  }
  return acc;
}

// y = x * rs
template <int N, typename scalar_t, typename acc_t>
PF_HD void lane_scale(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, acc_t rs, const LaunchConfig& cfg,
                      const hd::ItemSlot& s) {
  const int64_t first = s.base + s.lane * cfg.vector_stride, step = cfg.lanes * cfg.vector_stride;
  x += first;
  y += first;
  for (int64_t v = s.lane; v < cfg.vectors; v += cfg.lanes, x += step, y += step) {
    const hd::Vec<scalar_t, N> xv = hd::load_vec<N>(x);
    hd::Vec<scalar_t, N> yv;
    for (int i = 0; i < N; ++i) yv.e[i] = hd::from_acc<scalar_t>(hd::to_acc(xv.e[i]) * rs);
    hd::store_vec<N>(y, yv);
  }
}

template <int N, typename scalar_t, typename acc_t = opmath_t<scalar_t>>
PF_HD acc_t lane_dot(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b, const LaunchConfig& cfg,
                     const hd::ItemSlot& s) {
  const int64_t first = s.base + s.lane * cfg.vector_stride, step = cfg.lanes * cfg.vector_stride;
  acc_t acc = 0;
  a += first;
  b += first;
  for (int64_t v = s.lane; v < cfg.vectors; v += cfg.lanes, a += step, b += step) {
    const hd::Vec<scalar_t, N> av = hd::load_vec<N>(a);
    const hd::Vec<scalar_t, N> bv = hd::load_vec<N>(b);
    for (int i = 0; i < N; ++i) acc = hd::mul_add(hd::to_acc(av.e[i]), hd::to_acc(bv.e[i]), acc);
  }
  return acc;
}

// dx = r * dy - k * x
template <int N, typename scalar_t, typename acc_t>
PF_HD void lane_axpby(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x, scalar_t* __restrict__ dx,
                      acc_t r, acc_t k, const LaunchConfig& cfg, const hd::ItemSlot& s) {
  const int64_t first = s.base + s.lane * cfg.vector_stride, step = cfg.lanes * cfg.vector_stride;
  dy += first;
  x += first;
  dx += first;
  for (int64_t v = s.lane; v < cfg.vectors; v += cfg.lanes, dy += step, x += step, dx += step) {
    const hd::Vec<scalar_t, N> dyv = hd::load_vec<N>(dy);
    const hd::Vec<scalar_t, N> xv = hd::load_vec<N>(x);
    hd::Vec<scalar_t, N> dxv;
    for (int i = 0; i < N; ++i)
      dxv.e[i] = hd::from_acc<scalar_t>(hd::mul_add(r, hd::to_acc(dyv.e[i]), -k * hd::to_acc(xv.e[i])));
    hd::store_vec<N>(dx, dxv);
  }
}

// Forward: this lane's share of sum(x^2).
template <typename Args>
PF_HD typename Args::acc_t forward_partial(const Args& a, const LaunchConfig& cfg, int64_t block, int tid) {
  const hd::ItemSlot s = hd::item_slot<Args::kShiftInner>(cfg, block, tid);
  return s.active ? lane_sum_squares<Args::kVector>(a.x, cfg, s) : 0;
}

// Forward, with the item's sum(x^2): y = x * rsqrt(mean(x^2) + eps); lane 0 stores the rsqrt for backward.
template <typename Args>
PF_HD void forward_write(const Args& a, const LaunchConfig& cfg, typename Args::acc_t total, int64_t block, int tid) {
  using acc_t = typename Args::acc_t;
  const hd::ItemSlot s = hd::item_slot<Args::kShiftInner>(cfg, block, tid);
  if (!s.active) return;
  const acc_t rs = hd::rsqrt_acc(hd::mul_add(total, acc_t(cfg.inv_channels), a.eps));
  if (s.lane == 0) a.rsqrt[s.item] = rs;
  lane_scale<Args::kVector>(a.x, a.y, rs, cfg, s);
}

// Backward: this lane's share of sum(dy * x).
template <typename Args>
PF_HD typename Args::acc_t backward_partial(const Args& a, const LaunchConfig& cfg, int64_t block, int tid) {
  const hd::ItemSlot s = hd::item_slot<Args::kShiftInner>(cfg, block, tid);
  return s.active ? lane_dot<Args::kVector>(a.grad_y, a.x, cfg, s) : 0;
}

// Backward, with the item's sum(dy * x): dx = r * dy - x * r^3 * mean(dy * x) (eps * r^3 * dy over one channel:
// pixel_norm_grad_scalars).
template <typename Args>
PF_HD void backward_write(const Args& a, const LaunchConfig& cfg, typename Args::acc_t total, int64_t block, int tid) {
  using acc_t = typename Args::acc_t;
  const hd::ItemSlot s = hd::item_slot<Args::kShiftInner>(cfg, block, tid);
  if (!s.active) return;
  const acc_t rs = hd::load_ro(a.rsqrt + s.item);
  const PixelNormGradScalars<acc_t> g =
      pixel_norm_grad_scalars(cfg.channels, rs, rs * rs * rs * total * acc_t(cfg.inv_channels), a.eps);
  lane_axpby<Args::kVector>(a.grad_y, a.x, a.grad_x, g.grad_scale, g.projection, cfg, s);
}

template <typename scalar_t, int N, bool P>
PF_HD opmath_t<scalar_t> ForwardArgs<scalar_t, N, P>::partial(const LaunchConfig& cfg, int64_t block, int tid) const {
  return forward_partial(*this, cfg, block, tid);
}
template <typename scalar_t, int N, bool P>
PF_HD void ForwardArgs<scalar_t, N, P>::write(const LaunchConfig& cfg, acc_t total, int64_t block, int tid) const {
  forward_write(*this, cfg, total, block, tid);
}
template <typename scalar_t, int N, bool P>
PF_HD opmath_t<scalar_t> BackwardArgs<scalar_t, N, P>::partial(const LaunchConfig& cfg, int64_t block, int tid) const {
  return backward_partial(*this, cfg, block, tid);
}
template <typename scalar_t, int N, bool P>
PF_HD void BackwardArgs<scalar_t, N, P>::write(const LaunchConfig& cfg, acc_t total, int64_t block, int tid) const {
  backward_write(*this, cfg, total, block, tid);
}

// Both kernels; `Args` (ForwardArgs or BackwardArgs) brings its direction's partial sums and write. An exchange
// phase (partial -> the sum over the item's lanes in this warp -> write), or for an item in several warps an
// exchange phase that leaves each warp's sum in shared memory, then the write with the sum of its item's warps
// (hd::LaneSum).
template <typename Args>
struct LaneReductionKernel {
  static constexpr int kThreads = pixel_norm_cuda::kThreads;
  using acc_t = typename Args::acc_t;
  using Shared = pixel_norm_cuda::Shared<acc_t>;
  using Exchange = hd::Sums<acc_t, 1>;
  Args args;
  LaunchConfig cfg;

  PF_HD int64_t blocks() const { return cfg.blocks; }
  PF_HD int phases() const { return cfg.sum.parts > 1 ? 2 : 1; }

  PF_HD int exchange_lanes() const { return cfg.sum.exchange_lanes; }
  PF_HD int exchange_stride() const { return cfg.sum.exchange_stride; }
  PF_HD Exchange before_exchange(Shared&, int64_t block, int tid) const { return {{args.partial(cfg, block, tid)}}; }
  PF_HD void after_exchange(Shared& sh, int64_t block, int tid, const Exchange& sums) const {
    const hd::LaneSum<kThreads>& sum = cfg.sum;
    if (sum.parts == 1) args.write(cfg, sums.v[0], block, tid);
    else if (sum.keeps(tid)) sh.partial[tid] = sums.v[0];
  }

  // p == 1, an item in several warps
  PF_HD void phase(int, Shared& sh, int64_t block, int tid) const {
    args.write(cfg, cfg.sum.total(sh.partial, tid), block, tid);
  }
};

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
  double eps;
  hd::DType dtype;
};

// Builds the kernel for p's dtype and hands it to `exec` (hd::CudaLaunch on the GPU, hd::Emulate in tests).
template <typename Exec>
auto run(const ForwardParams& p, const Exec& exec) {
  return hd::dispatch(p.dtype, [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    using acc_t = opmath_t<scalar_t>;
    const LaunchConfig cfg = launch_config(
        p.outer, p.channels, p.inner, hd::rows_vector_width<scalar_t>(p.channels, p.inner, {p.x, p.y}));
    return hd::with_rows_instantiation<scalar_t>(cfg.vector, p.inner, [&](auto n, auto pow2_inner) {
      using Args = ForwardArgs<scalar_t, decltype(n)::value, decltype(pow2_inner)::value>;
      const Args args{static_cast<const scalar_t*>(p.x), static_cast<scalar_t*>(p.y), static_cast<acc_t*>(p.rsqrt),
                      static_cast<acc_t>(p.eps)};
      return exec(LaneReductionKernel<Args>{args, cfg});
    });
  });
}

template <typename Exec>
auto run(const BackwardParams& p, const Exec& exec) {
  return hd::dispatch(p.dtype, [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    using acc_t = opmath_t<scalar_t>;
    const LaunchConfig cfg = launch_config(
        p.outer, p.channels, p.inner, hd::rows_vector_width<scalar_t>(p.channels, p.inner, {p.grad_y, p.x, p.grad_x}));
    return hd::with_rows_instantiation<scalar_t>(cfg.vector, p.inner, [&](auto n, auto pow2_inner) {
      using Args = BackwardArgs<scalar_t, decltype(n)::value, decltype(pow2_inner)::value>;
      const Args args{static_cast<const scalar_t*>(p.grad_y), static_cast<const scalar_t*>(p.x),
                      static_cast<const acc_t*>(p.rsqrt), static_cast<scalar_t*>(p.grad_x), static_cast<acc_t>(p.eps)};
      return exec(LaneReductionKernel<Args>{args, cfg});
    });
  });
}

#if defined(__CUDACC__) || defined(PROGAN_FAST_WITH_CUDA)
// Defined in csrc/cuda/pixel_norm.cu: enqueue on `stream`, return the launch error.
cudaError_t cuda_launch(const ForwardParams& p, cudaStream_t stream);
cudaError_t cuda_launch(const BackwardParams& p, cudaStream_t stream);
#endif

}  // namespace progan_fast::pixel_norm_cuda
