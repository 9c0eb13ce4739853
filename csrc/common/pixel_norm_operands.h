// The operands of every pixel norm kernel (CPU, CUDA, and the CPU emulation of the CUDA one), checked and laid
// out once: dense in the memory order ReductionLayout chose, rsqrt in the op-math dtype (float, double for
// float64) with one value per reduced vector, outputs allocated in the input's layout.
#pragma once
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <limits>

#include "common/checks.h"
#include "common/reduction_layout.h"

namespace progan_fast {

inline ReductionLayout checked_layout(const at::Tensor& x, int64_t dim, double eps) {
  check_float_tensor(x, "x");
  check_finite(eps, "eps");
  return ReductionLayout::of(x, checked_dim(x, dim));
}

struct PixelNormForwardOperands {
  ReductionLayout layout;
  at::Tensor x, y, rsqrt;

  PixelNormForwardOperands(const at::Tensor& x_in, int64_t dim, double eps)
      : layout(checked_layout(x_in, dim, eps)), x(layout.dense(x_in)) {
    y = at::empty_like(x);
    rsqrt = at::empty(layout.stat_sizes(x_in), x.options().dtype(at::toOpMathType(x.scalar_type())));
    if (layout.channels == 0) rsqrt.fill_(std::numeric_limits<double>::quiet_NaN());  // mean of nothing, as the reference
  }
};

struct PixelNormBackwardOperands {
  ReductionLayout layout;
  at::Tensor grad_y, x, rsqrt, grad_x;

  PixelNormBackwardOperands(const at::Tensor& grad_y_in, const at::Tensor& x_in, const at::Tensor& rsqrt_in,
                            int64_t dim, double eps)
      : layout(checked_layout(x_in, dim, eps)) {
    // The kernels read grad_y as x's type and index rsqrt per vector: anything else would be read out of bounds.
    TORCH_CHECK_TYPE(grad_y_in.scalar_type() == x_in.scalar_type(), "grad_y must have x's dtype ",
                     x_in.scalar_type(), "; got ", grad_y_in.scalar_type());
    TORCH_CHECK(grad_y_in.sizes() == x_in.sizes(), "grad_y must have x's shape ", x_in.sizes(), "; got ",
                grad_y_in.sizes());
    check_stat_dtype(rsqrt_in, "rsqrt", x_in);
    TORCH_CHECK(rsqrt_in.numel() == layout.outer * layout.inner, "rsqrt must have one value per reduced vector (",
                layout.outer * layout.inner, "); got ", rsqrt_in.numel());
    x = layout.dense(x_in);
    grad_y = layout.dense_like(grad_y_in);
    rsqrt = rsqrt_in.to(at::toOpMathType(x_in.scalar_type())).contiguous();
    grad_x = at::empty_like(x);
  }
};

}  // namespace progan_fast
