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
//                     consecutive threads take consecutive pixels of a channel (coalesced); lanes split the
//                     channel loop where there are too few pixels to fill the GPU (csrc/ops/item_lanes.h).
//   backward, pixels  the same geometry: each lane writes grad_new = alpha * g for its channels and sums
//                     W[c, k] * dz over them; the pixel's lanes add their sums (a warp exchange, csrc/ops/phases.h,
//                     over the lanes each warp holds, then for a pixel in several warps one barrier and the sum of
//                     its warps': hd::LaneSum) into its image gradient, written to its 2x2 image pixels.
//                     dz = (1 - alpha) * lrelu'(z) * g.
//   backward, weights "channel" geometry: an item per (channel, chunk of pixels), lanes split the chunk's pixels
//                     (NCHW: a block's 256 lanes read consecutive pixels of one channel; channels last: 32
//                     consecutive channels x 8 pixel lanes, one per warp), each sums dz and dz * pool_k, the lanes'
//                     sums added (hd::LaneSum: NCHW, warp exchanges, then the 8 warps'; channels last, the 8 warps'
//                     lanes) give one partial sum per (chunk, channel, k) and the host adds the chunks' partials. This
//                     kernel reads grad_y a second time (from L2 when it fits): the price of reducing over pixels
//                     and over channels in separate kernels, without atomics and deterministic.
// Image channels beyond kGroup are handled kGroup at a time: the host launches the backward kernels once per group
// (only the first writes grad_new and the bias partials).
//
// 16-byte accesses (csrc/ops/vec.h), chosen at launch where the kernel's divisors (below) are powers of two and the
// tensors are aligned, else one element per access (the same code with P = Q = 1):
//   channels last, pixel geometry: a lane takes Q = 16 bytes of its pixel's channels at a time (C divides);
//   NCHW, both geometries: an item (pixel kernels) or a lane's step (channel kernel) is a run of P = 16 bytes of
//                     consecutive pixels of one feature row (W divides), whose 2 x 2P image values of a channel are
//                     two vectors per image row; each feature channel of the run is one vector. The pixel kernels
//                     take runs only where the grid keeps its blocks (pixel_config): not on small maps.
// The channel kernel's channels-last lanes stay scalar: a thread's values of grad_y lie C apart (consecutive threads
// read consecutive channels), and so do its image values.
// Index math divides by H * W, W, C and the chunks per sample: shifts in the kernels instantiated for powers of two
// (hd::Divisor; every ProGAN map and channel count), divisions otherwise.
#pragma once
#include <initializer_list>
#include <type_traits>

#include "ops/fade_common.h"
#include "ops/item_lanes.h"
#include "ops/phases.h"
#include "ops/vec.h"

#if defined(__CUDACC__) || defined(PROGAN_FAST_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace progan_fast::fade_from_rgb_cuda {

using hd::opmath_t;

