// Minibatch stddev on the CPU (the spec: progan_fast/reference.py; the index math: ops/minibatch_stddev_geometry.h).
//
// Forward, one pass over x: every task takes one sample group and a run of positions and reads the group's G
// members block by block (a block of every member stays in L1 between the mean and the variance; float groups of
// 2, 3, 4 and 8 keep each member's 16 values in registers instead: forward_vectors), copies them into
// y and sums sqrt(var + eps) into its own partial sum; partial sums are added in a fixed order, so the result does
// not depend on the thread count. A small loop then fills the F statistic channels (NCHW: planes; channels_last:
// the F values after each pixel's C channels). No torch.cat, no centred copy: x read once, y written once.
//
// Backward: dx = grad_y[:, :C] + a[m, f] * (x - mean) / sigma with a = sum of grad_y's statistic channels over the
// group and H x W, divided by K * D (K positions, D = G or G - 1); sigma is recomputed from x block by block (the
// backward reads x anyway), so nothing of the forward is saved but x.
//
// float32 runs the multi-versioned loops (AVX-512 / AVX2 / baseline, see isa.h), and a channels_last forward beyond
// the caches its own AVX-512 loop (forward_rows_avx512: y's unaligned rows streamed in whole lines); float64
// (gradcheck) and float16/bfloat16 (statistics in float) run the same loop bodies compiled for the baseline.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <string_view>
#include <vector>

#include "common/minibatch_stddev_operands.h"
#include "cpu/isa.h"
#include "cpu/stream.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace progan_fast {
namespace minibatch_stddev_cpu {

using cpu::should_stream;
using cpu::stream_fence;
using cpu::until_aligned;
using cpu::prefetch_row_l1;
using minibatch_stddev::Geometry;

#define MS_INLINE static inline __attribute__((always_inline))

// Positions per block: G member blocks of it are read twice (mean, then variance; the backward a third time), the
// second time from L1. Measured on a 2-core Zen 4: 128 positions made the backward 1.3-1.5x faster than 256 or
// 1024 at S2/S3 (the forward is the same); software prefetching of the next block did not help.
constexpr int64_t kBlock = 128;
// Positions per task (per member): long contiguous runs for the prefetchers, many tasks for the threads.
constexpr int64_t kTaskPositions = 4096;
// The forward prefetches the members' blocks this many blocks ahead into L1 when x is cache-resident (smaller than
// the streaming threshold: D's (N, 512, 4, 4)), where the G interleaved member runs left the loads waiting on L2/L3:
// forward+backward 1.25-1.6x faster at N = 16 and 128 on a 2-core Zen 4. Beyond the caches it was no faster (S2)
// or slower (S3 channels_last, one thread), and in the backward slower everywhere (its blocks are re-read from L1).
constexpr int64_t kPrefetchBlocks = 4;
// The channels_last slots (one line of y per pixel: the forward fills them, the backward sums grad_y's) are
// prefetched this many pixels ahead into L2: one line a pixel apart, the loads and the read-for-ownership of the
// stores waited on DRAM. 512 pixels measured fastest of 64-2048 on a 2-core Zen 4 (S3 forward 1.2x, and
// forward+backward 1.1x, faster than without).
constexpr int64_t kSlotPrefetchPixels = 512;

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };
template <typename T> using acc_t = typename Acc<T>::type;

MS_INLINE float to_acc(float v) { return v; }
MS_INLINE double to_acc(double v) { return v; }
MS_INLINE float to_acc(c10::Half v) { return static_cast<float>(v); }
MS_INLINE float to_acc(c10::BFloat16 v) { return static_cast<float>(v); }
template <typename T> MS_INLINE T from_acc(acc_t<T> v) { return static_cast<T>(v); }

// ---- stores, plain or streaming (always inlined: they take the ISA of the variant that calls them) ----

template <typename T>
MS_INLINE void copy(T* __restrict dst, const T* __restrict src, int64_t n, bool /*stream*/) {
  std::copy(src, src + n, dst);
}

MS_INLINE void copy(float* __restrict dst, const float* __restrict src, int64_t n, bool stream) {
  int64_t i = 0;
#if defined(__SSE2__)
  if (stream) {
    for (const int64_t head = until_aligned(dst, n); i < head; ++i) dst[i] = src[i];
    for (; i + 4 <= n; i += 4) _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
  }
#endif
  for (; i < n; ++i) dst[i] = src[i];
}

// dx[i] = dy[i] + (x[i] - mean[i]) * scale[i]
template <typename T>
MS_INLINE void store_grad(T* __restrict dx, const T* __restrict dy, const T* __restrict x, const acc_t<T>* mean,
                          const acc_t<T>* scale, int64_t n, bool /*stream*/) {
  for (int64_t i = 0; i < n; ++i) dx[i] = from_acc<T>(to_acc(dy[i]) + (to_acc(x[i]) - mean[i]) * scale[i]);
}

// ---- one task: a sample group's members over `rows` rows of `segments` segments of contiguous positions ----
// Member k's segment s of row r starts at x + x_off[k] + r * x_row + s * seg_len in x (dx), and at
// y + y_off[k] + r * y_row + s * seg_len in y (grad_y). NCHW: one row, one segment (a run of a channel group's
// positions); channels_last: a run of pixels, one segment per channel group. Segments are cut into blocks of
// kBlock positions and everything happens block by block, while the members' blocks are in L1.

