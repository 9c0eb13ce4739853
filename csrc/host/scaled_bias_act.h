// Host side of the epilogue's device kernels, for the CUDA and the emulated family alike (csrc/host/device.h):
// checks, layout and allocation (csrc/common/scaled_bias_act_operands.h), then the kernels of
// csrc/ops/scaled_bias_act.h.
#pragma once
#include <optional>
#include <tuple>
#include <utility>

#include "common/scaled_bias_act_operands.h"
#include "host/device.h"
#include "ops/scaled_bias_act.h"

namespace progan_fast::scaled_bias_act_host {

inline const void* data_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr() : nullptr; }

template <typename Device>
std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& x_in, const std::optional<at::Tensor>& bias_in,
                                           double scale, double slope, bool pixel_norm, double eps) {
  Device::check(x_in, "x", x_in);
  if (bias_in.has_value() && bias_in->defined()) Device::check(*bias_in, "bias", x_in);
  const hd::DType dtype = launcher_dtype(x_in, "x");
  const Device device(x_in);
  ScaledBiasActForwardOperands o(x_in, bias_in, scale, slope, pixel_norm, eps);
  if (o.x.numel() > 0)
    device.launch(scaled_bias_act_cuda::ForwardParams{
        o.x.const_data_ptr(), data_or_null(o.bias), o.y.mutable_data_ptr(),
        pixel_norm ? o.rsqrt.mutable_data_ptr() : nullptr, o.layout.outer, o.layout.channels, o.layout.inner, scale,
        slope, eps, pixel_norm, dtype});
  return {o.y, o.rsqrt};
}

template <typename Device>
std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad_y_in, const std::optional<at::Tensor>& saved_in,
                                            const std::optional<at::Tensor>& rsqrt_in,
                                            const std::optional<at::Tensor>& bias_in, double scale, double slope,
                                            bool pixel_norm, double eps, bool saved_is_input, bool bias_grad) {
  Device::check(grad_y_in, "grad_y", grad_y_in);
  using Named = std::pair<const char*, const std::optional<at::Tensor>*>;
  for (const Named& named : {Named{"saved", &saved_in}, Named{"rsqrt", &rsqrt_in}, Named{"bias", &bias_in}})
    if (named.second->has_value() && (*named.second)->defined()) Device::check(**named.second, named.first, grad_y_in);
  const hd::DType dtype = launcher_dtype(grad_y_in, "grad_y");
  const Device device(grad_y_in);
  ScaledBiasActBackwardOperands o(grad_y_in, saved_in, rsqrt_in, bias_in, scale, slope, pixel_norm, eps, saved_is_input,
                                  bias_grad);
  const ReductionLayout& l = o.layout;
  if (o.grad_y.numel() == 0) return {o.grad_x, o.grad_bias};
  at::Tensor workspace;
  if (bias_grad)
    workspace = at::empty({scaled_bias_act_cuda::workspace_elems(l.outer, l.channels, l.inner)},
                          o.grad_y.options().dtype(at::toOpMathType(o.grad_y.scalar_type())));
  device.launch(scaled_bias_act_cuda::BackwardParams{
      o.grad_y.const_data_ptr(), data_or_null(o.saved), data_or_null(o.rsqrt), data_or_null(o.bias),
      o.grad_x.mutable_data_ptr(), bias_grad ? workspace.mutable_data_ptr() : nullptr,
      bias_grad ? o.grad_bias.mutable_data_ptr() : nullptr, l.outer, l.channels, l.inner, scale, slope, pixel_norm,
      eps, o.saved_is_input, dtype});
  return {o.grad_x, o.grad_bias};
}

}  // namespace progan_fast::scaled_bias_act_host
