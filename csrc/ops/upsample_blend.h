// upsample_blend's CUDA kernels as phase structs (csrc/ops/phases.h), compiled by nvcc (csrc/cuda/
// upsample_blend.cu) and by g++ for the emulated family. Tensors are dense in the layout the host chose and seen
// as rows of `row` values (a row of one channel's pixels for NCHW, of all channels' for channels_last, `vec` values
// per pixel): high row r lies over low row r / factor.
//   forward:  a thread per N consecutive high values (N elements per access, csrc/ops/vec.h), y = lerp(low value
//             under each, high value, alpha). Consecutive threads write consecutive values; a low value is re-read
//             from L1/L2 by the threads that share it. Channels last with N dividing the channels: the N low values
//             are one vector too; NCHW: N dividing a row, the low values are read one by one.
//   backward: an item per low value; `lanes` threads share its factor x factor window (a 2x2 window: 4 lanes,
//             so a warp reads 2 x 16 consecutive values of two rows), each writes alpha * g for its window values
//             and sums them; a warp exchange over the lanes then gives grad_low = (1 - alpha) * sum.
// Index math divides by the row lengths, `vec` and `factor`: shifts in the kernels instantiated for powers of two
// (hd::Divisor; every ProGAN shape but RGB's 3 channels per pixel). Vectors are taken only there, which keeps the
// forward to four instantiations per dtype.
#pragma once
#include "ops/fade_common.h"
#include "ops/phases.h"
#include "ops/vec.h"

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
};

// The divisions of the kernels' index math.
struct Index {
  hd::Divisor low_row, high_row, vec, factor;

  static Index of(const Geometry& g) {
    return {hd::Divisor::of(g.low_row()), hd::Divisor::of(g.high_row()), hd::Divisor::of(g.vec),
            hd::Divisor::of(g.factor)};
  }
  bool pow2() const { return low_row.pow2() && high_row.pow2() && vec.pow2() && factor.pow2(); }

