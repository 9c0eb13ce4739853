// Minibatch stddev's CUDA kernels as per-thread phase functions (the kernel shape of csrc/ops/phases.h), compiled by
// nvcc (csrc/cuda/minibatch_stddev.cu) and by g++ for the emulated family that runs every thread of the real launch.
// Index math and grouping: ops/minibatch_stddev_geometry.h.
//
// Forward, two kernels (a grid-wide reduction needs the grid to finish; no atomics, so the result is
// deterministic):
//   ForwardStatKernel  one block per (group m, channel group f, chunk of positions). Each thread takes runs of N
//                      consecutive positions kThreads * N apart (N = 16 bytes of x where the tensors allow, else 1:
//                      launch_config; consecutive threads, consecutive addresses: coalesced in both layouts), and
//                      for each reads the G members twice (mean, then variance; the second read hits L1), copies
//                      them into y, and adds sqrt(var + eps) to its partial sum. Phases: accumulate and a warp
//                      exchange -> thread 0 adds the warps' sums and writes the chunk's partial.
//   ForwardStatWrite   one block per (sample n, channel group f, run of pixels): the threads add the chunks'
//                      partials of (m(n), f) (the same block sum, fixed order), and write s = total / K to y's
//                      channel C + f over the run (16 bytes per store in NCHW where H * W divides into them).
//                      x is read once and y written once: no separate concatenation.
// Backward, two kernels: BackwardStatKernel, one block per (m, f), reduces grad_y's statistic channel over the
// group and H x W into a[m, f] = sum / (K * D) (16 bytes per load where ForwardStatWrite stores them);
// BackwardKernel, one thread per run of N positions of a group (the forward's runs), recomputes the members' mean
// and sigma and writes dx = grad_y[:, :C] + (x - mean) * a / sigma for every member.
#pragma once
#include "ops/minibatch_stddev_geometry.h"
#include "ops/phases.h"
#include "ops/vec.h"

#if defined(__CUDACC__) || defined(PROGAN_FAST_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace progan_fast::minibatch_stddev_cuda {

using hd::opmath_t;
using minibatch_stddev::Geometry;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / hd::kWarpSize;
// Accesses per thread and block in the position kernels: up to kMaxIterations, fewer until the grid has
// kMinBlocks blocks (two waves of 2 blocks per SM on a 132-SM H100).
constexpr int64_t kMaxIterations = 16;
constexpr int64_t kMinBlocks = 512;
// Pixels of one statistic channel a ForwardStatWrite block writes.
constexpr int64_t kWritePixels = 4 * kThreads;

// The divisors of the kernels' block indices are hd::Divisors: every kernel is instantiated for kPow2, all of its
// divisors powers of two (every ProGAN shape: shifts), and for the general case (32-bit divides).
struct LaunchConfig {
  // Positions per access of the position kernels (ForwardStatKernel, BackwardKernel): 16 bytes of x and grad_x
  // (hd::kVec128), or 1. A vector is consecutive positions of one channel group (in channels last, of one pixel).
  int vector = 1;
  // Whether their accesses of y and grad_y are vectors too: where y's runs start 16 bytes apart as x's do, (C + F)
  // * H * W elements per sample dividing into vectors in NCHW, C + F per pixel in channels last (not ProGAN's F = 1
  // with C a power of two: a pixel of C + 1 values shifts every run off the 16-byte grid); else one element each.
  bool vector_y = false;
  // Elements per access of the statistic-channel kernels (ForwardStatWrite's stores into y, BackwardStatKernel's
  // loads of grad_y): kVec128 in NCHW where H * W divides into vectors (a channel's pixels are contiguous), y is
  // aligned and ForwardStatWrite's index math is shifts (write_pow2; the vector instantiations are only those);
  // else 1 (channels last: a pixel's statistic lies C + F elements from the next one's).
  int stat_vector = 1;
  // Member slices: at small maps the threads of a position-kernel block split each run's G members into `slices`
  // (a power of two <= min(G, kWarps)) of kThreads / slices threads, whole warps: slice s copies into y (forward)
  // or writes grad_x of (backward) the members k = s mod slices, and the forward's slice 0 alone sums the sigmas
  // (every backward slice recomputes the moments: its loads of x hit L1 and L2). More threads where one run per
  // thread gives few: N = 16, 512 x 4 x 4 (G = 4) launches 512 blocks instead of 128 (about 31 warps per SM of
  // 132 instead of 8), with no atomics (the block sums keep their fixed order).
  int slices = 1;
  int slice_threads_log2 = hd::log2_of(kThreads);  // log2(kThreads / slices)
  int64_t chunk = 1;        // positions per block of the position kernels: kThreads / slices * vector * iterations
  hd::Divisor chunks;       // per (group, channel group)
  hd::Divisor pixel_runs;   // ForwardStatWrite blocks per (sample, channel group)
  hd::Divisor features;     // F

