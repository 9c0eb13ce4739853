// The equalized-lr epilogue's CUDA kernels as per-thread phase functions (the kernel shape of csrc/ops/phases.h),
// compiled by nvcc (csrc/cuda/scaled_bias_act.cu) and by g++ for the emulated family that runs every thread of
// the real launch. y = act(scale * x + bias[c]), act(v) = v > 0 ? v : slope * v, then optionally pixel norm.
//
// Threads are laid out as in pixel norm (csrc/ops/pixel_norm.h): work is split into "items" (a pixel with all its
// channels), each shared by `lanes` threads of a 256-thread block;
//   rows   (channels contiguous: channels_last, dense layers): an item's lanes are consecutive threads reading
//          consecutive channels (several warps per item where the items are too few to fill the GPU);
//   planes (NCHW): consecutive threads take consecutive pixels, so every load of a channel is coalesced; lanes
//          split the channel loop when there are too few pixels to fill the GPU (hd::item_lanes: the geometry
//          is pixel norm's).
// Rows move 16 bytes per access where the tensors are aligned and the channels divide (csrc/ops/vec.h): a lane then
// takes whole vectors of channels (not on small maps, where single elements give more blocks: hd::filling_geometry).
// With pixel norm an item's lanes add their sums as pixel norm's do (hd::LaneSum: a warp exchange, then, for an item
// in several warps, one barrier and the sum of its warps' sums).
// Forward: [sum(a^2) -> its sum over the lanes ->] write y (and rsqrt). The write phase
// recomputes a = act(scale * x + bias) from x, re-read from L2 (a block's slice is at most kTileElems elements).
// Backward: [sum(grad_y * y) -> its sum over the lanes ->] write grad_x, leaving each element's contribution to the
// bias gradient in the block's shared tile (items_per_block x channels) -> one phase that sums the tile over the
// block's items into a per-block partial: grad_bias comes out of the same sweep, as one row of `workspace`
// (blocks x channels) per block, which FinishBiasKernel adds up in a fixed order (deterministic, no atomics).
#pragma once
#include "common/scaled_bias_act_math.h"
#include "ops/item_lanes.h"
#include "ops/phases.h"
#include "ops/vec.h"

#if defined(__CUDACC__) || defined(PROGAN_FAST_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace progan_fast::scaled_bias_act_cuda {

using hd::opmath_t;

constexpr int kThreads = 256;
// A block's slice (items_per_block * channels) stays within kTileElems (hd::item_lanes), so the write phase
// re-reads it from L2 and its bias contributions fit the shared tile.
constexpr int64_t kTileElems = 4096;

// The item geometry (hd::ChannelItems: an item is a pixel's channels) and the bias tile's.
struct LaunchConfig : hd::ChannelItems<kThreads> {
  // The bias contributions of a block fit its shared tile; otherwise a block has one item and each lane
  // writes its channels' sums straight to the block's workspace row.
  PF_HD bool tiled() const { return items_per_block * channels <= kTileElems; }
  // Tile rows are padded by one so that consecutive items (planes layout) hit different banks.
  PF_HD int64_t tile_stride() const { return channels + 1; }
};

// The launch geometry, shared by the launcher and the emulation (hd::channel_items_config).
inline LaunchConfig launch_config(int64_t outer, int64_t channels, int64_t inner, int vector) {
  return hd::channel_items_config<kThreads>(outer, channels, inner, vector, kTileElems,
                                            [](const auto& items) { return LaunchConfig{items}; });
}

template <typename acc_t>
PF_HD acc_t act(acc_t v, acc_t slope) {
  return v > acc_t(0) ? v : v * slope;
}

template <typename acc_t>
struct Epilogue {
  acc_t scale, slope;
};

template <typename acc_t>
struct ReduceShared {
  acc_t partial[kThreads];  // indexed by thread: a warp's accesses hit distinct banks in both layouts
};

template <typename acc_t>
struct BackwardShared {
  acc_t partial[kThreads];     // sum(grad_y * y)
  acc_t partial_sq[kThreads];  // sum(y * y)
  acc_t tile[kTileElems + kThreads];  // [item_in_block][tile_stride]: each element's bias gradient contribution
};

// Phases before the write under pixel norm: 0 (an exchange that writes) or 1 (an exchange that leaves the warps'
// sums of an item in several warps in shared memory, hd::LaneSum).
PF_HD int reduction_phases(const LaunchConfig& cfg) { return cfg.sum.parts > 1 ? 1 : 0; }

