// Shared by the fade-in CPU kernels (csrc/cpu/blend.cpp, csrc/cpu/fade_from_rgb.cpp): the storage-type dispatch,
// the lerp they all end in, and rows of any storage type seen in the math type (float, double for double): float
// and double rows are used in place, half-precision rows are widened into scratch and narrowed back (isa.h).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cpu/isa.h"

namespace progan_fast {
namespace fade_cpu {

#define FADE_INLINE static inline __attribute__((always_inline))

// Calls f(type tag) for the storage type of t; `what` names t in the error for other types.
template <typename F>
void dispatch_float_types(const at::Tensor& t, const char* what, F&& f) {
  switch (t.scalar_type()) {
    case at::kFloat: return f(float{});
    case at::kDouble: return f(double{});
    case at::kHalf: return f(at::Half{});
    case at::kBFloat16: return f(at::BFloat16{});
    default: TORCH_CHECK_TYPE(false, what, " must be float16, bfloat16, float32 or float64; got ", t.scalar_type());
  }
}

// torch.lerp's formula (ATen's vectorized lerp): exact at both ends, alpha = 0 gives `a` and alpha = 1 gives `b`.
// Callers hoist the branch on alpha out of their loops by passing small = (alpha < 0.5).
template <typename A>
FADE_INLINE A lerp(A a, A b, A alpha, bool small) {
  return small ? std::fma(alpha, b - a, a) : std::fma(alpha - A(1), b - a, b);
}

template <typename T> using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// A row of T in the math type: the row itself for float/double, else widened into `scratch`.
template <typename T>
const acc_t<T>* load_row(const T* src, int64_t n, std::vector<float>& scratch) {
  if constexpr (std::is_same_v<T, acc_t<T>>) {
    (void)n;
    (void)scratch;
    return src;
  } else {
    if (static_cast<int64_t>(scratch.size()) < n) scratch.resize(n);
    isa::to_float(src, scratch.data(), n);
    return scratch.data();
  }
}

// Where to compute an output row: the row itself for float/double, else `scratch` (then store_row).
template <typename T>
acc_t<T>* out_row(T* dst, int64_t n, std::vector<float>& scratch) {
  if constexpr (std::is_same_v<T, acc_t<T>>) {
    (void)n;
    (void)scratch;
    return dst;
  } else {
    if (static_cast<int64_t>(scratch.size()) < n) scratch.resize(n);
    return scratch.data();
  }
}

template <typename T>
void store_row(T* dst, const acc_t<T>* src, int64_t n) {
  if constexpr (!std::is_same_v<T, acc_t<T>>) isa::from_float(src, dst, n);
}

}  // namespace fade_cpu
}  // namespace progan_fast
