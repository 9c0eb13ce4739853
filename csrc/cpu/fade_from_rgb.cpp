// fade_from_rgb on the CPU: D's input fade, y = lerp(lrelu(z), new, alpha) with
// z = scale * W . avg_pool2(images) + bias_gain * b, in one pass over `new` (forward) or grad_y (backward).
//
// Work is split into tasks of one sample's block of feature rows. A task first sums its pixels' 2x2 image values
// (C_img sums per pixel, kept in L1), then streams the feature map channel by channel (NCHW: a contiguous run of
// the block's pixels per channel) or pixel by pixel (channels_last: a contiguous run of C channels per pixel),
// recomputing z from the sums: the pooled image and the old path's feature map never exist in memory. The 1/4 of
// the mean and the equalized-lr scale are folded into the weight once per call (ws = scale / 4 * W).
//
// Backward, per element: grad_new = alpha * g and dz = (1 - alpha) * lrelu'(z) * g; dz is reduced three ways in the
// same pass: over channels into the pixel's image gradient (sum_c ws[c, k] * dz, kept per pixel in L1 and written
// to its 2x2 image pixels at the end of the task), and over pixels into grad_bias (sum dz) and grad_weight
// (sum dz * pooled sums), kept per task and summed over tasks in task order at the end (deterministic for any
// thread count).
//
// The image-channel loops are unrolled for C_img <= 4 (grayscale, RGB, RGBA); more channels take a generic path
// through scratch rows. float32 runs multi-versioned loops (AVX-512 / AVX2 / baseline, isa.h) and streams outputs
// larger than the caches with non-temporal stores; half rows are widened to float scratch; float64 runs the same
// loops compiled for double.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/fade_operands.h"
#include "cpu/fade_io.h"
#include "cpu/stream.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace progan_fast {
namespace fade_cpu {
using cpu::prefetch_row;
using cpu::prefetch_row_l1;

// Pixels per task. NCHW: whole planes where they fit, so that a task reads (and writes) one contiguous slab of the
// feature map, channel after channel, which the prefetchers stream; with 512-pixel blocks every channel's run was
// a separate 2 KB stream and the loads stalled. The block's pooled sums and image-gradient sums (C_img * 32 KB each
// for RGB at most) stay in L2. Channels last: a block is contiguous anyway; 512 pixels keep its sums in L1.
constexpr int64_t kPlanesBlockPixels = 8192;
constexpr int64_t kRowsBlockPixels = 512;
// Every loop prefetches the input it reads next (the next chunk of its channels' planes, or the next group's
// rows): a group interleaves 2-4 runs a plane or a row apart, which Zen 4's hardware prefetchers did not follow,
// and the loads of `new` and grad_y waited on DRAM. Measured on one thread at S2/S3 (2-core Zen 4, interleaved in
// one process): channels_last forward 1.3-1.8x and forward+backward 1.2-1.4x faster, NCHW 1.15-1.2x. Rows are
// prefetched into L1 (used within a group's time; 1.1-1.2x faster than into L2 there), planes' chunks into L2
// (into L1 was 1.1x slower).
// Values computed into an L1 buffer before a streaming copy, and the generic path's scratch run.
constexpr int64_t kChunk = 256;

// Streaming copies of an L1 buffer to memory, with the widest non-temporal store of the active ISA variant (isa.h;
// written with intrinsics like isa.cpp's F16C conversions): the loops above compute into L1 buffers because GCC's
// vectorizer has no non-temporal stores, and this copy then costs one load and one store per vector instead of
// four of each.
namespace {
#if PROGAN_FAST_X86_DISPATCH
__attribute__((target("avx512f"))) void stream_copy_avx512(float* dst, const float* src, int64_t n) {
  int64_t i = 0;
  for (; i < n && (reinterpret_cast<uintptr_t>(dst + i) & 63); ++i) dst[i] = src[i];
  for (; i + 16 <= n; i += 16) _mm512_stream_ps(dst + i, _mm512_loadu_ps(src + i));
  for (; i < n; ++i) dst[i] = src[i];
}

__attribute__((target("avx"))) void stream_copy_avx(float* dst, const float* src, int64_t n) {
  int64_t i = 0;
  for (; i < n && (reinterpret_cast<uintptr_t>(dst + i) & 31); ++i) dst[i] = src[i];
  for (; i + 8 <= n; i += 8) _mm256_stream_ps(dst + i, _mm256_loadu_ps(src + i));
  for (; i < n; ++i) dst[i] = src[i];
}
#endif

void stream_copy_sse(float* dst, const float* src, int64_t n) {
  int64_t i = 0;
#if defined(__SSE2__)
  for (; i < n && (reinterpret_cast<uintptr_t>(dst + i) & 15); ++i) dst[i] = src[i];
  for (; i + 4 <= n; i += 4) _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
#endif
  for (; i < n; ++i) dst[i] = src[i];
}

void stream_copy(float* dst, const float* src, int64_t n) {
#if PROGAN_FAST_X86_DISPATCH
  switch (isa::enter()) {
    case isa::kX86_64_V4: return stream_copy_avx512(dst, src, n);
    case isa::kX86_64_V3: return stream_copy_avx(dst, src, n);
    default: break;
  }
#endif
  stream_copy_sse(dst, src, n);
}
}  // namespace

// dst = src (an L1 buffer), with non-temporal stores when `stream`.
FADE_INLINE void copy_out(float* __restrict dst, const float* __restrict src, int64_t n, bool stream) {
  if (stream) return stream_copy(dst, src, n);
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}
FADE_INLINE void copy_out(double* __restrict dst, const double* __restrict src, int64_t n, bool) {
  std::memcpy(dst, src, n * sizeof(double));
}

// The L1 buffer of `rows` rows that the loops compute into before a streaming copy, 512 bytes past a page boundary.
// The loops store into it at the same offsets as they load their inputs, which sit at page-aligned offsets in
// large tensors; a buffer at a similar page offset made the loads wait on the stores to it ("4K aliasing").
template <typename A, int rows>
struct StreamBuffer {
  alignas(4096) A storage[512 / sizeof(A) + rows * kChunk];
  A* data() { return storage + 512 / sizeof(A); }
};

// Non-temporal stores are weakly ordered: fence before another thread may read them.
FADE_INLINE void stream_fence(bool stream) {
#if defined(__SSE2__)
  if (stream) _mm_sfence();
#else
  (void)stream;
#endif
}

// Loops over a few image channels or channels inside a vectorized pixel loop: GCC vectorizes the pixel loop only
// once they are unrolled ("not vectorized: multiple nested loops" otherwise).
#define FADE_UNROLLED _Pragma("GCC unroll 8")

// ---- NCHW: `channels` runs of P pixels, `cs` apart; pool[k * P + p] the block's sums; ws[c * CI + k], bb[c] ----

// G channels at a time: each pixel's sums are loaded once for G channels (an S3 block's sums live in L2).
template <typename A, int CI, int G>
FADE_INLINE void planes_forward_group(A* __restrict out, const A* __restrict nw, int64_t cs, const A* __restrict pool,
                                      int64_t P, const A* __restrict ws, const A* __restrict bb, A alpha, A slope,
                                      bool stream, A* __restrict buf) {
  const bool small = alpha < A(0.5);
  const A coef = small ? alpha : alpha - A(1);
  A w[G][CI], b[G];
  for (int j = 0; j < G; ++j) {
    b[j] = bb[j];
    for (int k = 0; k < CI; ++k) w[j][k] = ws[j * CI + k];
  }
  for (int64_t p0 = 0; p0 < P; p0 += kChunk) {
    const int64_t n = std::min(kChunk, P - p0);
    for (int j = 0; j < G; ++j) prefetch_row(p0 + kChunk < P ? nw + j * cs + p0 + kChunk : nw + (G + j) * cs, kChunk);
    A* dst[G];
    for (int j = 0; j < G; ++j) dst[j] = stream ? buf + j * kChunk : out + j * cs + p0;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      A q[CI];
      FADE_UNROLLED
      for (int k = 0; k < CI; ++k) q[k] = pool[k * P + p0 + i];
      FADE_UNROLLED
      for (int j = 0; j < G; ++j) {
        A z = b[j];
        FADE_UNROLLED
        for (int k = 0; k < CI; ++k) z = std::fma(w[j][k], q[k], z);
        const A old = z > 0 ? z : z * slope;
        const A v = nw[j * cs + p0 + i];
        dst[j][i] = std::fma(coef, v - old, small ? old : v);
      }
    }
    if (stream)
      for (int j = 0; j < G; ++j) copy_out(out + j * cs + p0, buf + j * kChunk, n, true);
  }
}