constexpr int kThreads = 256;
constexpr int kGroup = 4;
// At most a warp of lanes per item for NCHW runs of pixels (each lane pools all P pixels' image values: the small
// maps that need more lanes take single pixels).
constexpr int kMaxLanes = hd::kWarpSize;
// Channel geometry: pixels per lane per chunk (a multiple of every vector's pixels), and channels per block with
// channels last.
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
    const auto sp = plane_divisor.split<kPow2>(index);
    return {sp.quotient, sp.remainder};
  }
  // Feature value (pixel, c), and the distances between channels and between pixels of a plane.
  PF_HD int64_t feature(Pixel px, int64_t c) const {
    return channels_last ? (px.s * plane() + px.p) * channels + c : (px.s * channels + c) * plane() + px.p;
  }
  PF_HD int64_t channel_stride() const { return channels_last ? 1 : plane(); }
  PF_HD int64_t pixel_stride() const { return channels_last ? channels : 1; }
  // The image offset of channel 0 at (2y, 2x) under a feature pixel, and the strides from there. y = p / W by
  // `width_divisor` (Divisor::of(width)): a shift in kernels instantiated for kPow2, else a 32-bit division (a
  // plane index fits 32 bits: the host checks H * W < 2^31).
  template <bool kPow2>
  PF_HD int64_t image_base(const hd::Divisor& width_divisor, Pixel px) const {
    const auto yx = width_divisor.split<kPow2>(static_cast<uint32_t>(px.p));
    const int64_t y = yx.quotient, x = yx.remainder;
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

// The kernels' accesses: P consecutive pixels of a feature row (P > 1: NCHW vectors along the row) by Q consecutive
// channels (Q > 1: channels-last vectors), one of them 1; element e of an access is channel c0 + e / P of pixel
// e % P of the item.

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
  // ahead of the stores. The tensors no thread writes are read by hd::load_ro / hd::load_vec (ld.global.nc): nvcc
  // did not choose that path for them from __restrict__ alone.

  // The 2x2 sum of channel k at a pixel's image_base.
  PF_HD acc_t pool(const scalar_t* __restrict__ images, int64_t base, int64_t k) const {
    const scalar_t* p = images + base + k * shape.image_channel_stride();
    const int64_t row = shape.image_row_stride(), col = shape.image_column_stride();
    return (hd::to_acc(hd::load_ro(p)) + hd::to_acc(hd::load_ro(p + col))) +
           (hd::to_acc(hd::load_ro(p + row)) + hd::to_acc(hd::load_ro(p + row + col)));
  }
  // The 2x2 sums of channel k for the P pixels from `base`, added as in `pool`. P > 1 (NCHW): each image row under
  // them is 2P consecutive values, two vectors.
  template <int P>
  PF_HD void pools(const scalar_t* __restrict__ images, int64_t base, int64_t k, acc_t (&out)[P]) const {
    if constexpr (P == 1) {
      out[0] = pool(images, base, k);
    } else {
      const scalar_t* p = images + base + k * shape.image_channel_stride();
      const int64_t row = shape.image_row_stride();
      const hd::Vec<scalar_t, P> top[2] = {hd::load_vec<P>(p), hd::load_vec<P>(p + P)};
      const hd::Vec<scalar_t, P> bottom[2] = {hd::load_vec<P>(p + row), hd::load_vec<P>(p + row + P)};
      for (int n = 0; n < P; ++n) {  // image columns 2n and 2n + 1: vector 2n / P, elements from 2n % P
        const int v = 2 * n / P, e = 2 * n % P;
        out[n] = (hd::to_acc(top[v].e[e]) + hd::to_acc(top[v].e[e + 1])) +
                 (hd::to_acc(bottom[v].e[e]) + hd::to_acc(bottom[v].e[e + 1]));
      }
    }
  }
  // The first kGroup sums of each of the P pixels (zero beyond C_img).
  template <int P>
  PF_HD void first_pools(const scalar_t* __restrict__ images, int64_t base, acc_t (&out)[kGroup][P]) const {
    for (int k = 0; k < kGroup; ++k) {  // constant trip count: unrolled, `out` stays in registers
      if (k < shape.image_channels) {
        pools<P>(images, base, k, out[k]);
      } else {
        for (int n = 0; n < P; ++n) out[k][n] = 0;
      }
    }
  }
  PF_HD acc_t w(const scalar_t* __restrict__ weight, int64_t c, int64_t k) const {
    return hd::to_acc(hd::load_ro(weight + c * shape.image_channels + k));
  }
  // z of the P x Q values of one access at channel c0 (`first`: first_pools of its pixels); kFew: C_img <= kGroup.
  template <int P, int Q, bool kFew>
  PF_HD void z(const scalar_t* __restrict__ images, const scalar_t* __restrict__ weight,
               const scalar_t* __restrict__ bias, int64_t base, int64_t c0, const acc_t (&first)[kGroup][P],
               acc_t (&out)[P * Q]) const {
    const int64_t ci = shape.image_channels;
    acc_t dot[P * Q];
    for (int e = 0; e < P * Q; ++e) dot[e] = 0;
    for (int k = 0; k < kGroup; ++k)
      if (k < ci)
        for (int q = 0; q < Q; ++q) {
          const acc_t wk = w(weight, c0 + q, k);
          for (int n = 0; n < P; ++n) dot[q * P + n] = hd::mul_add(wk, first[k][n], dot[q * P + n]);
        }
    if constexpr (!kFew)
      for (int64_t k = kGroup; k < ci; ++k) {
        acc_t pk[P];
        pools<P>(images, base, k, pk);
        for (int q = 0; q < Q; ++q) {
          const acc_t wk = w(weight, c0 + q, k);
          for (int n = 0; n < P; ++n) dot[q * P + n] = hd::mul_add(wk, pk[n], dot[q * P + n]);
        }
      }
    for (int q = 0; q < Q; ++q) {
      const acc_t b = hd::to_acc(hd::load_ro(bias + c0 + q));
      for (int n = 0; n < P; ++n) out[q * P + n] = hd::mul_add(weight_scale, dot[q * P + n], bias_gain * b);
    }
  }
  // dz / g: (1 - alpha) * lrelu'(z).
  PF_HD acc_t dz_per_g(acc_t z, acc_t a) const { return (acc_t(1) - a) * (z > acc_t(0) ? acc_t(1) : slope); }
};

