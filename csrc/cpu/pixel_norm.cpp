// Pixel norm on the CPU: y = x * rsqrt(mean_c(x^2) + eps), reduced over one dimension.
// The reduced dimension is either the fastest-moving one ("rows": channels_last activations, 2-D latents) or
// strided ("planes": NCHW, where a pixel's channels sit H*W apart); each layout gets a loop that streams memory
// in order instead of gathering. Both are two passes over a block small enough to stay in L2 between them, so x
// (and dy) come from DRAM once: forward reads x and writes y, backward reads x, dy and writes dx.
//
// float32 runs the multi-versioned loops below (AVX-512 / AVX2 / baseline, chosen at load time, see isa.h);
// float16/bfloat16 blocks are widened into a float scratch buffer and run the same loops; float64 (gradcheck)
// runs plain templated loops.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/pixel_norm_operands.h"
#include "cpu/isa.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace progan_fast {
namespace pixel_norm_cpu {

// Most pixels one planes block holds; sizes the per-pixel accumulators on the stack.
constexpr int64_t kMaxBlock = 1024;
// Bytes of x one planes block (forward) or of x and dy (backward) spans: well inside a core's L2 with room for
// the output, and long contiguous runs per channel so the hardware prefetchers stream them.
constexpr int64_t kPlanesBlockBytes = 256 * 1024;
// Outputs at least this large are written with non-temporal stores: they are far larger than the caches anyway,
// and streaming them skips the read-for-ownership of every destination line and keeps the output from evicting
// the block that the second pass re-reads (measured ~1.5-2x faster forward at S2/S3 on a 2-core Zen 4).
constexpr int64_t kStreamBytes = 8 << 20;
// Elements of x one rows chunk holds (half-precision inputs convert whole chunks to float scratch).
constexpr int64_t kRowsChunkElems = 16 * 1024;

// ---- output stores, plain or streaming (always inlined, so they take the ISA of the clone that calls them) ----

#define PN_INLINE static inline __attribute__((always_inline))

// Elements before p is 16-byte aligned (at most n).
PN_INLINE int64_t until_aligned(const float* p, int64_t n) {
  return std::min<int64_t>(n, ((16 - (reinterpret_cast<uintptr_t>(p) & 15)) & 15) / sizeof(float));
}

// y[i] = x[i] * s[i]
PN_INLINE void store_mul(float* __restrict y, const float* __restrict x, const float* __restrict s, int64_t n,
                         bool stream) {
  int64_t i = 0;
#if defined(__SSE2__)
  if (stream) {
    for (const int64_t head = until_aligned(y, n); i < head; ++i) y[i] = x[i] * s[i];
    for (; i + 4 <= n; i += 4) _mm_stream_ps(y + i, _mm_mul_ps(_mm_loadu_ps(x + i), _mm_loadu_ps(s + i)));
  }
#endif
  for (; i < n; ++i) y[i] = x[i] * s[i];
}

// y[i] = x[i] * s
PN_INLINE void store_scale(float* __restrict y, const float* __restrict x, float s, int64_t n, bool stream) {
  int64_t i = 0;
#if defined(__SSE2__)
  if (stream) {
    const __m128 sv = _mm_set1_ps(s);
    for (const int64_t head = until_aligned(y, n); i < head; ++i) y[i] = x[i] * s;
    for (; i + 4 <= n; i += 4) _mm_stream_ps(y + i, _mm_mul_ps(_mm_loadu_ps(x + i), sv));
  }
#endif
  for (; i < n; ++i) y[i] = x[i] * s;
}

// dx[i] = a[i] * dy[i] - b[i] * x[i]
PN_INLINE void store_axpby(float* __restrict dx, const float* __restrict dy, const float* __restrict x,
                           const float* __restrict a, const float* __restrict b, int64_t n, bool stream) {
  int64_t i = 0;
#if defined(__SSE2__)
  if (stream) {
    for (const int64_t head = until_aligned(dx, n); i < head; ++i) dx[i] = a[i] * dy[i] - b[i] * x[i];
    for (; i + 4 <= n; i += 4)
      _mm_stream_ps(dx + i, _mm_sub_ps(_mm_mul_ps(_mm_loadu_ps(a + i), _mm_loadu_ps(dy + i)),
                                       _mm_mul_ps(_mm_loadu_ps(b + i), _mm_loadu_ps(x + i))));
  }
#endif
  for (; i < n; ++i) dx[i] = a[i] * dy[i] - b[i] * x[i];
}

// dx[i] = a * dy[i] - b * x[i]
PN_INLINE void store_axpby_scalar(float* __restrict dx, const float* __restrict dy, const float* __restrict x,
                                  float a, float b, int64_t n, bool stream) {
  int64_t i = 0;
#if defined(__SSE2__)
  if (stream) {
    const __m128 av = _mm_set1_ps(a), bv = _mm_set1_ps(b);
    for (const int64_t head = until_aligned(dx, n); i < head; ++i) dx[i] = a * dy[i] - b * x[i];
    for (; i + 4 <= n; i += 4)
      _mm_stream_ps(dx + i, _mm_sub_ps(_mm_mul_ps(av, _mm_loadu_ps(dy + i)), _mm_mul_ps(bv, _mm_loadu_ps(x + i))));
  }
#endif
  for (; i < n; ++i) dx[i] = a * dy[i] - b * x[i];
}

// Planes blocks run a DRAM-bound first pass and then a second pass from cache, during which the hardware
// prefetchers (which only follow short runs of a strided block) leave DRAM idle. Prefetching the next block's
// channel rows into L2 while the second pass computes keeps it busy: ~1.6x faster forward+backward at S2/S3 NCHW,
// on par with channels_last. (Prefetching ahead within the first pass, or into L1, did not help.)
PN_INLINE void prefetch_row(const float* p, int64_t n) {
  for (int64_t i = 0; i < n; i += 64 / sizeof(float)) __builtin_prefetch(p + i, 0, 2);
}

// Non-temporal stores are weakly ordered: fence before another thread may read what this one streamed.
PN_INLINE void stream_fence(bool stream) {
#if defined(__SSE2__)
  if (stream) _mm_sfence();
#else
  (void)stream;
#endif
}

// ---- float32 loops (multi-versioned; external linkage so the ifunc resolvers can be emitted) ----
// Planes: a block of n <= kMaxBlock neighbouring pixels; channel c of pixel i is at [c * stride + i]. `next` (may be
// null): the same thread's next block, next_n pixels wide, prefetched during the second pass.

PROGAN_FAST_MULTIVERSION
void forward_planes_f32(const float* __restrict x, float* __restrict y, float* __restrict r, int64_t C, int64_t stride,
                        int64_t n, float eps, bool stream, const float* next, int64_t next_n) {
  float acc[kMaxBlock];
  for (int64_t i = 0; i < n; ++i) acc[i] = 0.f;
  for (int64_t c = 0; c < C; ++c) {
    const float* __restrict xc = x + c * stride;
    for (int64_t i = 0; i < n; ++i) acc[i] += xc[i] * xc[i];
  }
  const float fc = static_cast<float>(C);
  for (int64_t i = 0; i < n; ++i) acc[i] = 1.f / std::sqrt(acc[i] / fc + eps);
  for (int64_t c = 0; c < C; ++c) {
    if (next) prefetch_row(next + c * stride, next_n);
    store_mul(y + c * stride, x + c * stride, acc, n, stream);
  }
  for (int64_t i = 0; i < n; ++i) r[i] = acc[i];
  stream_fence(stream);
}

// dx = r * dy - x * r^3 * mean_c(dy * x)
PROGAN_FAST_MULTIVERSION
void backward_planes_f32(const float* __restrict dy, const float* __restrict x, const float* __restrict r,
                         float* __restrict dx, int64_t C, int64_t stride, int64_t n, bool stream, const float* next_dy,
                         const float* next_x, int64_t next_n) {
  float k[kMaxBlock];
  float rs[kMaxBlock];
  for (int64_t i = 0; i < n; ++i) k[i] = 0.f;
  for (int64_t c = 0; c < C; ++c) {
    const float* __restrict xc = x + c * stride;
    const float* __restrict dyc = dy + c * stride;
    for (int64_t i = 0; i < n; ++i) k[i] += dyc[i] * xc[i];
  }
  const float fc = static_cast<float>(C);
  for (int64_t i = 0; i < n; ++i) {
    rs[i] = r[i];
    k[i] = rs[i] * rs[i] * rs[i] * k[i] / fc;
  }
  for (int64_t c = 0; c < C; ++c) {
    if (next_x) {
      prefetch_row(next_x + c * stride, next_n);
      prefetch_row(next_dy + c * stride, next_n);
    }
    store_axpby(dx + c * stride, dy + c * stride, x + c * stride, rs, k, n, stream);
  }
  stream_fence(stream);
}

// Rows: `rows` contiguous reductions of length C, in groups of up to kRowGroup rows: the group's sums first
// (independent, so their reduction latencies overlap), then its rsqrts as one vector, then the scaled rows. One row
// at a time spent ~50 cycles of latency per row (forward ~1.4x slower at C = 128..256). A group's inputs stay
// within kRowGroupBytes so the last step re-reads them from L1.
constexpr int64_t kRowGroup = 16;
constexpr int64_t kRowGroupBytes = 16 * 1024;

PN_INLINE int64_t row_group(int64_t C, int64_t streams) {
  return std::clamp<int64_t>(kRowGroupBytes / (streams * std::max<int64_t>(C, 1) * int64_t(sizeof(float))), 1,
                             kRowGroup);
}

PROGAN_FAST_MULTIVERSION
void forward_rows_f32(const float* __restrict x, float* __restrict y, float* __restrict r, int64_t rows, int64_t C,
                      float eps, bool stream) {
  const float fc = static_cast<float>(C);
  const int64_t group = row_group(C, 1);
  for (int64_t row0 = 0; row0 < rows; row0 += group) {
    const int64_t nr = std::min(group, rows - row0);
    float rs[kRowGroup];
    for (int64_t j = 0; j < nr; ++j) {
      const float* __restrict xr = x + (row0 + j) * C;
      float sum = 0.f;
#pragma omp simd reduction(+ : sum)
      for (int64_t c = 0; c < C; ++c) sum += xr[c] * xr[c];
      rs[j] = sum;
    }
    for (int64_t j = 0; j < nr; ++j) rs[j] = 1.f / std::sqrt(rs[j] / fc + eps);
    for (int64_t j = 0; j < nr; ++j) {
      store_scale(y + (row0 + j) * C, x + (row0 + j) * C, rs[j], C, stream);
      r[row0 + j] = rs[j];
    }
  }
  stream_fence(stream);
}

PROGAN_FAST_MULTIVERSION
void backward_rows_f32(const float* __restrict dy, const float* __restrict x, const float* __restrict r,
                       float* __restrict dx, int64_t rows, int64_t C, bool stream) {
  const float fc = static_cast<float>(C);
  const int64_t group = row_group(C, 2);
  for (int64_t row0 = 0; row0 < rows; row0 += group) {
    const int64_t nr = std::min(group, rows - row0);
    float k[kRowGroup];
    for (int64_t j = 0; j < nr; ++j) {
      const float* __restrict xr = x + (row0 + j) * C;
      const float* __restrict dyr = dy + (row0 + j) * C;
      float dot = 0.f;
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < C; ++c) dot += dyr[c] * xr[c];
      k[j] = dot;
    }
    for (int64_t j = 0; j < nr; ++j) {
      const float rs = r[row0 + j];
      k[j] = rs * rs * rs * k[j] / fc;
    }
    for (int64_t j = 0; j < nr; ++j) {
      const int64_t off = (row0 + j) * C;
      store_axpby_scalar(dx + off, dy + off, x + off, r[row0 + j], k[j], C, stream);
    }
  }
  stream_fence(stream);
}

