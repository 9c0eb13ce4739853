// Argument checks every kernel family makes before anything else (before an empty tensor's early return, so an
// empty int tensor is refused like a full one): each message names the argument. The Python side of the same
// rules: progan_fast/_library.py (`_checked`: every raw op's tensors and floats) and the ops' `check`s.
#pragma once
#include <ATen/ATen.h>

#include <cmath>

namespace progan_fast {

inline bool is_kernel_float(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble;
}

inline void check_float_tensor(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(is_kernel_float(t.scalar_type()), name, " must be float16, bfloat16, float32 or float64; got ",
                   t.scalar_type());
}

inline void check_finite(double value, const char* name) {
  TORCH_CHECK_VALUE(std::isfinite(value), name, " must be finite; got ", value);
}

// `dim` of a reduction over x: in [-x.dim(), x.dim() - 1] (x has at least one dimension).
inline int64_t checked_dim(const at::Tensor& x, int64_t dim) {
  TORCH_CHECK_INDEX(x.dim() >= 1 && dim >= -x.dim() && dim < x.dim(), "dim must be in [", -x.dim(), ", ",
                    x.dim() - 1, "] for x of shape ", x.sizes(), "; got ", dim);
  return dim < 0 ? dim + x.dim() : dim;
}

// A saved per-vector statistic (rsqrt) is kept in the math dtype of `like`: float32, float64 for float64.
inline void check_stat_dtype(const at::Tensor& t, const char* name, const at::Tensor& like) {
  const at::ScalarType expected = like.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK_TYPE(t.scalar_type() == expected, name, " must be ", expected, " (the math dtype of ",
                   like.scalar_type(), "); got ", t.scalar_type());
}

}  // namespace progan_fast