template <typename A, int CI>
FADE_INLINE void planes_forward_ci(A* __restrict out, const A* __restrict nw, int64_t channels, int64_t cs,
                                   const A* __restrict pool, int64_t P, const A* __restrict ws,
                                   const A* __restrict bb, A alpha, A slope, bool stream) {
  constexpr int G = 4;
  StreamBuffer<A, G> storage;
  A* buf = storage.data();
  int64_t c = 0;
  for (; c + G <= channels; c += G)
    planes_forward_group<A, CI, G>(out + c * cs, nw + c * cs, cs, pool, P, ws + c * CI, bb + c, alpha, slope, stream,
                                   buf);
  for (; c < channels; ++c)
    planes_forward_group<A, CI, 1>(out + c * cs, nw + c * cs, cs, pool, P, ws + c * CI, bb + c, alpha, slope, stream,
                                   buf);
  stream_fence(stream);
}

template <typename A>
FADE_INLINE void planes_forward_generic(A* __restrict out, const A* __restrict nw, int64_t channels, int64_t cs,
                                        const A* __restrict pool, int64_t P, int64_t ci, const A* __restrict ws,
                                        const A* __restrict bb, A alpha, A slope, bool stream) {
  const bool small = alpha < A(0.5);
  A z[kChunk];
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t p0 = 0; p0 < P; p0 += kChunk) {
      const int64_t n = std::min(kChunk, P - p0);
      for (int64_t i = 0; i < n; ++i) z[i] = bb[c];
      for (int64_t k = 0; k < ci; ++k)
        for (int64_t i = 0; i < n; ++i) z[i] = std::fma(ws[c * ci + k], pool[k * P + p0 + i], z[i]);
      for (int64_t i = 0; i < n; ++i) {
        const A old = z[i] > 0 ? z[i] : z[i] * slope;
        z[i] = lerp(old, nw[c * cs + p0 + i], alpha, small);
      }
      copy_out(out + c * cs + p0, z, n, stream);
    }
  }
  stream_fence(stream);
}

