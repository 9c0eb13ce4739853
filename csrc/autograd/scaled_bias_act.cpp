// Autograd for progan_fast::scaled_bias_act_{forward,backward}, registered in C++ so a call pays no Python
// autograd overhead: every conv and dense layer of G and D ends in this op, dozens of calls per training step,
// most of them on 4x4..16x16 maps where that overhead is a large share of the op. The Autograd key covers
// AutogradCPU and AutogradCUDA. Every other family registers the same autograd in Python
// (progan_fast/ops/scaled_bias_act.py, which documents what is saved and why); the formulas of the higher
// derivatives exist once, as the composite raw ops defined there, which both call.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "autograd/saved_params.h"
#include "common/scaled_bias_act_operands.h"

namespace progan_fast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::Variable;
using torch::autograd::variable_list;
using OptionalTensor = std::optional<at::Tensor>;
using TensorPair = std::tuple<at::Tensor, at::Tensor>;

OptionalTensor optional(const at::Tensor& t) { return t.defined() ? OptionalTensor(t) : std::nullopt; }

TensorPair call_forward(const at::Tensor& x, const OptionalTensor& bias, double scale, double slope, bool pixel_norm,
                        double eps) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("progan_fast::scaled_bias_act_forward", "")
                       .typed<TensorPair(const at::Tensor&, const OptionalTensor&, double, double, bool, double)>();
  return op.call(x, bias, scale, slope, pixel_norm, eps);
}

// Through the dispatcher, so the backward is itself differentiable (ScaledBiasActBackward below).
// The backward's non-tensor arguments (and the autograd's), as saved in a context.
struct Params {
  double scale, slope;
  bool pixel_norm;
  double eps;
  bool saved_is_input;

  auto fields() const { return std::make_tuple(scale, slope, pixel_norm, eps, saved_is_input); }
};

TensorPair call_backward(const at::Tensor& grad_y, const at::Tensor& saved, const at::Tensor& rsqrt,
                         const at::Tensor& bias, const Params& p, bool bias_grad) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("progan_fast::scaled_bias_act_backward", "")
                       .typed<TensorPair(const at::Tensor&, const OptionalTensor&, const OptionalTensor&,
                                         const OptionalTensor&, double, double, bool, double, bool, bool)>();
  return op.call(grad_y, optional(saved), optional(rsqrt), optional(bias), p.scale, p.slope, p.pixel_norm, p.eps,
                 p.saved_is_input, bias_grad);
}

TensorPair call_rsqrt_backward(const at::Tensor& grad_rsqrt, const at::Tensor& saved, const at::Tensor& rsqrt,
                               const at::Tensor& bias, const Params& p, bool bias_grad) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("progan_fast::scaled_bias_act_rsqrt_backward", "")
                       .typed<TensorPair(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const OptionalTensor&, double, double, bool, bool)>();
  return op.call(grad_rsqrt, saved, rsqrt, optional(bias), p.scale, p.slope, p.saved_is_input, bias_grad);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> call_double_backward(
    const at::Tensor& grad_grad_x, const at::Tensor& grad_grad_bias, const at::Tensor& grad_y, const at::Tensor& saved,
    const at::Tensor& rsqrt, const at::Tensor& bias, const Params& p) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("progan_fast::scaled_bias_act_double_backward", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
              const OptionalTensor&, const OptionalTensor&, const at::Tensor&, const OptionalTensor&,
              const OptionalTensor&, const OptionalTensor&, double, double, bool, double, bool)>();
  return op.call(optional(grad_grad_x), optional(grad_grad_bias), grad_y, optional(saved), optional(rsqrt),
                 optional(bias), p.scale, p.slope, p.pixel_norm, p.eps, p.saved_is_input);
}

at::Tensor sum_defined(const at::Tensor& a, const at::Tensor& b) {
  if (!a.defined()) return b;
  if (!b.defined()) return a;
  return a + b;
}

class ScaledBiasActBackward : public torch::autograd::Function<ScaledBiasActBackward> {
 public:
  static variable_list forward(AutogradContext* ctx, const Variable& grad_y, const OptionalTensor& saved,
                               const OptionalTensor& rsqrt, const OptionalTensor& bias, double scale, double slope,
                               bool pixel_norm, double eps, bool saved_is_input, bool bias_grad) {
    ctx->set_materialize_grads(false);
    const Params p{scale, slope, pixel_norm, eps, saved_is_input};
    save_params(ctx, p);
    ctx->save_for_backward({grad_y, saved.value_or(Variable()), rsqrt.value_or(Variable()), bias.value_or(Variable())});
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [grad_x, grad_bias] = call_backward(grad_y, saved.value_or(Variable()), rsqrt.value_or(Variable()),
                                             bias.value_or(Variable()), p, bias_grad);
    return {grad_x, grad_bias};
  }