// mean[i] and sigma^2[i] = var[i] + eps of one block of `len` positions (member k's block at x + off[k] + at); the
// forward copies each member's block to y while it reads it.
template <typename T>
MS_INLINE void block_moments(const T* __restrict x, const int64_t* x_off, T* __restrict y, const int64_t* y_off,
                             int64_t x_at, int64_t y_at, int64_t members, int64_t len, acc_t<T> inv_divisor,
                             acc_t<T> eps, bool stream, acc_t<T>* __restrict mean, acc_t<T>* __restrict sigma_sq) {
  using A = acc_t<T>;
  for (int64_t i = 0; i < len; ++i) mean[i] = 0;
  for (int64_t k = 0; k < members; ++k) {
    const T* __restrict xk = x + x_off[k] + x_at;
    for (int64_t i = 0; i < len; ++i) mean[i] += to_acc(xk[i]);
    if (y) copy(y + y_off[k] + y_at, xk, len, stream);
  }
  const A inv_members = A(1) / A(members);
  for (int64_t i = 0; i < len; ++i) {
    mean[i] *= inv_members;
    sigma_sq[i] = 0;
  }
  for (int64_t k = 0; k < members; ++k) {
    const T* __restrict xk = x + x_off[k] + x_at;
    for (int64_t i = 0; i < len; ++i) {
      const A d = to_acc(xk[i]) - mean[i];
      sigma_sq[i] += d * d;
    }
  }
  for (int64_t i = 0; i < len; ++i) sigma_sq[i] = sigma_sq[i] * inv_divisor + eps;
}

// float: 16 positions at a time in registers, the member loop inside (the generic loop above keeps mean and the
// sum of squares in memory and re-reads them for every member: ~1.5x slower forward in cache). GCC vector types
// take the width of the variant's ISA (one zmm, two ymm or four xmm).
typedef float vec16 __attribute__((vector_size(64)));
// The helpers taking vec16 are always inlined: no call passes one, so the ABI note about 64-byte vectors is moot.
#pragma GCC diagnostic ignored "-Wpsabi"

MS_INLINE vec16 load16(const float* p) {
  vec16 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

MS_INLINE void store16(float* p, const vec16& v, bool stream) {
#if defined(__SSE2__)
  if (stream && (reinterpret_cast<uintptr_t>(p) & 15) == 0) {
    for (int q = 0; q < 4; ++q) {
      __m128 part;
      __builtin_memcpy(&part, reinterpret_cast<const char*>(&v) + 16 * q, sizeof(part));
      _mm_stream_ps(p + 4 * q, part);
    }
    return;
  }
#endif
  (void)stream;
  __builtin_memcpy(p, &v, sizeof(v));
}

MS_INLINE void block_moments(const float* __restrict x, const int64_t* x_off, float* __restrict y,
                             const int64_t* y_off, int64_t x_at, int64_t y_at, int64_t members, int64_t len,
                             float inv_divisor, float eps, bool stream, float* __restrict mean,
                             float* __restrict sigma_sq) {
  const float inv_members = 1.f / static_cast<float>(members);
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    vec16 sum = {};
    for (int64_t k = 0; k < members; ++k) {
      const vec16 v = load16(x + x_off[k] + x_at + i);
      sum += v;
      if (y) store16(y + y_off[k] + y_at + i, v, stream);
    }
    const vec16 m = sum * inv_members;
    vec16 ss = {};
    for (int64_t k = 0; k < members; ++k) {
      const vec16 d = load16(x + x_off[k] + x_at + i) - m;
      ss += d * d;
    }
    __builtin_memcpy(mean + i, &m, sizeof(m));
    const vec16 sq = ss * inv_divisor + eps;
    __builtin_memcpy(sigma_sq + i, &sq, sizeof(sq));
  }
  for (; i < len; ++i) {
    float sum = 0;
    for (int64_t k = 0; k < members; ++k) {
      const float v = x[x_off[k] + x_at + i];
      sum += v;
      if (y) y[y_off[k] + y_at + i] = v;
    }
    const float m = sum * inv_members;
    float ss = 0;
    for (int64_t k = 0; k < members; ++k) {
      const float d = x[x_off[k] + x_at + i] - m;
      ss += d * d;
    }
    mean[i] = m;
    sigma_sq[i] = ss * inv_divisor + eps;
  }
}

// sigma^2 + eps of 16 positions from the G members' values, and their mean: the same operations in the same order
// as block_moments, so the register loops below give its bits. The barrier keeps the compiler from fusing the
// mean's product into the subtractions (an FMA: other bits where 1 / G is inexact); block_moments stores the mean,
// which keeps it apart there.
template <int G>
MS_INLINE vec16 register_moments(const vec16 (&v)[G], float inv_divisor, float eps, vec16& mean) {
  vec16 sum = {};
  for (int k = 0; k < G; ++k) sum += v[k];
  mean = __builtin_assoc_barrier(sum * (1.f / static_cast<float>(G)));
  vec16 ss = {};
  for (int k = 0; k < G; ++k) {
    const vec16 d = v[k] - mean;
    ss += d * d;
  }
  return ss * inv_divisor + eps;
}