// Two channels at a time: the pixel's sums and image-gradient sums are loaded and stored once per pair. Adds into
// partial[j * (CI + 1) + k] (sum over pixels of dz * pool_k), partial[j * (CI + 1) + CI] (sum of dz) for the two
// channels j, and into gpool[k * P + p] (sum over channels of ws[c, k] * dz). G = 1 for an odd last channel.
template <typename A, int CI, int G>
FADE_INLINE void planes_backward_group(A* __restrict gn, const A* __restrict g, int64_t cs, const A* __restrict pool,
                                       A* __restrict gpool, int64_t P, const A* __restrict ws,
                                       const A* __restrict bb, A alpha, A slope, A* __restrict partial, bool stream,
                                       A* __restrict buf) {
  static_assert(G == 1 || G == 2);
  const A up = A(1) - alpha, down = (A(1) - alpha) * slope;  // dz / g on either side of the kink
  A w[2][4] = {}, b[2] = {};
  for (int j = 0; j < G; ++j) {
    b[j] = bb[j];
    for (int k = 0; k < CI; ++k) w[j][k] = ws[j * CI + k];
  }
  // per channel j: s_j0 .. s_j3 = sum dz * pool_k, s_jb = sum dz
  A s00 = 0, s01 = 0, s02 = 0, s03 = 0, s0b = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0, s1b = 0;
  for (int64_t p0 = 0; p0 < P; p0 += kChunk) {
    const int64_t n = std::min(kChunk, P - p0);
    for (int j = 0; j < G; ++j) prefetch_row(p0 + kChunk < P ? g + j * cs + p0 + kChunk : g + (G + j) * cs, kChunk);
    const A* __restrict q = pool + p0;
    A* __restrict gq = gpool + p0;
    const A* __restrict g0 = g + p0;
    const A* __restrict g1 = g + cs + p0;
    A* __restrict d0 = stream ? buf : gn + p0;
    A* __restrict d1 = stream ? buf + kChunk : gn + cs + p0;
#pragma omp simd reduction(+ : s00, s01, s02, s03, s0b, s10, s11, s12, s13, s1b)
    for (int64_t i = 0; i < n; ++i) {
      A qk[4] = {}, gk[4] = {};
      FADE_UNROLLED
      for (int k = 0; k < CI; ++k) {
        qk[k] = q[k * P + i];
        gk[k] = gq[k * P + i];
      }
      {
        A z = b[0];
        FADE_UNROLLED
        for (int k = 0; k < CI; ++k) z = std::fma(w[0][k], qk[k], z);
        const A gv = g0[i];
        d0[i] = alpha * gv;
        const A dz = (z > 0 ? up : down) * gv;
        s0b += dz;
        s00 += dz * qk[0];
        if constexpr (CI > 1) s01 += dz * qk[1];
        if constexpr (CI > 2) s02 += dz * qk[2];
        if constexpr (CI > 3) s03 += dz * qk[3];
        FADE_UNROLLED
        for (int k = 0; k < CI; ++k) gk[k] = std::fma(w[0][k], dz, gk[k]);
      }
      if constexpr (G == 2) {
        A z = b[1];
        FADE_UNROLLED
        for (int k = 0; k < CI; ++k) z = std::fma(w[1][k], qk[k], z);
        const A gv = g1[i];
        d1[i] = alpha * gv;
        const A dz = (z > 0 ? up : down) * gv;
        s1b += dz;
        s10 += dz * qk[0];
        if constexpr (CI > 1) s11 += dz * qk[1];
        if constexpr (CI > 2) s12 += dz * qk[2];
        if constexpr (CI > 3) s13 += dz * qk[3];
        FADE_UNROLLED
        for (int k = 0; k < CI; ++k) gk[k] = std::fma(w[1][k], dz, gk[k]);
      }
      FADE_UNROLLED
      for (int k = 0; k < CI; ++k) gq[k * P + i] = gk[k];
    }
    if (stream) {
      copy_out(gn + p0, buf, n, true);
      if constexpr (G == 2) copy_out(gn + cs + p0, buf + kChunk, n, true);
    }
  }
  const A sums[2][5] = {{s00, s01, s02, s03, s0b}, {s10, s11, s12, s13, s1b}};
  for (int j = 0; j < G; ++j) {
    for (int k = 0; k < CI; ++k) partial[j * (CI + 1) + k] += sums[j][k];
    partial[j * (CI + 1) + CI] += sums[j][4];
  }
}

template <typename A, int CI>
FADE_INLINE void planes_backward_ci(A* __restrict gn, const A* __restrict g, int64_t channels, int64_t cs,
                                    const A* __restrict pool, A* __restrict gpool, int64_t P,
                                    const A* __restrict ws, const A* __restrict bb, A alpha, A slope,
                                    A* __restrict partial, bool stream) {
  StreamBuffer<A, 2> storage;
  A* buf = storage.data();
  int64_t c = 0;
  for (; c + 2 <= channels; c += 2)
    planes_backward_group<A, CI, 2>(gn + c * cs, g + c * cs, cs, pool, gpool, P, ws + c * CI, bb + c, alpha, slope,
                                    partial + c * (CI + 1), stream, buf);
  if (c < channels)
    planes_backward_group<A, CI, 1>(gn + c * cs, g + c * cs, cs, pool, gpool, P, ws + c * CI, bb + c, alpha, slope,
                                    partial + c * (CI + 1), stream, buf);
  stream_fence(stream);
}

template <typename A>
FADE_INLINE void planes_backward_generic(A* __restrict gn, const A* __restrict g, int64_t channels, int64_t cs,
                                         const A* __restrict pool, A* __restrict gpool, int64_t P, int64_t ci,
                                         const A* __restrict ws, const A* __restrict bb, A alpha, A slope,
                                         A* __restrict partial, bool stream) {
  const A up = A(1) - alpha, down = (A(1) - alpha) * slope;
  A z[kChunk], out[kChunk];
  for (int64_t c = 0; c < channels; ++c) {
    A* part = partial + c * (ci + 1);
    for (int64_t p0 = 0; p0 < P; p0 += kChunk) {
      const int64_t n = std::min(kChunk, P - p0);
      const A* gr = g + c * cs + p0;
      for (int64_t i = 0; i < n; ++i) z[i] = bb[c];
      for (int64_t k = 0; k < ci; ++k)
        for (int64_t i = 0; i < n; ++i) z[i] = std::fma(ws[c * ci + k], pool[k * P + p0 + i], z[i]);
      A sb = 0;
      for (int64_t i = 0; i < n; ++i) {
        out[i] = alpha * gr[i];
        z[i] = (z[i] > 0 ? up : down) * gr[i];  // dz from here on
        sb += z[i];
      }
      copy_out(gn + c * cs + p0, out, n, stream);
      part[ci] += sb;
      for (int64_t k = 0; k < ci; ++k) {
        const A* q = pool + k * P + p0;
        A* gq = gpool + k * P + p0;
        A s = 0;
        for (int64_t i = 0; i < n; ++i) {
          s += z[i] * q[i];
          gq[i] = std::fma(ws[c * ci + k], z[i], gq[i]);
        }
        part[k] += s;
      }
    }
  }
  stream_fence(stream);
}

// ---- channels_last: `pixels` rows of C channels; pool[px * CI + k]; wsT[k * C + c], bb[c] ----

// G pixels at a time: each channel's weights are loaded once for all of them.
template <typename A, int CI, int G>
FADE_INLINE void rows_forward_group(A* __restrict out, const A* __restrict nw, int64_t C, const A* __restrict pool,
                                    const A* __restrict wsT, const A* __restrict bb, A alpha, A slope, bool stream,
                                    A* __restrict buf) {
  const bool small = alpha < A(0.5);
  const A coef = small ? alpha : alpha - A(1);
  A pk[G][CI];
  for (int j = 0; j < G; ++j)
    for (int k = 0; k < CI; ++k) pk[j][k] = pool[j * CI + k];
  for (int64_t c0 = 0; c0 < C; c0 += kChunk) {
    const int64_t n = std::min(kChunk, C - c0);
    // Whole rows (C <= kChunk) are buffered back to back, like the pixels in memory: one streaming copy for all.
    const int64_t row = n == C ? C : kChunk;
    A* dst[G];
    for (int j = 0; j < G; ++j) dst[j] = stream ? buf + j * row : out + j * C + c0;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      A w[CI];
      FADE_UNROLLED
      for (int k = 0; k < CI; ++k) w[k] = wsT[k * C + c0 + i];
      const A b = bb[c0 + i];
      FADE_UNROLLED
      for (int j = 0; j < G; ++j) {
        A z = b;
        FADE_UNROLLED
        for (int k = 0; k < CI; ++k) z = std::fma(w[k], pk[j][k], z);
        const A old = z > 0 ? z : z * slope;
        const A v = nw[j * C + c0 + i];
        dst[j][i] = std::fma(coef, v - old, small ? old : v);
      }
    }
    if (stream && row == C) copy_out(out, buf, G * C, true);
    else if (stream)
      for (int j = 0; j < G; ++j) copy_out(out + j * C + c0, buf + j * kChunk, n, true);
  }
}

