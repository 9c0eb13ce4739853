// Autograd for the fade-in raw ops of the cpu/cuda family (progan_fast::upsample_blend_*, fade_reals_forward,
// fade_from_rgb_*), registered in C++ so a call pays no Python autograd overhead: these ops run on small RGB
// tensors (4x4 .. 32x32 images early in training), where that overhead would exceed the kernels' time. Every
// other family registers the same autograd in Python (progan_fast/ops/{blend,fade_from_rgb}.py); the one formula
// that is not a kernel, fade_from_rgb's double backward, is the composite raw op defined there, called by both.
//
// alpha is a constant to these kernels: a differentiable alpha is refused here (the public ops run the reference
// for one), rather than silently getting no gradient.
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

using Tensor4 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

void check_constant_alpha(const at::Tensor& alpha) {
  TORCH_CHECK(!alpha.requires_grad(),
              "alpha must not require grad in the fused blend kernels (they treat it as a constant); the public ops "
              "run the reference for a differentiable alpha");
}

// The raw ops through the dispatcher, so that what a backward calls is itself differentiable.
at::Tensor call_upsample_forward(const at::Tensor& low, const at::Tensor& high, const at::Tensor& alpha,
                                 int64_t factor) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("progan_fast::upsample_blend_forward", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t)>();
  return op.call(low, high, alpha, factor);
}

std::tuple<at::Tensor, at::Tensor> call_upsample_backward(const at::Tensor& grad_y, const at::Tensor& alpha,
                                                          int64_t factor) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("progan_fast::upsample_blend_backward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, int64_t)>();
  return op.call(grad_y, alpha, factor);
}

at::Tensor call_fade_reals(const at::Tensor& x, const at::Tensor& alpha) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("progan_fast::fade_reals_forward", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  return op.call(x, alpha);
}

at::Tensor call_from_rgb_forward(const at::Tensor& images, const at::Tensor& new_, const at::Tensor& weight,
                                 const at::Tensor& bias, const at::Tensor& alpha, double scale, double bias_gain,
                                 double slope) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("progan_fast::fade_from_rgb_forward", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&, double, double, double)>();
  return op.call(images, new_, weight, bias, alpha, scale, bias_gain, slope);
}

Tensor4 call_from_rgb_backward(const at::Tensor& grad_y, const at::Tensor& images, const at::Tensor& weight,
                               const at::Tensor& bias, const at::Tensor& alpha, double scale, double bias_gain,
                               double slope) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("progan_fast::fade_from_rgb_backward", "")
                       .typed<Tensor4(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                      const at::Tensor&, double, double, double)>();
  return op.call(grad_y, images, weight, bias, alpha, scale, bias_gain, slope);
}

using Optional = std::optional<at::Tensor>;

Tensor4 call_from_rgb_double_backward(const Optional& gg_images, const Optional& gg_new, const Optional& gg_weight,
                                      const Optional& gg_bias, const at::Tensor& grad_y, const at::Tensor& images,
                                      const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& alpha,
                                      double scale, double bias_gain, double slope) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("progan_fast::fade_from_rgb_double_backward", "")
          .typed<Tensor4(const Optional&, const Optional&, const Optional&, const Optional&, const at::Tensor&,
                         const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double,
                         double)>();
  return op.call(gg_images, gg_new, gg_weight, gg_bias, grad_y, images, weight, bias, alpha, scale, bias_gain, slope);
}

Optional defined_or_none(const at::Tensor& t) { return t.defined() ? Optional(t) : std::nullopt; }

// ---- upsample_blend: y = lerp(up(low), high, alpha); its backward is linear with the forward as adjoint ----

class UpsampleBlendBackward : public torch::autograd::Function<UpsampleBlendBackward> {
 public:
  static variable_list forward(AutogradContext* ctx, const Variable& grad_y, const Variable& alpha, int64_t factor) {
    check_constant_alpha(alpha);
    ctx->saved_data["factor"] = factor;
    ctx->save_for_backward({alpha});
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [grad_low, grad_high] = call_upsample_backward(grad_y, alpha, factor);
    ctx->saved_data["low_sizes"] = grad_low.sizes().vec();
    ctx->saved_data["high_sizes"] = grad_high.sizes().vec();
    return {grad_low, grad_high};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor alpha = ctx->get_saved_variables()[0];
    at::Tensor gg_low = grads[0], gg_high = grads[1];
    if (!gg_low.defined()) gg_low = at::zeros(ctx->saved_data["low_sizes"].toIntVector(), gg_high.options());
    if (!gg_high.defined()) gg_high = at::zeros(ctx->saved_data["high_sizes"].toIntVector(), gg_low.options());
    return {call_upsample_forward(gg_low, gg_high, alpha, ctx->saved_data["factor"].toInt()), Variable(), Variable()};
  }
};