// ---- pixel geometry: an item per P feature pixels, lanes over their channels ----

struct PixelConfig {
  hd::Divisor plane, width;  // H * W and W: shifts in the kernels instantiated for pow2()
  int pixels_per_item = 1;   // P: 16 bytes of a feature row's pixels (NCHW), else 1
  int channels_per_access = 1;  // Q: 16 bytes of a pixel's channels (channels last), else 1
  int lanes = 1;
  int items_per_block = kThreads;
  int64_t items = 0, blocks = 0;
  bool rows = false;  // lanes of an item are consecutive threads (channels last)
  hd::LaneSum<kThreads> sum;  // how an item's lanes add their sums

  bool pow2() const { return plane.pow2() && width.pow2(); }
};

// The pixel geometry with `vector` elements per access.
inline PixelConfig pixel_geometry(const Shape& s, int vector) {
  PixelConfig cfg;
  cfg.plane = hd::Divisor::of(s.plane());
  cfg.width = hd::Divisor::of(s.width);
  cfg.rows = s.channels_last;
  cfg.pixels_per_item = cfg.rows ? 1 : vector;
  cfg.channels_per_access = cfg.rows ? vector : 1;
  cfg.items = s.pixels() / cfg.pixels_per_item;
  const int max_lanes = cfg.pixels_per_item > 1 ? kMaxLanes : kThreads;
  cfg.lanes = hd::item_lanes<kThreads>({.items = cfg.items, .accesses = s.channels / cfg.channels_per_access,
                                        .rows = cfg.rows, .max_lanes = max_lanes});
  cfg.items_per_block = kThreads / cfg.lanes;
  cfg.blocks = hd::ceil_div(cfg.items, cfg.items_per_block);
  cfg.sum = hd::LaneSum<kThreads>::of(cfg.lanes, cfg.rows);
  return cfg;
}

// The pixel geometry for `vector` from pixel_vector_width. NCHW runs of pixels make fewer items: they are taken only
// where the grid keeps the blocks it has with one element per access, up to hd::kMinBlocks (so not for the small
// maps of a batch, e.g. 4x4 to 16x16 at N = 16, where the scalar grid needs every pixel to fill the GPU). Channels
// last takes its vectors of channels as the rows of pixel norm do (hd::filling_geometry: not on small maps).
inline PixelConfig pixel_config(const Shape& s, int vector) {
  if (s.channels_last) return hd::filling_geometry(vector, [&](int v) { return pixel_geometry(s, v); });
  const PixelConfig cfg = pixel_geometry(s, vector);
  if (vector == 1) return cfg;
  const PixelConfig scalar = pixel_geometry(s, 1);
  return cfg.blocks >= (scalar.blocks < hd::kMinBlocks ? scalar.blocks : hd::kMinBlocks) ? cfg : scalar;
}

// Elements per access of the pixel kernels: hd::kVec128 where H * W is a power of two, C (channels last) or W (NCHW)
// divides into vectors and the feature maps (and with NCHW the images, read and written in vectors too) are
// 16-byte aligned; else 1.
template <typename scalar_t>
int pixel_vector_width(const Shape& s, std::initializer_list<const void*> images,
                       std::initializer_list<const void*> features) {
  constexpr int kN = hd::kVec128<scalar_t>;
  if (!hd::Divisor::of(s.plane()).pow2()) return 1;
  if (s.channels_last) return hd::vector_width<scalar_t>(s.channels % kN == 0, features);
  return hd::vector_width<scalar_t>(s.width % kN == 0, features) > 1 ? hd::vector_width<scalar_t>(true, images) : 1;
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

// The pixel kernels are instantiated for P pixels per item and Q channels per access (PixelConfig), for H * W a
// power of two or not (kPow2; the vector paths only for powers of two), and for C_img <= kGroup (kFew: RGB, RGBA,
// grayscale), compiled without the code for further image channels, which set the registers of a kernel that has it
// (sm_90: forward 39-80 per thread, pixel backward 77-128, against 28-64 and 40-64; 96 for 16-bit NCHW runs).
template <typename scalar_t, int P, int Q, bool kPow2, bool kFew>
struct ForwardKernel {
  static constexpr int kThreads = fade_from_rgb_cuda::kThreads;
  static constexpr int N = P * Q;  // elements per access
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
    if (s.item >= cfg.items) return;
    lane(o.images, o.weight, o.bias, new_, y, s);
  }

  // This lane's channels of its pixels, the tensors as __restrict__ parameters (Operands says why).
  PF_HD void lane(const scalar_t* __restrict__ images, const scalar_t* __restrict__ weight,
                  const scalar_t* __restrict__ bias, const scalar_t* __restrict__ new_values,
                  scalar_t* __restrict__ out, const Slot& s) const {
    const Pixel px = o.shape.template pixel<kPow2>(cfg.plane, s.item * P);
    const int64_t base = o.shape.template image_base<kPow2>(cfg.width, px);
    acc_t pools[kGroup][P];
    o.template first_pools<P>(images, base, pools);
    const acc_t a = o.alpha.template load<acc_t>();
    const int64_t step = cfg.lanes * Q * o.shape.channel_stride();
    int64_t i = o.shape.feature(px, s.lane * Q);
    for (int64_t c0 = s.lane * Q; c0 < o.shape.channels; c0 += cfg.lanes * Q, i += step) {
      acc_t z[N];
      o.template z<P, Q, kFew>(images, weight, bias, base, c0, pools, z);
      const hd::Vec<scalar_t, N> nv = hd::load_vec<N>(new_values + i);
      hd::Vec<scalar_t, N> yv;
      for (int e = 0; e < N; ++e) {
        const acc_t old = z[e] > acc_t(0) ? z[e] : z[e] * o.slope;
        yv.e[e] = hd::from_acc<scalar_t>(fade_cuda::lerp(old, hd::to_acc(nv.e[e]), a));
      }
      hd::store_vec<N>(out + i, yv);
    }
  }
};

