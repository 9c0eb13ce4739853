// fade_reals' CUDA kernel as a phase struct (csrc/ops/phases.h), compiled by nvcc (csrc/cuda/fade_reals.cu) and
// by g++ for the emulated family. Each thread reads whole 2x2 blocks and writes lerp(their mean, each value,
// alpha): one read and one write of x, nothing else. A thread's unit of work, by elements per access N
// (csrc/ops/vec.h):
//   N == 1  one 2x2 block of one channel: 4 loads, 4 stores.
//   pixels  (channels last, N dividing the channels) N channels of one 2x2 block of pixels: 4 vector loads and
//           stores.
//   rows    (NCHW, N dividing a row) N values of a top row and the N below them, N/2 blocks: 2 vector loads and
//           stores.
// Consecutive threads take consecutive units of a row pair, so a warp's loads and stores cover contiguous runs of
// both rows.
#pragma once
#include "ops/fade_common.h"
#include "ops/phases.h"
#include "ops/vec.h"

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

struct Geometry {
  int vector = 1;                // elements per access N
  bool rows = false;             // the rows unit (else pixels, or N == 1)
  int64_t units = 0;             // threads with work
  hd::Divisor units_per_pair;    // per row pair
  hd::Divisor units_per_block;   // per 2x2 block of pixels: vec / N (1 for the rows unit)
  // Accesses of N elements per row and per pixel (both divide when N > 1). The kernels index in accesses and
  // multiply by N last: only an offset nvcc sees to be a multiple of 16 bytes gets one 128-bit store (it splits
  // store_vec's copy into 16-, 32- and 64-bit stores where it cannot, with 2 * pair * row elements: 1 of 85 stores
  // of the vector kernels was 128-bit on sm_90).
  int64_t row = 0, vec = 1;
  int64_t blocks = 0;
  // Every unit's index math is shifts (kernels instantiated for it); vectors are taken only then, which keeps
  // the instantiations to four per dtype: every ProGAN shape is a power of two, except RGB's 3 channels per pixel.
  bool pow2() const { return units_per_pair.pow2() && units_per_block.pow2(); }
};

// The launch geometry, shared by the launcher and the emulation (and the tests' introspection).
template <typename scalar_t>
Geometry geometry(const Params& p) {
  constexpr int kN = hd::kVec128<scalar_t>;
  Geometry g;
  const bool rows = p.vec == 1 && p.width % kN == 0, pixels = p.vec > 1 && p.vec % kN == 0;
  const auto pow2 = [](int64_t v) { return hd::Divisor::of(v).pow2(); };
  if ((rows && pow2(p.width / kN)) || (pixels && pow2(p.width / 2) && pow2(p.vec / kN)))
    g.vector = hd::vector_width<scalar_t>(true, {p.x, p.y});
  g.rows = g.vector > 1 && rows;
  g.row = p.width * p.vec / g.vector;
  g.vec = g.rows ? 1 : p.vec / g.vector;
  const int64_t units_per_pair = g.rows ? p.width / g.vector : (p.width / 2) * (p.vec / g.vector);
  g.units_per_pair = hd::Divisor::of(units_per_pair);
  g.units_per_block = hd::Divisor::of(g.rows ? 1 : p.vec / g.vector);
  g.units = p.row_pairs * units_per_pair;
  g.blocks = hd::ceil_div(g.units, kThreads);
  return g;
}

// One 2x2 block: y = lerp(mean, v, alpha) for its values v (top left, top right, bottom left, bottom right).
template <typename acc_t>
PF_HD void blend_block(const acc_t (&v)[4], acc_t a, acc_t (&y)[4]) {
  const acc_t mean = ((v[0] + v[1]) + (v[2] + v[3])) * acc_t(0.25);
  for (int e = 0; e < 4; ++e) y[e] = fade_cuda::lerp(mean, v[e], a);
}

