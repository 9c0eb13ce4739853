// Host side of the fade-in ops' device kernels (upsample_blend, fade_reals, fade_from_rgb), for the CUDA and the
// emulated family alike (csrc/host/device.h): checks, layout and allocation (csrc/common/fade_operands.h), alpha,
// then the kernels of csrc/ops/{upsample_blend,fade_reals,fade_from_rgb}.h.
#pragma once
#include <ATen/OpMathType.h>

#include <tuple>

#include "common/fade_operands.h"
#include "host/device.h"
#include "ops/fade_from_rgb.h"
#include "ops/fade_reals.h"
#include "ops/upsample_blend.h"

namespace progan_fast::fade_host {

// alpha for a device kernel. On the kernel's device it is read there, in the op-math dtype (no host sync; a CPU
// alpha of the emulated family, whose device is the CPU, is also checked here as the CPU kernels check it). A CPU
// alpha with device tensors is read and checked here and passed by value.
struct DeviceAlpha {
  at::Tensor tensor;  // keeps a converted alpha alive until the launch is enqueued
  fade_cuda::Alpha alpha;

  DeviceAlpha(const at::Tensor& a, const at::Tensor& like) {
    if (a.device() == like.device()) {
      if (a.device().is_cpu()) fade_alpha_value(a);
      tensor = a.to(at::toOpMathType(like.scalar_type()));
      alpha.ptr = tensor.const_data_ptr();
    } else {
      alpha.value = fade_alpha_value(a);
    }
  }
};

// The device of a fade kernel launch, with what every launch takes besides its operands, for `main` (the tensor whose
// dtype and device the op follows, `name` in errors): the launcher's dtype and alpha (made after the device scope:
// a device alpha is converted on it).
template <typename Device>
struct FadeDevice {
  hd::DType dtype;
  Device device;
  DeviceAlpha device_alpha;