// float, groups of a few members: the forward's moments of 16 positions at a time with every member's 16 values
// of x in registers and the member loops unrolled (block_moments loads x twice and takes the member count at run
// time). One thread on an AMD EPYC (Zen 4), bare forward, interleaved: S2 NCHW 2.1-2.8x faster (at a clone's
// time; the run-time loop had left the x loads waiting), D64 1.7-2.1x, S3 equal. The same operations in the same
// order as block_moments: the same bits. Writes sigma^2 + eps of the positions done to sigma_sq and returns how
// many (a multiple of 16; block_moments does the rest).
template <int G>
MS_INLINE int64_t forward_vectors(const float* __restrict x, const int64_t* x_off, float* __restrict y,
                                  const int64_t* y_off, int64_t x_at, int64_t y_at, int64_t len, float inv_divisor,
                                  float eps, bool stream, float* __restrict sigma_sq) {
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    vec16 v[G];
    for (int k = 0; k < G; ++k) {
      v[k] = load16(x + x_off[k] + x_at + i);
      store16(y + y_off[k] + y_at + i, v[k], stream);
    }
    vec16 mean;
    const vec16 sq = register_moments<G>(v, inv_divisor, eps, mean);
    __builtin_memcpy(sigma_sq + i, &sq, sizeof(sq));
  }
  return i;
}

MS_INLINE int64_t forward_vectors(const float* x, const int64_t* x_off, float* y, const int64_t* y_off,
                                  int64_t members, int64_t x_at, int64_t y_at, int64_t len, float inv_divisor,
                                  float eps, bool stream, float* sigma_sq) {
  switch (members) {
    case 2: return forward_vectors<2>(x, x_off, y, y_off, x_at, y_at, len, inv_divisor, eps, stream, sigma_sq);
    case 3: return forward_vectors<3>(x, x_off, y, y_off, x_at, y_at, len, inv_divisor, eps, stream, sigma_sq);
    case 4: return forward_vectors<4>(x, x_off, y, y_off, x_at, y_at, len, inv_divisor, eps, stream, sigma_sq);
    case 8: return forward_vectors<8>(x, x_off, y, y_off, x_at, y_at, len, inv_divisor, eps, stream, sigma_sq);
    default: return 0;
  }
}

MS_INLINE void store_grad(float* __restrict dx, const float* __restrict dy, const float* __restrict x,
                          const float* mean, const float* scale, int64_t n, bool stream) {
  int64_t i = 0;
  if (stream) {
    for (const int64_t head = std::min<int64_t>(n, ((64 - (reinterpret_cast<uintptr_t>(dx) & 63)) & 63) / 4);
         i < head; ++i)
      dx[i] = dy[i] + (x[i] - mean[i]) * scale[i];
    for (; i + 16 <= n; i += 16)
      store16(dx + i, load16(dy + i) + (load16(x + i) - load16(mean + i)) * load16(scale + i), true);
  }
  for (; i < n; ++i) dx[i] = dy[i] + (x[i] - mean[i]) * scale[i];
}

// Adds each segment's sum of sigma to sums[s] and copies the members' positions to y while it reads them. sums may
// be null: copy only (zero statistic).
template <typename T>
MS_INLINE void forward_task(const T* x, T* y, const int64_t* x_off, const int64_t* y_off, int64_t members,
                            int64_t rows, int64_t segments, int64_t seg_len, int64_t x_row, int64_t y_row,
                            acc_t<T> inv_divisor, acc_t<T> eps, bool stream, bool prefetch, double* sums) {
  using A = acc_t<T>;
  A mean[kBlock], sq[kBlock];
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t s = 0; s < segments; ++s)
      for (int64_t i0 = 0; i0 < seg_len; i0 += kBlock) {
        const int64_t len = std::min(kBlock, seg_len - i0), at = s * seg_len + i0;
        if (prefetch)
          for (int64_t k = 0; k < members; ++k)
            prefetch_row_l1(x + x_off[k] + r * x_row + at + kPrefetchBlocks * kBlock, kBlock);
        if (!sums) {
          for (int64_t k = 0; k < members; ++k)
            copy(y + y_off[k] + r * y_row + at, x + x_off[k] + r * x_row + at, len, stream);
          continue;
        }
        int64_t done = 0;  // positions done with x in registers
        if constexpr (std::is_same_v<T, float>)
          done = forward_vectors(x, x_off, y, y_off, members, r * x_row + at, r * y_row + at, len, inv_divisor, eps,
                                 stream, sq);
        if (done < len)
          block_moments(x, x_off, y, y_off, r * x_row + at + done, r * y_row + at + done, members, len - done,
                        inv_divisor, eps, stream, mean, sq + done);
        A sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t i = 0; i < len; ++i) sum += std::sqrt(sq[i]);
        sums[s] += sum;
      }
}

