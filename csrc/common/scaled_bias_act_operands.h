// The operands of every scaled_bias_act kernel (CPU, CUDA, and the CPU emulation of the CUDA one), checked and
// laid out once: dense in the memory order ReductionLayout chose for a reduction over the channels (dim 1),
// rsqrt in the op-math dtype (float, double for float64) with one value per pixel, outputs allocated in the
// input's layout. The Python fakes (progan_fast/ops/scaled_bias_act.py) refuse the same.
#pragma once
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <limits>
#include <optional>

#include "common/checks.h"
#include "common/reduction_layout.h"
#include "common/scaled_bias_act_math.h"

namespace progan_fast {

// What the backward reads besides grad_y (progan_fast/ops/scaled_bias_act.py states why): the output y for
// slope >= 0, the input x (and bias) for slope < 0, nothing for a linear activation without pixel norm.
inline bool scaled_bias_act_reads_saved(double slope, bool pixel_norm) { return pixel_norm || slope != 1.0; }
inline bool scaled_bias_act_saves_input(double slope) { return slope < 0.0; }


namespace scaled_bias_act_detail {

inline void check_scalars(double scale, double slope, double eps) {
  check_finite(scale, "scale");
  check_finite(slope, "slope");
  check_finite(eps, "eps");
}

inline at::Tensor checked_bias(const std::optional<at::Tensor>& bias, const at::Tensor& x) {
  if (!bias.has_value() || !bias->defined()) return at::Tensor();
  TORCH_CHECK(bias->device() == x.device(), "bias must be on ", x.device(), " like x; got ", bias->device());
  TORCH_CHECK_TYPE(bias->scalar_type() == x.scalar_type(), "bias must have dtype ", x.scalar_type(), "; got ",
                   bias->scalar_type());
  TORCH_CHECK(bias->dim() == 1 && bias->size(0) == x.size(1), "bias must have shape (", x.size(1), ",); got ",
              bias->sizes());
  return bias->contiguous();
}

}  // namespace scaled_bias_act_detail

struct ScaledBiasActForwardOperands {
  ReductionLayout layout;
  at::Tensor x, bias, y, rsqrt;  // bias undefined when absent; rsqrt empty without pixel norm

  ScaledBiasActForwardOperands(const at::Tensor& x_in, const std::optional<at::Tensor>& bias_in, double scale,
                               double slope, bool pixel_norm, double eps) {
    check_float_tensor(x_in, "x");
    scaled_bias_act_detail::check_scalars(scale, slope, eps);
    TORCH_CHECK(x_in.dim() >= 2, "x must have at least 2 dimensions (batch and channels); got shape ", x_in.sizes());
    layout = ReductionLayout::of(x_in, 1);
    x = layout.dense(x_in);
    bias = scaled_bias_act_detail::checked_bias(bias_in, x_in);
    y = at::empty_like(x);
    const auto stat_options = x.options().dtype(at::toOpMathType(x.scalar_type()));
    if (!pixel_norm) {
      rsqrt = at::empty({0}, stat_options);
      return;
    }
    rsqrt = at::empty(layout.stat_sizes(x_in), stat_options);
    if (layout.channels == 0) rsqrt.fill_(std::numeric_limits<double>::quiet_NaN());  // mean of nothing
  }
};

struct ScaledBiasActBackwardOperands {
  ReductionLayout layout;
  at::Tensor grad_y, saved, rsqrt, bias, grad_x, grad_bias;  // saved, rsqrt, bias undefined when not read
  bool saved_is_input = false;

  ScaledBiasActBackwardOperands(const at::Tensor& grad_y_in, const std::optional<at::Tensor>& saved_in,
                                const std::optional<at::Tensor>& rsqrt_in, const std::optional<at::Tensor>& bias_in,
                                double scale, double slope, bool pixel_norm, double eps, bool saved_is_input_,
                                bool bias_grad)
      : saved_is_input(saved_is_input_) {
    check_float_tensor(grad_y_in, "grad_y");
    scaled_bias_act_detail::check_scalars(scale, slope, eps);
    TORCH_CHECK(grad_y_in.dim() >= 2, "grad_y must have at least 2 dimensions; got shape ", grad_y_in.sizes());
    const bool has_saved = saved_in.has_value() && saved_in->defined();
    if (scaled_bias_act_reads_saved(slope, pixel_norm)) {
      TORCH_CHECK(has_saved, "saved (y, or x for a negative slope) is required unless the activation is linear "
                  "without pixel norm");
      // y > 0 tells the two sides of the activation apart only for slope >= 0
      TORCH_CHECK_VALUE(saved_is_input || !scaled_bias_act_saves_input(slope), "saved_is_input must be true for "
                        "slope ", slope, " < 0 (the derivative needs x: y cannot tell its sign)");
    }
    if (has_saved) {
      TORCH_CHECK(saved_in->device() == grad_y_in.device(), "saved must be on ", grad_y_in.device(),
                  " like grad_y; got ", saved_in->device());
      TORCH_CHECK_TYPE(saved_in->scalar_type() == grad_y_in.scalar_type(), "saved must have dtype ",
                       grad_y_in.scalar_type(), "; got ", saved_in->scalar_type());
      TORCH_CHECK(saved_in->sizes() == grad_y_in.sizes(), "saved must have grad_y's shape ", grad_y_in.sizes(),
                  "; got ", saved_in->sizes());
    }
    // The layout follows the forward's tensors (saved), grad_y is brought into it.
    const at::Tensor& layout_source = scaled_bias_act_reads_saved(slope, pixel_norm) ? *saved_in : grad_y_in;
    layout = ReductionLayout::of(layout_source, 1);
    grad_y = layout.dense_like(grad_y_in);
    if (scaled_bias_act_reads_saved(slope, pixel_norm)) saved = layout.dense_like(*saved_in);
    if (pixel_norm) {
      TORCH_CHECK(rsqrt_in.has_value() && rsqrt_in->defined(), "rsqrt is required with pixel_norm");
      TORCH_CHECK(rsqrt_in->device() == grad_y_in.device(), "rsqrt must be on ", grad_y_in.device(),
                  " like grad_y; got ", rsqrt_in->device());
      TORCH_CHECK(rsqrt_in->numel() == layout.outer * layout.inner, "rsqrt must have one value per pixel (",
                  layout.outer * layout.inner, "); got ", rsqrt_in->numel());
      check_stat_dtype(*rsqrt_in, "rsqrt", grad_y_in);
      rsqrt = rsqrt_in->to(at::toOpMathType(grad_y_in.scalar_type())).contiguous();
    }
    bias = scaled_bias_act_detail::checked_bias(bias_in, grad_y_in);
    if (!saved_is_input) bias = at::Tensor();  // only the recomputed pre-activation reads it
    grad_x = at::empty_like(grad_y);
    grad_bias = at::empty({bias_grad ? layout.channels : 0}, grad_y.options());
    if (grad_y.numel() == 0) grad_bias.zero_();  // a sum over no elements: the kernels do not run
  }
};

}  // namespace progan_fast