// One vector of grad_images, whose elements come in equal pairs (a pixel's value at two image columns). nvcc turned
// the struct copy of store_vec into 16- and 32-bit stores for some such vectors of 16-bit elements; copied as one
// uint4 they stay one 128-bit store (float64's, copied so, were split into 64-bit stores instead).
template <typename scalar_t, int P>
PF_HD void store_image_vec(scalar_t* p, const hd::Vec<scalar_t, P>& v) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(scalar_t) == 2) {
    uint4 u;
    memcpy(&u, &v, sizeof(u));
    *reinterpret_cast<uint4*>(p) = u;
    return;
  }
#endif
  hd::store_vec<P>(p, v);
}

// Backward over pixels: grad_new (group 0) and grad_images of image channels group * kGroup + [0, kGroup).
// Phases: a warp exchange over the item's lanes in each warp that writes, or for an item in several warps, one that
// leaves their sums in shared memory, then the write (hd::LaneSum). An item's sums: [k * P + n], image channel k of
// the group at pixel n.
template <typename scalar_t, int P, int Q, bool kPow2, bool kFew>
struct PixelBackwardKernel {
  static constexpr int kThreads = fade_from_rgb_cuda::kThreads;
  static constexpr int N = P * Q;
  using acc_t = opmath_t<scalar_t>;
  struct Shared {
    acc_t partial[kGroup * P][kThreads];
    // Each thread's image_base, handed from the exchange to the write through shared memory: kept in registers
    // across the reduction phases it made ptxas spill on sm_80.
    int64_t image_base[kThreads];
  };
  using Exchange = hd::Sums<acc_t, kGroup * P>;
  Operands<scalar_t> o;
  const scalar_t* grad_y;
  scalar_t* grad_new;
  scalar_t* grad_images;
  PixelConfig cfg;
  int64_t group;

