// fade_from_rgb's CUDA kernels as phase structs (csrc/ops/phases.h), compiled by nvcc (csrc/cuda/fade_from_rgb.cu)
// and by g++ for the emulated family.
//
// y = lerp(lrelu(z), new, alpha), z = scale / 4 * sum_k W[c, k] * pool_k + bias_gain * b[c], where pool_k is the
// sum of a feature pixel's 2x2 image values of channel k. Nothing of the old path is stored: every thread
// recomputes its pixel's sums from the images (C_img x 4 values, cached), holding the first kGroup of them in
// registers (RGB, RGBA and grayscale entirely; further channels are re-read where needed).
//
//   forward           "pixel" geometry: an item per feature pixel, `lanes` threads split its C channels. Channels
//                     last: a pixel's lanes read consecutive channels (a warp covers whole runs of C); NCHW:
//                     consecutive threads take consecutive pixels of a channel (coalesced), and lanes split the
//                     channel loop only when there are too few pixels to fill the GPU.
//   backward, pixels  the same geometry: each lane writes grad_new = alpha * g for its channels and sums
//                     W[c, k] * dz over them; the pixel's lanes add their sums (channels last: a warp exchange,
//                     csrc/ops/phases.h, in one phase; NCHW: a tree in shared memory) into its image gradient,
//                     written to its 2x2 image pixels. dz = (1 - alpha) * lrelu'(z) * g.
//   backward, weights "channel" geometry: an item per (channel, chunk of pixels), lanes split the chunk's pixels
//                     (NCHW: a block's 256 lanes read consecutive pixels of one channel; channels last: 32
//                     consecutive channels x 8 pixel lanes), each sums dz and dz * pool_k, the lanes' sums added
//                     (NCHW: warp exchanges, then the 8 warps'; channels last: a tree) give one partial sum per
//                     (chunk, channel, k) and the host adds the chunks' partials. This
//                     kernel reads grad_y a second time (from L2 when it fits): the price of reducing over pixels
//                     and over channels in separate kernels, without atomics and deterministic.
// Image channels beyond kGroup are handled kGroup at a time: the host launches the backward kernels once per group
// (only the first writes grad_new and the bias partials).
#pragma once
#include "ops/fade_common.h"
#include "ops/phases.h"

#if defined(__CUDACC__) || defined(PROGAN_FAST_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace progan_fast::fade_from_rgb_cuda {

using hd::opmath_t;

constexpr int kThreads = 256;
constexpr int kGroup = 4;
constexpr int kMaxLanes = 32;
// Pixel geometry, NCHW: lanes split the channel loop until the grid has this many blocks.
constexpr int64_t kMinBlocks = 512;
// Channel geometry: pixels per lane per chunk, and channels per block with channels last.
constexpr int kPixelsPerLane = 16;
constexpr int kChannelItems = 32;

// A feature pixel: its sample and its index in the sample's H x W plane.
struct Pixel {
  int64_t s, p;
};

struct Shape {
  int64_t n = 0, channels = 0, height = 0, width = 0, image_channels = 0;
  bool channels_last = false;