class UpsampleBlendForward : public torch::autograd::Function<UpsampleBlendForward> {
 public:
  static variable_list forward(AutogradContext* ctx, const Variable& low, const Variable& high, const Variable& alpha,
                               int64_t factor) {
    check_constant_alpha(alpha);
    ctx->saved_data["factor"] = factor;
    ctx->save_for_backward({alpha});
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return {call_upsample_forward(low, high, alpha, factor)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor alpha = ctx->get_saved_variables()[0];
    auto outputs = UpsampleBlendBackward::apply(grads[0], alpha, ctx->saved_data["factor"].toInt());
    return {outputs[0], outputs[1], Variable(), Variable()};
  }
};

// ---- fade_reals: a symmetric operator, its own backward ----

class FadeReals : public torch::autograd::Function<FadeReals> {
 public:
  static variable_list forward(AutogradContext* ctx, const Variable& x, const Variable& alpha) {
    check_constant_alpha(alpha);
    ctx->save_for_backward({alpha});
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return {call_fade_reals(x, alpha)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {FadeReals::apply(grads[0], ctx->get_saved_variables()[0])[0], Variable()};
  }
};

// ---- fade_from_rgb ----

struct FromRgbParams {
  double scale, bias_gain, slope;

  auto fields() const { return std::make_tuple(scale, bias_gain, slope); }
};

class FadeFromRgbBackward : public torch::autograd::Function<FadeFromRgbBackward> {
 public:
  static variable_list forward(AutogradContext* ctx, const Variable& grad_y, const Variable& images,
                               const Variable& weight, const Variable& bias, const Variable& alpha, double scale,
                               double bias_gain, double slope) {
    check_constant_alpha(alpha);
    save_params(ctx, FromRgbParams{scale, bias_gain, slope});
    ctx->save_for_backward({grad_y, images, weight, bias, alpha});
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [gi, gn, gw, gb] = call_from_rgb_backward(grad_y, images, weight, bias, alpha, scale, bias_gain, slope);
    return {gi, gn, gw, gb};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto p = load_params<FromRgbParams>(ctx);
    auto [grad_grad_y, grad_images, grad_weight, grad_bias] = call_from_rgb_double_backward(
        defined_or_none(grads[0]), defined_or_none(grads[1]), defined_or_none(grads[2]), defined_or_none(grads[3]),
        s[0], s[1], s[2], s[3], s[4], p.scale, p.bias_gain, p.slope);
    return {grad_grad_y, grad_images, grad_weight, grad_bias, Variable(), Variable(), Variable(), Variable()};
  }
};

class FadeFromRgbForward : public torch::autograd::Function<FadeFromRgbForward> {
 public:
  static variable_list forward(AutogradContext* ctx, const Variable& images, const Variable& new_,
                               const Variable& weight, const Variable& bias, const Variable& alpha, double scale,
                               double bias_gain, double slope) {
    check_constant_alpha(alpha);
    save_params(ctx, FromRgbParams{scale, bias_gain, slope});
    ctx->save_for_backward({images, weight, bias, alpha});
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return {call_from_rgb_forward(images, new_, weight, bias, alpha, scale, bias_gain, slope)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto p = load_params<FromRgbParams>(ctx);
    auto outputs = FadeFromRgbBackward::apply(grads[0], s[0], s[1], s[2], s[3], p.scale, p.bias_gain, p.slope);
    return {outputs[0], outputs[1], outputs[2], outputs[3], Variable(), Variable(), Variable(), Variable()};
  }
};

at::Tensor upsample_blend_forward_autograd(const at::Tensor& low, const at::Tensor& high, const at::Tensor& alpha,
                                           int64_t factor) {
  return UpsampleBlendForward::apply(low, high, alpha, factor)[0];
}

std::tuple<at::Tensor, at::Tensor> upsample_blend_backward_autograd(const at::Tensor& grad_y, const at::Tensor& alpha,
                                                                    int64_t factor) {
  auto outputs = UpsampleBlendBackward::apply(grad_y, alpha, factor);
  return {outputs[0], outputs[1]};
}

at::Tensor fade_reals_forward_autograd(const at::Tensor& x, const at::Tensor& alpha) {
  return FadeReals::apply(x, alpha)[0];
}

at::Tensor fade_from_rgb_forward_autograd(const at::Tensor& images, const at::Tensor& new_, const at::Tensor& weight,
                                          const at::Tensor& bias, const at::Tensor& alpha, double scale,
                                          double bias_gain, double slope) {
  return FadeFromRgbForward::apply(images, new_, weight, bias, alpha, scale, bias_gain, slope)[0];
}

Tensor4 fade_from_rgb_backward_autograd(const at::Tensor& grad_y, const at::Tensor& images, const at::Tensor& weight,
                                        const at::Tensor& bias, const at::Tensor& alpha, double scale,
                                        double bias_gain, double slope) {
  auto o = FadeFromRgbBackward::apply(grad_y, images, weight, bias, alpha, scale, bias_gain, slope);
  return {o[0], o[1], o[2], o[3]};
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_fast, Autograd, m) {
  m.impl("upsample_blend_forward", &upsample_blend_forward_autograd);
  m.impl("upsample_blend_backward", &upsample_blend_backward_autograd);
  m.impl("fade_reals_forward", &fade_reals_forward_autograd);
  m.impl("fade_from_rgb_forward", &fade_from_rgb_forward_autograd);
  m.impl("fade_from_rgb_backward", &fade_from_rgb_backward_autograd);
}

}  // namespace progan_fast
