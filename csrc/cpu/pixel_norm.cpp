// Pixel norm on the CPU: y = x * rsqrt(mean_c(x^2) + eps), reduced over one dimension.
// The reduced dimension is either the fastest-moving one ("rows": channels_last activations, 2-D latents) or
// strided ("planes": NCHW, where a pixel's channels sit H*W apart); each layout gets a loop that streams memory
// in order instead of gathering.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "common/reduction_layout.h"

namespace progan_fast {
namespace {

// Pixels handled together in planes layout: their accumulators stay in registers/L1, and the block's slice of
// x (C * kPixelBlock elements) is still in L2 when the second pass reads it again.
constexpr int64_t kPixelBlock = 64;

template <typename scalar_t>
void forward_rows(const scalar_t* x, scalar_t* y, at::opmath_type<scalar_t>* r, int64_t rows, int64_t C, double eps) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, rows, std::max<int64_t>(1, 32768 / std::max<int64_t>(C, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const scalar_t* xr = x + row * C;
      scalar_t* yr = y + row * C;
      acc_t sum = 0;
      for (int64_t c = 0; c < C; ++c) sum += acc_t(xr[c]) * acc_t(xr[c]);
      const acc_t rs = acc_t(1) / std::sqrt(sum / acc_t(C) + acc_t(eps));
      for (int64_t c = 0; c < C; ++c) yr[c] = scalar_t(acc_t(xr[c]) * rs);
      r[row] = rs;
    }
  });
}

template <typename scalar_t>
void forward_planes(const scalar_t* x, scalar_t* y, at::opmath_type<scalar_t>* r, int64_t outer, int64_t C, int64_t inner, double eps) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t blocks_per_plane = (inner + kPixelBlock - 1) / kPixelBlock;
  at::parallel_for(0, outer * blocks_per_plane, 1, [&](int64_t begin, int64_t end) {
    acc_t acc[kPixelBlock];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t o = task / blocks_per_plane;
      const int64_t i0 = (task % blocks_per_plane) * kPixelBlock;
      const int64_t n = std::min(kPixelBlock, inner - i0);
      const scalar_t* xo = x + o * C * inner + i0;
      scalar_t* yo = y + o * C * inner + i0;
      for (int64_t i = 0; i < n; ++i) acc[i] = 0;
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t* xc = xo + c * inner;
        for (int64_t i = 0; i < n; ++i) acc[i] += acc_t(xc[i]) * acc_t(xc[i]);
      }
      for (int64_t i = 0; i < n; ++i) acc[i] = acc_t(1) / std::sqrt(acc[i] / acc_t(C) + acc_t(eps));
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t* xc = xo + c * inner;
        scalar_t* yc = yo + c * inner;
        for (int64_t i = 0; i < n; ++i) yc[i] = scalar_t(acc_t(xc[i]) * acc[i]);
      }
      for (int64_t i = 0; i < n; ++i) r[o * inner + i0 + i] = acc[i];
    }
  });
}

// dx = r * dy - x * r^3 * mean_c(dy * x)
template <typename scalar_t>
void backward_rows(const scalar_t* dy, const scalar_t* x, const at::opmath_type<scalar_t>* r, scalar_t* dx, int64_t rows, int64_t C) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const scalar_t* xr = x + row * C;
      const scalar_t* dyr = dy + row * C;
      scalar_t* dxr = dx + row * C;
      acc_t dot = 0;
      for (int64_t c = 0; c < C; ++c) dot += acc_t(dyr[c]) * acc_t(xr[c]);
      const acc_t rs = r[row];
      const acc_t k = rs * rs * rs * dot / acc_t(C);
      for (int64_t c = 0; c < C; ++c) dxr[c] = scalar_t(rs * acc_t(dyr[c]) - k * acc_t(xr[c]));
    }
  });
}

template <typename scalar_t>
void backward_planes(const scalar_t* dy, const scalar_t* x, const at::opmath_type<scalar_t>* r, scalar_t* dx,
                     int64_t outer, int64_t C, int64_t inner) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t blocks_per_plane = (inner + kPixelBlock - 1) / kPixelBlock;
  at::parallel_for(0, outer * blocks_per_plane, 1, [&](int64_t begin, int64_t end) {
    acc_t dot[kPixelBlock];
    acc_t rs[kPixelBlock];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t o = task / blocks_per_plane;
      const int64_t i0 = (task % blocks_per_plane) * kPixelBlock;
      const int64_t n = std::min(kPixelBlock, inner - i0);
      const int64_t base = o * C * inner + i0;
      for (int64_t i = 0; i < n; ++i) dot[i] = 0;
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t* xc = x + base + c * inner;
        const scalar_t* dyc = dy + base + c * inner;
        for (int64_t i = 0; i < n; ++i) dot[i] += acc_t(dyc[i]) * acc_t(xc[i]);
      }
      for (int64_t i = 0; i < n; ++i) {
        rs[i] = r[o * inner + i0 + i];
        dot[i] = rs[i] * rs[i] * rs[i] * dot[i] / acc_t(C);
      }
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t* xc = x + base + c * inner;
        const scalar_t* dyc = dy + base + c * inner;
        scalar_t* dxc = dx + base + c * inner;
        for (int64_t i = 0; i < n; ++i) dxc[i] = scalar_t(rs[i] * acc_t(dyc[i]) - dot[i] * acc_t(xc[i]));
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> pixel_norm_forward_cpu(const at::Tensor& x_in, int64_t dim, double eps) {
  const ReductionLayout layout = ReductionLayout::of(x_in, dim);
  const at::Tensor x = layout.dense(x_in);
  at::Tensor y = at::empty_like(x);
  at::Tensor r = at::empty(layout.stat_sizes(x_in), x.options().dtype(at::toOpMathType(x.scalar_type())));
  if (x.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pixel_norm_forward_cpu", [&] {
      if (layout.rows())
        forward_rows(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), r.mutable_data_ptr<at::opmath_type<scalar_t>>(),
                     layout.outer * layout.inner, layout.channels, eps);
      else
        forward_planes(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), r.mutable_data_ptr<at::opmath_type<scalar_t>>(),
                       layout.outer, layout.channels, layout.inner, eps);
    });
  }
  return {y, r};
}

at::Tensor pixel_norm_backward_cpu(const at::Tensor& dy_in, const at::Tensor& x_in, const at::Tensor& r_in,
                                   int64_t dim) {
  const ReductionLayout layout = ReductionLayout::of(x_in, dim);
  const at::Tensor x = layout.dense(x_in);
  const at::Tensor dy = layout.dense_like(dy_in);
  const at::Tensor r = r_in.to(at::toOpMathType(x_in.scalar_type())).contiguous();
  at::Tensor dx = at::empty_like(x);
  if (x.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pixel_norm_backward_cpu", [&] {
      if (layout.rows())
        backward_rows(dy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), r.const_data_ptr<at::opmath_type<scalar_t>>(),
                      dx.mutable_data_ptr<scalar_t>(), layout.outer * layout.inner, layout.channels);
      else
        backward_planes(dy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), r.const_data_ptr<at::opmath_type<scalar_t>>(),
                        dx.mutable_data_ptr<scalar_t>(), layout.outer, layout.channels, layout.inner);
    });
  }
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_fast, CPU, m) {
  m.impl("pixel_norm_forward", &pixel_norm_forward_cpu);
  m.impl("pixel_norm_backward", &pixel_norm_backward_cpu);
}

}  // namespace progan_fast
