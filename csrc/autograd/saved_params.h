// An op's non-tensor arguments, carried in an autograd context from forward to backward. Each op's autograd
// declares them once, as an aggregate whose fields() lists its members in order; they travel as one tuple under
// one key, so no op writes a key per argument, nor reads them back one by one.
#pragma once

#include <torch/autograd.h>

#include <tuple>
#include <utility>

namespace progan_fast {

inline constexpr const char* kSavedParamsKey = "params";

template <typename Params>
void save_params(torch::autograd::AutogradContext* ctx, const Params& params) {
  ctx->saved_data[kSavedParamsKey] = c10::IValue(params.fields());
}

template <typename Params>
Params load_params(torch::autograd::AutogradContext* ctx) {
  using Fields = decltype(std::declval<const Params&>().fields());
  return std::make_from_tuple<Params>(ctx->saved_data[kSavedParamsKey].to<Fields>());
}

}  // namespace progan_fast
