// Autograd for progan_fast::pixel_norm_{forward,backward}, registered in C++ so a call pays no Python
// autograd overhead (it was ~0.1 ms of a ~0.3 ms forward+backward at in-cache shapes). The Autograd key covers
// AutogradCPU and AutogradCUDA. Every other family registers the same autograd in Python
// (progan_fast/ops/pixel_norm.py); the double backward's formula exists once, as the composite raw op
// pixel_norm_double_backward defined there, which both call.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>

#include "autograd/saved_params.h"

namespace progan_fast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::Variable;
using torch::autograd::variable_list;

struct Params {
  int64_t dim;
  double eps;

  auto fields() const { return std::make_tuple(dim, eps); }
};

std::tuple<at::Tensor, at::Tensor> call_forward(const at::Tensor& x, int64_t dim, double eps) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("progan_fast::pixel_norm_forward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t, double)>();
  return op.call(x, dim, eps);
}

// Through the dispatcher, so the backward is itself differentiable (PixelNormBackward below).
std::tuple<at::Tensor, at::Tensor> call_double_backward(const at::Tensor& g, const at::Tensor& grad_y,
                                                        const at::Tensor& x, const at::Tensor& rsqrt, int64_t dim,
                                                        double eps) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("progan_fast::pixel_norm_double_backward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                 const at::Tensor&, const at::Tensor&, int64_t,
                                                                 double)>();
  return op.call(g, grad_y, x, rsqrt, dim, eps);
}

at::Tensor call_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& rsqrt, int64_t dim,
                         double eps) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("progan_fast::pixel_norm_backward", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, double)>();
  return op.call(grad_y, x, rsqrt, dim, eps);
}

class PixelNormBackward : public torch::autograd::Function<PixelNormBackward> {
 public:
  static variable_list forward(AutogradContext* ctx, const Variable& grad_y, const Variable& x,
                               const Variable& rsqrt, int64_t dim, double eps) {
    save_params(ctx, Params{dim, eps});
    ctx->save_for_backward({grad_y, x, rsqrt});
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return {call_backward(grad_y, x, rsqrt, dim, eps)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto p = load_params<Params>(ctx);
    auto [grad_grad_y, grad_x] = call_double_backward(grads[0], saved[0], saved[1], saved[2], p.dim, p.eps);
    return {grad_grad_y, grad_x, Variable(), Variable(), Variable()};
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
    save_params(ctx, Params{dim, eps});
    ctx->save_for_backward({x, rsqrt});
    ctx->mark_non_differentiable({rsqrt});
    return {y, rsqrt};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto p = load_params<Params>(ctx);
    return {call_backward(grads[0], saved[0], saved[1], p.dim, p.eps), Variable(), Variable()};
  }
};

std::tuple<at::Tensor, at::Tensor> pixel_norm_forward_autograd(const at::Tensor& x, int64_t dim, double eps) {
  auto outputs = PixelNormForward::apply(x, dim, eps);
  return {outputs[0], outputs[1]};
}

at::Tensor pixel_norm_backward_autograd(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& rsqrt,
                                        int64_t dim, double eps) {
  return PixelNormBackward::apply(grad_y, x, rsqrt, dim, eps)[0];
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_fast, Autograd, m) {
  m.impl("pixel_norm_forward", &pixel_norm_forward_autograd);
  m.impl("pixel_norm_backward", &pixel_norm_backward_autograd);
}

}  // namespace progan_fast