  // Whether the divisors of each kernel are all powers of two: the position kernels (chunk_of and, in
  // channels_last, the positions' pixels), ForwardStatWrite (run_of and the sample's group), BackwardStatKernel
  // (its block's channel group).
  bool positions_pow2(const Geometry& g) const {
    return chunks.pow2() && features.pow2() && (!g.channels_last || g.cf.pow2());
  }
  bool write_pow2(const Geometry& g) const { return pixel_runs.pow2() && features.pow2() && g.grouping.pow2(); }
  bool backward_stat_pow2() const { return features.pow2(); }
};

// Blocks of the position kernels with `chunk` positions per block.
inline int64_t position_blocks(const Geometry& g, int64_t chunk) {
  return g.groups * g.features * hd::ceil_div(g.positions(), chunk);
}

// Positions per block at `vector` positions per access: kThreads * vector * (kMaxIterations, halved while the grid
// has fewer than kMinBlocks blocks, down to 1).
inline int64_t chunk_for(const Geometry& g, int vector) {
  int64_t iterations = kMaxIterations;
  while (iterations > 1 && position_blocks(g, kThreads * vector * iterations) < kMinBlocks) iterations /= 2;
  return kThreads * vector * iterations;
}

// cfg with its blocks' threads split into twice as many member slices (half the positions per block).
inline LaunchConfig with_twice_the_slices(const Geometry& g, LaunchConfig cfg) {
  cfg.slices *= 2;
  cfg.slice_threads_log2 -= 1;
  cfg.chunk /= 2;
  cfg.chunks = hd::Divisor::of(hd::ceil_div(g.positions(), cfg.chunk));
  return cfg;
}

// Member slices for cfg where a thread has one access (else 1): doubled while the grid has fewer than kMinBlocks
// blocks, up to min(G, kWarps); vectors keep power-of-two index math. A sliced thread has one run of positions.
inline LaunchConfig sliced(const Geometry& g, LaunchConfig cfg) {
  while (cfg.chunk == kThreads / cfg.slices * cfg.vector && position_blocks(g, cfg.chunk) < kMinBlocks &&
         2 * cfg.slices <= g.group_size && 2 * cfg.slices <= kWarps) {
    const LaunchConfig more = with_twice_the_slices(g, cfg);
    if (more.vector > 1 && !more.positions_pow2(g)) break;
    cfg = more;
  }
  return cfg;
}

// The launch for tensors of scalar_t: `x_like` (x, grad_x) and `y_like` (y, grad_y; empty for a fresh y, which is
// aligned). The position kernels take 16-byte accesses where every position vector starts a multiple of kVec128
// elements into an aligned tensor (K and, in channels last, C / F divide), with power-of-two index math (the only
// instantiation with vectors: every ProGAN shape), and where the grid keeps its blocks: up to kMinBlocks, as
// many as one position per access gives (at N = 16, 512 x 4 x 4: 128 blocks of single positions against 32 of
// vectors); then member slices where the grid is still small (sliced: 512 blocks there).
template <typename scalar_t>
LaunchConfig launch_config(const Geometry& g, std::initializer_list<const void*> x_like,
                           std::initializer_list<const void*> y_like) {
  constexpr int kN = hd::kVec128<scalar_t>;
  LaunchConfig cfg;
  cfg.features = hd::Divisor::of(g.features);
  cfg.pixel_runs = hd::Divisor::of(hd::ceil_div(g.pixels, kWritePixels));
  if (!g.channels_last && g.pixels % kN == 0 && cfg.write_pow2(g))
    cfg.stat_vector = hd::vector_width<scalar_t>(true, y_like);
  cfg.chunk = chunk_for(g, 1);
  cfg.chunks = hd::Divisor::of(hd::ceil_div(g.positions(), cfg.chunk));
  const bool divisible = g.positions() % kN == 0 && (!g.channels_last || g.cf.value % kN == 0);
  if (hd::vector_width<scalar_t>(divisible, x_like) == 1) return sliced(g, cfg);
  LaunchConfig vectors = cfg;
  vectors.vector = kN;
  vectors.chunk = chunk_for(g, kN);
  vectors.chunks = hd::Divisor::of(hd::ceil_div(g.positions(), vectors.chunk));
  const int64_t kept = kMinBlocks < position_blocks(g, cfg.chunk) ? kMinBlocks : position_blocks(g, cfg.chunk);
  if (!vectors.positions_pow2(g) || position_blocks(g, vectors.chunk) < kept) return sliced(g, cfg);
  const int64_t y_stride = g.channels_last ? g.channels + g.features : g.y_sample_stride();
  vectors.vector_y = y_stride % kN == 0 && hd::vector_width<scalar_t>(true, y_like) > 1;
  return sliced(g, vectors);
}