// ---- channels_last forward beyond the caches, AVX-512: y streamed in whole lines as x is read ----
//
// y's rows are C + F floats, so they are not aligned, and streamed row by row they left partial lines in the
// write-combining buffers (~3x slower); with plain stores every line of y is read before it is written. Here each
// member's rows, one contiguous run of y per task, are written as aligned 64-byte lines with streaming stores, one
// line for every 16 channels the moments loop loads: for channels [q, q + 16) of row r, the line holding the row's
// elements [q - d, q - d + 16) (d: the lane of the row's first element in its line), x's data of the same row
// re-read from L1 by one unaligned load; the row's first line also holds the previous row's last channels and its
// F slots (zero: filled once the statistic is known), from two masked loads. The run's first and last partial lines
// get plain stores, so tasks never share a streamed line. Interleaved A/B on a 2-core Zen 4, one thread: 1.1-1.25x
// faster S2/S3 forwards than plain stores, where streaming each member's rows a row or 1024 positions after the
// moments had read them was 0.85-1.0x (the writes bunched up between the reads); in cache (D's 4 x 4 maps) the same
// loop with plain aligned stores was 0.85-0.95x of the block copy. Needs C/F % 16 == 0 (a row's vectors stay in
// one channel group) and F < 16 (at most one line of slots alone per row).
#if PROGAN_FAST_X86_DISPATCH
// G: the member count for groups of 2, 3, 4 and 8, 0 for any other count (read from group_members). With G known
// (member loops unrolled, row pointers and x in registers), one thread on an AMD EPYC (Zen 4), bare forward,
// interleaved: S2 2.6x and S3 1.15x faster than with the count at run time, the same bits.
template <int G>
__attribute__((target("arch=x86-64-v4"))) void forward_rows_avx512(const float* x, float* y, const int64_t* x_off,
                                                                   const int64_t* y_off, int64_t group_members,
                                                                   int64_t rows, int64_t F, int64_t Cf,
                                                                   float inv_divisor, float eps, double* sums) {
  const int64_t members = G ? G : group_members;
  const int64_t C = F * Cf, row = C + F;
  const __m512 inv_members = _mm512_set1_ps(1.f / static_cast<float>(members));
  alignas(64) float sq[kBlock];
  // The lane of p in its 64-byte line.
  const auto lane = [](const float* p) { return static_cast<int64_t>((reinterpret_cast<uintptr_t>(p) >> 2) & 15); };
  // With G known, each member's row pointers and lane are set once a row in local arrays, and its 16 values of x
  // stay in registers from the mean to the variance: read through x_off / y_off, the offsets were reloaded for
  // every vector (a store to y might alias them).
  constexpr int kSlots = G ? G : 1;
  const float* x_row[kSlots];
  float* y_row[kSlots];
  int64_t y_lane[kSlots];
  __m512 v[kSlots];
  for (int64_t r = 0; r < rows; ++r) {
    const auto xr_of = [&](int64_t k) { return G ? x_row[k] : x + x_off[k] + r * C; };
    const auto yr_of = [&](int64_t k) { return G ? y_row[k] : y + y_off[k] + r * row; };
    if constexpr (G > 0)
      for (int k = 0; k < G; ++k) {
        x_row[k] = x + x_off[k] + r * C;
        y_row[k] = y + y_off[k] + r * row;
        y_lane[k] = lane(y_row[k]);
      }
    const auto lane_of = [&](int64_t k) { return G ? y_lane[k] : lane(yr_of(k)); };
    for (int64_t s = 0; s < F; ++s)
      for (int64_t i0 = 0; i0 < Cf; i0 += kBlock) {
        const int64_t len = std::min(kBlock, Cf - i0), at = s * Cf + i0;
        for (int64_t i = 0; i < len; i += 16) {
          const int64_t q = at + i;  // the vector's first channel
          __m512 sum = _mm512_setzero_ps();
          for (int64_t k = 0; k < members; ++k) {
            const float* xr = xr_of(k);
            float* yr = yr_of(k);
            const __m512 xv = _mm512_loadu_ps(xr + q);
            if constexpr (G > 0) v[k] = xv;
            sum = _mm512_add_ps(sum, xv);
            const int64_t d = lane_of(k);
            if (q > 0) {  // row elements [q - d, q - d + 16): all x
              _mm512_stream_ps(yr + q - d, _mm512_loadu_ps(xr + q - d));
            } else if (r > 0) {  // the previous row's last d - F channels (if d > F) and slots, then this row's
              __m512 v = _mm512_maskz_loadu_ps(__mmask16(_bzhi_u32(0xFFFF, std::max<int64_t>(d - F, 0))),
                                               xr - d + F);
              v = _mm512_mask_loadu_ps(v, __mmask16(~_bzhi_u32(0xFFFF, d)), xr - d);
              _mm512_stream_ps(yr - d, v);
            } else {  // the run's first line: lanes before d belong to the previous run
              const __mmask16 own = __mmask16(~_bzhi_u32(0xFFFF, d));
              _mm512_mask_storeu_ps(yr - d, own, _mm512_maskz_loadu_ps(own, xr - d));
            }
          }
          // the barrier, as in register_moments: the product is not fused into the subtractions (an FMA: bits that
          // depend on whether x comes from a register or from memory)
          const __m512 mean = __builtin_assoc_barrier(_mm512_mul_ps(sum, inv_members));
          __m512 ss = _mm512_setzero_ps();
          for (int64_t k = 0; k < members; ++k) {
            const __m512 dev = _mm512_sub_ps(G ? v[k] : _mm512_loadu_ps(xr_of(k) + q), mean);
            ss = _mm512_fmadd_ps(dev, dev, ss);
          }
          _mm512_store_ps(sq + i, _mm512_fmadd_ps(ss, _mm512_set1_ps(inv_divisor), _mm512_set1_ps(eps)));
        }
        float sum = 0;  // as forward_task adds them
#pragma omp simd reduction(+ : sum)
        for (int64_t i = 0; i < len; ++i) sum += std::sqrt(sq[i]);
        sums[s] += sum;
      }
    // Row elements [C - d, C + F): the last d channels and the slots; in the next row's first line, or a line of
    // their own where they fill one (d + F >= 16), or plain stores at the run's end.
    for (int64_t k = 0; k < members; ++k) {
      const float* xr = xr_of(k);
      float* yr = yr_of(k);
      const int64_t d = lane_of(k);
      if (r + 1 == rows) {
        for (int64_t e = C - d; e < row; ++e) yr[e] = e < C ? xr[e] : 0.f;
      } else if (d + F >= 16) {
        _mm512_stream_ps(yr + C - d, _mm512_maskz_loadu_ps(__mmask16(_bzhi_u32(0xFFFF, d)), xr + C - d));
      }
    }
  }
}
#endif

