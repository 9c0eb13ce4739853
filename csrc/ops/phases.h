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
// The first phase may instead sum values across the lanes of a warp, with no barrier and no shared memory: groups
// of `lanes` consecutive threads (a power of two <= 32, aligned) each get their group's sum. K then also has
//   using Exchange = hd::Sums<acc_t, M>;          the M values a thread contributes
//   int exchange_lanes() const;                   group size if phase 0 is an exchange, else 0
//   Exchange before_exchange(Shared&, int64_t block, int tid) const;   thread tid's values (PF_HD)
//   void after_exchange(Shared&, int64_t block, int tid, const Exchange& sums) const;   the rest of phase 0
// (a kernel that is only that phase has no `phase`). Only phase 0, which keeps the shuffles out of the loop over
// phases and its barriers. The GPU sums with a __shfl_xor_sync butterfly, offsets lanes/2, ..., 2, 1
// (csrc/cuda/launch.cuh); `emulate` runs every lane of a warp up to the exchange, performs the same butterfly on
// their values in the same order, then runs every lane's rest: the sums are bit-identical. Every lane of a group ends with the same bits (a + b == b + a),
// which are also those of the shared-memory tree over the group's lanes (halves lanes/2, ..., 1).
//
// Inside a phase, a thread's loops over its tensors belong in (inlined) functions taking the tensors as
// __restrict__ parameters: nvcc ignores __restrict__ on the members of K, so without them no load may be issued
// before an earlier store, and none takes the read-only path. They move 16 bytes per access where the tensors are
// aligned (csrc/ops/vec.h) and divide indices by powers of two with shifts (hd::Divisor). Pixel norm, the epilogue,
// the fade-in blends, fade_from_rgb and minibatch stddev do all three (fade_from_rgb's channels-last channel kernel
// excepted: its thread's values lie C apart, and consecutive threads read consecutive channels). What remains:
//   - minibatch stddev in channels last with ProGAN's one statistic channel: a pixel of y is C + 1 values, so y's and
//     grad_y's runs start off the 16-byte grid and a pixel's statistic lies C + 1 elements from the next one's: one
//     element per access there (16 bytes where C + F divides into vectors, and in NCHW, statistic channels too);
//   - the lanes of an NCHW item lie in different warps, so their sums go through shared-memory trees, a barrier per
//     halving (pixel norm's and the epilogue's planes, fade_from_rgb's pixel backward), and so do those of
//     fade_from_rgb's channels-last channel kernel. A block of one pixel (lanes == kThreads, small maps; pixel norm
//     and the epilogue with a power-of-two map) is laid out as a row and adds as a wide row's: one exchange, one
//     barrier. Butterflies over the strided lanes of a warp (offsets 16 down to items_per_block) would do the same
//     for 2 to 16 pixels per block;
//   - small maps: pixel norm, the epilogue and fade_from_rgb's NCHW pixel kernels split a pixel over more lanes
//     until the grid has 2 blocks per SM of a 132-SM GPU while every lane keeps an access (csrc/ops/item_lanes.h;
//     N = 16, C = 512: 256 blocks at 4x4 and 512 at 8x8, where 32 and 128 were). Still short of that: channels-last
//     rows, at one 16-byte vector per lane (4x4: 128 blocks of float32, 64 of 16-bit elements at N = 16);
//     fade_from_rgb's channels-last pixel kernels, at most a warp per pixel for their one exchange (32 blocks at
//     4x4, N = 16). Minibatch stddev's position kernels split a group's members across warps instead
//     (LaunchConfig::slices: 512 blocks at 4x4, N = 16, where 128 were; the forward's sigmas still summed by one
//     slice). The price of the lanes: NCHW trees of up to 7 halvings (128 lanes,
//     8x8 at N = 16; fade_from_rgb's pixel backward up to 8), an epilogue bias workspace of a row per block (256
//     rows at 4x4, N = 16, where 32 were: FinishBiasKernel now splits them over 8 warps per 32 channels, 16 blocks
//     at C = 512, where 2 blocks summed every row serially), and fade_from_rgb's lanes each pooling their pixel's
//     image values again.
#pragma once
#include "ops/hd.h"

namespace progan_fast::hd {

constexpr int kWarpSize = 32;

// M values summed together across a warp's lanes (an exchange phase's contribution).
template <typename T, int M>
struct Sums {
  T v[M];
};

// One butterfly step of a lane: its values plus its partner's. The GPU and the emulation both add in this order.
template <typename T, int M>
PF_HD void add_partner(Sums<T, M>& mine, const Sums<T, M>& partner) {
  for (int m = 0; m < M; ++m) mine.v[m] += partner.v[m];
}

template <typename K>
concept HasExchange = requires(const K& k) { k.exchange_lanes(); };
template <typename K>
concept HasPhases = requires(const K& k, typename K::Shared& shared) { k.phase(0, shared, int64_t(0), 0); };

}  // namespace progan_fast::hd

#if !defined(__CUDACC__)
#include <cstring>

namespace progan_fast::hd {

// The GPU's __shfl_xor_sync butterfly over the `values` of a warp's lanes, in lockstep: at each offset every lane
// adds its partner's value from before the step.
template <typename V>
void butterfly(V (&values)[kWarpSize], int lanes) {
  for (int offset = lanes >> 1; offset > 0; offset >>= 1) {
    V before[kWarpSize];
    for (int lane = 0; lane < kWarpSize; ++lane) before[lane] = values[lane];
    for (int lane = 0; lane < kWarpSize; ++lane) add_partner(values[lane], before[lane ^ offset]);
  }
}

// An exchange phase of one block: warp by warp, every lane up to the exchange, the butterfly, every lane's rest.
template <typename K>
void emulate_exchange(const K& k, typename K::Shared& shared, int64_t block, int lanes) {
  for (int warp = 0; warp < K::kThreads; warp += kWarpSize) {
    typename K::Exchange values[kWarpSize];
    for (int lane = 0; lane < kWarpSize; ++lane) values[lane] = k.before_exchange(shared, block, warp + lane);
    butterfly(values, lanes);
    for (int lane = 0; lane < kWarpSize; ++lane) k.after_exchange(shared, block, warp + lane, values[lane]);
  }
}

// Runs kernel k for every thread of its real launch, block by block, phase by phase. Shared memory starts as
// all-ones bytes (NaN for floats) in every block, as uninitialised as on the GPU, so a phase that reads a slot
// no earlier phase wrote shows up in the results.
template <typename K>
void emulate(const K& k) {
  static_assert(K::kThreads % kWarpSize == 0, "blocks are whole warps");
  typename K::Shared shared;
  const int phases = k.phases();
  for (int64_t block = 0; block < k.blocks(); ++block) {
    std::memset(static_cast<void*>(&shared), 0xff, sizeof(shared));
    int p = 0;
    if constexpr (HasExchange<K>) {
      if (const int lanes = k.exchange_lanes()) {
        emulate_exchange(k, shared, block, lanes);
        p = 1;
      }
    }
    if constexpr (HasPhases<K>)
      for (; p < phases; ++p)
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
