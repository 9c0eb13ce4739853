// Host side of pixel norm's device kernels, for the CUDA and the emulated family alike (csrc/host/device.h):
// checks, layout and allocation (csrc/common/pixel_norm_operands.h), then the kernels of csrc/ops/pixel_norm.h.
#pragma once
#include <tuple>

#include "common/pixel_norm_operands.h"
#include "host/device.h"
#include "ops/pixel_norm.h"

namespace progan_fast::pixel_norm_host {

template <typename Device>
std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& x_in, int64_t dim, double eps) {
  Device::check(x_in, "x", x_in);
  const hd::DType dtype = launcher_dtype(x_in, "x");
  const Device device(x_in);
  PixelNormForwardOperands o(x_in, dim, eps);
  if (o.x.numel() > 0)
    device.launch(pixel_norm_cuda::ForwardParams{o.x.const_data_ptr(), o.y.mutable_data_ptr(),
                                                 o.rsqrt.mutable_data_ptr(), o.layout.outer, o.layout.channels,
                                                 o.layout.inner, eps, dtype});
  return {o.y, o.rsqrt};
}

template <typename Device>
at::Tensor backward(const at::Tensor& grad_y_in, const at::Tensor& x_in, const at::Tensor& rsqrt_in, int64_t dim,
                    double eps) {
  Device::check(x_in, "x", x_in);
  Device::check(grad_y_in, "grad_y", x_in);
  Device::check(rsqrt_in, "rsqrt", x_in);
  const hd::DType dtype = launcher_dtype(x_in, "x");
  const Device device(x_in);
  PixelNormBackwardOperands o(grad_y_in, x_in, rsqrt_in, dim, eps);
  if (o.x.numel() > 0)
    device.launch(pixel_norm_cuda::BackwardParams{o.grad_y.const_data_ptr(), o.x.const_data_ptr(),
                                                  o.rsqrt.const_data_ptr(), o.grad_x.mutable_data_ptr(),
                                                  o.layout.outer, o.layout.channels, o.layout.inner, eps, dtype});
  return o.grad_x;
}

}  // namespace progan_fast::pixel_norm_host
