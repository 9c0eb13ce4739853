// upsample_blend and fade_reals on the CPU, one pass each, row by row: every tensor is seen as planes of rows of
// `vec` contiguous values per pixel (csrc/common/fade_operands.h: NCHW rows of one channel, channels_last rows of
// all channels), so one set of row loops serves both layouts.
//   upsample_blend forward:  a low row is expanded (nearest, factor x along the row) once into an L1 scratch row,
//                            then blended with each of the factor high rows it covers.
//   upsample_blend backward: the factor grad rows of a low row are written scaled by alpha (grad_high) and summed
//                            into a scratch row, whose factor-wide groups give grad_low = (1 - alpha) * sum.
//   fade_reals:              each pair of rows: their sum, 2-wide groups of it times 1/4 (the 2x2 means),
//                            expanded back and blended with both rows.
// Neither the upsampled image nor the pooled one is ever written to memory. float32 runs the multi-versioned row
// loops below (AVX-512 / AVX2 / baseline, see isa.h), half rows are widened into float scratch, float64 runs the
// same loops compiled for double.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/fade_operands.h"
#include "cpu/fade_io.h"

namespace progan_fast {
namespace fade_cpu {

// ---- row loops, templated on the math type and inlined into the multi-versioned float32 entry points ----

// out = lerp(a, b, alpha)
template <typename A>
FADE_INLINE void lerp_row(A* __restrict out, const A* __restrict a, const A* __restrict b, int64_t n, A alpha) {
  if (alpha < A(0.5)) {
    for (int64_t i = 0; i < n; ++i) out[i] = std::fma(alpha, b[i] - a[i], a[i]);
  } else {
    const A w = alpha - A(1);
    for (int64_t i = 0; i < n; ++i) out[i] = std::fma(w, b[i] - a[i], b[i]);
  }
}

// dst[(j * factor + t) * vec + k] = src[j * vec + k]: nearest upsampling along a row of `width` pixels.
template <typename A>
FADE_INLINE void expand_row(A* __restrict dst, const A* __restrict src, int64_t width, int64_t factor, int64_t vec) {
  if (vec == 1 && factor == 2) {
    for (int64_t j = 0; j < width; ++j) {
      dst[2 * j] = src[j];
      dst[2 * j + 1] = src[j];
    }
  } else if (vec == 3 && factor == 2) {  // channels_last RGB: constant strides, so GCC can vectorize it
    for (int64_t j = 0; j < width; ++j)
      for (int64_t k = 0; k < 3; ++k) {
        dst[6 * j + k] = src[3 * j + k];
        dst[6 * j + 3 + k] = src[3 * j + k];
      }
  } else if (vec == 1) {
    for (int64_t j = 0; j < width; ++j)
      for (int64_t t = 0; t < factor; ++t) dst[j * factor + t] = src[j];
  } else {
    for (int64_t j = 0; j < width; ++j)
      for (int64_t t = 0; t < factor; ++t)
        for (int64_t k = 0; k < vec; ++k) dst[(j * factor + t) * vec + k] = src[j * vec + k];
  }
}

// dst[j * vec + k] = scale * sum over t < factor of src[(j * factor + t) * vec + k]: sum-pooling along a row.
template <typename A>
FADE_INLINE void pool_row(A* __restrict dst, const A* __restrict src, int64_t width, int64_t factor, int64_t vec,
                          A scale) {
  if (vec == 1 && factor == 2) {
    for (int64_t j = 0; j < width; ++j) dst[j] = scale * (src[2 * j] + src[2 * j + 1]);
  } else if (vec == 3 && factor == 2) {
    for (int64_t j = 0; j < width; ++j)
      for (int64_t k = 0; k < 3; ++k) dst[3 * j + k] = scale * (src[6 * j + k] + src[6 * j + 3 + k]);
  } else {
    for (int64_t j = 0; j < width; ++j)
      for (int64_t k = 0; k < vec; ++k) {
        A sum = 0;
        for (int64_t t = 0; t < factor; ++t) sum += src[(j * factor + t) * vec + k];
        dst[j * vec + k] = scale * sum;
      }
  }
}

template <typename A>
FADE_INLINE void scale_row(A* __restrict out, const A* __restrict x, int64_t n, A s) {
  for (int64_t i = 0; i < n; ++i) out[i] = s * x[i];
}

template <typename A>
FADE_INLINE void add_rows(A* __restrict out, const A* __restrict a, const A* __restrict b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

// float32 entry points, one per ISA variant (isa.h).
PROGAN_FAST_MULTIVERSION(lerp_row_f32, (float* out, const float* a, const float* b, int64_t n, float alpha),
                         (out, a, b, n, alpha)) {
  lerp_row(out, a, b, n, alpha);
}
PROGAN_FAST_MULTIVERSION(expand_row_f32,
                         (float* dst, const float* src, int64_t width, int64_t factor, int64_t vec),
                         (dst, src, width, factor, vec)) {
  expand_row(dst, src, width, factor, vec);
}
PROGAN_FAST_MULTIVERSION(pool_row_f32,
                         (float* dst, const float* src, int64_t width, int64_t factor, int64_t vec, float scale),
                         (dst, src, width, factor, vec, scale)) {
  pool_row(dst, src, width, factor, vec, scale);
}
PROGAN_FAST_MULTIVERSION(scale_row_f32, (float* out, const float* x, int64_t n, float s), (out, x, n, s)) {
  scale_row(out, x, n, s);
}
PROGAN_FAST_MULTIVERSION(add_rows_f32, (float* out, const float* a, const float* b, int64_t n), (out, a, b, n)) {
  add_rows(out, a, b, n);
}

namespace {

// One name per row loop for both math types: float32 through the multi-versioned entry points.
struct Rows {
  static void lerp(float* o, const float* a, const float* b, int64_t n, float al) { lerp_row_f32(o, a, b, n, al); }
  static void lerp(double* o, const double* a, const double* b, int64_t n, double al) { lerp_row(o, a, b, n, al); }
  static void expand(float* d, const float* s, int64_t w, int64_t f, int64_t v) { expand_row_f32(d, s, w, f, v); }
  static void expand(double* d, const double* s, int64_t w, int64_t f, int64_t v) { expand_row(d, s, w, f, v); }
  static void pool(float* d, const float* s, int64_t w, int64_t f, int64_t v, float k) { pool_row_f32(d, s, w, f, v, k); }
  static void pool(double* d, const double* s, int64_t w, int64_t f, int64_t v, double k) { pool_row(d, s, w, f, v, k); }
  static void scale(float* o, const float* x, int64_t n, float s) { scale_row_f32(o, x, n, s); }
  static void scale(double* o, const double* x, int64_t n, double s) { scale_row(o, x, n, s); }
  static void add(float* o, const float* a, const float* b, int64_t n) { add_rows_f32(o, a, b, n); }
  static void add(double* o, const double* a, const double* b, int64_t n) { add_rows(o, a, b, n); }
};

// Rows per parallel_for chunk: at least ATen's grain of elements, so small tensors (the 4x4 .. 32x32 RGB images
// of the early resolutions) stay on the calling thread; waking the team costs more than they take.
int64_t row_grain(int64_t elems_per_row) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(elems_per_row, 1));
}

// ---- upsample_blend ----

template <typename T>
void upsample_forward(const UpsampleBlendOperands& o, double alpha_value) {
  using A = acc_t<T>;
  const FadePlanes& lp = o.low_planes;
  const int64_t f = o.factor, low_row = lp.row(), high_row = low_row * f, rows = lp.planes * lp.height;
  const T* low = o.low.const_data_ptr<T>();
  const T* high = o.high.const_data_ptr<T>();
  T* y = o.y.mutable_data_ptr<T>();
  const A alpha = static_cast<A>(alpha_value);
  at::parallel_for(0, rows, row_grain(high_row * f), [&](int64_t begin, int64_t end) {
    std::vector<A> expanded(high_row);
    std::vector<float> low_scratch, high_scratch, out_scratch;
    for (int64_t r = begin; r < end; ++r) {
      Rows::expand(expanded.data(), load_row(low + r * low_row, low_row, low_scratch), lp.width, f, lp.vec);
      for (int64_t t = 0; t < f; ++t) {
        const int64_t off = (r * f + t) * high_row;  // high row t of the f rows that low row r covers
        A* out = out_row(y + off, high_row, out_scratch);
        Rows::lerp(out, expanded.data(), load_row(high + off, high_row, high_scratch), high_row, alpha);
        store_row(y + off, out, high_row);
      }
    }
  });
}

template <typename T>
void upsample_backward(const UpsampleBlendBackwardOperands& o, double alpha_value) {
  using A = acc_t<T>;
  const FadePlanes& lp = o.low_planes;
  const int64_t f = o.factor, low_row = lp.row(), high_row = low_row * f, rows = lp.planes * lp.height;
  const T* grad_y = o.grad_y.const_data_ptr<T>();
  T* grad_high = o.grad_high.mutable_data_ptr<T>();
  T* grad_low = o.grad_low.mutable_data_ptr<T>();
  const A alpha = static_cast<A>(alpha_value);
  at::parallel_for(0, rows, row_grain(high_row * f), [&](int64_t begin, int64_t end) {
    std::vector<A> sum(high_row);
    std::vector<float> in_scratch, out_scratch;
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t t = 0; t < f; ++t) {
        const int64_t off = (r * f + t) * high_row;
        const A* g = load_row(grad_y + off, high_row, in_scratch);
        A* out = out_row(grad_high + off, high_row, out_scratch);
        Rows::scale(out, g, high_row, alpha);
        store_row(grad_high + off, out, high_row);
        if (t == 0) std::copy(g, g + high_row, sum.data());
        else Rows::add(sum.data(), sum.data(), g, high_row);
      }
      A* out = out_row(grad_low + r * low_row, low_row, out_scratch);
      Rows::pool(out, sum.data(), lp.width, f, lp.vec, A(1) - alpha);
      store_row(grad_low + r * low_row, out, low_row);
    }
  });
}