namespace {

// Pixels per planes block: about kPlanesBlockBytes of input (`streams` tensors of C float channels), a multiple
// of 16 (whole vectors and cache lines), never more than one plane.
int64_t planes_block(int64_t C, int64_t inner, int64_t streams) {
  int64_t n = kPlanesBlockBytes / (streams * C * static_cast<int64_t>(sizeof(float)));
  n = std::clamp<int64_t>(n / 16 * 16, 16, kMaxBlock);
  return std::min(n, inner);
}

// Tasks of a planes loop per parallel_for chunk: at least ATen's grain of elements, so small tensors stay on the
// calling thread (waking the OpenMP team costs more than they take, and far more when the cores are busy).
int64_t planes_grain(int64_t C, int64_t block) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(C * block, 1));
}

int64_t rows_chunk(int64_t C) { return std::max<int64_t>(1, kRowsChunkElems / std::max<int64_t>(C, 1)); }

// Runs fn(o, i0, n, next, next_n) over every planes block of [outer, C, inner], blocks of one plane contiguous
// within a thread's share; next is the element offset of the thread's next block (-1 after its last), next_n its
// pixel count.
template <typename F>
void for_each_planes_block(int64_t outer, int64_t C, int64_t inner, int64_t block, const F& fn) {
  const int64_t per_plane = (inner + block - 1) / block;
  at::parallel_for(0, outer * per_plane, planes_grain(C, block), [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t o = task / per_plane;
      const int64_t i0 = (task % per_plane) * block;
      int64_t next = -1, next_n = 0;
      if (task + 1 < end) {
        const int64_t no = (task + 1) / per_plane, ni0 = ((task + 1) % per_plane) * block;
        next = no * C * inner + ni0;
        next_n = std::min(block, inner - ni0);
      }
      fn(o, i0, std::min(block, inner - i0), next, next_n);
    }
  });
}