  // Only pixel norm makes the backward depend on anything but grad_y (it is piecewise linear otherwise).
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(10);
    // grad_bias is empty when the backward ran without a bias gradient
    if (!grads[0].defined() && (!grads[1].defined() || grads[1].numel() == 0)) return out;
    const auto saved = ctx->get_saved_variables();
    const Params p = load_params<Params>(ctx);
    auto [g_grad_y, g_saved, g_rsqrt, g_bias] =
        call_double_backward(grads[0], grads[1], saved[0], saved[1], saved[2], saved[3], p);
    out[0] = g_grad_y;
    if (p.pixel_norm) {
      out[1] = g_saved;
      out[2] = g_rsqrt;
      if (ctx->saved_data["has_bias"].toBool() && p.saved_is_input) out[3] = g_bias;
    }
    return out;
  }
};

class ScaledBiasActForward : public torch::autograd::Function<ScaledBiasActForward> {
 public:
  static variable_list forward(AutogradContext* ctx, const Variable& x, const OptionalTensor& bias, double scale,
                               double slope, bool pixel_norm, double eps) {
    at::Tensor y, rsqrt;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      std::tie(y, rsqrt) = call_forward(x, bias, scale, slope, pixel_norm, eps);
    }
    // An unused rsqrt gradient stays undefined instead of a tensor of zeros (it is only used by higher derivatives).
    ctx->set_materialize_grads(false);
    const bool input = scaled_bias_act_saves_input(slope);
    save_params(ctx, Params{scale, slope, pixel_norm, eps, input});
    const bool has_bias = bias.has_value() && bias->defined();
    ctx->saved_data["has_bias"] = has_bias;
    // The rule of progan_fast/ops/scaled_bias_act.py: y for slope >= 0, x (and bias) for slope < 0, nothing for a
    // linear activation without pixel norm; rsqrt with pixel norm.
    Variable saved;
    if (scaled_bias_act_reads_saved(slope, pixel_norm)) saved = input ? x : y;
    ctx->save_for_backward({saved, pixel_norm ? rsqrt : Variable(), input && has_bias ? *bias : Variable()});
    if (!pixel_norm) ctx->mark_non_differentiable({rsqrt});
    return {y, rsqrt};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Params p = load_params<Params>(ctx);
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const bool bias_grad = has_bias && ctx->needs_input_grad(1);
    at::Tensor grad_x, grad_bias;
    if (grads[0].defined())
      std::tie(grad_x, grad_bias) = call_backward(grads[0], saved[0], saved[1], saved[2], p, bias_grad);
    if (grads[1].defined() && p.pixel_norm) {  // only in higher derivatives, through the double backward
      auto [gx, gb] = call_rsqrt_backward(grads[1], saved[0], saved[1], saved[2], p, bias_grad);
      grad_x = sum_defined(grad_x, gx);
      grad_bias = sum_defined(grad_bias, gb);
    }
    return {grad_x, bias_grad ? grad_bias : Variable(), Variable(), Variable(), Variable(), Variable()};
  }
};

TensorPair forward_autograd(const at::Tensor& x, const OptionalTensor& bias, double scale, double slope,
                            bool pixel_norm, double eps) {
  auto outputs = ScaledBiasActForward::apply(x, bias, scale, slope, pixel_norm, eps);
  return {outputs[0], outputs[1]};
}

TensorPair backward_autograd(const at::Tensor& grad_y, const OptionalTensor& saved, const OptionalTensor& rsqrt,
                             const OptionalTensor& bias, double scale, double slope, bool pixel_norm, double eps,
                             bool saved_is_input, bool bias_grad) {
  auto outputs = ScaledBiasActBackward::apply(grad_y, saved, rsqrt, bias, scale, slope, pixel_norm, eps,
                                              saved_is_input, bias_grad);
  return {outputs[0], outputs[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_fast, Autograd, m) {
  m.impl("scaled_bias_act_forward", &forward_autograd);
  m.impl("scaled_bias_act_backward", &backward_autograd);
}

}  // namespace progan_fast
