// Host side of minibatch stddev's device kernels, for the CUDA and the emulated family alike (csrc/host/device.h):
// checks, layout and allocation (csrc/common/minibatch_stddev_operands.h), then the kernels of
// csrc/ops/minibatch_stddev.h.
#pragma once
#include <ATen/OpMathType.h>

#include <string_view>

#include "common/minibatch_stddev_operands.h"
#include "host/device.h"
#include "ops/minibatch_stddev.h"

namespace progan_fast::minibatch_stddev_host {

// The device kernels index positions within a channel group, and blocks, with 32 bits.
inline void check_32bit_positions(const minibatch_stddev::Geometry& g) {
  TORCH_CHECK(g.positions() < (int64_t(1) << 31), "x has ", g.positions(), " positions per channel group ",
              "(C / num_new_features * H * W); the CUDA kernels take fewer than 2^31");
}

template <typename Device>
at::Tensor forward(const at::Tensor& x_in, int64_t group_size, c10::string_view grouping, bool unbiased, double eps,
                   int64_t features) {
  Device::check(x_in, "x", x_in);
  const hd::DType dtype = launcher_dtype(x_in, "x");
  const Device device(x_in);
  MinibatchStddevForwardOperands o(x_in, group_size, std::string_view(grouping.data(), grouping.size()), unbiased,
                                   eps, features);
  if (o.y.numel() == 0) return o.y;
  check_32bit_positions(o.geo);
  const auto cfg = minibatch_stddev_cuda::launch_config(o.geo, dtype, {o.x.const_data_ptr()}, {o.y.const_data_ptr()});
  at::Tensor partial = at::empty({o.geo.groups * o.geo.features * cfg.chunks.value},
                                 o.x.options().dtype(at::toOpMathType(o.x.scalar_type())));
  device.launch(minibatch_stddev_cuda::ForwardStatParams{o.geo, cfg, o.x.const_data_ptr(), o.y.mutable_data_ptr(),
                                                         partial.mutable_data_ptr(), eps, dtype});
  device.launch(minibatch_stddev_cuda::ForwardWriteParams{o.geo, cfg, partial.const_data_ptr(), o.y.mutable_data_ptr(),
                                                          dtype});
  return o.y;
}

template <typename Device>
at::Tensor backward(const at::Tensor& grad_y_in, const at::Tensor& x_in, int64_t group_size,
                    c10::string_view grouping, bool unbiased, double eps, int64_t features) {
  Device::check(x_in, "x", x_in);
  Device::check(grad_y_in, "grad_y", x_in);
  const hd::DType dtype = launcher_dtype(x_in, "x");
  const Device device(x_in);
  MinibatchStddevBackwardOperands o(grad_y_in, x_in, group_size, std::string_view(grouping.data(), grouping.size()),
                                    unbiased, eps, features);
  if (o.grad_x.numel() == 0) return o.grad_x;
  check_32bit_positions(o.geo);
  const auto cfg = minibatch_stddev_cuda::launch_config(o.geo, dtype, {o.x.const_data_ptr(), o.grad_x.const_data_ptr()},
                                                        {o.grad_y.const_data_ptr()});
  at::Tensor a = at::empty({o.geo.groups * o.geo.features}, o.x.options().dtype(at::toOpMathType(o.x.scalar_type())));
  device.launch(minibatch_stddev_cuda::BackwardStatParams{o.geo, cfg, o.grad_y.const_data_ptr(), a.mutable_data_ptr(),
                                                          dtype});
  device.launch(minibatch_stddev_cuda::BackwardParams{o.geo, cfg, o.grad_y.const_data_ptr(), o.x.const_data_ptr(),
                                                      a.const_data_ptr(), o.grad_x.mutable_data_ptr(), eps, dtype});
  return o.grad_x;
}

}  // namespace progan_fast::minibatch_stddev_host