at::Tensor upsample_blend_forward_cpu(const at::Tensor& low, const at::Tensor& high, const at::Tensor& alpha,
                                      int64_t factor) {
  UpsampleBlendOperands o(low, high, alpha, factor);
  const double a = fade_alpha_value(alpha);
  if (o.y.numel() == 0) return o.y;
  dispatch_float_types(o.high, "high", [&](auto type) { upsample_forward<decltype(type)>(o, a); });
  return o.y;
}

std::tuple<at::Tensor, at::Tensor> upsample_blend_backward_cpu(const at::Tensor& grad_y, const at::Tensor& alpha,
                                                               int64_t factor) {
  UpsampleBlendBackwardOperands o(grad_y, alpha, factor);
  const double a = fade_alpha_value(alpha);
  if (o.grad_y.numel() > 0)
    dispatch_float_types(o.grad_y, "grad_y", [&](auto type) { upsample_backward<decltype(type)>(o, a); });
  return {o.grad_low, o.grad_high};
}

// ---- fade_reals ----

template <typename T>
void fade_reals_forward(const FadeRealsOperands& o, double alpha_value) {
  using A = acc_t<T>;
  const FadePlanes& p = o.planes;
  const int64_t row = p.row(), pairs = p.planes * p.height / 2;
  const T* x = o.x.const_data_ptr<T>();
  T* y = o.y.mutable_data_ptr<T>();
  const A alpha = static_cast<A>(alpha_value);
  at::parallel_for(0, pairs, row_grain(2 * row), [&](int64_t begin, int64_t end) {
    std::vector<A> sum(row), means(row / 2), expanded(row);
    std::vector<float> top_scratch, bottom_scratch, out_scratch;
    for (int64_t pair = begin; pair < end; ++pair) {
      const int64_t top = 2 * pair * row, bottom = top + row;
      const A* x0 = load_row(x + top, row, top_scratch);
      const A* x1 = load_row(x + bottom, row, bottom_scratch);
      Rows::add(sum.data(), x0, x1, row);
      Rows::pool(means.data(), sum.data(), p.width / 2, 2, p.vec, A(0.25));
      Rows::expand(expanded.data(), means.data(), p.width / 2, 2, p.vec);
      for (const auto& [off, xr] : {std::pair{top, x0}, std::pair{bottom, x1}}) {
        A* out = out_row(y + off, row, out_scratch);
        Rows::lerp(out, expanded.data(), xr, row, alpha);
        store_row(y + off, out, row);
      }
    }
  });
}

at::Tensor fade_reals_forward_cpu(const at::Tensor& x, const at::Tensor& alpha) {
  FadeRealsOperands o(x, alpha);
  const double a = fade_alpha_value(alpha);
  if (o.y.numel() > 0) dispatch_float_types(o.x, "x", [&](auto type) { fade_reals_forward<decltype(type)>(o, a); });
  return o.y;
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_fast, CPU, m) {
  m.impl("upsample_blend_forward", &upsample_blend_forward_cpu);
  m.impl("upsample_blend_backward", &upsample_blend_backward_cpu);
  m.impl("fade_reals_forward", &fade_reals_forward_cpu);
}

}  // namespace fade_cpu
}  // namespace progan_fast