// A lane's accesses: vectors lane, lane + lanes, ... of its item's cfg.vectors, N elements each (channels v * N
// on), the pointers stepped from one to the next. The tensors come in as __restrict__ parameters of these (inlined)
// functions because nvcc ignores __restrict__ on struct members: only then are the loads read-only (ld.global.nc)
// and free to be issued ahead of the stores.

// The pre-activations scale * x + bias[c] of one access, channels c0 to c0 + N - 1 (no bias: null).
template <int N, typename scalar_t, typename acc_t>
PF_HD void pre_activations(const hd::Vec<scalar_t, N>& xv, const scalar_t* __restrict__ bias, int64_t c0, acc_t scale,
                           acc_t (&v)[N]) {
  if (bias) {
    const hd::Vec<scalar_t, N> bv = hd::load_vec<N>(bias + c0);
    for (int i = 0; i < N; ++i) v[i] = hd::mul_add(hd::to_acc(xv.e[i]), scale, hd::to_acc(bv.e[i]));
  } else {
    for (int i = 0; i < N; ++i) v[i] = hd::mul_add(hd::to_acc(xv.e[i]), scale, acc_t(0));
  }
}

// ---- forward ----

// sum(a^2) over this lane's channels, a = act(scale * x + bias).
template <int N, typename scalar_t, typename acc_t>
PF_HD acc_t lane_sum_squares(const scalar_t* __restrict__ x, const scalar_t* __restrict__ bias, Epilogue<acc_t> ep,
                             const LaunchConfig& cfg, const hd::ItemSlot& s) {
  const int64_t step = cfg.lanes * cfg.vector_stride;
  acc_t sum = 0;
  x += s.base + s.lane * cfg.vector_stride;
  for (int64_t v = s.lane; v < cfg.vectors; v += cfg.lanes, x += step) {
    acc_t pre[N];
    pre_activations(hd::load_vec<N>(x), bias, v * N, ep.scale, pre);
    for (int i = 0; i < N; ++i) {
      const acc_t a = act(pre[i], ep.slope);
      sum = hd::mul_add(a, a, sum);
    }
  }
  return sum;
}

// y = a * rs over this lane's channels.
template <int N, typename scalar_t, typename acc_t>
PF_HD void lane_write(const scalar_t* __restrict__ x, const scalar_t* __restrict__ bias, scalar_t* __restrict__ y,
                      Epilogue<acc_t> ep, acc_t rs, const LaunchConfig& cfg, const hd::ItemSlot& s) {
  const int64_t first = s.base + s.lane * cfg.vector_stride, step = cfg.lanes * cfg.vector_stride;
  x += first;
  y += first;
  for (int64_t v = s.lane; v < cfg.vectors; v += cfg.lanes, x += step, y += step) {
    acc_t pre[N];
    pre_activations(hd::load_vec<N>(x), bias, v * N, ep.scale, pre);
    hd::Vec<scalar_t, N> yv;
    for (int i = 0; i < N; ++i) yv.e[i] = hd::from_acc<scalar_t>(act(pre[i], ep.slope) * rs);
    hd::store_vec<N>(y, yv);
  }
}

// The kernels are instantiated for N elements per access (hd::rows_vector_width) and for `inner` a power of two or
// not (hd::Divisor).
template <typename scalar_t, int N, bool kPow2Inner>
struct ForwardKernel {
  using acc_t = opmath_t<scalar_t>;
  static constexpr int kThreads = scaled_bias_act_cuda::kThreads;
  using Shared = ReduceShared<acc_t>;
  using Exchange = hd::Sums<acc_t, 1>;
  const scalar_t* x;
  const scalar_t* bias;  // null: no bias
  scalar_t* y;
  acc_t* rsqrt;  // one per item, with pixel norm
  Epilogue<acc_t> epilogue;
  acc_t eps;
  bool pixel_norm;
  LaunchConfig cfg;

  PF_HD int64_t blocks() const { return cfg.blocks; }
  PF_HD int phases() const { return (pixel_norm ? reduction_phases(cfg) : 0) + 1; }
  PF_HD int exchange_lanes() const { return pixel_norm ? cfg.sum.exchange_lanes : 0; }
  PF_HD int exchange_stride() const { return cfg.sum.exchange_stride; }

  // With pixel norm: this lane's share of sum(a^2).
  PF_HD acc_t partial(int64_t block, int tid) const {
    const hd::ItemSlot s = hd::item_slot<kPow2Inner>(cfg, block, tid);
    return s.active ? lane_sum_squares<N>(x, bias, epilogue, cfg, s) : acc_t(0);
  }