template <typename A, int CI>
FADE_INLINE void rows_forward_ci(A* __restrict out, const A* __restrict nw, int64_t pixels, int64_t C,
                                 const A* __restrict pool, const A* __restrict wsT, const A* __restrict bb, A alpha,
                                 A slope, bool stream) {
  StreamBuffer<A, 4> storage;
  A* buf = storage.data();
  int64_t px = 0;
  for (; px + 4 <= pixels; px += 4) {
    prefetch_row_l1(nw + (px + 4) * C, 4 * C);
    rows_forward_group<A, CI, 4>(out + px * C, nw + px * C, C, pool + px * CI, wsT, bb, alpha, slope, stream, buf);
  }
  for (; px < pixels; ++px)
    rows_forward_group<A, CI, 1>(out + px * C, nw + px * C, C, pool + px * CI, wsT, bb, alpha, slope, stream, buf);
  stream_fence(stream);
}

template <typename A>
FADE_INLINE void rows_forward_generic(A* __restrict out, const A* __restrict nw, int64_t pixels, int64_t C,
                                      const A* __restrict pool, int64_t ci, const A* __restrict wsT,
                                      const A* __restrict bb, A alpha, A slope, bool stream) {
  const bool small = alpha < A(0.5);
  A z[kChunk];
  for (int64_t px = 0; px < pixels; ++px) {
    for (int64_t c0 = 0; c0 < C; c0 += kChunk) {
      const int64_t n = std::min(kChunk, C - c0);
      for (int64_t i = 0; i < n; ++i) z[i] = bb[c0 + i];
      for (int64_t k = 0; k < ci; ++k)
        for (int64_t i = 0; i < n; ++i) z[i] = std::fma(wsT[k * C + c0 + i], pool[px * ci + k], z[i]);
      for (int64_t i = 0; i < n; ++i) {
        const A old = z[i] > 0 ? z[i] : z[i] * slope;
        z[i] = lerp(old, nw[px * C + c0 + i], alpha, small);
      }
      copy_out(out + px * C + c0, z, n, stream);
    }
  }
  stream_fence(stream);
}

// Two pixels at a time: the channel's weights and accumulators are loaded and stored once for both. Adds into
// acc[k * C + c] (sum over pixels of dz * pool_k) and acc[CI * C + c] (sum of dz); writes the pixels' gpool.
template <typename A, int CI, int G>
FADE_INLINE void rows_backward_group(A* __restrict gn, const A* __restrict g, int64_t C, const A* __restrict pool,
                                     A* __restrict gpool, const A* __restrict wsT, const A* __restrict bb, A alpha,
                                     A slope, A* __restrict acc, bool stream, A* __restrict buf) {
  static_assert(G == 1 || G == 2);
  const A up = A(1) - alpha, down = (A(1) - alpha) * slope;
  A pk[2][4] = {};
  for (int j = 0; j < G; ++j)
    for (int k = 0; k < CI; ++k) pk[j][k] = pool[j * CI + k];
  // per pixel j: t_jk = sum over channels of wsT[k, c] * dz
  A t00 = 0, t01 = 0, t02 = 0, t03 = 0, t10 = 0, t11 = 0, t12 = 0, t13 = 0;
  for (int64_t c0 = 0; c0 < C; c0 += kChunk) {
    const int64_t n = std::min(kChunk, C - c0);
    const A* __restrict g0 = g + c0;
    const A* __restrict g1 = g + C + c0;
    const int64_t row = n == C ? C : kChunk;  // whole rows are buffered back to back: one streaming copy for both
    A* __restrict d0 = stream ? buf : gn + c0;
    A* __restrict d1 = stream ? buf + row : gn + C + c0;
#pragma omp simd reduction(+ : t00, t01, t02, t03, t10, t11, t12, t13)
    for (int64_t i = 0; i < n; ++i) {
      A w[4] = {}, a[4] = {};
      FADE_UNROLLED
      for (int k = 0; k < CI; ++k) {
        w[k] = wsT[k * C + c0 + i];
        a[k] = acc[k * C + c0 + i];
      }
      const A b = bb[c0 + i];
      A ab = acc[CI * C + c0 + i];
      {
        A z = b;
        FADE_UNROLLED
        for (int k = 0; k < CI; ++k) z = std::fma(w[k], pk[0][k], z);
        const A gv = g0[i];
        d0[i] = alpha * gv;
        const A dz = (z > 0 ? up : down) * gv;
        ab += dz;
        FADE_UNROLLED
        for (int k = 0; k < CI; ++k) a[k] = std::fma(dz, pk[0][k], a[k]);
        t00 += w[0] * dz;
        if constexpr (CI > 1) t01 += w[1] * dz;
        if constexpr (CI > 2) t02 += w[2] * dz;
        if constexpr (CI > 3) t03 += w[3] * dz;
      }
      if constexpr (G == 2) {
        A z = b;
        FADE_UNROLLED
        for (int k = 0; k < CI; ++k) z = std::fma(w[k], pk[1][k], z);
        const A gv = g1[i];
        d1[i] = alpha * gv;
        const A dz = (z > 0 ? up : down) * gv;
        ab += dz;
        FADE_UNROLLED
        for (int k = 0; k < CI; ++k) a[k] = std::fma(dz, pk[1][k], a[k]);
        t10 += w[0] * dz;
        if constexpr (CI > 1) t11 += w[1] * dz;
        if constexpr (CI > 2) t12 += w[2] * dz;
        if constexpr (CI > 3) t13 += w[3] * dz;
      }
      FADE_UNROLLED
      for (int k = 0; k < CI; ++k) acc[k * C + c0 + i] = a[k];
      acc[CI * C + c0 + i] = ab;
    }
    if (stream && row == C) {
      copy_out(gn, buf, G * C, true);
    } else if (stream) {
      copy_out(gn + c0, buf, n, true);
      if constexpr (G == 2) copy_out(gn + C + c0, buf + kChunk, n, true);
    }
  }
  const A sums[2][4] = {{t00, t01, t02, t03}, {t10, t11, t12, t13}};
  for (int j = 0; j < G; ++j)
    for (int k = 0; k < CI; ++k) gpool[j * CI + k] = sums[j][k];
}