  // NCHW runs (P > 1) always write in phase 1: their exchange phase writing too made ptxas spill (sm_90, 16-bit).
  PF_HD bool writes_after_exchange() const { return P == 1 && cfg.sum.parts == 1; }
  PF_HD int64_t blocks() const { return cfg.blocks; }
  PF_HD int phases() const { return writes_after_exchange() ? 1 : 2; }
  PF_HD int exchange_lanes() const { return cfg.sum.exchange_lanes; }
  PF_HD int exchange_stride() const { return cfg.sum.exchange_stride; }

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
    if (s.item < cfg.items) {
      const Pixel px = o.shape.template pixel<kPow2>(cfg.plane, s.item * P);
      base = o.shape.template image_base<kPow2>(cfg.width, px);
      acc_t pools[kGroup][P];
      o.template first_pools<P>(images, base, pools);
      const acc_t a = o.alpha.template load<acc_t>();
      const int64_t k0 = kFew ? 0 : group * kGroup, ci = o.shape.image_channels;
      const int64_t step = cfg.lanes * Q * o.shape.channel_stride();
      int64_t i = o.shape.feature(px, s.lane * Q);
      for (int64_t c0 = s.lane * Q; c0 < o.shape.channels; c0 += cfg.lanes * Q, i += step) {
        const hd::Vec<scalar_t, N> gv = hd::load_vec<N>(dy + i);
        if (group == 0) {
          hd::Vec<scalar_t, N> dv;
          for (int e = 0; e < N; ++e) dv.e[e] = hd::from_acc<scalar_t>(a * hd::to_acc(gv.e[e]));
          hd::store_vec<N>(dnew + i, dv);
        }
        acc_t dz[N];
        o.template z<P, Q, kFew>(images, weight, bias, base, c0, pools, dz);
        for (int e = 0; e < N; ++e) dz[e] = o.dz_per_g(dz[e], a) * hd::to_acc(gv.e[e]);
        for (int k = 0; k < kGroup; ++k)
          if (k0 + k < ci)
            for (int q = 0; q < Q; ++q) {
              const acc_t wk = o.w(weight, c0 + q, k0 + k);
              for (int n = 0; n < P; ++n) sums.v[k * P + n] = hd::mul_add(wk, dz[q * P + n], sums.v[k * P + n]);
            }
      }
    }
    return sums;
  }

  // Lane 0 of an item writes its image gradient, the item's sums scaled, to the 2x2 image pixels at `base`: NCHW
  // runs (P > 1) as two vectors per image row.
  PF_HD void write(const acc_t (&sums)[kGroup * P], int64_t base, int64_t block, int tid) const {
    const Slot s = slot_of(cfg.rows, cfg.lanes, cfg.items_per_block, block, tid);
    if (s.lane != 0 || s.item >= cfg.items) return;
    for (int k = 0; k < kGroup; ++k) {
      const int64_t channel = group * kGroup + k;
      if (channel >= o.shape.image_channels) break;
      if constexpr (P == 1) {
        const scalar_t v = hd::from_acc<scalar_t>(o.weight_scale * sums[k]);
        for (int dy = 0; dy < 2; ++dy)
          for (int dx = 0; dx < 2; ++dx) grad_images[o.shape.image(base, channel, dy, dx)] = v;
      } else {
        hd::Vec<scalar_t, P> row[2];  // image columns 2n and 2n + 1 take pixel n's value
        for (int j = 0; j < 2 * P; ++j) row[j / P].e[j % P] = hd::from_acc<scalar_t>(o.weight_scale * sums[k * P + j / 2]);
        for (int dy = 0; dy < 2; ++dy) {
          scalar_t* r = grad_images + o.shape.image(base, channel, dy, 0);
          store_image_vec(r, row[0]);
          store_image_vec(r + P, row[1]);
        }
      }
    }
  }

  PF_HD Exchange before_exchange(Shared& sh, int64_t block, int tid) const {
    return lane_sums(block, tid, sh.image_base[tid]);
  }
  PF_HD void after_exchange(Shared& sh, int64_t block, int tid, const Exchange& sums) const {
    if (writes_after_exchange()) {
      write(sums.v, sh.image_base[tid], block, tid);
    } else if (cfg.sum.keeps(tid)) {
      for (int e = 0; e < kGroup * P; ++e) sh.partial[e][tid] = sums.v[e];
    }
  }

  // p == 1, an item in several warps: its lane 0 adds their sums and writes.
  PF_HD void phase(int, Shared& sh, int64_t block, int tid) const {
    if (slot_of(cfg.rows, cfg.lanes, cfg.items_per_block, block, tid).lane != 0) return;
    const hd::LaneSum<kThreads>& sum = cfg.sum;
    acc_t sums[kGroup * P];
    for (int e = 0; e < kGroup * P; ++e) sums[e] = sum.total(sh.partial[e], tid);
    write(sums, sh.image_base[tid], block, tid);
  }
};

// ---- channel geometry: an item per (chunk of pixels, channel), lanes over the chunk's pixels ----

struct ChannelConfig {
  int lanes = kThreads;
  int items_per_block = 1;
  int pixels_per_access = 1;  // P: 16 bytes of a feature row's pixels (NCHW), else 1
  int64_t chunk_pixels = 0, chunks = 0, blocks = 0;  // a chunk lies within one sample's plane
  // item -> (chunk, channel), chunk -> (sample, chunk of its plane), pixel -> image row: shifts in the kernels
  // instantiated for pow2()
  hd::Divisor channels, sample_chunks, width;

  hd::LaneSum<kThreads> sum;  // lanes laid out as planes': an item's are threads items_per_block apart, in 8 warps

  bool pow2() const { return channels.pow2() && sample_chunks.pow2() && width.pow2(); }
};