  FadeDevice(const at::Tensor& main, const char* name, const at::Tensor& alpha)
      : dtype(launcher_dtype(main, name)), device(main), device_alpha(alpha, main) {}
  fade_cuda::Alpha alpha() const { return device_alpha.alpha; }
  template <typename Params>
  void launch(const Params& params) const {
    device.launch(params);
  }
};

inline upsample_blend_cuda::Geometry upsample_geometry(const FadePlanes& low, int64_t factor) {
  upsample_blend_cuda::Geometry geo;
  geo.low_rows = low.planes * low.height;
  geo.low_width = low.width;
  geo.vec = low.vec;
  geo.factor = factor;
  return geo;
}

template <typename Device>
at::Tensor upsample_blend_forward(const at::Tensor& low, const at::Tensor& high, const at::Tensor& alpha,
                                  int64_t factor) {
  Device::check(high, "high", high);
  Device::check(low, "low", high);
  UpsampleBlendOperands o(low, high, alpha, factor);
  const FadeDevice<Device> device(o.high, "high", alpha);
  if (o.y.numel() > 0)
    device.launch(upsample_blend_cuda::ForwardParams{o.low.const_data_ptr(), o.high.const_data_ptr(),
                                                     o.y.mutable_data_ptr(), upsample_geometry(o.low_planes, factor),
                                                     device.alpha(), device.dtype});
  return o.y;
}

template <typename Device>
std::tuple<at::Tensor, at::Tensor> upsample_blend_backward(const at::Tensor& grad_y, const at::Tensor& alpha,
                                                           int64_t factor) {
  Device::check(grad_y, "grad_y", grad_y);
  UpsampleBlendBackwardOperands o(grad_y, alpha, factor);
  const FadeDevice<Device> device(o.grad_y, "grad_y", alpha);
  if (o.grad_y.numel() > 0)
    device.launch(upsample_blend_cuda::BackwardParams{o.grad_y.const_data_ptr(), o.grad_low.mutable_data_ptr(),
                                                      o.grad_high.mutable_data_ptr(),
                                                      upsample_geometry(o.low_planes, factor), device.alpha(),
                                                      device.dtype});
  return {o.grad_low, o.grad_high};
}

template <typename Device>
at::Tensor fade_reals_forward(const at::Tensor& x, const at::Tensor& alpha) {
  Device::check(x, "x", x);
  FadeRealsOperands o(x, alpha);
  const FadeDevice<Device> device(o.x, "x", alpha);
  if (o.y.numel() > 0)
    device.launch(fade_reals_cuda::Params{o.x.const_data_ptr(), o.y.mutable_data_ptr(),
                                          o.planes.planes * o.planes.height / 2, o.planes.width, o.planes.vec,
                                          device.alpha(), device.dtype});
  return o.y;
}

inline fade_from_rgb_cuda::Shape from_rgb_shape(const FadeFromRgbOperands& o) {
  TORCH_CHECK(o.height * o.width < (int64_t(1) << 31), "fade_from_rgb's device kernels index a sample's feature "
              "plane with 32 bits: H * W must be below 2^31; got ", o.height, " x ", o.width);
  fade_from_rgb_cuda::Shape s;
  s.n = o.n;
  s.channels = o.channels;
  s.height = o.height;
  s.width = o.width;
  s.image_channels = o.image_channels;
  s.channels_last = o.channels_last;
  return s;
}

template <typename Device>
void check_from_rgb_devices(const at::Tensor& main, const char* main_name, const at::Tensor& images,
                            const at::Tensor& weight, const at::Tensor& bias) {
  Device::check(main, main_name, main);
  Device::check(images, "images", main);
  Device::check(weight, "weight", main);
  Device::check(bias, "bias", main);
}

template <typename Device>
at::Tensor fade_from_rgb_forward(const at::Tensor& images, const at::Tensor& new_, const at::Tensor& weight,
                                 const at::Tensor& bias, const at::Tensor& alpha, double scale, double bias_gain,
                                 double negative_slope) {
  check_from_rgb_devices<Device>(new_, "new", images, weight, bias);
  FadeFromRgbOperands o(new_, "new", images, weight, bias, alpha, scale, bias_gain, negative_slope);
  const FadeDevice<Device> device(o.main, "new", alpha);
  at::Tensor y = fade_empty(o.main.sizes(), o.main, o.channels_last);
  if (y.numel() > 0) {
    const fade_from_rgb_cuda::CommonParams common{o.images.const_data_ptr(), o.weight.const_data_ptr(),
                                                  o.bias.const_data_ptr(), from_rgb_shape(o),
                                                  {scale, bias_gain, negative_slope}, device.alpha(), device.dtype};
    device.launch(fade_from_rgb_cuda::ForwardParams{common, o.main.const_data_ptr(), y.mutable_data_ptr()});
  }
  return y;
}

template <typename Device>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fade_from_rgb_backward(
    const at::Tensor& grad_y, const at::Tensor& images, const at::Tensor& weight, const at::Tensor& bias,
    const at::Tensor& alpha, double scale, double bias_gain, double negative_slope) {
  check_from_rgb_devices<Device>(grad_y, "grad_y", images, weight, bias);
  FadeFromRgbOperands o(grad_y, "grad_y", images, weight, bias, alpha, scale, bias_gain, negative_slope);
  const FadeDevice<Device> device(o.main, "grad_y", alpha);
  at::Tensor grad_images = fade_empty(o.images.sizes(), o.main, o.channels_last);
  at::Tensor grad_new = fade_empty(o.main.sizes(), o.main, o.channels_last);
  if (o.main.numel() == 0) {
    grad_images.zero_();
    return {grad_images, grad_new, at::zeros_like(o.weight), at::zeros_like(o.bias)};
  }
  const fade_from_rgb_cuda::Shape shape = from_rgb_shape(o);
  const fade_from_rgb_cuda::CommonParams common{o.images.const_data_ptr(), o.weight.const_data_ptr(),
                                                o.bias.const_data_ptr(), shape, {scale, bias_gain, negative_slope},
                                                device.alpha(), device.dtype};
  const auto cfg = fade_from_rgb_cuda::channel_config(shape);
  at::Tensor partials = at::empty({cfg.chunks, o.channels, o.image_channels + 1},
                                  o.main.options().dtype(at::toOpMathType(o.main.scalar_type())));
  // One launch each for up to 4 image channels; group 0 also writes grad_new and the bias sums, so it runs even
  // without image channels.
  const int64_t groups = shape.groups() > 0 ? shape.groups() : 1;
  for (int64_t group = 0; group < groups; ++group) {
    device.launch(fade_from_rgb_cuda::PixelBackwardParams{common, o.main.const_data_ptr(), grad_new.mutable_data_ptr(),
                                                          grad_images.mutable_data_ptr(), group});
    device.launch(fade_from_rgb_cuda::ChannelBackwardParams{common, o.main.const_data_ptr(),
                                                            partials.mutable_data_ptr(), group});
  }
  // grad_weight = scale / 4 * sum of dz * pooled sums, grad_bias = bias_gain * sum of dz, over the chunks
  const at::Tensor sums = partials.sum(0);
  at::Tensor grad_weight = (sums.narrow(1, 0, o.image_channels) * (scale * 0.25)).to(o.weight.scalar_type());
  at::Tensor grad_bias = (sums.select(1, o.image_channels) * bias_gain).to(o.bias.scalar_type());
  return {grad_images, grad_new, grad_weight.reshape(o.weight.sizes()).contiguous(), grad_bias.contiguous()};
}

}  // namespace progan_fast::fade_host
