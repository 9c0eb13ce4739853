// Autograd for progan_fast::minibatch_stddev_{forward,backward}, registered in C++ so a call pays no Python
// autograd overhead (D calls it at 4x4, where the kernels take tens of microseconds). The Autograd key covers
// AutogradCPU and AutogradCUDA. Every other family registers the same autograd in Python
// (progan_fast/ops/minibatch_stddev.py); the double backward's formula exists once, as the composite raw op
// minibatch_stddev_double_backward defined there, which both call. Saved: x (and grad_y for the double backward).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>
#include <tuple>

#include "autograd/saved_params.h"

namespace progan_fast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::Variable;
using torch::autograd::variable_list;

// The op's arguments after the tensors, as the schema lists them.
struct Params {
  int64_t group_size;
  std::string grouping;
  bool unbiased;
  double eps;
  int64_t features;

  auto fields() const { return std::make_tuple(group_size, grouping, unbiased, eps, features); }
};

// Everything after the tensors gets no gradient.
constexpr int kParams = 5;

at::Tensor call_forward(const at::Tensor& x, const Params& p) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("progan_fast::minibatch_stddev_forward", "")
                       .typed<at::Tensor(const at::Tensor&, int64_t, c10::string_view, bool, double, int64_t)>();
  return op.call(x, p.group_size, p.grouping, p.unbiased, p.eps, p.features);
}

at::Tensor call_backward(const at::Tensor& grad_y, const at::Tensor& x, const Params& p) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("progan_fast::minibatch_stddev_backward", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, c10::string_view, bool, double, int64_t)>();
  return op.call(grad_y, x, p.group_size, p.grouping, p.unbiased, p.eps, p.features);
}

// Through the dispatcher, so the double backward is itself differentiable (composite torch ops).
std::tuple<at::Tensor, at::Tensor> call_double_backward(const at::Tensor& g, const at::Tensor& grad_y,
                                                        const at::Tensor& x, const Params& p) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("progan_fast::minibatch_stddev_double_backward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                 const at::Tensor&, int64_t, c10::string_view, bool,
                                                                 double, int64_t)>();
  return op.call(g, grad_y, x, p.group_size, p.grouping, p.unbiased, p.eps, p.features);
}

variable_list with_no_param_grads(variable_list grads) {
  for (int i = 0; i < kParams; ++i) grads.emplace_back();
  return grads;
}

class MinibatchStddevBackward : public torch::autograd::Function<MinibatchStddevBackward> {
 public:
  static Variable forward(AutogradContext* ctx, const Variable& grad_y, const Variable& x, int64_t group_size,
                          c10::string_view grouping, bool unbiased, double eps, int64_t features) {
    const Params p{group_size, std::string(grouping), unbiased, eps, features};
    save_params(ctx, p);
    ctx->save_for_backward({grad_y, x});
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call_backward(grad_y, x, p);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto [grad_grad_y, grad_x] = call_double_backward(grads[0], saved[0], saved[1], load_params<Params>(ctx));
    return with_no_param_grads({grad_grad_y, grad_x});
  }
};

class MinibatchStddevForward : public torch::autograd::Function<MinibatchStddevForward> {
 public:
  static Variable forward(AutogradContext* ctx, const Variable& x, int64_t group_size, c10::string_view grouping,
                          bool unbiased, double eps, int64_t features) {
    const Params p{group_size, std::string(grouping), unbiased, eps, features};
    at::Tensor y;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      y = call_forward(x, p);
    }
    save_params(ctx, p);
    ctx->save_for_backward({x});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    return with_no_param_grads({call_backward(grads[0], saved[0], load_params<Params>(ctx))});
  }
};

at::Tensor minibatch_stddev_forward_autograd(const at::Tensor& x, int64_t group_size, c10::string_view grouping,
                                             bool unbiased, double eps, int64_t features) {
  return MinibatchStddevForward::apply(x, group_size, grouping, unbiased, eps, features);
}

at::Tensor minibatch_stddev_backward_autograd(const at::Tensor& grad_y, const at::Tensor& x, int64_t group_size,
                                              c10::string_view grouping, bool unbiased, double eps,
                                              int64_t features) {
  return MinibatchStddevBackward::apply(grad_y, x, group_size, grouping, unbiased, eps, features);
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_fast, Autograd, m) {
  m.impl("minibatch_stddev_forward", &minibatch_stddev_forward_autograd);
  m.impl("minibatch_stddev_backward", &minibatch_stddev_backward_autograd);
}

}  // namespace progan_fast