// The channel geometry, whose chunks (the host's partial sums) do not depend on the vector width.
inline ChannelConfig channel_config(const Shape& s, int pixels_per_access = 1) {
  ChannelConfig cfg;
  cfg.items_per_block = s.channels_last ? kChannelItems : 1;
  cfg.lanes = kThreads / cfg.items_per_block;
  cfg.sum = hd::LaneSum<kThreads>::of(cfg.lanes, /*rows=*/false);
  cfg.pixels_per_access = pixels_per_access;
  cfg.chunk_pixels = static_cast<int64_t>(cfg.lanes) * kPixelsPerLane;
  cfg.channels = hd::Divisor::of(s.channels);
  cfg.sample_chunks = hd::Divisor::of(hd::ceil_div(s.plane(), cfg.chunk_pixels));
  cfg.width = hd::Divisor::of(s.width);
  cfg.chunks = s.n * cfg.sample_chunks.value;
  cfg.blocks = hd::ceil_div(cfg.chunks * s.channels, cfg.items_per_block);
  return cfg;
}

// Pixels per access of the channel kernel: hd::kVec128 for NCHW where every divisor is a power of two, W divides
// into vectors and the images and grad_y are 16-byte aligned; else 1.
template <typename scalar_t>
int channel_vector_width(const Shape& s, const void* images, const void* grad_y) {
  if (s.channels_last || !channel_config(s).pow2()) return 1;
  return hd::vector_width<scalar_t>(s.width % hd::kVec128<scalar_t> == 0, {images, grad_y});
}