  // The low value under high value `i`.
  template <bool kPow2>
  PF_HD int64_t low_of(int64_t i) const {
    const int64_t r = high_row.divide<kPow2>(i), j = i - r * high_row.value;
    const int64_t x = vec.divide<kPow2>(j), k = j - x * vec.value;
    return factor.divide<kPow2>(r) * low_row.value + factor.divide<kPow2>(x) * vec.value + k;
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

// Forward launch geometry: N high values per thread (`pixels`: channels last, N dividing the channels, so the low
// values are a vector too).
struct ForwardConfig {
  int vector = 1;
  bool pixels = false;
  Index index;
  int64_t units = 0, blocks = 0;
};

template <typename scalar_t>
ForwardConfig forward_config(const ForwardParams& p) {
  constexpr int kN = hd::kVec128<scalar_t>;
  ForwardConfig cfg;
  cfg.index = Index::of(p.geo);
  const bool pixels = p.geo.vec % kN == 0, rows = p.geo.vec == 1 && p.geo.high_row() % kN == 0;
  if ((pixels || rows) && cfg.index.pow2()) cfg.vector = hd::vector_width<scalar_t>(true, {p.low, p.high, p.y});
  cfg.pixels = cfg.vector > 1 && pixels;
  cfg.units = p.geo.high_numel() / cfg.vector;
  cfg.blocks = hd::ceil_div(cfg.units, kThreads);
  return cfg;
}

// y = lerp(low, high, alpha) for the N high values from i.
template <int N, bool kPixels, bool kPow2, typename scalar_t, typename acc_t>
PF_HD void blend(const scalar_t* __restrict__ low, const scalar_t* __restrict__ high, scalar_t* __restrict__ y,
                 const Index& ix, int64_t i, acc_t a) {
  const int64_t first_low = ix.low_of<kPow2>(i);
  acc_t l[N];
  if constexpr (kPixels) {
    const hd::Vec<scalar_t, N> lv = hd::load_vec<N>(low + first_low);
    for (int e = 0; e < N; ++e) l[e] = hd::to_acc(lv.e[e]);
  } else {  // N values of one row of one channel (vec 1): a low value per `factor` of them
    const int64_t x = i - ix.high_row.divide<kPow2>(i) * ix.high_row.value;
    const int64_t row_start = first_low - ix.factor.divide<kPow2>(x);
    for (int e = 0; e < N; ++e) l[e] = hd::to_acc(hd::load_ro(low + row_start + ix.factor.divide<kPow2>(x + e)));
  }
  const hd::Vec<scalar_t, N> hv = hd::load_vec<N>(high + i);
  hd::Vec<scalar_t, N> yv;
  for (int e = 0; e < N; ++e) yv.e[e] = hd::from_acc<scalar_t>(fade_cuda::lerp(l[e], hd::to_acc(hv.e[e]), a));
  hd::store_vec<N>(y + i, yv);
}

template <typename scalar_t, int N, bool kPixels, bool kPow2>
struct ForwardKernel {
  static constexpr int kThreads = upsample_blend_cuda::kThreads;
  struct Shared {};
  const scalar_t* low;
  const scalar_t* high;
  scalar_t* y;
  ForwardConfig cfg;
  fade_cuda::Alpha alpha;

  PF_HD int64_t blocks() const { return cfg.blocks; }
  PF_HD int phases() const { return 1; }
  PF_HD void phase(int, Shared&, int64_t block, int tid) const {
    using acc_t = opmath_t<scalar_t>;
    const int64_t unit = block * kThreads + tid;
    if (unit >= cfg.units) return;
    blend<N, kPixels, kPow2>(low, high, y, cfg.index, unit * N, alpha.load<acc_t>());
  }
};

// Backward launch geometry: lanes per low value (a power of two <= the window and a warp), items per block.
struct BackwardConfig {
  int lanes = 1;
  int lanes_log2 = 0;
  int items_per_block = kThreads;
  int64_t blocks = 0;
  Index index;
};

inline BackwardConfig backward_config(const Geometry& geo) {
  BackwardConfig cfg;
  const int64_t window = geo.factor * geo.factor;
  while (cfg.lanes < window && cfg.lanes < kMaxLanes) {
    cfg.lanes *= 2;
    ++cfg.lanes_log2;
  }
  cfg.items_per_block = kThreads / cfg.lanes;
  cfg.blocks = hd::ceil_div(geo.low_numel(), cfg.items_per_block);
  cfg.index = Index::of(geo);
  return cfg;
}

// Lane `lane` of low value `item`'s window: grad_high = alpha * g for its values; returns their sum.
template <bool kPow2, typename scalar_t, typename acc_t>
PF_HD acc_t lane_window(const scalar_t* __restrict__ grad_y, scalar_t* __restrict__ grad_high, const Index& ix,
                        int lanes, int64_t item, int lane, acc_t a) {
  const int64_t row = ix.low_row.divide<kPow2>(item), j = item - row * ix.low_row.value;
  const int64_t x = ix.vec.divide<kPow2>(j), k = j - x * ix.vec.value;
  const int64_t factor = ix.factor.value, window = factor * factor;
  acc_t sum = 0;
  for (int64_t e = lane; e < window; e += lanes) {
    const int64_t ty = ix.factor.divide<kPow2>(e), tx = e - ty * factor;
    const int64_t i = (row * factor + ty) * ix.high_row.value + (x * factor + tx) * ix.vec.value + k;
    const acc_t g = hd::to_acc(hd::load_ro(grad_y + i));
    grad_high[i] = hd::from_acc<scalar_t>(a * g);
    sum += g;
  }
  return sum;
}

// One warp-exchange phase (csrc/ops/phases.h): an item's lanes are consecutive threads, at most a warp.
template <typename scalar_t, bool kPow2>
struct BackwardKernel {
  static constexpr int kThreads = upsample_blend_cuda::kThreads;
  using acc_t = opmath_t<scalar_t>;
  struct Shared {};
  using Exchange = hd::Sums<acc_t, 1>;
  const scalar_t* grad_y;
  scalar_t* grad_low;
  scalar_t* grad_high;
  int64_t low_numel;
  fade_cuda::Alpha alpha;
  BackwardConfig cfg;

  PF_HD int64_t blocks() const { return cfg.blocks; }
  PF_HD int phases() const { return 1; }
  PF_HD int exchange_lanes() const { return cfg.lanes; }
  PF_HD int64_t item(int64_t block, int tid) const { return block * cfg.items_per_block + (tid >> cfg.lanes_log2); }

  PF_HD Exchange before_exchange(Shared&, int64_t block, int tid) const {
    const int64_t i = item(block, tid);
    if (i >= low_numel) return {{acc_t(0)}};
    return {{lane_window<kPow2>(grad_y, grad_high, cfg.index, cfg.lanes, i, tid & (cfg.lanes - 1),
                                alpha.load<acc_t>())}};
  }
  PF_HD void after_exchange(Shared&, int64_t block, int tid, const Exchange& sums) const {
    const int64_t i = item(block, tid);
    if ((tid & (cfg.lanes - 1)) == 0 && i < low_numel)
      grad_low[i] = hd::from_acc<scalar_t>((acc_t(1) - alpha.load<acc_t>()) * sums.v[0]);
  }
};

template <typename Exec>
auto run(const ForwardParams& p, const Exec& exec) {
  return hd::dispatch(p.dtype, [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    const ForwardConfig cfg = forward_config<scalar_t>(p);
    const auto launch = [&](auto n, auto pixels, auto pow2) {
      return exec(ForwardKernel<scalar_t, decltype(n)::value, decltype(pixels)::value, decltype(pow2)::value>{
          static_cast<const scalar_t*>(p.low), static_cast<const scalar_t*>(p.high), static_cast<scalar_t*>(p.y), cfg,
          p.alpha});
    };
    using Vector = std::integral_constant<int, hd::kVec128<scalar_t>>;
    if (cfg.vector > 1 && cfg.pixels) return launch(Vector{}, std::true_type{}, std::true_type{});
    if (cfg.vector > 1) return launch(Vector{}, std::false_type{}, std::true_type{});
    return hd::with_pow2_case(cfg.index.pow2(),
                              [&](auto pow2) { return launch(hd::Scalar{}, std::true_type{}, pow2); });
  });
}

template <typename Exec>
auto run(const BackwardParams& p, const Exec& exec) {
  return hd::dispatch(p.dtype, [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    const BackwardConfig cfg = backward_config(p.geo);
    return hd::with_pow2_case(cfg.index.pow2(), [&](auto pow2) {
      return exec(BackwardKernel<scalar_t, decltype(pow2)::value>{
          static_cast<const scalar_t*>(p.grad_y), static_cast<scalar_t*>(p.grad_low),
          static_cast<scalar_t*>(p.grad_high), p.geo.low_numel(), p.alpha, cfg});
    });
  });
}

#if defined(__CUDACC__) || defined(PROGAN_FAST_WITH_CUDA)
// Defined in csrc/cuda/upsample_blend.cu: enqueue on `stream`, return the launch error.
cudaError_t cuda_launch(const ForwardParams& p, cudaStream_t stream);
cudaError_t cuda_launch(const BackwardParams& p, cudaStream_t stream);
#endif

}  // namespace progan_fast::upsample_blend_cuda