template <typename A, int CI>
FADE_INLINE void rows_backward_ci(A* __restrict gn, const A* __restrict g, int64_t pixels, int64_t C,
                                  const A* __restrict pool, A* __restrict gpool, const A* __restrict wsT,
                                  const A* __restrict bb, A alpha, A slope, A* __restrict acc, bool stream) {
  StreamBuffer<A, 2> storage;
  A* buf = storage.data();
  int64_t px = 0;
  for (; px + 2 <= pixels; px += 2) {
    prefetch_row_l1(g + (px + 2) * C, 2 * C);
    rows_backward_group<A, CI, 2>(gn + px * C, g + px * C, C, pool + px * CI, gpool + px * CI, wsT, bb, alpha, slope,
                                  acc, stream, buf);
  }
  if (px < pixels)
    rows_backward_group<A, CI, 1>(gn + px * C, g + px * C, C, pool + px * CI, gpool + px * CI, wsT, bb, alpha, slope,
                                  acc, stream, buf);
  stream_fence(stream);
}

template <typename A>
FADE_INLINE void rows_backward_generic(A* __restrict gn, const A* __restrict g, int64_t pixels, int64_t C,
                                       const A* __restrict pool, A* __restrict gpool, int64_t ci,
                                       const A* __restrict wsT, const A* __restrict bb, A alpha, A slope,
                                       A* __restrict acc, bool stream) {
  const A up = A(1) - alpha, down = (A(1) - alpha) * slope;
  A z[kChunk], out[kChunk];
  for (int64_t px = 0; px < pixels; ++px) {
    for (int64_t k = 0; k < ci; ++k) gpool[px * ci + k] = 0;
    for (int64_t c0 = 0; c0 < C; c0 += kChunk) {
      const int64_t n = std::min(kChunk, C - c0);
      const A* gr = g + px * C + c0;
      for (int64_t i = 0; i < n; ++i) z[i] = bb[c0 + i];
      for (int64_t k = 0; k < ci; ++k)
        for (int64_t i = 0; i < n; ++i) z[i] = std::fma(wsT[k * C + c0 + i], pool[px * ci + k], z[i]);
      for (int64_t i = 0; i < n; ++i) {
        out[i] = alpha * gr[i];
        z[i] = (z[i] > 0 ? up : down) * gr[i];  // dz from here on
        acc[ci * C + c0 + i] += z[i];
      }
      copy_out(gn + px * C + c0, out, n, stream);
      for (int64_t k = 0; k < ci; ++k) {
        const A pk = pool[px * ci + k];
        A s = 0;
        for (int64_t i = 0; i < n; ++i) {
          acc[k * C + c0 + i] = std::fma(z[i], pk, acc[k * C + c0 + i]);
          s += wsT[k * C + c0 + i] * z[i];
        }
        gpool[px * ci + k] += s;
      }
    }
  }
  stream_fence(stream);
}

// ---- one entry per loop and math type; float32 through multi-versioned functions (external linkage) ----

#define FADE_CI_SWITCH(ci, CALL_CI, CALL_GENERIC) \
  switch (ci) {                                   \
    case 1: CALL_CI(1); break;                    \
    case 2: CALL_CI(2); break;                    \
    case 3: CALL_CI(3); break;                    \
    case 4: CALL_CI(4); break;                    \
    default: CALL_GENERIC; break;                 \
  }

template <typename A>
FADE_INLINE void planes_forward(A* out, const A* nw, int64_t channels, int64_t cs, const A* pool, int64_t P,
                                int64_t ci, const A* ws, const A* bb, A alpha, A slope, bool stream) {
#define CALL(CI) planes_forward_ci<A, CI>(out, nw, channels, cs, pool, P, ws, bb, alpha, slope, stream)
  FADE_CI_SWITCH(ci, CALL, planes_forward_generic(out, nw, channels, cs, pool, P, ci, ws, bb, alpha, slope, stream))
#undef CALL
}

template <typename A>
FADE_INLINE void planes_backward(A* gn, const A* g, int64_t channels, int64_t cs, const A* pool, A* gpool, int64_t P,
                                 int64_t ci, const A* ws, const A* bb, A alpha, A slope, A* partial, bool stream) {
#define CALL(CI) planes_backward_ci<A, CI>(gn, g, channels, cs, pool, gpool, P, ws, bb, alpha, slope, partial, stream)
  FADE_CI_SWITCH(ci, CALL,
                 planes_backward_generic(gn, g, channels, cs, pool, gpool, P, ci, ws, bb, alpha, slope, partial, stream))
#undef CALL
}

template <typename A>
FADE_INLINE void rows_forward(A* out, const A* nw, int64_t pixels, int64_t C, const A* pool, int64_t ci,
                              const A* wsT, const A* bb, A alpha, A slope, bool stream) {
#define CALL(CI) rows_forward_ci<A, CI>(out, nw, pixels, C, pool, wsT, bb, alpha, slope, stream)
  FADE_CI_SWITCH(ci, CALL, rows_forward_generic(out, nw, pixels, C, pool, ci, wsT, bb, alpha, slope, stream))
#undef CALL
}

template <typename A>
FADE_INLINE void rows_backward(A* gn, const A* g, int64_t pixels, int64_t C, const A* pool, A* gpool, int64_t ci,
                               const A* wsT, const A* bb, A alpha, A slope, A* acc, bool stream) {
#define CALL(CI) rows_backward_ci<A, CI>(gn, g, pixels, C, pool, gpool, wsT, bb, alpha, slope, acc, stream)
  FADE_CI_SWITCH(ci, CALL, rows_backward_generic(gn, g, pixels, C, pool, gpool, ci, wsT, bb, alpha, slope, acc, stream))
#undef CALL
}
#undef FADE_CI_SWITCH