  PF_HD int64_t plane() const { return height * width; }
  PF_HD int64_t pixels() const { return n * plane(); }
  PF_HD int64_t groups() const { return hd::ceil_div(image_channels, kGroup); }
  // Feature pixel `index` (of pixels()), by `plane`: Divisor::of(plane()), a shift in kernels instantiated for
  // kPow2 (every ProGAN map).
  template <bool kPow2>
  PF_HD Pixel pixel(const hd::Divisor& plane_divisor, int64_t index) const {
    const int64_t s = plane_divisor.divide<kPow2>(index);
    return {s, index - s * plane()};
  }
  // Feature value (pixel, c), and the distances between channels and between pixels of a plane.
  PF_HD int64_t feature(Pixel px, int64_t c) const {
    return channels_last ? (px.s * plane() + px.p) * channels + c : (px.s * channels + c) * plane() + px.p;
  }
  PF_HD int64_t channel_stride() const { return channels_last ? 1 : plane(); }
  PF_HD int64_t pixel_stride() const { return channels_last ? channels : 1; }
  // The image offset of channel 0 at (2y, 2x) under a feature pixel, and the strides from there. A plane index
  // fits 32 bits (the host checks H * W < 2^31), so y = p / W is a 32-bit division.
  PF_HD int64_t image_base(Pixel px) const {
    const int64_t y = static_cast<uint32_t>(px.p) / static_cast<uint32_t>(width), x = px.p - y * width;
    if (channels_last) return ((px.s * 2 * height + 2 * y) * 2 * width + 2 * x) * image_channels;
    return (px.s * image_channels * 2 * height + 2 * y) * 2 * width + 2 * x;
  }
  PF_HD int64_t image_channel_stride() const { return channels_last ? 1 : 4 * plane(); }
  PF_HD int64_t image_column_stride() const { return channels_last ? image_channels : 1; }
  PF_HD int64_t image_row_stride() const { return 2 * width * image_column_stride(); }
  // Image value (2y + dy, 2x + dx) of channel k, from image_base.
  PF_HD int64_t image(int64_t base, int64_t k, int dy, int dx) const {
    return base + k * image_channel_stride() + dy * image_row_stride() + dx * image_column_stride();
  }
};

struct Scalars {
  double scale, bias_gain, negative_slope;
};

template <typename scalar_t>
struct Operands {
  using acc_t = opmath_t<scalar_t>;
  const scalar_t* images;
  const scalar_t* weight;  // [C, C_img]
  const scalar_t* bias;    // [C]
  Shape shape;
  acc_t weight_scale, bias_gain, slope;  // scale / 4 (the mean's 1/4 folded in), bias_gain, negative_slope
  fade_cuda::Alpha alpha;

  // The helpers of the kernels' loops take the tensors from the loop functions' __restrict__ parameters: nvcc ignores
  // __restrict__ on struct members (these pointers), and only through restrict parameters may the loads be issued
  // ahead of the stores. The tensors no thread writes are read by hd::load_ro (ld.global.nc): nvcc did not choose
  // that path for them from __restrict__ alone.

  // The 2x2 sum of channel k at a pixel's image_base.
  PF_HD acc_t pool(const scalar_t* __restrict__ images, int64_t base, int64_t k) const {
    const scalar_t* p = images + base + k * shape.image_channel_stride();
    const int64_t row = shape.image_row_stride(), col = shape.image_column_stride();
    return (hd::to_acc(hd::load_ro(p)) + hd::to_acc(hd::load_ro(p + col))) +
           (hd::to_acc(hd::load_ro(p + row)) + hd::to_acc(hd::load_ro(p + row + col)));
  }
  // The first kGroup sums (zero beyond C_img).
  PF_HD void first_pools(const scalar_t* __restrict__ images, int64_t base, acc_t (&pools)[kGroup]) const {
    for (int e = 0; e < kGroup; ++e) pools[e] = e < shape.image_channels ? pool(images, base, e) : acc_t(0);
  }
  PF_HD acc_t z(const scalar_t* __restrict__ images, const scalar_t* __restrict__ weight,
                const scalar_t* __restrict__ bias, int64_t base, int64_t c, const acc_t (&pools)[kGroup]) const {
    acc_t dot = 0;
    const scalar_t* w = weight + c * shape.image_channels;
    for (int e = 0; e < kGroup; ++e)  // constant trip count: unrolled, `pools` stays in registers
      if (e < shape.image_channels) dot += hd::to_acc(hd::load_ro(w + e)) * pools[e];
    for (int64_t k = kGroup; k < shape.image_channels; ++k)
      dot += hd::to_acc(hd::load_ro(w + k)) * pool(images, base, k);
    return weight_scale * dot + bias_gain * hd::to_acc(hd::load_ro(bias + c));
  }
  // dz / g: (1 - alpha) * lrelu'(z).
  PF_HD acc_t dz_per_g(acc_t z, acc_t a) const { return (acc_t(1) - a) * (z > acc_t(0) ? acc_t(1) : slope); }
};

// ---- pixel geometry: an item per feature pixel, lanes over its channels ----