// ---- float32 ----

void forward_f32(const ReductionLayout& l, const float* x, float* y, float* r, float eps) {
  const bool stream = l.outer * l.channels * l.inner * static_cast<int64_t>(sizeof(float)) >= kStreamBytes;
  if (l.rows()) {
    const int64_t rows = l.outer * l.inner;
    at::parallel_for(0, rows, rows_chunk(l.channels), [&](int64_t begin, int64_t end) {
      forward_rows_f32(x + begin * l.channels, y + begin * l.channels, r + begin, end - begin, l.channels, eps,
                       stream);
    });
    return;
  }
  const int64_t C = l.channels, inner = l.inner;
  const int64_t block = planes_block(C, inner, 1);
  for_each_planes_block(l.outer, C, inner, block, [&](int64_t o, int64_t i0, int64_t n, int64_t next, int64_t next_n) {
    const int64_t base = o * C * inner + i0;
    forward_planes_f32(x + base, y + base, r + o * inner + i0, C, inner, n, eps, stream,
                       next >= 0 ? x + next : nullptr, next_n);
  });
}

void backward_f32(const ReductionLayout& l, const float* dy, const float* x, const float* r, float* dx) {
  const bool stream = l.outer * l.channels * l.inner * static_cast<int64_t>(sizeof(float)) >= kStreamBytes;
  if (l.rows()) {
    const int64_t rows = l.outer * l.inner;
    at::parallel_for(0, rows, rows_chunk(l.channels), [&](int64_t begin, int64_t end) {
      const int64_t off = begin * l.channels;
      backward_rows_f32(dy + off, x + off, r + begin, dx + off, end - begin, l.channels, stream);
    });
    return;
  }
  const int64_t C = l.channels, inner = l.inner;
  const int64_t block = planes_block(C, inner, 2);
  for_each_planes_block(l.outer, C, inner, block, [&](int64_t o, int64_t i0, int64_t n, int64_t next, int64_t next_n) {
    const int64_t base = o * C * inner + i0;
    backward_planes_f32(dy + base, x + base, r + o * inner + i0, dx + base, C, inner, n, stream,
                        next >= 0 ? dy + next : nullptr, next >= 0 ? x + next : nullptr, next_n);
  });
}