PROGAN_FAST_MULTIVERSION(fade_planes_forward_f32,
                         (float* out, const float* nw, int64_t channels, int64_t cs, const float* pool, int64_t P,
                          int64_t ci, const float* ws, const float* bb, float alpha, float slope, bool stream),
                         (out, nw, channels, cs, pool, P, ci, ws, bb, alpha, slope, stream)) {
  planes_forward(out, nw, channels, cs, pool, P, ci, ws, bb, alpha, slope, stream);
}

PROGAN_FAST_MULTIVERSION(fade_planes_backward_f32,
                         (float* gn, const float* g, int64_t channels, int64_t cs, const float* pool, float* gpool,
                          int64_t P, int64_t ci, const float* ws, const float* bb, float alpha, float slope,
                          float* partial, bool stream),
                         (gn, g, channels, cs, pool, gpool, P, ci, ws, bb, alpha, slope, partial, stream)) {
  planes_backward(gn, g, channels, cs, pool, gpool, P, ci, ws, bb, alpha, slope, partial, stream);
}

PROGAN_FAST_MULTIVERSION(fade_rows_forward_f32,
                         (float* out, const float* nw, int64_t pixels, int64_t C, const float* pool, int64_t ci,
                          const float* wsT, const float* bb, float alpha, float slope, bool stream),
                         (out, nw, pixels, C, pool, ci, wsT, bb, alpha, slope, stream)) {
  rows_forward(out, nw, pixels, C, pool, ci, wsT, bb, alpha, slope, stream);
}

PROGAN_FAST_MULTIVERSION(fade_rows_backward_f32,
                         (float* gn, const float* g, int64_t pixels, int64_t C, const float* pool, float* gpool,
                          int64_t ci, const float* wsT, const float* bb, float alpha, float slope, float* acc,
                          bool stream),
                         (gn, g, pixels, C, pool, gpool, ci, wsT, bb, alpha, slope, acc, stream)) {
  rows_backward(gn, g, pixels, C, pool, gpool, ci, wsT, bb, alpha, slope, acc, stream);
}

namespace {

struct Loops {
  static void planes_fwd(float* o, const float* v, int64_t ch, int64_t cs, const float* q, int64_t P, int64_t ci,
                         const float* w, const float* b, float al, float sl, bool st) {
    fade_planes_forward_f32(o, v, ch, cs, q, P, ci, w, b, al, sl, st);
  }
  static void planes_fwd(double* o, const double* v, int64_t ch, int64_t cs, const double* q, int64_t P, int64_t ci,
                         const double* w, const double* b, double al, double sl, bool st) {
    planes_forward(o, v, ch, cs, q, P, ci, w, b, al, sl, st);
  }
  static void planes_bwd(float* gn, const float* g, int64_t ch, int64_t cs, const float* q, float* gq, int64_t P,
                         int64_t ci, const float* w, const float* b, float al, float sl, float* part, bool st) {
    fade_planes_backward_f32(gn, g, ch, cs, q, gq, P, ci, w, b, al, sl, part, st);
  }
  static void planes_bwd(double* gn, const double* g, int64_t ch, int64_t cs, const double* q, double* gq, int64_t P,
                         int64_t ci, const double* w, const double* b, double al, double sl, double* part, bool st) {
    planes_backward(gn, g, ch, cs, q, gq, P, ci, w, b, al, sl, part, st);
  }
  static void rows_fwd(float* o, const float* v, int64_t px, int64_t C, const float* q, int64_t ci, const float* w,
                       const float* b, float al, float sl, bool st) {
    fade_rows_forward_f32(o, v, px, C, q, ci, w, b, al, sl, st);
  }
  static void rows_fwd(double* o, const double* v, int64_t px, int64_t C, const double* q, int64_t ci,
                       const double* w, const double* b, double al, double sl, bool st) {
    rows_forward(o, v, px, C, q, ci, w, b, al, sl, st);
  }
  static void rows_bwd(float* gn, const float* g, int64_t px, int64_t C, const float* q, float* gq, int64_t ci,
                       const float* w, const float* b, float al, float sl, float* acc, bool st) {
    fade_rows_backward_f32(gn, g, px, C, q, gq, ci, w, b, al, sl, acc, st);
  }
  static void rows_bwd(double* gn, const double* g, int64_t px, int64_t C, const double* q, double* gq, int64_t ci,
                       const double* w, const double* b, double al, double sl, double* acc, bool st) {
    rows_backward(gn, g, px, C, q, gq, ci, w, b, al, sl, acc, st);
  }
};

// The geometry of one call: tasks are (sample, block of `block_rows` feature rows).
struct Geometry {
  int64_t n, C, H, W, ci, block_rows, blocks, tasks;

  explicit Geometry(const FadeFromRgbOperands& o)
      : n(o.n), C(o.channels), H(o.height), W(o.width), ci(o.image_channels) {
    const int64_t block_pixels = o.channels_last ? kRowsBlockPixels : kPlanesBlockPixels;
    block_rows = std::clamp<int64_t>(block_pixels / std::max<int64_t>(W, 1), 1, std::max<int64_t>(H, 1));
    blocks = (H + block_rows - 1) / block_rows;
    tasks = n * blocks;
  }
  // Tasks per parallel_for chunk: at least ATen's grain of elements, so small maps stay on the calling thread.
  int64_t grain() const {
    return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(block_rows * W * C, 1));
  }
};

// The folded weights in the math type: ws[c * ci + k] (NCHW) or [k * C + c] (channels_last) = scale / 4 * W[c, k],
// bb[c] = bias_gain * b[c].
template <typename T, typename A = acc_t<T>>
void fold_parameters(const FadeFromRgbOperands& o, double scale, double bias_gain, std::vector<A>& ws,
                     std::vector<A>& bb) {
  const int64_t C = o.channels, ci = o.image_channels;
  const T* w = o.weight.const_data_ptr<T>();
  const T* b = o.bias.const_data_ptr<T>();
  ws.resize(C * ci);
  bb.resize(C);
  const A s = static_cast<A>(scale * 0.25);
  for (int64_t c = 0; c < C; ++c) {
    bb[c] = static_cast<A>(bias_gain) * static_cast<A>(b[c]);
    for (int64_t k = 0; k < ci; ++k) ws[o.channels_last ? k * C + c : c * ci + k] = s * static_cast<A>(w[c * ci + k]);
  }
}