struct PixelConfig {
  hd::Divisor plane;  // H * W
  int lanes = 1;
  int items_per_block = kThreads;
  int reduce_steps = 0;  // log2(lanes)
  int64_t blocks = 0;
  bool rows = false;  // lanes of an item are consecutive threads (channels last)
};

inline PixelConfig pixel_config(const Shape& s) {
  PixelConfig cfg;
  cfg.plane = hd::Divisor::of(s.plane());
  cfg.rows = s.channels_last;
  const int64_t channel_lanes = hd::next_pow2(s.channels) < kMaxLanes ? hd::next_pow2(s.channels) : kMaxLanes;
  if (cfg.rows) {
    cfg.lanes = static_cast<int>(channel_lanes);
  } else {
    while (cfg.lanes < channel_lanes && hd::ceil_div(s.pixels(), kThreads / cfg.lanes) < kMinBlocks) cfg.lanes *= 2;
  }
  while ((1 << cfg.reduce_steps) < cfg.lanes) ++cfg.reduce_steps;
  cfg.items_per_block = kThreads / cfg.lanes;
  cfg.blocks = hd::ceil_div(s.pixels(), cfg.items_per_block);
  return cfg;
}

struct Slot {
  int64_t item;
  int lane;
};

// `lanes` and `items_per_block` = kThreads / lanes are powers of two: masks and shifts.
PF_HD Slot slot_of(bool rows, int lanes, int items_per_block, int64_t block, int tid) {
  Slot s;
  const int lanes_log2 = hd::log2_of(lanes), items_log2 = hd::log2_of(items_per_block);
  const int in_block = rows ? tid >> lanes_log2 : tid & (items_per_block - 1);
  s.lane = rows ? tid & (lanes - 1) : tid >> items_log2;
  s.item = block * items_per_block + in_block;
  return s;
}

// One step of a tree over an item's lanes, items_per_block apart (half = lanes / 2, lanes / 4, ..., 1, a barrier
// before each): lane 0's slot, the thread's own index, ends with the item's sums.
template <typename acc_t, int kArrays>
PF_HD void reduce_step(acc_t (&partial)[kArrays][kThreads], int items_per_block, int tid, int half) {
  if (tid < half * items_per_block)
    for (int e = 0; e < kArrays; ++e) partial[e][tid] += partial[e][tid + half * items_per_block];
}

// The pixel kernels are instantiated for H * W a power of two or not (PixelConfig::plane).
template <typename scalar_t, bool kPow2Plane>
struct ForwardKernel {
  static constexpr int kThreads = fade_from_rgb_cuda::kThreads;
  using acc_t = opmath_t<scalar_t>;
  struct Shared {};
  Operands<scalar_t> o;
  const scalar_t* new_;
  scalar_t* y;
  PixelConfig cfg;

  PF_HD int64_t blocks() const { return cfg.blocks; }
  PF_HD int phases() const { return 1; }
  PF_HD void phase(int, Shared&, int64_t block, int tid) const {
    const Slot s = slot_of(cfg.rows, cfg.lanes, cfg.items_per_block, block, tid);
    if (s.item >= o.shape.pixels()) return;
    lane(o.images, o.weight, o.bias, new_, y, s);
  }

  // This lane's channels of its pixel, the tensors as __restrict__ parameters (Operands says why).
  PF_HD void lane(const scalar_t* __restrict__ images, const scalar_t* __restrict__ weight,
                  const scalar_t* __restrict__ bias, const scalar_t* __restrict__ new_values,
                  scalar_t* __restrict__ out, const Slot& s) const {
    const Pixel px = o.shape.template pixel<kPow2Plane>(cfg.plane, s.item);
    const int64_t base = o.shape.image_base(px);
    acc_t pools[kGroup];
    o.first_pools(images, base, pools);
    const acc_t a = o.alpha.template load<acc_t>();
    const int64_t step = cfg.lanes * o.shape.channel_stride();
    int64_t i = o.shape.feature(px, s.lane);
    for (int64_t c = s.lane; c < o.shape.channels; c += cfg.lanes, i += step) {
      const acc_t z = o.z(images, weight, bias, base, c, pools);
      const acc_t old = z > acc_t(0) ? z : z * o.slope;
      out[i] = hd::from_acc<scalar_t>(fade_cuda::lerp(old, hd::to_acc(hd::load_ro(new_values + i)), a));
    }
  }
};