// ---- float16 / bfloat16: blocks widened to float scratch, same loops, narrowed back ----

// Copies a planes block (C channels of n pixels, `stride` apart) to or from dense float scratch [C, n].
template <typename T>
void gather_block(const T* src, float* dst, int64_t C, int64_t stride, int64_t n) {
  for (int64_t c = 0; c < C; ++c) isa::to_float(src + c * stride, dst + c * n, n);
}
template <typename T>
void scatter_block(const float* src, T* dst, int64_t C, int64_t stride, int64_t n) {
  for (int64_t c = 0; c < C; ++c) isa::from_float(src + c * n, dst + c * stride, n);
}

template <typename T>
void forward_half(const ReductionLayout& l, const T* x, T* y, float* r, float eps) {
  const int64_t C = l.channels;
  if (l.rows()) {
    const int64_t rows = l.outer * l.inner, chunk = rows_chunk(C);
    at::parallel_for(0, rows, chunk, [&](int64_t begin, int64_t end) {
      std::vector<float> xs(chunk * C), ys(chunk * C);
      for (int64_t r0 = begin; r0 < end; r0 += chunk) {
        const int64_t nr = std::min(chunk, end - r0);
        isa::to_float(x + r0 * C, xs.data(), nr * C);
        forward_rows_f32(xs.data(), ys.data(), r + r0, nr, C, eps, false);
        isa::from_float(ys.data(), y + r0 * C, nr * C);
      }
    });
    return;
  }
  const int64_t inner = l.inner, block = planes_block(C, inner, 2);
  const int64_t per_plane = (inner + block - 1) / block;
  at::parallel_for(0, l.outer * per_plane, planes_grain(C, block), [&](int64_t begin, int64_t end) {
    std::vector<float> xs(C * block), ys(C * block);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t o = task / per_plane, i0 = (task % per_plane) * block, n = std::min(block, inner - i0);
      const int64_t base = o * C * inner + i0;
      gather_block(x + base, xs.data(), C, inner, n);
      forward_planes_f32(xs.data(), ys.data(), r + o * inner + i0, C, n, n, eps, false, nullptr, 0);
      scatter_block(ys.data(), y + base, C, inner, n);
    }
  });
}