// The channels_last forward task with y streamed (forward_rows_avx512); false where the active ISA variant has no
// AVX-512: the caller then copies y with plain stores.
bool forward_rows_streamed(const float* x, float* y, const int64_t* x_off, const int64_t* y_off, int64_t members,
                           int64_t rows, int64_t F, int64_t Cf, float inv_divisor, float eps, double* sums) {
#if PROGAN_FAST_X86_DISPATCH
  if (isa::enter() == isa::kX86_64_V4) {
    switch (members) {
      case 2: forward_rows_avx512<2>(x, y, x_off, y_off, members, rows, F, Cf, inv_divisor, eps, sums); break;
      case 3: forward_rows_avx512<3>(x, y, x_off, y_off, members, rows, F, Cf, inv_divisor, eps, sums); break;
      case 4: forward_rows_avx512<4>(x, y, x_off, y_off, members, rows, F, Cf, inv_divisor, eps, sums); break;
      case 8: forward_rows_avx512<8>(x, y, x_off, y_off, members, rows, F, Cf, inv_divisor, eps, sums); break;
      default: forward_rows_avx512<0>(x, y, x_off, y_off, members, rows, F, Cf, inv_divisor, eps, sums);
    }
    return true;
  }
#endif
  return false;
}

// float, groups of a few members: the backward of 16 positions at a time with every member's 16 values of x held
// in registers from the moments to dx. The block loop below reads x three times (the moments twice, then dx) and
// goes through mean[] and scale[] in L1: in cache (D's 4x4 maps) it was bound by its loads, ~2.7x an elementwise
// add. The same operations in the same order as block_moments, the scale loop and store_grad: the same bits.
// Beyond the caches too, with dx streamed: one thread on an AMD EPYC (Zen 4), bare backward, interleaved, against
// the block loop with streamed dx: 1.8x / 2.3x faster at S2 (NCHW / channels_last), equal at S3 (the block loop
// had re-read x and kept mean[] and scale[] in L1 while DRAM waited; with plain stores here it was no faster).
// Returns the positions done (a multiple of 16; the rest is left to the block loop).
template <int G>
MS_INLINE int64_t backward_vectors(const float* __restrict dy, const float* __restrict x, float* __restrict dx,
                                   const int64_t* x_off, const int64_t* y_off, int64_t x_at, int64_t y_at,
                                   int64_t len, float a, float inv_divisor, float eps, bool stream) {
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    vec16 v[G];
    for (int k = 0; k < G; ++k) v[k] = load16(x + x_off[k] + x_at + i);
    vec16 m;
    const vec16 sq = register_moments<G>(v, inv_divisor, eps, m);
    alignas(64) float scale[16];
    __builtin_memcpy(scale, &sq, sizeof(sq));
    for (int j = 0; j < 16; ++j) scale[j] = a / std::sqrt(scale[j]);
    const vec16 sc = load16(scale);
    for (int k = 0; k < G; ++k)
      store16(dx + x_off[k] + x_at + i, load16(dy + y_off[k] + y_at + i) + (v[k] - m) * sc, stream);
  }
  return i;
}

MS_INLINE int64_t backward_vectors(const float* dy, const float* x, float* dx, const int64_t* x_off,
                                   const int64_t* y_off, int64_t members, int64_t x_at, int64_t y_at, int64_t len,
                                   float a, float inv_divisor, float eps, bool stream) {
  switch (members) {
    case 2: return backward_vectors<2>(dy, x, dx, x_off, y_off, x_at, y_at, len, a, inv_divisor, eps, stream);
    case 3: return backward_vectors<3>(dy, x, dx, x_off, y_off, x_at, y_at, len, a, inv_divisor, eps, stream);
    case 4: return backward_vectors<4>(dy, x, dx, x_off, y_off, x_at, y_at, len, a, inv_divisor, eps, stream);
    case 8: return backward_vectors<8>(dy, x, dx, x_off, y_off, x_at, y_at, len, a, inv_divisor, eps, stream);
    default: return 0;
  }
}

