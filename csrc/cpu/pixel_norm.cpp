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

#include "common/pixel_norm_math.h"
#include "common/pixel_norm_operands.h"
#include "cpu/blocks.h"
#include "cpu/isa.h"
#include "cpu/stream.h"

namespace progan_fast {
namespace pixel_norm_cpu {

using cpu::kMaxBlock;
using cpu::kRowGroup;
using cpu::row_group;
using cpu::prefetch_row;
using cpu::stream_fence;
using cpu::until_aligned;

// ---- output stores, plain or streaming (always inlined, so they take the ISA of the variant that calls them) ----

// y[i] = x[i] * s[i]
PF_CPU_INLINE void store_mul(float* __restrict y, const float* __restrict x, const float* __restrict s, int64_t n,
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
PF_CPU_INLINE void store_scale(float* __restrict y, const float* __restrict x, float s, int64_t n, bool stream) {
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
PF_CPU_INLINE void store_axpby(float* __restrict dx, const float* __restrict dy, const float* __restrict x,
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
PF_CPU_INLINE void store_axpby_scalar(float* __restrict dx, const float* __restrict dy, const float* __restrict x,
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

// ---- float32 loops (multi-versioned, isa.h) ----
// Planes: a block of n <= kMaxBlock neighbouring pixels; channel c of pixel i is at [c * stride + i]. `next` (may be
// null): the same thread's next block, next_n pixels wide, prefetched during the second pass.

PROGAN_FAST_MULTIVERSION(forward_planes_f32,
                         (const float* __restrict x, float* __restrict y, float* __restrict r, int64_t C,
                          int64_t stride, int64_t n, float eps, bool stream, const float* next, int64_t next_n),
                         (x, y, r, C, stride, n, eps, stream, next, next_n)) {
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

// dx = r * dy - x * r^3 * mean_c(dy * x) (eps * r^3 * dy over one channel: pixel_norm_grad_scalars)
PROGAN_FAST_MULTIVERSION(backward_planes_f32,
                         (const float* __restrict dy, const float* __restrict x, const float* __restrict r,
                          float* __restrict dx, int64_t C, int64_t stride, int64_t n, float eps, bool stream,
                          const float* next_dy, const float* next_x, int64_t next_n),
                         (dy, x, r, dx, C, stride, n, eps, stream, next_dy, next_x, next_n)) {
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
    const PixelNormGradScalars<float> g = pixel_norm_grad_scalars(C, r[i], r[i] * r[i] * r[i] * k[i] / fc, eps);
    rs[i] = g.grad_scale;
    k[i] = g.projection;
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

// Rows: `rows` contiguous reductions of length C, in groups (cpu::row_group): the group's sums, then its rsqrts
// as one vector, then the scaled rows.

PROGAN_FAST_MULTIVERSION(forward_rows_f32,
                         (const float* __restrict x, float* __restrict y, float* __restrict r, int64_t rows, int64_t C,
                          float eps, bool stream),
                         (x, y, r, rows, C, eps, stream)) {
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

PROGAN_FAST_MULTIVERSION(backward_rows_f32,
                         (const float* __restrict dy, const float* __restrict x, const float* __restrict r,
                          float* __restrict dx, int64_t rows, int64_t C, float eps, bool stream),
                         (dy, x, r, dx, rows, C, eps, stream)) {
  const float fc = static_cast<float>(C);
  const int64_t group = row_group(C, 2);
  for (int64_t row0 = 0; row0 < rows; row0 += group) {
    const int64_t nr = std::min(group, rows - row0);
    float k[kRowGroup], rs[kRowGroup];
    for (int64_t j = 0; j < nr; ++j) {
      const float* __restrict xr = x + (row0 + j) * C;
      const float* __restrict dyr = dy + (row0 + j) * C;
      float dot = 0.f;
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < C; ++c) dot += dyr[c] * xr[c];
      k[j] = dot;
    }
    for (int64_t j = 0; j < nr; ++j) {
      const float rj = r[row0 + j];
      const PixelNormGradScalars<float> g = pixel_norm_grad_scalars(C, rj, rj * rj * rj * k[j] / fc, eps);
      rs[j] = g.grad_scale;
      k[j] = g.projection;
    }
    for (int64_t j = 0; j < nr; ++j) {
      const int64_t off = (row0 + j) * C;
      store_axpby_scalar(dx + off, dy + off, x + off, rs[j], k[j], C, stream);
    }
  }
  stream_fence(stream);
}

namespace {

using cpu::for_each_planes_block;
using cpu::gather_block;
using cpu::planes_block;
using cpu::PlanesBlock;
using cpu::PlanesTasks;
using cpu::rows_chunk;
using cpu::scatter_block;

// ---- float32 ----

void forward_f32(const ReductionLayout& l, const float* x, float* y, float* r, float eps) {
  const bool stream = cpu::should_stream(l.outer * l.channels * l.inner * static_cast<int64_t>(sizeof(float)));
  if (l.rows()) {
    const int64_t rows = l.outer * l.inner;
    at::parallel_for(0, rows, rows_chunk(l.channels), [&](int64_t begin, int64_t end) {
      forward_rows_f32(x + begin * l.channels, y + begin * l.channels, r + begin, end - begin, l.channels, eps,
                       stream);
    });
    return;
  }
  const int64_t C = l.channels, inner = l.inner;
  for_each_planes_block(PlanesTasks(l.outer, C, inner, planes_block(C, inner, 1)), [&](const PlanesBlock& b) {
    const int64_t base = b.o * C * inner + b.i0;
    forward_planes_f32(x + base, y + base, r + b.o * inner + b.i0, C, inner, b.n, eps, stream,
                       b.next >= 0 ? x + b.next : nullptr, b.next_n);
  });
}

void backward_f32(const ReductionLayout& l, const float* dy, const float* x, const float* r, float* dx, float eps) {
  const bool stream = cpu::should_stream(l.outer * l.channels * l.inner * static_cast<int64_t>(sizeof(float)));
  if (l.rows()) {
    const int64_t rows = l.outer * l.inner;
    at::parallel_for(0, rows, rows_chunk(l.channels), [&](int64_t begin, int64_t end) {
      const int64_t off = begin * l.channels;
      backward_rows_f32(dy + off, x + off, r + begin, dx + off, end - begin, l.channels, eps, stream);
    });
    return;
  }
  const int64_t C = l.channels, inner = l.inner;
  for_each_planes_block(PlanesTasks(l.outer, C, inner, planes_block(C, inner, 2)), [&](const PlanesBlock& b) {
    const int64_t base = b.o * C * inner + b.i0;
    backward_planes_f32(dy + base, x + base, r + b.o * inner + b.i0, dx + base, C, inner, b.n, eps, stream,
                        b.next >= 0 ? dy + b.next : nullptr, b.next >= 0 ? x + b.next : nullptr, b.next_n);
  });
}

// ---- float16 / bfloat16: blocks widened to float scratch, same loops, narrowed back ----

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
  const int64_t inner = l.inner;
  const PlanesTasks t(l.outer, C, inner, planes_block(C, inner, 2));
  cpu::parallel_chunks(t.chunks, t.tasks(), [&](int64_t chunk, int64_t begin, int64_t end) {
    std::vector<float> xs(C * t.block), ys(C * t.block);
    for (int64_t task = begin; task < end; ++task) {
      const PlanesBlock b = t.at(chunk, task, end);
      const int64_t base = b.o * C * inner + b.i0;
      gather_block(x + base, xs.data(), C, inner, b.n);
      forward_planes_f32(xs.data(), ys.data(), r + b.o * inner + b.i0, C, b.n, b.n, eps, false, nullptr, 0);
      scatter_block(ys.data(), y + base, C, inner, b.n);
    }
  });
}

template <typename T>
void backward_half(const ReductionLayout& l, const T* dy, const T* x, const float* r, T* dx, float eps) {
  const int64_t C = l.channels;
  if (l.rows()) {
    const int64_t rows = l.outer * l.inner, chunk = rows_chunk(C);
    at::parallel_for(0, rows, chunk, [&](int64_t begin, int64_t end) {
      std::vector<float> dys(chunk * C), xs(chunk * C), dxs(chunk * C);
      for (int64_t r0 = begin; r0 < end; r0 += chunk) {
        const int64_t nr = std::min(chunk, end - r0);
        isa::to_float(dy + r0 * C, dys.data(), nr * C);
        isa::to_float(x + r0 * C, xs.data(), nr * C);
        backward_rows_f32(dys.data(), xs.data(), r + r0, dxs.data(), nr, C, eps, false);
        isa::from_float(dxs.data(), dx + r0 * C, nr * C);
      }
    });
    return;
  }
  const int64_t inner = l.inner;
  const PlanesTasks t(l.outer, C, inner, planes_block(C, inner, 3));
  cpu::parallel_chunks(t.chunks, t.tasks(), [&](int64_t chunk, int64_t begin, int64_t end) {
    std::vector<float> dys(C * t.block), xs(C * t.block), dxs(C * t.block);
    for (int64_t task = begin; task < end; ++task) {
      const PlanesBlock b = t.at(chunk, task, end);
      const int64_t base = b.o * C * inner + b.i0;
      gather_block(dy + base, dys.data(), C, inner, b.n);
      gather_block(x + base, xs.data(), C, inner, b.n);
      backward_planes_f32(dys.data(), xs.data(), r + b.o * inner + b.i0, dxs.data(), C, b.n, b.n, eps, false,
                          nullptr, nullptr, 0);
      scatter_block(dxs.data(), dx + base, C, inner, b.n);
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

void backward_f64(const ReductionLayout& l, const double* dy, const double* x, const double* r, double* dx,
                  double eps) {
  const int64_t C = l.channels, inner = l.inner;
  at::parallel_for(0, l.outer * inner, std::max<int64_t>(1, 4096 / std::max<int64_t>(C, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t base = (p / inner) * C * inner + p % inner;
      double dot = 0;
      for (int64_t c = 0; c < C; ++c) dot += dy[base + c * inner] * x[base + c * inner];
      const double rs = r[p];
      const PixelNormGradScalars<double> g = pixel_norm_grad_scalars(C, rs, rs * rs * rs * dot / double(C), eps);
      for (int64_t c = 0; c < C; ++c)
        dx[base + c * inner] = g.grad_scale * dy[base + c * inner] - g.projection * x[base + c * inner];
    }
  });
}

std::tuple<at::Tensor, at::Tensor> pixel_norm_forward_cpu(const at::Tensor& x_in, int64_t dim, double eps) {
  PixelNormForwardOperands operands(x_in, dim, eps);
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
                                   int64_t dim, double eps) {
  PixelNormBackwardOperands operands(dy_in, x_in, r_in, dim, eps);
  const ReductionLayout& layout = operands.layout;
  const at::Tensor& x = operands.x;
  const at::Tensor& dy = operands.grad_y;
  const at::Tensor& r = operands.rsqrt;
  at::Tensor& dx = operands.grad_x;
  if (x.numel() == 0) return dx;
  switch (x.scalar_type()) {
    case at::kFloat:
      backward_f32(layout, dy.const_data_ptr<float>(), x.const_data_ptr<float>(), r.const_data_ptr<float>(),
                   dx.mutable_data_ptr<float>(), static_cast<float>(eps));
      break;
    case at::kDouble:
      backward_f64(layout, dy.const_data_ptr<double>(), x.const_data_ptr<double>(), r.const_data_ptr<double>(),
                   dx.mutable_data_ptr<double>(), eps);
      break;
    case at::kHalf:
      backward_half(layout, dy.const_data_ptr<at::Half>(), x.const_data_ptr<at::Half>(), r.const_data_ptr<float>(),
                    dx.mutable_data_ptr<at::Half>(), static_cast<float>(eps));
      break;
    case at::kBFloat16:
      backward_half(layout, dy.const_data_ptr<at::BFloat16>(), x.const_data_ptr<at::BFloat16>(),
                    r.const_data_ptr<float>(), dx.mutable_data_ptr<at::BFloat16>(), static_cast<float>(eps));
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