template <typename T>
void backward_half(const ReductionLayout& l, const T* dy, const T* x, const float* r, T* dx) {
  const int64_t C = l.channels;
  if (l.rows()) {
    const int64_t rows = l.outer * l.inner, chunk = rows_chunk(C);
    at::parallel_for(0, rows, chunk, [&](int64_t begin, int64_t end) {
      std::vector<float> dys(chunk * C), xs(chunk * C), dxs(chunk * C);
      for (int64_t r0 = begin; r0 < end; r0 += chunk) {
        const int64_t nr = std::min(chunk, end - r0);
        isa::to_float(dy + r0 * C, dys.data(), nr * C);
        isa::to_float(x + r0 * C, xs.data(), nr * C);
        backward_rows_f32(dys.data(), xs.data(), r + r0, dxs.data(), nr, C, false);
        isa::from_float(dxs.data(), dx + r0 * C, nr * C);
      }
    });
    return;
  }
  const int64_t inner = l.inner, block = planes_block(C, inner, 3);
  const int64_t per_plane = (inner + block - 1) / block;
  at::parallel_for(0, l.outer * per_plane, planes_grain(C, block), [&](int64_t begin, int64_t end) {
    std::vector<float> dys(C * block), xs(C * block), dxs(C * block);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t o = task / per_plane, i0 = (task % per_plane) * block, n = std::min(block, inner - i0);
      const int64_t base = o * C * inner + i0;
      gather_block(dy + base, dys.data(), C, inner, n);
      gather_block(x + base, xs.data(), C, inner, n);
      backward_planes_f32(dys.data(), xs.data(), r + o * inner + i0, dxs.data(), C, n, n, false, nullptr, nullptr, 0);
      scatter_block(dxs.data(), dx + base, C, inner, n);
    }
  });
}

// ---- float64: plain loops (gradcheck precision; speed is not the point) ----

void forward_f64(const ReductionLayout& l, const double* x, double* y, double* r, double eps) {
  const int64_t C = l.channels, inner = l.inner;
  at::parallel_for(0, l.outer * inner, std::max<int64_t>(1, 4096 / std::max<int64_t>(C, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const double* xp = x + (p / inner) * C * inner + p % inner;
      double* yp = y + (p / inner) * C * inner + p % inner;
      double sum = 0;
      for (int64_t c = 0; c < C; ++c) sum += xp[c * inner] * xp[c * inner];
      const double rs = 1.0 / std::sqrt(sum / double(C) + eps);
      for (int64_t c = 0; c < C; ++c) yp[c * inner] = xp[c * inner] * rs;
      r[p] = rs;
    }
  });
}