// Backward over pixels: grad_new (group 0) and grad_images of image channels group * kGroup + [0, kGroup).
// Phases: channels last, one warp exchange (an item's lanes are at most a warp of consecutive threads); NCHW,
// accumulate, reduce over the lanes, write.
template <typename scalar_t, bool kPow2Plane>
struct PixelBackwardKernel {
  static constexpr int kThreads = fade_from_rgb_cuda::kThreads;
  using acc_t = opmath_t<scalar_t>;
  struct Shared {
    acc_t partial[kGroup][kThreads];
    // Each thread's image_base, handed from the first phase to the last through shared memory: kept in registers
    // across the reduction phases it made ptxas spill on sm_80.
    int64_t image_base[kThreads];
  };
  using Exchange = hd::Sums<acc_t, kGroup>;
  Operands<scalar_t> o;
  const scalar_t* grad_y;
  scalar_t* grad_new;
  scalar_t* grad_images;
  PixelConfig cfg;
  int64_t group;

  PF_HD int64_t blocks() const { return cfg.blocks; }
  PF_HD int phases() const { return cfg.rows ? 1 : cfg.reduce_steps + 2; }
  PF_HD int exchange_lanes() const { return cfg.rows ? cfg.lanes : 0; }

  // This lane's share of the item's sums, W[c, k] * dz over its channels; the item's image_base to `base`.
  PF_HD Exchange lane_sums(int64_t block, int tid, int64_t& base) const {
    return lane_sums(o.images, o.weight, o.bias, grad_y, grad_new, block, tid, base);
  }
  // The same, the tensors as __restrict__ parameters (Operands says why).
  PF_HD Exchange lane_sums(const scalar_t* __restrict__ images, const scalar_t* __restrict__ weight,
                           const scalar_t* __restrict__ bias, const scalar_t* __restrict__ dy,
                           scalar_t* __restrict__ dnew, int64_t block, int tid, int64_t& base) const {
    const Slot s = slot_of(cfg.rows, cfg.lanes, cfg.items_per_block, block, tid);
    Exchange sums{};
    if (s.item < o.shape.pixels()) {
      const Pixel px = o.shape.template pixel<kPow2Plane>(cfg.plane, s.item);
      base = o.shape.image_base(px);
      acc_t pools[kGroup];
      o.first_pools(images, base, pools);
      const acc_t a = o.alpha.template load<acc_t>();
      const int64_t k0 = group * kGroup, ci = o.shape.image_channels;
      const int64_t step = cfg.lanes * o.shape.channel_stride();
      int64_t i = o.shape.feature(px, s.lane);
      for (int64_t c = s.lane; c < o.shape.channels; c += cfg.lanes, i += step) {
        const acc_t g = hd::to_acc(hd::load_ro(dy + i));
        if (group == 0) dnew[i] = hd::from_acc<scalar_t>(a * g);
        const acc_t dz = o.dz_per_g(o.z(images, weight, bias, base, c, pools), a) * g;
        for (int e = 0; e < kGroup; ++e)
          if (k0 + e < ci) sums.v[e] += hd::to_acc(hd::load_ro(weight + c * ci + k0 + e)) * dz;
      }
    }
    return sums;
  }

  // Lane 0 of an item writes its image gradient, the item's sums scaled, to the 2x2 image pixels at `base`.
  PF_HD void write(const acc_t (&sums)[kGroup], int64_t base, int64_t block, int tid) const {
    const Slot s = slot_of(cfg.rows, cfg.lanes, cfg.items_per_block, block, tid);
    if (s.lane != 0 || s.item >= o.shape.pixels()) return;
    for (int e = 0; e < kGroup; ++e) {
      const int64_t k = group * kGroup + e;
      if (k >= o.shape.image_channels) break;
      const scalar_t v = hd::from_acc<scalar_t>(o.weight_scale * sums[e]);
      for (int dy = 0; dy < 2; ++dy)
        for (int dx = 0; dx < 2; ++dx) grad_images[o.shape.image(base, k, dy, dx)] = v;
    }
  }