// dx = dy + (x - mean) * coef[s] / sigma for every member (coef may be null: dx = dy, a zero statistic).
template <typename T>
MS_INLINE void backward_task(const T* dy, const T* x, T* dx, const int64_t* x_off, const int64_t* y_off,
                             int64_t members, int64_t rows, int64_t segments, int64_t seg_len, int64_t x_row,
                             int64_t y_row, const acc_t<T>* coef, acc_t<T> inv_divisor, acc_t<T> eps, bool stream) {
  using A = acc_t<T>;
  A mean[kBlock], scale[kBlock];
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t s = 0; s < segments; ++s)
      for (int64_t i0 = 0; i0 < seg_len; i0 += kBlock) {
        const int64_t len = std::min(kBlock, seg_len - i0), at = s * seg_len + i0;
        const int64_t x_at = r * x_row + at, y_at = r * y_row + at;
        if (!coef) {
          for (int64_t k = 0; k < members; ++k) copy(dx + x_off[k] + x_at, dy + y_off[k] + y_at, len, stream);
          continue;
        }
        const A a = coef[s];
        int64_t i = 0;  // positions done with x in registers
        if constexpr (std::is_same_v<T, float>)
          i = backward_vectors(dy, x, dx, x_off, y_off, members, x_at, y_at, len, a, inv_divisor, eps, stream);
        if (i == len) continue;
        block_moments(x, x_off, static_cast<T*>(nullptr), nullptr, x_at + i, 0, members, len - i, inv_divisor, eps,
                      false, mean, scale);
        for (int64_t j = 0; j < len - i; ++j) scale[j] = a / std::sqrt(scale[j]);
        for (int64_t k = 0; k < members; ++k)
          store_grad(dx + x_off[k] + x_at + i, dy + y_off[k] + y_at + i, x + x_off[k] + x_at + i, mean, scale,
                     len - i, stream);
      }
}

// float32: one variant per ISA (isa.h).
PROGAN_FAST_MULTIVERSION(forward_task_f32,
                         (const float* x, float* y, const int64_t* x_off, const int64_t* y_off, int64_t members,
                          int64_t rows, int64_t segments, int64_t seg_len, int64_t x_row, int64_t y_row,
                          float inv_divisor, float eps, bool stream, bool prefetch, double* sums),
                         (x, y, x_off, y_off, members, rows, segments, seg_len, x_row, y_row, inv_divisor, eps, stream,
                          prefetch, sums)) {
  forward_task<float>(x, y, x_off, y_off, members, rows, segments, seg_len, x_row, y_row, inv_divisor, eps, stream,
                      prefetch, sums);
}

PROGAN_FAST_MULTIVERSION(backward_task_f32,
                         (const float* dy, const float* x, float* dx, const int64_t* x_off, const int64_t* y_off,
                          int64_t members, int64_t rows, int64_t segments, int64_t seg_len, int64_t x_row,
                          int64_t y_row, const float* coef, float inv_divisor, float eps, bool stream),
                         (dy, x, dx, x_off, y_off, members, rows, segments, seg_len, x_row, y_row, coef, inv_divisor,
                          eps, stream)) {
  backward_task<float>(dy, x, dx, x_off, y_off, members, rows, segments, seg_len, x_row, y_row, coef, inv_divisor,
                       eps, stream);
}

namespace {

// The task loops for any element type: float32 through its ISA variants, the others compiled for the baseline.
template <typename T>
void run_forward_task(const T* x, T* y, const int64_t* x_off, const int64_t* y_off, int64_t members, int64_t rows,
                      int64_t segments, int64_t seg_len, int64_t x_row, int64_t y_row, acc_t<T> inv_divisor,
                      acc_t<T> eps, bool stream, bool prefetch, double* sums) {
  if constexpr (std::is_same_v<T, float>)
    forward_task_f32(x, y, x_off, y_off, members, rows, segments, seg_len, x_row, y_row, inv_divisor, eps, stream,
                     prefetch, sums);
  else
    forward_task<T>(x, y, x_off, y_off, members, rows, segments, seg_len, x_row, y_row, inv_divisor, eps, stream,
                    prefetch, sums);
}

template <typename T>
void run_backward_task(const T* dy, const T* x, T* dx, const int64_t* x_off, const int64_t* y_off, int64_t members,
                       int64_t rows, int64_t segments, int64_t seg_len, int64_t x_row, int64_t y_row,
                       const acc_t<T>* coef, acc_t<T> inv_divisor, acc_t<T> eps, bool stream) {
  if constexpr (std::is_same_v<T, float>)
    backward_task_f32(dy, x, dx, x_off, y_off, members, rows, segments, seg_len, x_row, y_row, coef, inv_divisor, eps,
                      stream);
  else
    backward_task<T>(dy, x, dx, x_off, y_off, members, rows, segments, seg_len, x_row, y_row, coef, inv_divisor, eps,
                     stream);
}

// ---- work split ----
// A task is one sample group and a run of positions. NCHW: a run of the K positions of one channel group (tasks
// ordered group, channel group, run; the run is contiguous in x and y). channels_last: a run of whole pixels, all
// channel groups (contiguous in x; y rows have the F statistic values after each pixel's C channels).
struct Task {
  int64_t group, feature;  // feature: the channel group (NCHW only)
  int64_t start;           // first position within the channel group [NCHW] or first pixel [channels_last]
  int64_t length;          // positions [NCHW] or pixels [channels_last]
};

struct Tasks {
  const Geometry& g;
  int64_t run_length;  // positions [NCHW] or pixels [channels_last] per task
  int64_t runs;        // per group [channels_last] or per (group, channel group) [NCHW]