// The block's 2x2 image sums: pool[k * P + p] (NCHW) or pool[p * ci + k] (channels_last), P = rows * W.
template <typename T, typename A = acc_t<T>>
void pool_block(const FadeFromRgbOperands& o, const Geometry& g, const T* images, int64_t s, int64_t y0,
                int64_t rows, A* pool, std::vector<float>& top_s, std::vector<float>& bottom_s) {
  const int64_t W = g.W, ci = g.ci, P = rows * W, image_row = 2 * W * (o.channels_last ? ci : 1);
  for (int64_t y = 0; y < rows; ++y) {
    if (o.channels_last) {
      const T* top_in = images + ((s * 2 * g.H + 2 * (y0 + y)) * 2 * W) * ci;
      const A* top = load_row(top_in, image_row, top_s);
      const A* bottom = load_row(top_in + image_row, image_row, bottom_s);
      for (int64_t x = 0; x < W; ++x)
        for (int64_t k = 0; k < ci; ++k) {
          const int64_t i = 2 * x * ci + k;
          pool[(y * W + x) * ci + k] = (top[i] + top[i + ci]) + (bottom[i] + bottom[i + ci]);
        }
    } else {
      for (int64_t k = 0; k < ci; ++k) {
        const T* top_in = images + ((s * ci + k) * 2 * g.H + 2 * (y0 + y)) * 2 * W;
        const A* top = load_row(top_in, image_row, top_s);
        const A* bottom = load_row(top_in + image_row, image_row, bottom_s);
        A* dst = pool + k * P + y * W;
        for (int64_t x = 0; x < W; ++x) dst[x] = (top[2 * x] + top[2 * x + 1]) + (bottom[2 * x] + bottom[2 * x + 1]);
      }
    }
  }
}

// grad_images of the block: every 2x2 image pixel gets its pixel's gpool value.
template <typename T, typename A = acc_t<T>>
void write_image_gradient(const FadeFromRgbOperands& o, const Geometry& g, T* grad_images, int64_t s, int64_t y0,
                          int64_t rows, const A* gpool, std::vector<float>& row_s) {
  const int64_t W = g.W, ci = g.ci, P = rows * W, image_row = 2 * W * (o.channels_last ? ci : 1);
  for (int64_t y = 0; y < rows; ++y) {
    for (int64_t k = 0; k < (o.channels_last ? 1 : ci); ++k) {
      T* top_out = o.channels_last ? grad_images + ((s * 2 * g.H + 2 * (y0 + y)) * 2 * W) * ci
                                   : grad_images + ((s * ci + k) * 2 * g.H + 2 * (y0 + y)) * 2 * W;
      A* top = out_row(top_out, image_row, row_s);
      if (o.channels_last) {
        for (int64_t x = 0; x < W; ++x)
          for (int64_t j = 0; j < ci; ++j) top[2 * x * ci + j] = top[(2 * x + 1) * ci + j] = gpool[(y * W + x) * ci + j];
      } else {
        for (int64_t x = 0; x < W; ++x) top[2 * x] = top[2 * x + 1] = gpool[k * P + y * W + x];
      }
      store_row(top_out, top, image_row);
      T* bottom_out = top_out + image_row;
      if constexpr (std::is_same_v<T, A>) std::memcpy(bottom_out, top, image_row * sizeof(A));
      else store_row(bottom_out, top, image_row);
    }
  }
}

template <typename T>
void forward(const FadeFromRgbOperands& o, at::Tensor& y, double alpha_value, double scale, double bias_gain,
             double slope_value) {
  using A = acc_t<T>;
  const Geometry g(o);
  std::vector<A> ws, bb;
  fold_parameters<T>(o, scale, bias_gain, ws, bb);
  const T* images = o.images.const_data_ptr<T>();
  const T* nw = o.main.const_data_ptr<T>();
  T* out = y.mutable_data_ptr<T>();
  const A alpha = static_cast<A>(alpha_value), slope = static_cast<A>(slope_value);
  const bool stream = std::is_same_v<T, float> && cpu::should_stream(y.numel() * int64_t(sizeof(T)));
  at::parallel_for(0, g.tasks, g.grain(), [&](int64_t begin, int64_t end) {
    std::vector<A> pool(g.block_rows * g.W * g.ci);
    std::vector<float> s0, s1, s2;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t s = task / g.blocks, y0 = (task % g.blocks) * g.block_rows;
      const int64_t rows = std::min(g.block_rows, g.H - y0), P = rows * g.W;
      pool_block<T>(o, g, images, s, y0, rows, pool.data(), s0, s1);
      if (o.channels_last) {
        const int64_t off = (s * g.H + y0) * g.W * g.C;
        if constexpr (std::is_same_v<T, A>) {
          Loops::rows_fwd(out + off, nw + off, P, g.C, pool.data(), g.ci, ws.data(), bb.data(), alpha, slope, stream);
        } else {
          for (int64_t px = 0; px < P; ++px) {
            const int64_t poff = off + px * g.C;
            A* dst = out_row(out + poff, g.C, s2);
            Loops::rows_fwd(dst, load_row(nw + poff, g.C, s0), 1, g.C, pool.data() + px * g.ci, g.ci, ws.data(),
                            bb.data(), alpha, slope, false);
            store_row(out + poff, dst, g.C);
          }
        }
      } else {
        const int64_t off = s * g.C * g.H * g.W + y0 * g.W, cs = g.H * g.W;
        if constexpr (std::is_same_v<T, A>) {
          Loops::planes_fwd(out + off, nw + off, g.C, cs, pool.data(), P, g.ci, ws.data(), bb.data(), alpha, slope,
                            stream);
        } else {
          for (int64_t c = 0; c < g.C; ++c) {
            const int64_t coff = off + c * cs;
            A* dst = out_row(out + coff, P, s2);
            Loops::planes_fwd(dst, load_row(nw + coff, P, s0), 1, 0, pool.data(), P, g.ci, ws.data() + c * g.ci,
                              bb.data() + c, alpha, slope, false);
            store_row(out + coff, dst, P);
          }
        }
      }
    }
  });
}