// The same for tensors of `dtype` (the hosts').
inline LaunchConfig launch_config(const Geometry& g, hd::DType dtype, std::initializer_list<const void*> x_like,
                                  std::initializer_list<const void*> y_like) {
  return hd::dispatch(dtype, [&](auto type) {
    return launch_config<typename decltype(type)::type>(g, x_like, y_like);
  });
}

// Calls f(N, kVectorY, kPow2) (integral constants) with the position kernels' instantiation for cfg.
template <typename scalar_t, typename F>
auto with_positions_instantiation(const Geometry& g, const LaunchConfig& cfg, F&& f) {
  using Vector = std::integral_constant<int, hd::kVec128<scalar_t>>;
  if (cfg.vector > 1 && cfg.vector_y) return f(Vector{}, std::true_type{}, std::true_type{});
  if (cfg.vector > 1) return f(Vector{}, std::false_type{}, std::true_type{});
  return hd::with_pow2_case(cfg.positions_pow2(g), [&](auto pow2) { return f(hd::Scalar{}, std::false_type{}, pow2); });
}

// The block sums of the reduction kernels: phase 0 is a warp exchange (csrc/ops/phases.h) that leaves each warp's
// sum in shared memory; phase 1 adds the kWarps of them in order. One barrier, where a tree took eight.
template <typename acc_t>
struct Shared {
  acc_t warp_sums[kWarps];
};

template <typename acc_t>
PF_HD void keep_warp_sum(Shared<acc_t>& sh, int tid, acc_t sum) {
  if ((tid & (hd::kWarpSize - 1)) == 0) sh.warp_sums[tid / hd::kWarpSize] = sum;
}

template <typename acc_t>
PF_HD acc_t block_total(const Shared<acc_t>& sh) {
  acc_t total = 0;
  for (int w = 0; w < kWarps; ++w) total += sh.warp_sums[w];
  return total;
}

// The kernels' loops take the tensors as __restrict__ parameters of these (inlined) functions, because nvcc ignores
// __restrict__ on struct members: only then may the loads be issued ahead of the stores. The tensors no thread
// writes are read by hd::load_ro / hd::load_vec (ld.global.nc), which nvcc does not choose from __restrict__ alone.

// N consecutive elements of a tensor laid out like y from p: one 16-byte access (kVector), or N of one element
// (channels last, whose runs in y are not aligned, and N == 1).
template <bool kVector, int N, typename T>
PF_HD hd::Vec<T, N> load_y_run(const T* p) {
  if constexpr (kVector) {
    return hd::load_vec<N>(p);
  } else {
    hd::Vec<T, N> v;
    for (int i = 0; i < N; ++i) v.e[i] = hd::load_ro(p + i);
    return v;
  }
}

template <bool kVector, int N, typename T>
PF_HD void store_y_run(T* p, const hd::Vec<T, N>& v) {
  if constexpr (kVector) {
    hd::store_vec<N>(p, v);
  } else {
    for (int i = 0; i < N; ++i) p[i] = v.e[i];
  }
}

// The members' mean and sigma^2 = var + eps at N consecutive positions (x + member offsets + `x_off`), every load
// of x read-only; with a non-null y, the forward's copy into y of the members k with k & copy_mask == 0 (slice 0's)
// while they are read: in the first pass (the mean's), or in the second with kCopyLate (the variance's, whose loads
// hit L1). The scalar double forward copies late: copying early, ptxas spilled it on sm_90 (and, the other way
// round, the other forwards).
template <int N, typename scalar_t>
struct Moments {
  opmath_t<scalar_t> mean[N], sigma_sq[N];
};