  PF_HD Exchange before_exchange(Shared& sh, int64_t block, int tid) const {
    return lane_sums(block, tid, sh.image_base[tid]);
  }
  PF_HD void after_exchange(Shared& sh, int64_t block, int tid, const Exchange& sums) const {
    write(sums.v, sh.image_base[tid], block, tid);
  }

  PF_HD void phase(int p, Shared& sh, int64_t block, int tid) const {
    if (p == 0) {
      const Exchange sums = lane_sums(block, tid, sh.image_base[tid]);
      for (int e = 0; e < kGroup; ++e) sh.partial[e][tid] = sums.v[e];
    } else if (p <= cfg.reduce_steps) {
      reduce_step(sh.partial, cfg.items_per_block, tid, cfg.lanes >> p);
    } else {
      acc_t sums[kGroup];
      for (int e = 0; e < kGroup; ++e) sums[e] = sh.partial[e][tid];
      write(sums, sh.image_base[tid], block, tid);
    }
  }
};

// ---- channel geometry: an item per (chunk of pixels, channel), lanes over the chunk's pixels ----

struct ChannelConfig {
  int lanes = kThreads;
  int items_per_block = 1;
  int reduce_steps = 0;
  int64_t chunk_pixels = 0, sample_chunks = 0, chunks = 0, blocks = 0;  // a chunk lies within one sample's plane
};

inline ChannelConfig channel_config(const Shape& s) {
  ChannelConfig cfg;
  cfg.items_per_block = s.channels_last ? kChannelItems : 1;
  cfg.lanes = kThreads / cfg.items_per_block;
  while ((1 << cfg.reduce_steps) < cfg.lanes) ++cfg.reduce_steps;
  cfg.chunk_pixels = static_cast<int64_t>(cfg.lanes) * kPixelsPerLane;
  cfg.sample_chunks = hd::ceil_div(s.plane(), cfg.chunk_pixels);
  cfg.chunks = s.n * cfg.sample_chunks;
  cfg.blocks = hd::ceil_div(cfg.chunks * s.channels, cfg.items_per_block);
  return cfg;
}

// Backward over pixels per channel: partial[chunk][c][k] = sum over the chunk of dz * pool_k for the image channels
// k of `group`, and (group 0) partial[chunk][c][C_img] = sum of dz, in the op-math dtype.
template <typename scalar_t>
struct ChannelBackwardKernel {
  static constexpr int kThreads = fade_from_rgb_cuda::kThreads;
  using acc_t = opmath_t<scalar_t>;
  struct Shared {
    acc_t partial[kGroup + 1][kThreads];
  };
  using Exchange = hd::Sums<acc_t, kGroup + 1>;
  Operands<scalar_t> o;
  const scalar_t* grad_y;
  acc_t* partials;
  ChannelConfig cfg;
  int64_t group;

  // A block with one item (NCHW: its 256 lanes are consecutive threads) adds its lanes' sums with a warp exchange
  // and the 8 warps' sums after one barrier; channels last (8 lanes kChannelItems apart) with a tree.
  PF_HD int64_t blocks() const { return cfg.blocks; }
  PF_HD int phases() const { return cfg.items_per_block == 1 ? 2 : cfg.reduce_steps + 2; }
  PF_HD int exchange_lanes() const { return cfg.items_per_block == 1 ? hd::kWarpSize : 0; }

  // item = chunk * C + c: with channels last a block's items are consecutive channels of one chunk.
  PF_HD Slot slot(int64_t block, int tid) const {
    return slot_of(false, cfg.lanes, cfg.items_per_block, block, tid);
  }