// The rows unit: N values of the top row from access `top` (offsets in accesses of N elements) and the N below
// them.
template <int N, typename scalar_t, typename acc_t>
PF_HD void blend_rows(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, int64_t top, int64_t row, acc_t a) {
  const int64_t offsets[2] = {top * N, (top + row) * N};
  const hd::Vec<scalar_t, N> t = hd::load_vec<N>(x + offsets[0]), b = hd::load_vec<N>(x + offsets[1]);
  hd::Vec<scalar_t, N> yt, yb;
  for (int i = 0; i < N; i += 2) {
    const acc_t v[4] = {hd::to_acc(t.e[i]), hd::to_acc(t.e[i + 1]), hd::to_acc(b.e[i]), hd::to_acc(b.e[i + 1])};
    acc_t out[4];
    blend_block(v, a, out);
    yt.e[i] = hd::from_acc<scalar_t>(out[0]);
    yt.e[i + 1] = hd::from_acc<scalar_t>(out[1]);
    yb.e[i] = hd::from_acc<scalar_t>(out[2]);
    yb.e[i + 1] = hd::from_acc<scalar_t>(out[3]);
  }
  hd::store_vec<N>(y + offsets[0], yt);
  hd::store_vec<N>(y + offsets[1], yb);
}

// The pixels unit (and N == 1): N channels of the 2x2 pixels from access `top`, `vec` accesses apart in a row.
template <int N, typename scalar_t, typename acc_t>
PF_HD void blend_pixels(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, int64_t top, int64_t row,
                        int64_t vec, acc_t a) {
  const int64_t offsets[4] = {top * N, (top + vec) * N, (top + row) * N, (top + row + vec) * N};
  hd::Vec<scalar_t, N> in[4], out[4];
  for (int e = 0; e < 4; ++e) in[e] = hd::load_vec<N>(x + offsets[e]);
  for (int i = 0; i < N; ++i) {
    const acc_t v[4] = {hd::to_acc(in[0].e[i]), hd::to_acc(in[1].e[i]), hd::to_acc(in[2].e[i]),
                        hd::to_acc(in[3].e[i])};
    acc_t blended[4];
    blend_block(v, a, blended);
    for (int e = 0; e < 4; ++e) out[e].e[i] = hd::from_acc<scalar_t>(blended[e]);
  }
  for (int e = 0; e < 4; ++e) hd::store_vec<N>(y + offsets[e], out[e]);
}

// Instantiated for N elements per access, the rows unit, and power-of-two index math (Geometry::pow2).
template <typename scalar_t, int N, bool kRows, bool kPow2>
struct Kernel {
  static constexpr int kThreads = fade_reals_cuda::kThreads;
  struct Shared {};
  const scalar_t* x;
  scalar_t* y;
  Geometry g;
  fade_cuda::Alpha alpha;

  PF_HD int64_t blocks() const { return g.blocks; }
  PF_HD int phases() const { return 1; }
  PF_HD void phase(int, Shared&, int64_t block, int tid) const {
    using acc_t = opmath_t<scalar_t>;
    const int64_t unit = block * kThreads + tid;
    if (unit >= g.units) return;
    const int64_t pair = g.units_per_pair.divide<kPow2>(unit), j = unit - pair * g.units_per_pair.value;
    const acc_t a = alpha.load<acc_t>();
    if constexpr (kRows) {
      blend_rows<N>(x, y, 2 * pair * g.row + j, g.row, a);
    } else {
      const int64_t bx = g.units_per_block.divide<kPow2>(j), k = j - bx * g.units_per_block.value;
      blend_pixels<N>(x, y, 2 * pair * g.row + 2 * bx * g.vec + k, g.row, g.vec, a);
    }
  }
};

template <typename Exec>
auto run(const Params& p, const Exec& exec) {
  return hd::dispatch(p.dtype, [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    const Geometry g = geometry<scalar_t>(p);
    const auto launch = [&](auto n, auto rows, auto pow2) {
      return exec(Kernel<scalar_t, decltype(n)::value, decltype(rows)::value, decltype(pow2)::value>{
          static_cast<const scalar_t*>(p.x), static_cast<scalar_t*>(p.y), g, p.alpha});
    };
    using Vector = std::integral_constant<int, hd::kVec128<scalar_t>>;
    if (g.vector > 1 && g.rows) return launch(Vector{}, std::true_type{}, std::true_type{});
    if (g.vector > 1) return launch(Vector{}, std::false_type{}, std::true_type{});
    return hd::with_pow2_case(g.pow2(), [&](auto pow2) { return launch(hd::Scalar{}, std::false_type{}, pow2); });
  });
}

#if defined(__CUDACC__) || defined(PROGAN_FAST_WITH_CUDA)
// Defined in csrc/cuda/fade_reals.cu: enqueue on `stream`, return the launch error.
cudaError_t cuda_launch(const Params& p, cudaStream_t stream);
#endif

}  // namespace progan_fast::fade_reals_cuda