template <int N, bool kVectorY, bool kCopyLate, typename scalar_t>
PF_HD Moments<N, scalar_t> moments_at(const Geometry& g, const scalar_t* __restrict__ x, int64_t m, int64_t x_off,
                                      scalar_t* __restrict__ y, int64_t y_off, int64_t copy_mask,
                                      opmath_t<scalar_t> eps) {
  using acc_t = opmath_t<scalar_t>;
  Moments<N, scalar_t> mo;
  for (int i = 0; i < N; ++i) mo.mean[i] = 0;
  for (int64_t k = 0; k < g.group_size; ++k) {
    const int64_t n = g.sample(m, k);
    const hd::Vec<scalar_t, N> v = hd::load_vec<N>(x + n * g.x_sample_stride() + x_off);
    for (int i = 0; i < N; ++i) mo.mean[i] += hd::to_acc(v.e[i]);
    if (y && !kCopyLate && (k & copy_mask) == 0) store_y_run<kVectorY>(y + n * g.y_sample_stride() + y_off, v);
  }
  for (int i = 0; i < N; ++i) {
    mo.mean[i] *= acc_t(g.inv_group_size);
    mo.sigma_sq[i] = 0;
  }
  for (int64_t k = 0; k < g.group_size; ++k) {
    const int64_t n = g.sample(m, k);
    const hd::Vec<scalar_t, N> v = hd::load_vec<N>(x + n * g.x_sample_stride() + x_off);
    if (y && kCopyLate && (k & copy_mask) == 0) store_y_run<kVectorY>(y + n * g.y_sample_stride() + y_off, v);
    for (int i = 0; i < N; ++i) {
      const acc_t d = hd::to_acc(v.e[i]) - mo.mean[i];
      mo.sigma_sq[i] = hd::mul_add(d, d, mo.sigma_sq[i]);
    }
  }
  for (int i = 0; i < N; ++i) mo.sigma_sq[i] = hd::mul_add(mo.sigma_sq[i], acc_t(g.inv_divisor), eps);
  return mo;
}

// Replaces v[0], ..., v[N - 1] by f(v[i]), in that order, at one call site: the values rotate through the array
// (after N steps each is back in its place). Unrolled, the N square roots made ptxas spill: the vector forwards on
// sm_80 (sqrt's slow path is a subroutine call, and the registers live across it are saved), the double and half
// vector backwards on sm_90 (rsqrt).
#if defined(__CUDACC__)
#define PF_MINIBATCH_STDDEV_NO_UNROLL _Pragma("unroll 1")
#else
#define PF_MINIBATCH_STDDEV_NO_UNROLL
#endif
template <int N, typename T, typename F>
PF_HD void in_turn(T (&v)[N], F&& f) {
  PF_MINIBATCH_STDDEV_NO_UNROLL
  for (int step = 0; step < N; ++step) {
    const T first = f(v[0]);
    for (int i = 0; i + 1 < N; ++i) v[i] = v[i + 1];
    v[N - 1] = first;
  }
}

// Block b of the position kernels: (group, channel group, chunk). Block indices and positions are 32-bit (grids
// are, and the hosts refuse K >= 2^31).
struct Chunk {
  uint32_t group, feature, start, end;
};

template <bool kPow2>
PF_HD Chunk chunk_of(const Geometry& g, const LaunchConfig& cfg, int64_t block) {
  Chunk c;
  const hd::Divisor::Split<uint32_t> chunk = cfg.chunks.split<kPow2>(static_cast<uint32_t>(block));
  const hd::Divisor::Split<uint32_t> rest = cfg.features.split<kPow2>(chunk.quotient);
  c.group = rest.quotient;
  c.feature = rest.remainder;
  c.start = chunk.remainder * static_cast<uint32_t>(cfg.chunk);
  const int64_t end = int64_t(c.start) + cfg.chunk;
  c.end = static_cast<uint32_t>(end < g.positions() ? end : g.positions());
  return c;
}

// Thread tid's member slice and its index among the slice's threads (LaunchConfig::slices).
struct SliceLane {
  int slice, lane;
};
PF_HD SliceLane slice_lane(const LaunchConfig& cfg, int tid) {
  return {tid >> cfg.slice_threads_log2, tid & ((1 << cfg.slice_threads_log2) - 1)};
}

// Instantiated for N positions per access, y's accesses as vectors (kVectorY) and power-of-two index math
// (with_positions_instantiation).
template <typename scalar_t, int N, bool kVectorY, bool kPow2>
struct ForwardStatKernel {
  using acc_t = opmath_t<scalar_t>;
  static constexpr int kThreads = minibatch_stddev_cuda::kThreads;
  using Shared = minibatch_stddev_cuda::Shared<acc_t>;
  Geometry g;
  LaunchConfig cfg;
  const scalar_t* x;
  scalar_t* y;
  acc_t* partial;  // one per block
  acc_t eps;