  // The chunk's pixels of this lane, the tensors as __restrict__ parameters (Operands says why). The channel's
  // weights are loop invariants; kFew (C_img <= kGroup, the common case) compiles the loop without the code for
  // further image channels, which kept ptxas from spilling.
  template <bool kFew>
  PF_HD void accumulate_pixels(const scalar_t* __restrict__ images, const scalar_t* __restrict__ weight,
                               const scalar_t* __restrict__ bias, const scalar_t* __restrict__ dy,
                               acc_t (&sums)[kGroup + 1], int64_t sample, int64_t c, int64_t first, int64_t end,
                               int64_t i) const {
    const int64_t ci = o.shape.image_channels, k0 = group * kGroup;
    const int64_t step = cfg.lanes * o.shape.pixel_stride();
    acc_t w[kGroup];
    for (int e = 0; e < kGroup; ++e)
      w[e] = e < ci ? o.weight_scale * hd::to_acc(hd::load_ro(weight + c * ci + e)) : acc_t(0);
    const acc_t zb = o.bias_gain * hd::to_acc(hd::load_ro(bias + c));
    const acc_t a = o.alpha.template load<acc_t>();
    for (int64_t p = first; p < end; p += cfg.lanes, i += step) {
      const int64_t base = o.shape.image_base({sample, p});
      acc_t pools[kGroup];
      o.first_pools(images, base, pools);
      acc_t z = zb;
      for (int e = 0; e < kGroup; ++e) z += w[e] * pools[e];
      if constexpr (!kFew) {
        for (int64_t k = kGroup; k < ci; ++k)
          z += o.weight_scale * hd::to_acc(hd::load_ro(weight + c * ci + k)) * o.pool(images, base, k);
        if (group > 0)
          for (int e = 0; e < kGroup; ++e) pools[e] = k0 + e < ci ? o.pool(images, base, k0 + e) : acc_t(0);
      }
      const acc_t dz = o.dz_per_g(z, a) * hd::to_acc(hd::load_ro(dy + i));
      for (int e = 0; e < kGroup; ++e) sums[e] += dz * pools[e];
      sums[kGroup] += dz;
    }
  }

  // This lane's share of its item's sums.
  PF_HD Exchange lane_sums(int64_t block, int tid) const {
    const Slot s = slot(block, tid);
    Exchange sums{};
    const int64_t C = o.shape.channels;
    if (s.item < cfg.chunks * C) {
      const int64_t chunk = s.item / C, c = s.item - chunk * C;
      const int64_t sample = chunk / cfg.sample_chunks, p0 = (chunk - sample * cfg.sample_chunks) * cfg.chunk_pixels;
      const int64_t end = p0 + cfg.chunk_pixels < o.shape.plane() ? p0 + cfg.chunk_pixels : o.shape.plane();
      const int64_t i = o.shape.feature({sample, p0 + s.lane}, c);
      if (o.shape.image_channels <= kGroup)
        accumulate_pixels<true>(o.images, o.weight, o.bias, grad_y, sums.v, sample, c, p0 + s.lane, end, i);
      else
        accumulate_pixels<false>(o.images, o.weight, o.bias, grad_y, sums.v, sample, c, p0 + s.lane, end, i);
    }
    return sums;
  }

  // Lane 0 of an item writes the item's sums.
  PF_HD void write(const Exchange& totals, int64_t block, int tid) const {
    const Slot s = slot(block, tid);
    const int64_t C = o.shape.channels, ci = o.shape.image_channels;
    if (s.lane != 0 || s.item >= cfg.chunks * C) return;
    acc_t* out = partials + s.item * (ci + 1);  // [chunk][c] = item
    for (int e = 0; e < kGroup; ++e)
      if (group * kGroup + e < ci) out[group * kGroup + e] = totals.v[e];
    if (group == 0) out[ci] = totals.v[kGroup];
  }

  PF_HD Exchange before_exchange(Shared&, int64_t block, int tid) const { return lane_sums(block, tid); }
  PF_HD void after_exchange(Shared& sh, int64_t, int tid, const Exchange& sums) const {
    if ((tid & (hd::kWarpSize - 1)) == 0)
      for (int e = 0; e <= kGroup; ++e) sh.partial[e][tid / hd::kWarpSize] = sums.v[e];
  }