void backward_f64(const ReductionLayout& l, const double* dy, const double* x, const double* r, double* dx) {
  const int64_t C = l.channels, inner = l.inner;
  at::parallel_for(0, l.outer * inner, std::max<int64_t>(1, 4096 / std::max<int64_t>(C, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t base = (p / inner) * C * inner + p % inner;
      double dot = 0;
      for (int64_t c = 0; c < C; ++c) dot += dy[base + c * inner] * x[base + c * inner];
      const double rs = r[p];
      const double k = rs * rs * rs * dot / double(C);
      for (int64_t c = 0; c < C; ++c) dx[base + c * inner] = rs * dy[base + c * inner] - k * x[base + c * inner];
    }
  });
}

std::tuple<at::Tensor, at::Tensor> pixel_norm_forward_cpu(const at::Tensor& x_in, int64_t dim, double eps) {
  PixelNormForwardOperands operands(x_in, dim);
  const ReductionLayout& layout = operands.layout;
  const at::Tensor& x = operands.x;
  at::Tensor& y = operands.y;
  at::Tensor& r = operands.rsqrt;
  if (x.numel() == 0) return {y, r};
  switch (x.scalar_type()) {
    case at::kFloat:
      forward_f32(layout, x.const_data_ptr<float>(), y.mutable_data_ptr<float>(), r.mutable_data_ptr<float>(),
                  static_cast<float>(eps));
      break;
    case at::kDouble:
      forward_f64(layout, x.const_data_ptr<double>(), y.mutable_data_ptr<double>(), r.mutable_data_ptr<double>(), eps);
      break;
    case at::kHalf:
      forward_half(layout, x.const_data_ptr<at::Half>(), y.mutable_data_ptr<at::Half>(), r.mutable_data_ptr<float>(),
                   static_cast<float>(eps));
      break;
    case at::kBFloat16:
      forward_half(layout, x.const_data_ptr<at::BFloat16>(), y.mutable_data_ptr<at::BFloat16>(),
                   r.mutable_data_ptr<float>(), static_cast<float>(eps));
      break;
    default:
      TORCH_CHECK(false, "pixel_norm_forward: x must be float16, bfloat16, float32 or float64; got ", x.scalar_type());
  }
  return {y, r};
}

at::Tensor pixel_norm_backward_cpu(const at::Tensor& dy_in, const at::Tensor& x_in, const at::Tensor& r_in,
                                   int64_t dim) {
  PixelNormBackwardOperands operands(dy_in, x_in, r_in, dim);
  const ReductionLayout& layout = operands.layout;
  const at::Tensor& x = operands.x;
  const at::Tensor& dy = operands.grad_y;
  const at::Tensor& r = operands.rsqrt;
  at::Tensor& dx = operands.grad_x;
  if (x.numel() == 0) return dx;
  switch (x.scalar_type()) {
    case at::kFloat:
      backward_f32(layout, dy.const_data_ptr<float>(), x.const_data_ptr<float>(), r.const_data_ptr<float>(),
                   dx.mutable_data_ptr<float>());
      break;
    case at::kDouble:
      backward_f64(layout, dy.const_data_ptr<double>(), x.const_data_ptr<double>(), r.const_data_ptr<double>(),
                   dx.mutable_data_ptr<double>());
      break;
    case at::kHalf:
      backward_half(layout, dy.const_data_ptr<at::Half>(), x.const_data_ptr<at::Half>(), r.const_data_ptr<float>(),
                    dx.mutable_data_ptr<at::Half>());
      break;
    case at::kBFloat16:
      backward_half(layout, dy.const_data_ptr<at::BFloat16>(), x.const_data_ptr<at::BFloat16>(),
                    r.const_data_ptr<float>(), dx.mutable_data_ptr<at::BFloat16>());
      break;
    default:
      TORCH_CHECK(false, "pixel_norm_backward: x must be float16, bfloat16, float32 or float64; got ", x.scalar_type());
  }
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_fast, CPU, m) {
  m.impl("pixel_norm_forward", &pixel_norm_forward_cpu);
  m.impl("pixel_norm_backward", &pixel_norm_backward_cpu);
}

}  // namespace pixel_norm_cpu
}  // namespace progan_fast