  using Exchange = hd::Sums<acc_t, 1>;
  static constexpr bool kCopyLate = N == 1 && std::is_same_v<scalar_t, double>;

  PF_HD int64_t blocks() const { return g.groups * g.features * cfg.chunks.value; }
  PF_HD int phases() const { return 2; }
  PF_HD int exchange_lanes() const { return hd::kWarpSize; }
  PF_HD Exchange before_exchange(Shared&, int64_t block, int tid) const {
    return {{lane_sigma_sum(x, y, chunk_of<kPow2>(g, cfg, block), tid)}};
  }
  // This thread's runs of chunk c, N positions each: the sum of their sigmas, the members copied into y. With
  // member slices, one run (LaunchConfig::sliced): slice 0 sums its sigmas and copies its members, the others only
  // copy theirs (their sums are 0). Else kThreads * N apart. (The two paths apart: one loop for both spilled.)
  PF_HD acc_t lane_sigma_sum(const scalar_t* __restrict__ xs, scalar_t* __restrict__ ys, const Chunk& c,
                             int tid) const {
    acc_t acc = 0;
    if (cfg.slices > 1) {
      const SliceLane sl = slice_lane(cfg, tid);
      const uint32_t j = c.start + sl.lane * N;
      if (j >= c.end) return acc;
      const int64_t x_off = g.x_offset<kPow2>(c.feature, j), y_off = g.y_offset<kPow2>(c.feature, j);
      if (sl.slice == 0) {
        Moments<N, scalar_t> mo = moments_at<N, kVectorY, kCopyLate>(g, xs, c.group, x_off, ys, y_off,
                                                                      cfg.slices - 1, eps);
        in_turn(mo.sigma_sq, [&acc](acc_t sigma_sq) {  // the sigmas added in order, i = 0, ..., N - 1
          acc += std::sqrt(sigma_sq);
          return sigma_sq;
        });
      } else {
        for (int64_t k = sl.slice; k < g.group_size; k += cfg.slices) {
          const int64_t n = g.sample(c.group, k);
          store_y_run<kVectorY>(ys + n * g.y_sample_stride() + y_off,
                                hd::load_vec<N>(xs + n * g.x_sample_stride() + x_off));
        }
      }
      return acc;
    }
    for (uint32_t j = c.start + tid * N; j < c.end; j += kThreads * N) {
      Moments<N, scalar_t> mo = moments_at<N, kVectorY, kCopyLate>(g, xs, c.group, g.x_offset<kPow2>(c.feature, j),
                                                                    ys, g.y_offset<kPow2>(c.feature, j), 0, eps);
      in_turn(mo.sigma_sq, [&acc](acc_t sigma_sq) {  // the sigmas added in order, i = 0, ..., N - 1
        acc += std::sqrt(sigma_sq);
        return sigma_sq;
      });
    }
    return acc;
  }
  PF_HD void after_exchange(Shared& sh, int64_t, int tid, const Exchange& sums) const {
    keep_warp_sum(sh, tid, sums.v[0]);
  }
  PF_HD void phase(int, Shared& sh, int64_t block, int tid) const {
    if (tid == 0) partial[block] = block_total(sh);
  }
};

// Instantiated for N elements per store (LaunchConfig::stat_vector: kVec128 only with kPow2) and power-of-two index
// math.
template <typename scalar_t, int N, bool kPow2>
struct ForwardStatWrite {
  using acc_t = opmath_t<scalar_t>;
  static constexpr int kThreads = minibatch_stddev_cuda::kThreads;
  using Shared = minibatch_stddev_cuda::Shared<acc_t>;
  Geometry g;
  LaunchConfig cfg;
  const acc_t* partial;
  scalar_t* y;

  using Exchange = hd::Sums<acc_t, 1>;

  // Block b: (sample n, channel group f, run of pixels).
  struct Run {
    uint32_t run, f, n;
  };
  PF_HD Run run_of(int64_t block) const {
    const hd::Divisor::Split<uint32_t> run = cfg.pixel_runs.split<kPow2>(static_cast<uint32_t>(block));
    const hd::Divisor::Split<uint32_t> rest = cfg.features.split<kPow2>(run.quotient);
    return {run.remainder, rest.remainder, rest.quotient};
  }