  // y = a (* rsqrt(mean(a^2) + eps), `total` = sum(a^2)); lane 0 stores the rsqrt for backward.
  PF_HD void write(acc_t total, int64_t block, int tid) const {
    const hd::ItemSlot s = hd::item_slot<kPow2Inner>(cfg, block, tid);
    if (!s.active) return;
    acc_t rs = 1;
    if (pixel_norm) {
      rs = hd::rsqrt_acc(total / acc_t(cfg.channels) + eps);
      if (s.lane == 0) rsqrt[s.item] = rs;
    }
    lane_write<N>(x, bias, y, epilogue, rs, cfg, s);
  }

  PF_HD Exchange before_exchange(Shared&, int64_t block, int tid) const { return {{partial(block, tid)}}; }
  PF_HD void after_exchange(Shared& sh, int64_t block, int tid, const Exchange& sums) const {
    const hd::LaneSum<kThreads>& sum = cfg.sum;
    if (sum.parts == 1) write(sums.v[0], block, tid);
    else if (sum.keeps(tid)) sh.partial[tid] = sums.v[0];
  }

  // Without pixel norm, phase 0; with it, phase 1 of an item in several warps.
  PF_HD void phase(int, Shared& sh, int64_t block, int tid) const {
    write(pixel_norm ? cfg.sum.total(sh.partial, tid) : acc_t(0), block, tid);
  }
};

// ---- backward ----

// What the backward knows of the forward: `saved` is y, or x when saved_is_input (then y and the sign of v are
// recomputed), or null for a linear activation without pixel norm.
template <typename acc_t>
struct Saved {
  Epilogue<acc_t> epilogue;
  bool is_input;
};

// The forward's y and the sign of v for one access of `saved` (channels c0 on) in an item with rsqrt rs.
template <int N, typename scalar_t, typename acc_t>
PF_HD void recompute(const scalar_t* __restrict__ saved, const scalar_t* __restrict__ bias, int64_t c0, Saved<acc_t> m,
                     acc_t rs, acc_t (&y)[N], acc_t (&sign)[N]) {
  if (!saved) {  // linear: act' = 1
    for (int i = 0; i < N; ++i) {
      y[i] = 0;
      sign[i] = 1;
    }
    return;
  }
  const hd::Vec<scalar_t, N> sv = hd::load_vec<N>(saved);
  if (!m.is_input) {
    for (int i = 0; i < N; ++i) y[i] = sign[i] = hd::to_acc(sv.e[i]);
    return;
  }
  pre_activations(sv, bias, c0, m.epilogue.scale, sign);
  for (int i = 0; i < N; ++i) y[i] = act(sign[i], m.epilogue.slope) * rs;
}

// sum(grad_y * y) and sum(y * y) over this lane's channels.
template <int N, typename scalar_t, typename acc_t>
PF_HD void lane_backward_sums(const scalar_t* __restrict__ grad_y, const scalar_t* __restrict__ saved,
                              const scalar_t* __restrict__ bias, Saved<acc_t> m, acc_t rs, const LaunchConfig& cfg,
                              const hd::ItemSlot& s, acc_t& sum, acc_t& sum_sq) {
  const int64_t first = s.base + s.lane * cfg.vector_stride, step = cfg.lanes * cfg.vector_stride;
  grad_y += first;
  if (saved) saved += first;
  for (int64_t v = s.lane; v < cfg.vectors; v += cfg.lanes, grad_y += step) {
    acc_t y[N], sign[N];
    recompute<N>(saved, bias, v * N, m, rs, y, sign);
    if (saved) saved += step;
    const hd::Vec<scalar_t, N> gy = hd::load_vec<N>(grad_y);
    for (int i = 0; i < N; ++i) {
      sum = hd::mul_add(hd::to_acc(gy.e[i]), y[i], sum);
      sum_sq = hd::mul_add(y[i], y[i], sum_sq);
    }
  }
}