// Backward over pixels per channel: partial[chunk][c][k] = sum over the chunk of dz * pool_k for the image channels
// k of `group`, and (group 0) partial[chunk][c][C_img] = sum of dz, in the op-math dtype. Instantiated for P pixels
// per access, every divisor a power of two or not (kPow2; the vector path only for powers of two) and kFew: C_img <=
// kGroup (RGB, RGBA, grayscale), compiled without the code for further image channels, which sets the registers of
// a kernel that has it (sm_90: 95-128 per thread, sm_80 up to 166 for float64, where the RGB kernels take 55-80).
template <typename scalar_t, int P, bool kPow2, bool kFew>
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

  // An item's lanes add their sums (hd::LaneSum) in a warp exchange (NCHW: a block of one item, its 256 lanes
  // consecutive threads; channels last: 8 lanes kChannelItems apart, one per warp, exchange nothing), then the 8
  // warps' sums after one barrier.
  PF_HD int64_t blocks() const { return cfg.blocks; }
  PF_HD int phases() const { return 2; }
  PF_HD int exchange_lanes() const { return cfg.sum.exchange_lanes; }
  PF_HD int exchange_stride() const { return cfg.sum.exchange_stride; }

  // item = chunk * C + c: with channels last a block's items are consecutive channels of one chunk.
  PF_HD Slot slot(int64_t block, int tid) const {
    return slot_of(false, cfg.lanes, cfg.items_per_block, block, tid);
  }

  // This lane's pixels of the chunk, P at a time from `first` (feature index i), the tensors as __restrict__
  // parameters (Operands says why). The channel's weights are loop invariants.
  PF_HD void accumulate_pixels(const scalar_t* __restrict__ images, const scalar_t* __restrict__ weight,
                               const scalar_t* __restrict__ bias, const scalar_t* __restrict__ dy,
                               acc_t (&sums)[kGroup + 1], int64_t sample, int64_t c, uint32_t first,
                               uint32_t end, int64_t i) const {
    const int64_t ci = o.shape.image_channels, k0 = group * kGroup;
    const int64_t step = cfg.lanes * P * o.shape.pixel_stride();
    acc_t w[kGroup];
    for (int e = 0; e < kGroup; ++e) w[e] = e < ci ? o.weight_scale * o.w(weight, c, e) : acc_t(0);
    const acc_t zb = o.bias_gain * hd::to_acc(hd::load_ro(bias + c));
    const acc_t a = o.alpha.template load<acc_t>();
    for (uint32_t p = first; p < end; p += cfg.lanes * P, i += step) {
      const int64_t base = o.shape.template image_base<kPow2>(cfg.width, {sample, p});
      acc_t pools[kGroup][P];
      o.template first_pools<P>(images, base, pools);
      acc_t z[P];
      for (int n = 0; n < P; ++n) {
        z[n] = zb;
        for (int e = 0; e < kGroup; ++e) z[n] = hd::mul_add(w[e], pools[e][n], z[n]);
      }
      if constexpr (!kFew) {
        for (int64_t k = kGroup; k < ci; ++k) {
          acc_t pk[P];
          o.template pools<P>(images, base, k, pk);
          const acc_t wk = o.weight_scale * o.w(weight, c, k);
          for (int n = 0; n < P; ++n) z[n] = hd::mul_add(wk, pk[n], z[n]);
        }
        if (group > 0)
          for (int e = 0; e < kGroup; ++e) {
            if (k0 + e < ci) {
              o.template pools<P>(images, base, k0 + e, pools[e]);
            } else {
              for (int n = 0; n < P; ++n) pools[e][n] = 0;
            }
          }
      }
      const hd::Vec<scalar_t, P> gv = hd::load_vec<P>(dy + i);
      for (int n = 0; n < P; ++n) {
        const acc_t dz = o.dz_per_g(z[n], a) * hd::to_acc(gv.e[n]);
        for (int e = 0; e < kGroup; ++e) sums[e] = hd::mul_add(dz, pools[e][n], sums[e]);
        sums[kGroup] += dz;
      }
    }
  }

  // This lane's share of its item's sums.
  PF_HD Exchange lane_sums(int64_t block, int tid) const {
    const Slot s = slot(block, tid);
    Exchange sums{};
    if (s.item < cfg.chunks * cfg.channels.value) {
      const auto chunk_c = cfg.channels.split<kPow2>(s.item);
      const auto sample_chunk = cfg.sample_chunks.split<kPow2>(chunk_c.quotient);
      const int64_t c = chunk_c.remainder, sample = sample_chunk.quotient;
      // plane indices in 32 bits (H * W < 2^31, and a chunk ends at most kThreads * kPixelsPerLane beyond)
      const uint32_t p0 = static_cast<uint32_t>(sample_chunk.remainder * cfg.chunk_pixels), first = p0 + s.lane * P;
      const uint32_t end = p0 + cfg.chunk_pixels < o.shape.plane() ? p0 + cfg.chunk_pixels : o.shape.plane();
      const int64_t i = o.shape.feature({sample, first}, c);
      accumulate_pixels(o.images, o.weight, o.bias, grad_y, sums.v, sample, c, first, end, i);
    }
    return sums;
  }

  // Lane 0 of an item writes the item's sums.
  PF_HD void write(const Exchange& totals, int64_t block, int tid) const {
    const Slot s = slot(block, tid);
    const int64_t ci = o.shape.image_channels;
    if (s.lane != 0 || s.item >= cfg.chunks * cfg.channels.value) return;
    acc_t* out = partials + s.item * (ci + 1);  // [chunk][c] = item
    for (int e = 0; e < kGroup; ++e)
      if (group * kGroup + e < ci) out[group * kGroup + e] = totals.v[e];
    if (group == 0) out[ci] = totals.v[kGroup];
  }

  PF_HD Exchange before_exchange(Shared&, int64_t block, int tid) const { return lane_sums(block, tid); }
  PF_HD void after_exchange(Shared& sh, int64_t, int tid, const Exchange& sums) const {
    if (cfg.sum.keeps(tid))
      for (int e = 0; e <= kGroup; ++e) sh.partial[e][tid] = sums.v[e];
  }

  // p == 1: lane 0 of each item (threads 0 to items_per_block - 1) adds its 8 warps' sums, kept 32 apart from its
  // own slot (hd::LaneSum::total, with the trip count and distance spelled out: from the run-time ones ptxas spilled).
  PF_HD void phase(int, Shared& sh, int64_t block, int tid) const {
    if (tid >= cfg.items_per_block) return;
    Exchange totals;
    for (int e = 0; e <= kGroup; ++e) {
      totals.v[e] = 0;
      for (int w = 0; w < kThreads / hd::kWarpSize; ++w) totals.v[e] += sh.partial[e][tid + w * hd::kWarpSize];
    }
    write(totals, block, tid);
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

// The launch geometries of each kernel for its tensors (the emulated family's tests read them too).
template <typename scalar_t>
PixelConfig forward_config(const ForwardParams& p) {
  const Shape& s = p.common.shape;
  return pixel_config(s, pixel_vector_width<scalar_t>(s, {p.common.images}, {p.new_, p.y}));
}

template <typename scalar_t>
PixelConfig pixel_backward_config(const PixelBackwardParams& p) {
  const Shape& s = p.common.shape;
  return pixel_config(s, pixel_vector_width<scalar_t>(s, {p.common.images, p.grad_images}, {p.grad_y, p.grad_new}));
}

template <typename scalar_t>
ChannelConfig channel_backward_config(const ChannelBackwardParams& p) {
  const Shape& s = p.common.shape;
  return channel_config(s, channel_vector_width<scalar_t>(s, p.common.images, p.grad_y));
}

template <typename scalar_t>
Operands<scalar_t> operands(const CommonParams& p) {
  using acc_t = opmath_t<scalar_t>;
  return Operands<scalar_t>{static_cast<const scalar_t*>(p.images), static_cast<const scalar_t*>(p.weight),
                            static_cast<const scalar_t*>(p.bias), p.shape,
                            static_cast<acc_t>(p.scalars.scale * 0.25), static_cast<acc_t>(p.scalars.bias_gain),
                            static_cast<acc_t>(p.scalars.negative_slope), p.alpha};
}

// Calls f(kFew) (a bool constant): C_img <= kGroup.
template <typename F>
auto with_few_image_channels(const Shape& s, F&& f) {
  if (s.image_channels <= kGroup) return f(std::true_type{});
  return f(std::false_type{});
}

// Calls f(P, Q, kPow2, kFew) (integral constants) for the pixel kernels' instantiations: NCHW runs, channels-last
// vectors, and one element per access with H * W a power of two or not; each for C_img <= kGroup or not.
template <typename scalar_t, typename F>
auto with_pixel_instantiation(const PixelConfig& cfg, const Shape& s, F&& f) {
  using Vector = std::integral_constant<int, hd::kVec128<scalar_t>>;
  return with_few_image_channels(s, [&](auto few) {
    if (cfg.pixels_per_item > 1) return f(Vector{}, hd::Scalar{}, std::true_type{}, few);
    if (cfg.channels_per_access > 1) return f(hd::Scalar{}, Vector{}, std::true_type{}, few);
    return hd::with_pow2_case(cfg.pow2(), [&](auto pow2) { return f(hd::Scalar{}, hd::Scalar{}, pow2, few); });
  });
}

template <typename Exec>
auto run(const ForwardParams& p, const Exec& exec) {
  return hd::dispatch(p.common.dtype, [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    const PixelConfig cfg = forward_config<scalar_t>(p);
    return with_pixel_instantiation<scalar_t>(cfg, p.common.shape, [&](auto pixels, auto channels, auto pow2, auto few) {
      return exec(ForwardKernel<scalar_t, decltype(pixels)::value, decltype(channels)::value, decltype(pow2)::value,
                                decltype(few)::value>{
          operands<scalar_t>(p.common), static_cast<const scalar_t*>(p.new_), static_cast<scalar_t*>(p.y), cfg});
    });
  });
}

template <typename Exec>
auto run(const PixelBackwardParams& p, const Exec& exec) {
  return hd::dispatch(p.common.dtype, [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    const PixelConfig cfg = pixel_backward_config<scalar_t>(p);
    return with_pixel_instantiation<scalar_t>(cfg, p.common.shape, [&](auto pixels, auto channels, auto pow2, auto few) {
      return exec(PixelBackwardKernel<scalar_t, decltype(pixels)::value, decltype(channels)::value,
                                      decltype(pow2)::value, decltype(few)::value>{
          operands<scalar_t>(p.common), static_cast<const scalar_t*>(p.grad_y), static_cast<scalar_t*>(p.grad_new),
          static_cast<scalar_t*>(p.grad_images), cfg, p.group});
    });
  });
}

template <typename Exec>
auto run(const ChannelBackwardParams& p, const Exec& exec) {
  return hd::dispatch(p.common.dtype, [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    const ChannelConfig cfg = channel_backward_config<scalar_t>(p);
    const auto launch = [&](auto pixels, auto pow2) {
      return with_few_image_channels(p.common.shape, [&](auto few) {
        return exec(ChannelBackwardKernel<scalar_t, decltype(pixels)::value, decltype(pow2)::value,
                                          decltype(few)::value>{
            operands<scalar_t>(p.common), static_cast<const scalar_t*>(p.grad_y),
            static_cast<opmath_t<scalar_t>*>(p.partials), cfg, p.group});
      });
    };
    return hd::with_vector_case<scalar_t>(cfg.pixels_per_access > 1, cfg.pow2(), launch);
  });
}

#if defined(__CUDACC__) || defined(PROGAN_FAST_WITH_CUDA)
// Defined in csrc/cuda/fade_from_rgb.cu: enqueue on `stream`, return the launch error.
cudaError_t cuda_launch(const ForwardParams& p, cudaStream_t stream);
cudaError_t cuda_launch(const PixelBackwardParams& p, cudaStream_t stream);
cudaError_t cuda_launch(const ChannelBackwardParams& p, cudaStream_t stream);
#endif

}  // namespace progan_fast::fade_from_rgb_cuda