  explicit Tasks(const Geometry& geo) : g(geo) {
    if (g.channels_last) {
      run_length = std::max<int64_t>(1, kTaskPositions / std::max<int64_t>(g.channels, 1));
      runs = (g.pixels + run_length - 1) / run_length;
    } else {
      run_length = kTaskPositions;
      runs = (g.positions() + run_length - 1) / run_length;
    }
  }
  int64_t count() const { return g.groups * (g.channels_last ? 1 : g.features) * runs; }
  // Task index of run `run` of group m and channel group f (NCHW) or of group m (channels_last, f ignored).
  int64_t index(int64_t m, int64_t f, int64_t run) const {
    return (g.channels_last ? m : m * g.features + f) * runs + run;
  }
  Task operator[](int64_t task) const {
    const int64_t run = task % runs, rest = task / runs;
    const int64_t total = g.channels_last ? g.pixels : g.positions();
    const int64_t start = run * run_length;
    if (g.channels_last) return {rest, 0, start, std::min(run_length, total - start)};
    return {rest / g.features, rest % g.features, start, std::min(run_length, total - start)};
  }
  // Tasks per parallel_for chunk: at least ATen's grain of elements, so small tensors stay on the calling thread.
  int64_t grain() const {
    const int64_t per_task = g.group_size * (g.channels_last ? run_length * g.channels : run_length);
    return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, per_task));
  }
  // Offsets of the task's first element in every member's sample: in x (and dx), and in y (and grad_y).
  void offsets(const Task& t, int64_t* x_off, int64_t* y_off) const {
    for (int64_t k = 0; k < g.group_size; ++k) {
      const int64_t n = g.sample(t.group, k);
      if (g.channels_last) {
        x_off[k] = n * g.x_sample_stride() + t.start * g.channels;
        y_off[k] = n * g.y_sample_stride() + t.start * (g.channels + g.features);
      } else {
        x_off[k] = n * g.x_sample_stride() + g.x_offset<false>(t.feature, t.start);
        y_off[k] = n * g.y_sample_stride() + g.y_offset<false>(t.feature, t.start);
      }
    }
  }
  // The task's shape for forward_task/backward_task: rows, segments per row, segment length, row strides.
  struct Shape {
    int64_t rows, segments, seg_len, x_row, y_row;
  };
  Shape shape(const Task& t) const {
    if (g.channels_last)
      return {t.length, g.features, g.channels_per_feature(), g.channels, g.channels + g.features};
    return {1, 1, t.length, 0, 0};
  }
};

int64_t per_sample_grain(const Geometry& g) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, g.features * g.pixels));
}

// ---- forward ----

// One pass over x copies it into y as it is read and accumulates partial sums of sigma (partial[task * F + f]; NCHW
// tasks have one channel group), added in task order; then the F statistic channels are filled: planes in NCHW,
// the F slots after each pixel's channels in channels_last.
//
// Beyond the caches y is written with streaming stores: NCHW block by block as x is read, channels_last (rows of
// C + F floats, not aligned) in whole lines by forward_rows_avx512, its slots streamed as zeros and filled
// afterwards. Elsewhere (in cache, other types than float, other ISA variants, channel groups of other sizes than
// multiples of 16) a channels_last y gets plain stores while x is read, and its slots are still cached when they
// are filled.
template <typename T>
void forward(const Geometry& g, const T* x, T* y, double eps_in) {
  using A = acc_t<T>;
  const Tasks tasks(g);
  const int64_t F = g.features, G = g.group_size, P = g.pixels;
  const bool stream = should_stream(g.samples * g.y_sample_stride() * int64_t(sizeof(T)));
  const bool stream_blocks = stream && !g.channels_last;
  const bool stream_pixel_rows = stream && g.channels_last && !g.zero && std::is_same_v<T, float> && F < 16 &&
                                 g.channels_per_feature() % 16 == 0;
  const bool prefetch = !should_stream(g.samples * g.x_sample_stride() * int64_t(sizeof(T)));
  const A inv_divisor = static_cast<A>(g.inv_divisor), eps = static_cast<A>(eps_in);
  std::vector<double> partial(tasks.count() * F, 0.0);
  at::parallel_for(0, tasks.count(), tasks.grain(), [&](int64_t begin, int64_t end) {
    std::vector<int64_t> x_off(G), y_off(G);
    for (int64_t i = begin; i < end; ++i) {
      const Task t = tasks[i];
      const Tasks::Shape sh = tasks.shape(t);
      tasks.offsets(t, x_off.data(), y_off.data());
      double* sums = g.zero ? nullptr : partial.data() + i * F + t.feature;
      if constexpr (std::is_same_v<T, float>)
        if (stream_pixel_rows && forward_rows_streamed(x, y, x_off.data(), y_off.data(), G, sh.rows, F,
                                                       g.channels_per_feature(), inv_divisor, eps, sums))
          continue;
      run_forward_task(x, y, x_off.data(), y_off.data(), G, sh.rows, sh.segments, sh.seg_len, sh.x_row, sh.y_row,
                       inv_divisor, eps, stream_blocks, prefetch, sums);
    }
    stream_fence(stream);
  });

  // s[m, f] = (sum of group m's partial sums, in task order) / K; zero for contiguous groups of one.
  std::vector<T> stat(g.groups * F);
  const double K = static_cast<double>(g.positions());
  for (int64_t m = 0; m < g.groups; ++m)
    for (int64_t f = 0; f < F; ++f) {
      double sum = 0;
      for (int64_t run = 0; run < tasks.runs; ++run) sum += partial[tasks.index(m, f, run) * F + f];
      stat[m * F + f] = g.zero ? T(0) : static_cast<T>(static_cast<A>(sum / K));
    }

  at::parallel_for(0, g.samples, per_sample_grain(g), [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const T* s = stat.data() + g.group_of<false>(n) * F;
      T* yn = y + n * g.y_sample_stride();
      if (g.channels_last) {
        for (int64_t p = 0; p < P; ++p) {
          __builtin_prefetch(yn + g.stat_offset(0, std::min(p + kSlotPrefetchPixels, P - 1)), 1, 2);
          std::copy(s, s + F, yn + g.stat_offset(0, p));
        }
      } else {
        for (int64_t f = 0; f < F; ++f) std::fill(yn + g.stat_offset(f, 0), yn + g.stat_offset(f, 0) + P, s[f]);
      }
    }
  });
}