// grad_x over this lane's channels; each element's bias gradient contribution gv to bias_row[c] when there is one
// (the item's row of the block's shared tile, or the block's workspace row).
template <int N, typename scalar_t, typename acc_t>
PF_HD void lane_backward_write(const scalar_t* __restrict__ grad_y, const scalar_t* __restrict__ saved,
                               const scalar_t* __restrict__ bias, scalar_t* __restrict__ grad_x,
                               acc_t* __restrict__ bias_row, Saved<acc_t> m, bool pixel_norm, acc_t rs, acc_t mean,
                               const LaunchConfig& cfg, const hd::ItemSlot& s) {
  const int64_t first = s.base + s.lane * cfg.vector_stride, step = cfg.lanes * cfg.vector_stride;
  grad_y += first;
  grad_x += first;
  if (saved) saved += first;
  for (int64_t v = s.lane; v < cfg.vectors; v += cfg.lanes, grad_y += step, grad_x += step) {
    acc_t y[N], sign[N];
    recompute<N>(saved, bias, v * N, m, rs, y, sign);
    if (saved) saved += step;
    const hd::Vec<scalar_t, N> gy = hd::load_vec<N>(grad_y);
    hd::Vec<scalar_t, N> gx;
    acc_t gv[N];
    for (int i = 0; i < N; ++i) {
      const acc_t g = hd::to_acc(gy.e[i]);
      const acc_t ga = pixel_norm ? rs * hd::mul_add(-y[i], mean, g) : g;
      gv[i] = sign[i] > acc_t(0) ? ga : ga * m.epilogue.slope;
      gx.e[i] = hd::from_acc<scalar_t>(gv[i] * m.epilogue.scale);
    }
    hd::store_vec<N>(grad_x, gx);
    if (bias_row)
      for (int i = 0; i < N; ++i) bias_row[v * N + i] = gv[i];
  }
}

// A block's bias sums: its tile summed over the block's items, one channel per thread at a time.
template <typename acc_t>
PF_HD void sum_tile(const acc_t* __restrict__ tile, acc_t* __restrict__ out, const LaunchConfig& cfg, int64_t block,
                    int tid) {
  const int64_t first = block * cfg.items_per_block;
  const int64_t items = cfg.items - first < cfg.items_per_block ? cfg.items - first : cfg.items_per_block;
  for (int64_t c = tid; c < cfg.channels; c += kThreads) {
    acc_t sum = 0;
    for (int64_t i = 0; i < items; ++i) sum += tile[i * cfg.tile_stride() + c];
    out[c] = sum;
  }
}

// gv = act'(v) * ga with ga = rsqrt * (grad_y - y * mean(grad_y * y)) under pixel norm, grad_y otherwise;
// grad_x = scale * gv; grad_bias = sum of gv over every pixel.
template <typename scalar_t, int N, bool kPow2Inner>
struct BackwardKernel {
  using acc_t = opmath_t<scalar_t>;
  static constexpr int kThreads = scaled_bias_act_cuda::kThreads;
  using Shared = BackwardShared<acc_t>;
  using Exchange = hd::Sums<acc_t, 2>;
  const scalar_t* grad_y;
  const scalar_t* saved;
  const acc_t* rsqrt;
  const scalar_t* bias;  // read when saved_is_input; may be null
  scalar_t* grad_x;
  acc_t* workspace;  // blocks x channels per-block bias sums; null without a bias gradient
  Saved<acc_t> mode;
  acc_t eps;
  bool pixel_norm;
  LaunchConfig cfg;

  PF_HD int64_t blocks() const { return cfg.blocks; }
  PF_HD int write_phase() const { return pixel_norm ? reduction_phases(cfg) : 0; }
  PF_HD int phases() const { return write_phase() + 1 + (workspace && cfg.tiled() ? 1 : 0); }
  PF_HD int exchange_lanes() const { return pixel_norm ? cfg.sum.exchange_lanes : 0; }
  PF_HD int exchange_stride() const { return cfg.sum.exchange_stride; }

  PF_HD acc_t item_rsqrt(const hd::ItemSlot& s) const { return pixel_norm ? hd::load_ro(rsqrt + s.item) : acc_t(1); }

  // With pixel norm: this lane's share of sum(grad_y * y) and of sum(y * y).
  PF_HD Exchange partials(int64_t block, int tid) const {
    const hd::ItemSlot s = hd::item_slot<kPow2Inner>(cfg, block, tid);
    Exchange sums{{acc_t(0), acc_t(0)}};
    if (s.active) lane_backward_sums<N>(grad_y, saved, bias, mode, item_rsqrt(s), cfg, s, sums.v[0], sums.v[1]);
    return sums;
  }