  PF_HD int64_t blocks() const { return g.samples * g.features * cfg.pixel_runs.value; }
  PF_HD int phases() const { return 2; }
  PF_HD int exchange_lanes() const { return hd::kWarpSize; }
  PF_HD Exchange before_exchange(Shared&, int64_t block, int tid) const {
    const Run r = run_of(block);
    const uint32_t m = g.group_of<kPow2>(r.n);
    const acc_t* chunks = partial + (int64_t(m) * g.features + r.f) * cfg.chunks.value;
    acc_t acc = 0;
    for (int64_t i = tid; i < cfg.chunks.value; i += kThreads) acc += hd::load_ro(chunks + i);
    return {{acc}};
  }
  PF_HD void after_exchange(Shared& sh, int64_t, int tid, const Exchange& sums) const {
    keep_warp_sum(sh, tid, sums.v[0]);
  }
  PF_HD void phase(int, Shared& sh, int64_t block, int tid) const {
    const Run r = run_of(block);
    const scalar_t s = hd::from_acc<scalar_t>(g.zero ? acc_t(0) : block_total(sh) / acc_t(g.positions()));
    const int64_t end = (r.run + 1) * kWritePixels < g.pixels ? (r.run + 1) * kWritePixels : g.pixels;
    write(y, s, r, end, tid);
  }
  // s at the run's pixels up to `end`: N of them per store, kThreads * N apart. With vectors (NCHW, N dividing H *
  // W) the offsets are counted in vectors and multiplied by N last: nvcc keeps a store whole only where it sees the
  // offset is a multiple of 16 bytes.
  PF_HD void write(scalar_t* __restrict__ ys, scalar_t s, const Run& r, int64_t end, int tid) const {
    if constexpr (N > 1) {
      hd::Vec<scalar_t, N> v;
      for (int i = 0; i < N; ++i) v.e[i] = s;
      const int64_t plane = g.pixels / N;  // vectors per channel
      const int64_t first = (int64_t(r.n) * (g.channels + g.features) + g.channels + r.f) * plane;
      for (int64_t pixel = r.run * (kWritePixels / N) + tid; pixel < end / N; pixel += kThreads)
        hd::store_vec<N>(ys + (first + pixel) * N, v);
    } else {
      scalar_t* yn = ys + int64_t(r.n) * g.y_sample_stride();
      for (int64_t pixel = r.run * kWritePixels + tid; pixel < end; pixel += kThreads) yn[g.stat_offset(r.f, pixel)] = s;
    }
  }
};

// Instantiated for N elements per load (LaunchConfig::stat_vector: kVec128 only with kPow2) and power-of-two index
// math.
template <typename scalar_t, int N, bool kPow2>
struct BackwardStatKernel {
  using acc_t = opmath_t<scalar_t>;
  static constexpr int kThreads = minibatch_stddev_cuda::kThreads;
  using Shared = minibatch_stddev_cuda::Shared<acc_t>;
  Geometry g;
  LaunchConfig cfg;
  const scalar_t* grad_y;
  acc_t* a;  // one per (group, channel group)

  using Exchange = hd::Sums<acc_t, 1>;

  PF_HD int64_t blocks() const { return g.groups * g.features; }
  PF_HD int phases() const { return 2; }
  PF_HD int exchange_lanes() const { return hd::kWarpSize; }
  PF_HD Exchange before_exchange(Shared&, int64_t block, int tid) const {
    const hd::Divisor::Split<uint32_t> mf = cfg.features.split<kPow2>(static_cast<uint32_t>(block));
    return {{lane_sum(grad_y, mf.quotient, mf.remainder, tid)}};
  }
  // This thread's share of the statistic channel f over group m's members: N pixels per load (NCHW with vectors:
  // a channel's pixels are contiguous), kThreads * N apart, added in order.
  PF_HD acc_t lane_sum(const scalar_t* __restrict__ dy, uint32_t m, uint32_t f, int tid) const {
    acc_t acc = 0;
    for (int64_t k = 0; k < g.group_size; ++k) {
      const scalar_t* dyn = dy + g.sample(m, k) * g.y_sample_stride();
      if constexpr (N > 1) {
        const scalar_t* channel = dyn + g.stat_offset(f, 0);
        for (int64_t pixel = int64_t(tid) * N; pixel < g.pixels; pixel += kThreads * N) {
          const hd::Vec<scalar_t, N> v = hd::load_vec<N>(channel + pixel);
          for (int i = 0; i < N; ++i) acc += hd::to_acc(v.e[i]);
        }
      } else {
        for (int64_t pixel = tid; pixel < g.pixels; pixel += kThreads)
          acc += hd::to_acc(hd::load_ro(dyn + g.stat_offset(f, pixel)));
      }
    }
    return acc;
  }
  PF_HD void after_exchange(Shared& sh, int64_t, int tid, const Exchange& sums) const {
    keep_warp_sum(sh, tid, sums.v[0]);
  }
  PF_HD void phase(int, Shared& sh, int64_t block, int tid) const {
    if (tid == 0) a[block] = g.zero ? acc_t(0) : block_total(sh) * acc_t(g.inv_divisor) / acc_t(g.positions());
  }
};