  PF_HD void phase(int p, Shared& sh, int64_t block, int tid) const {
    Exchange totals;
    if (cfg.items_per_block == 1) {  // phase 1: the block's warp sums, in order
      for (int e = 0; e <= kGroup; ++e) {
        totals.v[e] = 0;
        for (int w = 0; w < kThreads / hd::kWarpSize; ++w) totals.v[e] += sh.partial[e][w];
      }
      write(totals, block, tid);
    } else if (p == 0) {
      totals = lane_sums(block, tid);
      for (int e = 0; e <= kGroup; ++e) sh.partial[e][tid] = totals.v[e];
    } else if (p <= cfg.reduce_steps) {
      reduce_step(sh.partial, cfg.items_per_block, tid, cfg.lanes >> p);
    } else {
      for (int e = 0; e <= kGroup; ++e) totals.v[e] = sh.partial[e][tid];
      write(totals, block, tid);
    }
  }
};

// ---- type-erased parameters (csrc/host/fade.h fills them) and the dtype dispatch ----

struct CommonParams {
  const void* images;
  const void* weight;
  const void* bias;
  Shape shape;
  Scalars scalars;
  fade_cuda::Alpha alpha;
  hd::DType dtype;
};

struct ForwardParams {
  CommonParams common;
  const void* new_;
  void* y;
};

struct PixelBackwardParams {
  CommonParams common;
  const void* grad_y;
  void* grad_new;
  void* grad_images;
  int64_t group;  // image channels group * kGroup + [0, kGroup)
};

struct ChannelBackwardParams {
  CommonParams common;
  const void* grad_y;
  void* partials;  // [chunks][C][C_img + 1] in the op-math dtype
  int64_t group;
};

template <typename scalar_t>
Operands<scalar_t> operands(const CommonParams& p) {
  using acc_t = opmath_t<scalar_t>;
  return Operands<scalar_t>{static_cast<const scalar_t*>(p.images), static_cast<const scalar_t*>(p.weight),
                            static_cast<const scalar_t*>(p.bias), p.shape,
                            static_cast<acc_t>(p.scalars.scale * 0.25), static_cast<acc_t>(p.scalars.bias_gain),
                            static_cast<acc_t>(p.scalars.negative_slope), p.alpha};
}

template <typename Exec>
auto run(const ForwardParams& p, const Exec& exec) {
  return hd::dispatch(p.common.dtype, [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    const PixelConfig cfg = pixel_config(p.common.shape);
    return hd::with_divisor_case(cfg.plane, [&](auto pow2) {
      return exec(ForwardKernel<scalar_t, decltype(pow2)::value>{
          operands<scalar_t>(p.common), static_cast<const scalar_t*>(p.new_), static_cast<scalar_t*>(p.y), cfg});
    });
  });
}

template <typename Exec>
auto run(const PixelBackwardParams& p, const Exec& exec) {
  return hd::dispatch(p.common.dtype, [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    const PixelConfig cfg = pixel_config(p.common.shape);
    return hd::with_divisor_case(cfg.plane, [&](auto pow2) {
      return exec(PixelBackwardKernel<scalar_t, decltype(pow2)::value>{
          operands<scalar_t>(p.common), static_cast<const scalar_t*>(p.grad_y), static_cast<scalar_t*>(p.grad_new),
          static_cast<scalar_t*>(p.grad_images), cfg, p.group});
    });
  });
}

template <typename Exec>
auto run(const ChannelBackwardParams& p, const Exec& exec) {
  return hd::dispatch(p.common.dtype, [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    return exec(ChannelBackwardKernel<scalar_t>{operands<scalar_t>(p.common), static_cast<const scalar_t*>(p.grad_y),
                                                static_cast<opmath_t<scalar_t>*>(p.partials),
                                                channel_config(p.common.shape), p.group});
  });
}

#if defined(__CUDACC__) || defined(PROGAN_FAST_WITH_CUDA)
// Defined in csrc/cuda/fade_from_rgb.cu: enqueue on `stream`, return the launch error.
cudaError_t cuda_launch(const ForwardParams& p, cudaStream_t stream);
cudaError_t cuda_launch(const PixelBackwardParams& p, cudaStream_t stream);
cudaError_t cuda_launch(const ChannelBackwardParams& p, cudaStream_t stream);
#endif

}  // namespace progan_fast::fade_from_rgb_cuda
