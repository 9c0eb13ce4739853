// Autograd for progan_fast::pixel_norm_{forward,backward}, registered in C++ so a call pays no Python
// autograd overhead (it was ~0.1 ms of a ~0.3 ms forward+backward at in-cache shapes). The Autograd key covers
// AutogradCPU and AutogradCUDA. Fake tensors stay registered in Python (progan_fast/ops/pixel_norm.py).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>

namespace progan_fast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::Variable;
using torch::autograd::variable_list;

std::tuple<at::Tensor, at::Tensor> call_forward(const at::Tensor& x, int64_t dim, double eps) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("progan_fast::pixel_norm_forward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t, double)>();
  return op.call(x, dim, eps);
}

// Through the dispatcher, so the backward is itself differentiable (PixelNormBackward below).
at::Tensor call_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& rsqrt, int64_t dim) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("progan_fast::pixel_norm_backward", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t)>();
  return op.call(grad_y, x, rsqrt, dim);
}

class PixelNormBackward : public torch::autograd::Function<PixelNormBackward> {
 public:
  static variable_list forward(AutogradContext* ctx, const Variable& grad_y, const Variable& x,
                               const Variable& rsqrt, int64_t dim) {
    ctx->saved_data["dim"] = dim;
    ctx->save_for_backward({grad_y, x, rsqrt});
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return {call_backward(grad_y, x, rsqrt, dim)};
  }

  // Gradients of <g, dx> with dx = r*dy - x*r^3*mean(dy*x), r = rsqrt(mean(x^2)+eps) depending on x (so the
  // double backward is exact without saving anything but the inputs); rsqrt gets no gradient.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const int64_t dim = ctx->saved_data["dim"].toInt();
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& r = saved[2];
    const auto out_dtype = saved[1].scalar_type();
    const at::Tensor dy = saved[0].to(r.scalar_type());
    const at::Tensor x = saved[1].to(r.scalar_type());
    const at::Tensor g = grads[0].to(r.scalar_type());
    const at::Tensor a = at::mean(g * x, {dim}, /*keepdim=*/true);
    const at::Tensor b = at::mean(g * dy, {dim}, /*keepdim=*/true);
    const at::Tensor m = at::mean(dy * x, {dim}, /*keepdim=*/true);
    const at::Tensor r3 = r * r * r;
    const at::Tensor grad_dy = r * g - r3 * a * x;
    const at::Tensor grad_x = (3 * r3 * r * r * m * a - r3 * b) * x - r3 * a * dy - r3 * m * g;
    return {grad_dy.to(out_dtype), grad_x.to(out_dtype), Variable(), Variable()};
  }
};

class PixelNormForward : public torch::autograd::Function<PixelNormForward> {
 public:
  static variable_list forward(AutogradContext* ctx, const Variable& x, int64_t dim, double eps) {
    at::Tensor y, rsqrt;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      std::tie(y, rsqrt) = call_forward(x, dim, eps);
    }
    ctx->saved_data["dim"] = dim;
    ctx->save_for_backward({x, rsqrt});
    ctx->mark_non_differentiable({rsqrt});
    return {y, rsqrt};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    return {call_backward(grads[0], saved[0], saved[1], ctx->saved_data["dim"].toInt()), Variable(), Variable()};
  }
};

std::tuple<at::Tensor, at::Tensor> pixel_norm_forward_autograd(const at::Tensor& x, int64_t dim, double eps) {
  auto outputs = PixelNormForward::apply(x, dim, eps);
  return {outputs[0], outputs[1]};
}

at::Tensor pixel_norm_backward_autograd(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& rsqrt,
                                        int64_t dim) {
  return PixelNormBackward::apply(grad_y, x, rsqrt, dim)[0];
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_fast, Autograd, m) {
  m.impl("pixel_norm_forward", &pixel_norm_forward_autograd);
  m.impl("pixel_norm_backward", &pixel_norm_backward_autograd);
}

}  // namespace progan_fast