  // `totals`: the item's sum(grad_y * y) and sum(y * y) with pixel norm. mean(grad_y * y) is scaled by the factor
  // that restores y's exact norm (it was rounded to scalar_t when saved; see csrc/common/scaled_bias_act_math.h).
  // Over one channel ga is eps * r^3 * grad_y (pixel_norm_grad_scalars): the write takes that factor in rs's place
  // and mean 0, so the y it recomputes from x with it is multiplied by 0 (its sign, from v, is unchanged).
  PF_HD void write(const Exchange& totals, Shared& sh, int64_t block, int tid) const {
    const hd::ItemSlot s = hd::item_slot<kPow2Inner>(cfg, block, tid);
    if (!s.active) return;
    const acc_t n = acc_t(cfg.channels);
    acc_t rs = item_rsqrt(s), mean = 0;
    if (pixel_norm) {
      const PixelNormGradScalars<acc_t> g = pixel_norm_grad_scalars(
          cfg.channels, rs, totals.v[0] / n * scaled_bias_act_norm_fix(totals.v[1] / n, rs, eps), eps);
      rs = g.grad_scale;
      mean = g.projection;
    }
    acc_t* bias_row = !workspace ? nullptr
                      : cfg.tiled() ? sh.tile + s.item_in_block * cfg.tile_stride()
                                    : workspace + block * cfg.channels;  // the block's only item
    lane_backward_write<N>(grad_y, saved, bias, grad_x, bias_row, mode, pixel_norm, rs, mean, cfg, s);
  }

  PF_HD Exchange before_exchange(Shared&, int64_t block, int tid) const { return partials(block, tid); }
  PF_HD void after_exchange(Shared& sh, int64_t block, int tid, const Exchange& sums) const {
    const hd::LaneSum<kThreads>& sum = cfg.sum;
    if (sum.parts == 1) {
      write(sums, sh, block, tid);
    } else if (sum.keeps(tid)) {
      sh.partial[tid] = sums.v[0];
      sh.partial_sq[tid] = sums.v[1];
    }
  }

  PF_HD void phase(int p, Shared& sh, int64_t block, int tid) const {
    if (p > write_phase()) {
      sum_tile(sh.tile, workspace + block * cfg.channels, cfg, block, tid);
    } else {  // phase 0 without pixel norm, phase 1 of an item in several warps with it
      const hd::LaneSum<kThreads>& sum = cfg.sum;
      const Exchange totals = pixel_norm ? Exchange{{sum.total(sh.partial, tid), sum.total(sh.partial_sq, tid)}}
                                         : Exchange{{acc_t(0), acc_t(0)}};
      write(totals, sh, block, tid);
    }
  }
};

// The bias gradient's final sum: a block takes kBiasChannels consecutive channels (a warp reads a row's segment of
// them, coalesced) and its kBiasRowLanes warps split the rows, then add their sums in a tree over shared memory:
// rows / 8 serial additions per thread, where the backward's small-map grids leave hundreds of rows (one per block).
constexpr int kBiasChannels = hd::kWarpSize;
constexpr int kBiasRowLanes = kThreads / kBiasChannels;

// The sum of rows lane, lane + kBiasRowLanes, ... of workspace[row][c], in row order.
template <typename acc_t>
PF_HD acc_t sum_rows(const acc_t* __restrict__ workspace, int64_t rows, int64_t channels, int64_t c, int lane) {
  acc_t sum = 0;
  for (int64_t r = lane; r < rows; r += kBiasRowLanes) sum += hd::load_ro(workspace + r * channels + c);
  return sum;
}

// grad_bias[c] = sum over blocks of workspace[block][c]: accumulate, log2(kBiasRowLanes) tree steps, write.
template <typename scalar_t>
struct FinishBiasKernel {
  using acc_t = opmath_t<scalar_t>;
  static constexpr int kThreads = scaled_bias_act_cuda::kThreads;
  static constexpr int kSteps = hd::log2_of(kBiasRowLanes);
  struct Shared {
    acc_t partial[kThreads];  // [row lane][channel of the block]
  };
  const acc_t* workspace;
  scalar_t* grad_bias;
  int64_t rows, channels;

  PF_HD int64_t blocks() const { return hd::ceil_div(channels, kBiasChannels); }
  PF_HD int phases() const { return kSteps + 2; }
  PF_HD void phase(int p, Shared& sh, int64_t block, int tid) const {
    const int lane = tid / kBiasChannels;
    const int64_t c = block * kBiasChannels + (tid & (kBiasChannels - 1));
    if (p == 0) {
      sh.partial[tid] = c < channels ? sum_rows(workspace, rows, channels, c, lane) : acc_t(0);
    } else if (p <= kSteps) {
      const int half = kBiasRowLanes >> p;
      if (lane < half) sh.partial[tid] += sh.partial[tid + half * kBiasChannels];
    } else if (lane == 0 && c < channels) {
      grad_bias[c] = hd::from_acc<scalar_t>(sh.partial[tid]);
    }
  }
};