template <typename scalar_t, int N, bool kVectorY, bool kPow2>
struct BackwardKernel {
  using acc_t = opmath_t<scalar_t>;
  static constexpr int kThreads = minibatch_stddev_cuda::kThreads;
  struct Shared {};
  Geometry g;
  LaunchConfig cfg;
  const scalar_t* grad_y;
  const scalar_t* x;
  const acc_t* a;
  scalar_t* grad_x;
  acc_t eps;

  PF_HD int64_t blocks() const { return g.groups * g.features * cfg.chunks.value; }
  PF_HD int phases() const { return 1; }
  PF_HD void phase(int, Shared&, int64_t block, int tid) const {
    lane_backward(grad_y, x, grad_x, chunk_of<kPow2>(g, cfg, block), tid);
  }
  // This thread's runs of chunk c, N positions each: with member slices, one run (LaunchConfig::sliced) for its
  // slice's members; else kThreads * N apart, for every member. (The two paths apart: one loop for both spilled.)
  PF_HD void lane_backward(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ xs,
                           scalar_t* __restrict__ dx, const Chunk& c, int tid) const {
    const acc_t coef = hd::load_ro(a + c.group * g.features + c.feature);
    if (cfg.slices > 1) {
      const SliceLane sl = slice_lane(cfg, tid);
      const uint32_t j = c.start + sl.lane * N;
      if (j < c.end) backward_run(dy, xs, dx, c, j, coef, sl.slice, cfg.slices);
      return;
    }
    for (uint32_t j = c.start + tid * N; j < c.end; j += kThreads * N)
      backward_run(dy, xs, dx, c, j, coef, 0, 1);
  }
  // grad_x at the run of N positions from j for the members k = first, first + stride, ... (stride 1: nvcc unrolls
  // that loop; a slice's few members take a run-time stride).
  PF_HD void backward_run(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ xs,
                          scalar_t* __restrict__ dx, const Chunk& c, uint32_t j, acc_t coef, int first,
                          int stride) const {
    const int64_t x_off = g.x_offset<kPow2>(c.feature, j);
    const int64_t y_off = g.y_offset<kPow2>(c.feature, j);
    acc_t mean[N], scale[N];
    for (int i = 0; i < N; ++i) mean[i] = scale[i] = 0;
    if (!g.zero) {  // the constant statistic has no gradient: dx = grad_y[:, :C]
      Moments<N, scalar_t> mo = moments_at<N, kVectorY, false, scalar_t>(g, xs, c.group, x_off, nullptr, 0, 0, eps);
      in_turn(mo.sigma_sq, [coef](acc_t sigma_sq) { return coef * hd::rsqrt_acc(sigma_sq); });
      for (int i = 0; i < N; ++i) {
        mean[i] = mo.mean[i];
        scale[i] = mo.sigma_sq[i];
      }
    }
    for (int64_t k = first; k < g.group_size; k += stride) {
      const int64_t n = g.sample(c.group, k);
      const int64_t xi = n * g.x_sample_stride() + x_off;
      const hd::Vec<scalar_t, N> xv = hd::load_vec<N>(xs + xi);
      const hd::Vec<scalar_t, N> dyv = load_y_run<kVectorY, N>(dy + n * g.y_sample_stride() + y_off);
      hd::Vec<scalar_t, N> out;
      for (int i = 0; i < N; ++i) {
        // A zero statistic contributes nothing, not 0 * x (NaN for a NaN/Inf x); a select, not a branch, keeps
        // the loop within the registers it had (a branch spilled on sm_80 in double). A product and a sum, no
        // FMA: choosing between grad and mul_add(centred, scale, grad), nvcc unrolled the members 2 ways, not 4.
        const acc_t centred = (hd::to_acc(xv.e[i]) - mean[i]) * scale[i];
        out.e[i] = hd::from_acc<scalar_t>(hd::to_acc(dyv.e[i]) + (g.zero ? acc_t(0) : centred));
      }
      hd::store_vec<N>(dx + xi, out);
    }
  }
};