// ---- backward ----

template <typename T>
void backward(const Geometry& g, const T* dy, const T* x, T* dx, double eps_in) {
  using A = acc_t<T>;
  const Tasks tasks(g);
  const int64_t F = g.features, G = g.group_size, P = g.pixels;
  const bool stream = should_stream(g.samples * g.x_sample_stride() * int64_t(sizeof(T)));
  const A inv_divisor = static_cast<A>(g.inv_divisor), eps = static_cast<A>(eps_in);

  // a[m, f] = (sum over group m's samples and H x W of dy's statistic channel f) / (K * D). None for a zero
  // statistic: dx is then dy's first C channels.
  std::vector<A> a(g.groups * F);
  if (!g.zero) {
    std::vector<double> per_sample(g.samples * F);
    at::parallel_for(0, g.samples, per_sample_grain(g), [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        const T* dyn = dy + n * g.y_sample_stride();
        double* sums = per_sample.data() + n * F;  // each added in pixel order
        if (g.channels_last) {
          for (int64_t p = 0; p < P; ++p) {
            __builtin_prefetch(dyn + g.stat_offset(0, std::min(p + kSlotPrefetchPixels, P - 1)), 0, 2);
            for (int64_t f = 0; f < F; ++f) sums[f] += static_cast<double>(to_acc(dyn[g.stat_offset(f, p)]));
          }
        } else {
          for (int64_t f = 0; f < F; ++f)
            for (int64_t p = 0; p < P; ++p) sums[f] += static_cast<double>(to_acc(dyn[g.stat_offset(f, p)]));
        }
      }
    });
    const double KD = static_cast<double>(g.positions()) / g.inv_divisor;
    for (int64_t m = 0; m < g.groups; ++m)
      for (int64_t f = 0; f < F; ++f) {
        double sum = 0;
        for (int64_t k = 0; k < G; ++k) sum += per_sample[g.sample(m, k) * F + f];
        a[m * F + f] = static_cast<A>(sum / KD);
      }
  }

  at::parallel_for(0, tasks.count(), tasks.grain(), [&](int64_t begin, int64_t end) {
    std::vector<int64_t> x_off(G), y_off(G);
    for (int64_t i = begin; i < end; ++i) {
      const Task t = tasks[i];
      const Tasks::Shape sh = tasks.shape(t);
      tasks.offsets(t, x_off.data(), y_off.data());
      run_backward_task(dy, x, dx, x_off.data(), y_off.data(), G, sh.rows, sh.segments, sh.seg_len, sh.x_row,
                        sh.y_row, g.zero ? nullptr : a.data() + t.group * F + t.feature, inv_divisor, eps, stream);
    }
    stream_fence(stream);
  });
}

// ---- dispatch ----

at::Tensor minibatch_stddev_forward_cpu(const at::Tensor& x_in, int64_t group_size, c10::string_view grouping,
                                        bool unbiased, double eps, int64_t features) {
  MinibatchStddevForwardOperands o(x_in, group_size, std::string_view(grouping.data(), grouping.size()), unbiased,
                                   eps, features);
  if (o.y.numel() == 0) return o.y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, o.x.scalar_type(), "minibatch_stddev_forward", [&] {
    forward<scalar_t>(o.geo, o.x.const_data_ptr<scalar_t>(), o.y.mutable_data_ptr<scalar_t>(), eps);
  });
  return o.y;
}

at::Tensor minibatch_stddev_backward_cpu(const at::Tensor& grad_y_in, const at::Tensor& x_in, int64_t group_size,
                                         c10::string_view grouping, bool unbiased, double eps, int64_t features) {
  MinibatchStddevBackwardOperands o(grad_y_in, x_in, group_size, std::string_view(grouping.data(), grouping.size()),
                                    unbiased, eps, features);
  if (o.grad_x.numel() == 0) return o.grad_x;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, o.x.scalar_type(), "minibatch_stddev_backward", [&] {
    backward<scalar_t>(o.geo, o.grad_y.const_data_ptr<scalar_t>(), o.x.const_data_ptr<scalar_t>(),
                       o.grad_x.mutable_data_ptr<scalar_t>(), eps);
  });
  return o.grad_x;
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_fast, CPU, m) {
  m.impl("minibatch_stddev_forward", &minibatch_stddev_forward_cpu);
  m.impl("minibatch_stddev_backward", &minibatch_stddev_backward_cpu);
}

}  // namespace minibatch_stddev_cpu
}  // namespace progan_fast
