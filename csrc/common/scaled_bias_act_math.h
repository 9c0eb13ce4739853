// Math shared by every scaled_bias_act kernel, host and device (no ATen: the .cu files include it).
#pragma once
#include "common/pixel_norm_math.h"  // pixel_norm_grad_scalars: the backward over one channel
#include "ops/hd.h"

namespace progan_fast {

// Pixel norm's backward rescales the saved y to its exact norm, mean_c(y^2) = 1 - eps * r^2, before projecting
// grad_y off it (progan_fast/ops/scaled_bias_act.py says why): the factor on mean_c(grad_y * y), given
// mean_c(y^2). 1 where y is all zero.
template <typename T>
PF_HD T scaled_bias_act_norm_fix(T mean_sq, T r, T eps) {
  return mean_sq > T(0) ? (T(1) - eps * r * r) / mean_sq : T(1);
}

}  // namespace progan_fast