// Type-erased launch parameters: what the host side (csrc/host/minibatch_stddev.h) hands to a family's executor,
// with the launch configuration the host sized its buffers by (launch_config).
struct ForwardStatParams {
  Geometry g;
  LaunchConfig cfg;
  const void* x;
  void* y;
  void* partial;  // cfg.chunks per (group, channel group), op-math dtype
  double eps;
  hd::DType dtype;
};

struct ForwardWriteParams {
  Geometry g;
  LaunchConfig cfg;
  const void* partial;
  void* y;
  hd::DType dtype;
};

struct BackwardStatParams {
  Geometry g;
  LaunchConfig cfg;
  const void* grad_y;
  void* a;  // one per (group, channel group), op-math dtype
  hd::DType dtype;
};

struct BackwardParams {
  Geometry g;
  LaunchConfig cfg;
  const void* grad_y;
  const void* x;
  const void* a;
  void* grad_x;
  double eps;
  hd::DType dtype;
};

// Each builds the kernel for p's dtype and instantiation and hands it to `exec` (hd::CudaLaunch on the GPU,
// hd::Emulate in tests).
template <typename Exec>
auto run(const ForwardStatParams& p, const Exec& exec) {
  return hd::dispatch(p.dtype, [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    using acc_t = opmath_t<scalar_t>;
    return with_positions_instantiation<scalar_t>(p.g, p.cfg, [&](auto n, auto vector_y, auto pow2) {
      return exec(ForwardStatKernel<scalar_t, decltype(n)::value, decltype(vector_y)::value, decltype(pow2)::value>{
          p.g, p.cfg, static_cast<const scalar_t*>(p.x), static_cast<scalar_t*>(p.y),
          static_cast<acc_t*>(p.partial), static_cast<acc_t>(p.eps)});
    });
  });
}

template <typename Exec>
auto run(const ForwardWriteParams& p, const Exec& exec) {
  return hd::dispatch(p.dtype, [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    using acc_t = opmath_t<scalar_t>;
    const auto launch = [&](auto n, auto pow2) {
      return exec(ForwardStatWrite<scalar_t, decltype(n)::value, decltype(pow2)::value>{
          p.g, p.cfg, static_cast<const acc_t*>(p.partial), static_cast<scalar_t*>(p.y)});
    };
    return hd::with_vector_case<scalar_t>(p.cfg.stat_vector > 1, p.cfg.write_pow2(p.g), launch);
  });
}

template <typename Exec>
auto run(const BackwardStatParams& p, const Exec& exec) {
  return hd::dispatch(p.dtype, [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    using acc_t = opmath_t<scalar_t>;
    const auto launch = [&](auto n, auto pow2) {
      return exec(BackwardStatKernel<scalar_t, decltype(n)::value, decltype(pow2)::value>{
          p.g, p.cfg, static_cast<const scalar_t*>(p.grad_y), static_cast<acc_t*>(p.a)});
    };
    return hd::with_vector_case<scalar_t>(p.cfg.stat_vector > 1, p.cfg.backward_stat_pow2(), launch);
  });
}

template <typename Exec>
auto run(const BackwardParams& p, const Exec& exec) {
  return hd::dispatch(p.dtype, [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    using acc_t = opmath_t<scalar_t>;
    return with_positions_instantiation<scalar_t>(p.g, p.cfg, [&](auto n, auto vector_y, auto pow2) {
      return exec(BackwardKernel<scalar_t, decltype(n)::value, decltype(vector_y)::value, decltype(pow2)::value>{
          p.g, p.cfg, static_cast<const scalar_t*>(p.grad_y), static_cast<const scalar_t*>(p.x),
          static_cast<const acc_t*>(p.a), static_cast<scalar_t*>(p.grad_x), static_cast<acc_t>(p.eps)});
    });
  });
}

#if defined(__CUDACC__) || defined(PROGAN_FAST_WITH_CUDA)
// Defined in csrc/cuda/minibatch_stddev.cu: enqueue on `stream`, return the launch error.
cudaError_t cuda_launch(const ForwardStatParams& p, cudaStream_t stream);
cudaError_t cuda_launch(const ForwardWriteParams& p, cudaStream_t stream);
cudaError_t cuda_launch(const BackwardStatParams& p, cudaStream_t stream);
cudaError_t cuda_launch(const BackwardParams& p, cudaStream_t stream);
#endif

}  // namespace progan_fast::minibatch_stddev_cuda