// Type-erased launch parameters: what the host side (csrc/host/scaled_bias_act.h) hands to a family's executor.
struct ForwardParams {
  const void* x;
  const void* bias;  // may be null
  void* y;
  void* rsqrt;  // with pixel norm
  int64_t outer, channels, inner;
  double scale, slope, eps;
  bool pixel_norm;
  hd::DType dtype;
};

struct BackwardParams {
  const void* grad_y;
  const void* saved;  // may be null (linear without pixel norm)
  const void* rsqrt;  // with pixel norm
  const void* bias;   // read when saved_is_input; may be null
  void* grad_x;
  void* workspace;  // workspace_elems(...) op-math values; null without a bias gradient
  void* grad_bias;  // null without a bias gradient
  int64_t outer, channels, inner;
  double scale, slope;
  bool pixel_norm;
  double eps;
  bool saved_is_input;
  hd::DType dtype;
};

// Size of BackwardParams::workspace: one row of channels per block, for any vector width (the scalar launch has
// the most blocks: 128-bit accesses only shrink a row's lanes).
inline int64_t workspace_elems(int64_t outer, int64_t channels, int64_t inner) {
  return launch_config(outer, channels, inner, 1).blocks * channels;
}

// Builds the kernels for p's dtype and hands them to `exec` (hd::CudaLaunch on the GPU, hd::Emulate in tests).
template <typename Exec>
auto run(const ForwardParams& p, const Exec& exec) {
  return hd::dispatch(p.dtype, [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    using acc_t = opmath_t<scalar_t>;
    const int vector = hd::rows_vector_width<scalar_t>(p.channels, p.inner, {p.x, p.bias, p.y});
    const LaunchConfig cfg = launch_config(p.outer, p.channels, p.inner, vector);
    const Epilogue<acc_t> epilogue{static_cast<acc_t>(p.scale), static_cast<acc_t>(p.slope)};
    return hd::with_rows_instantiation<scalar_t>(cfg.vector, p.inner, [&](auto n, auto pow2_inner) {
      return exec(ForwardKernel<scalar_t, decltype(n)::value, decltype(pow2_inner)::value>{
          static_cast<const scalar_t*>(p.x), static_cast<const scalar_t*>(p.bias), static_cast<scalar_t*>(p.y),
          static_cast<acc_t*>(p.rsqrt), epilogue, static_cast<acc_t>(p.eps), p.pixel_norm, cfg});
    });
  });
}

template <typename Exec>
auto run(const BackwardParams& p, const Exec& exec) {
  return hd::dispatch(p.dtype, [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    using acc_t = opmath_t<scalar_t>;
    const int vector = hd::rows_vector_width<scalar_t>(p.channels, p.inner, {p.grad_y, p.saved, p.bias, p.grad_x});
    const LaunchConfig cfg = launch_config(p.outer, p.channels, p.inner, vector);
    const Saved<acc_t> mode{{static_cast<acc_t>(p.scale), static_cast<acc_t>(p.slope)}, p.saved_is_input};
    acc_t* workspace = static_cast<acc_t*>(p.workspace);
    const auto error = hd::with_rows_instantiation<scalar_t>(cfg.vector, p.inner, [&](auto n, auto pow2_inner) {
      return exec(BackwardKernel<scalar_t, decltype(n)::value, decltype(pow2_inner)::value>{
          static_cast<const scalar_t*>(p.grad_y), static_cast<const scalar_t*>(p.saved),
          static_cast<const acc_t*>(p.rsqrt), static_cast<const scalar_t*>(p.bias), static_cast<scalar_t*>(p.grad_x),
          workspace, mode, static_cast<acc_t>(p.eps), p.pixel_norm, cfg});
    });
    if (error != decltype(error){} || !workspace) return error;
    return exec(FinishBiasKernel<scalar_t>{workspace, static_cast<scalar_t*>(p.grad_bias), cfg.blocks, p.channels});
  });
}

#if defined(__CUDACC__) || defined(PROGAN_FAST_WITH_CUDA)
// Defined in csrc/cuda/scaled_bias_act.cu: enqueue on `stream`, return the launch error.
cudaError_t cuda_launch(const ForwardParams& p, cudaStream_t stream);
cudaError_t cuda_launch(const BackwardParams& p, cudaStream_t stream);
#endif

}  // namespace progan_fast::scaled_bias_act_cuda