template <typename T>
void backward(const FadeFromRgbOperands& o, at::Tensor& grad_images, at::Tensor& grad_new, at::Tensor& grad_weight,
              at::Tensor& grad_bias, double alpha_value, double scale, double bias_gain, double slope_value) {
  using A = acc_t<T>;
  const Geometry g(o);
  std::vector<A> ws, bb;
  fold_parameters<T>(o, scale, bias_gain, ws, bb);
  const T* images = o.images.const_data_ptr<T>();
  const T* gy = o.main.const_data_ptr<T>();
  T* gn = grad_new.mutable_data_ptr<T>();
  T* gi = grad_images.mutable_data_ptr<T>();
  const A alpha = static_cast<A>(alpha_value), slope = static_cast<A>(slope_value);
  const bool stream = std::is_same_v<T, float> && cpu::should_stream(grad_new.numel() * int64_t(sizeof(T)));
  const int64_t per_task = (g.ci + 1) * g.C;  // [C][ci + 1] (NCHW) or [ci + 1][C] (channels_last)
  std::vector<A> partials(g.tasks * per_task, A(0));
  at::parallel_for(0, g.tasks, g.grain(), [&](int64_t begin, int64_t end) {
    std::vector<A> pool(g.block_rows * g.W * g.ci), gpool(g.block_rows * g.W * g.ci);
    std::vector<float> s0, s1, s2;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t s = task / g.blocks, y0 = (task % g.blocks) * g.block_rows;
      const int64_t rows = std::min(g.block_rows, g.H - y0), P = rows * g.W;
      A* partial = partials.data() + task * per_task;
      pool_block<T>(o, g, images, s, y0, rows, pool.data(), s0, s1);
      if (o.channels_last) {
        const int64_t off = (s * g.H + y0) * g.W * g.C;
        if constexpr (std::is_same_v<T, A>) {
          Loops::rows_bwd(gn + off, gy + off, P, g.C, pool.data(), gpool.data(), g.ci, ws.data(), bb.data(), alpha,
                          slope, partial, stream);
        } else {
          for (int64_t px = 0; px < P; ++px) {
            const int64_t poff = off + px * g.C;
            A* dst = out_row(gn + poff, g.C, s2);
            Loops::rows_bwd(dst, load_row(gy + poff, g.C, s0), 1, g.C, pool.data() + px * g.ci,
                            gpool.data() + px * g.ci, g.ci, ws.data(), bb.data(), alpha, slope, partial, false);
            store_row(gn + poff, dst, g.C);
          }
        }
      } else {
        std::fill(gpool.begin(), gpool.begin() + P * g.ci, A(0));
        const int64_t off = s * g.C * g.H * g.W + y0 * g.W, cs = g.H * g.W;
        if constexpr (std::is_same_v<T, A>) {
          Loops::planes_bwd(gn + off, gy + off, g.C, cs, pool.data(), gpool.data(), P, g.ci, ws.data(), bb.data(),
                            alpha, slope, partial, stream);
        } else {
          for (int64_t c = 0; c < g.C; ++c) {
            const int64_t coff = off + c * cs;
            A* dst = out_row(gn + coff, P, s2);
            Loops::planes_bwd(dst, load_row(gy + coff, P, s0), 1, 0, pool.data(), gpool.data(), P, g.ci,
                              ws.data() + c * g.ci, bb.data() + c, alpha, slope, partial + c * (g.ci + 1), false);
            store_row(gn + coff, dst, P);
          }
        }
      }
      write_image_gradient<T>(o, g, gi, s, y0, rows, gpool.data(), s2);
    }
  });
  // grad_weight = scale / 4 * sum over tasks of sum dz * pooled sums, grad_bias = bias_gain * sum dz, in task order.
  T* gw = grad_weight.mutable_data_ptr<T>();
  T* gb = grad_bias.mutable_data_ptr<T>();
  const A wscale = static_cast<A>(scale * 0.25), bscale = static_cast<A>(bias_gain);
  for (int64_t c = 0; c < g.C; ++c) {
    for (int64_t k = 0; k <= g.ci; ++k) {
      const int64_t idx = o.channels_last ? k * g.C + c : c * (g.ci + 1) + k;
      A sum = 0;
      for (int64_t task = 0; task < g.tasks; ++task) sum += partials[task * per_task + idx];
      if (k < g.ci) gw[c * g.ci + k] = static_cast<T>(wscale * sum);
      else gb[c] = static_cast<T>(bscale * sum);
    }
  }
}

at::Tensor fade_from_rgb_forward_cpu(const at::Tensor& images, const at::Tensor& new_, const at::Tensor& weight,
                                     const at::Tensor& bias, const at::Tensor& alpha, double scale, double bias_gain,
                                     double negative_slope) {
  FadeFromRgbOperands o(new_, "new", images, weight, bias, alpha, scale, bias_gain, negative_slope);
  const double a = fade_alpha_value(alpha);
  at::Tensor y = fade_empty(o.main.sizes(), o.main, o.channels_last);
  if (y.numel() > 0)
    dispatch_float_types(o.main, "new", [&](auto type) {
      forward<decltype(type)>(o, y, a, scale, bias_gain, negative_slope);
    });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fade_from_rgb_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& images, const at::Tensor& weight, const at::Tensor& bias,
    const at::Tensor& alpha, double scale, double bias_gain, double negative_slope) {
  FadeFromRgbOperands o(grad_y, "grad_y", images, weight, bias, alpha, scale, bias_gain, negative_slope);
  const double a = fade_alpha_value(alpha);
  at::Tensor grad_images = fade_empty(o.images.sizes(), o.main, o.channels_last);
  at::Tensor grad_new = fade_empty(o.main.sizes(), o.main, o.channels_last);
  at::Tensor grad_weight = at::empty(o.weight.sizes(), o.weight.options());
  at::Tensor grad_bias = at::empty(o.bias.sizes(), o.bias.options());
  if (o.main.numel() > 0) {
    dispatch_float_types(o.main, "grad_y", [&](auto type) {
      backward<decltype(type)>(o, grad_images, grad_new, grad_weight, grad_bias, a, scale, bias_gain, negative_slope);
    });
  } else {
    grad_images.zero_();
    grad_weight.zero_();
    grad_bias.zero_();
  }
  return {grad_images, grad_new, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_fast, CPU, m) {
  m.impl("fade_from_rgb_forward", &fade_from_rgb_forward_cpu);
  m.impl("fade_from_rgb_backward", &fade_from_rgb_backward_cpu);
}

}  // namespace fade_cpu
}  // namespace progan_fast
