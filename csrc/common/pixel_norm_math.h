// Math shared by every pixel norm backward (pixel_norm's and scaled_bias_act's with pixel norm), host and device
// (no ATen: the .cu files include it).
#pragma once
#include <cstdint>

#include "ops/hd.h"

namespace progan_fast {

// Pixel norm's backward per pixel, y = a * r with r = rsqrt(mean_c(a^2) + eps): every kernel writes
// grad_a = grad_scale * grad_y - projection * (a or y), with grad_scale = r and the projection's coefficient
// (r^3 * mean_c(grad_y * a), or r * mean_c(grad_y * y) with y's norm restored) computed from the pixel's sums.
template <typename T>
struct PixelNormGradScalars {
  T grad_scale;
  T projection;
};

// Over one channel the projection is nearly all of grad_y: grad_a = r * grad_y * (1 - y^2), and 1 - y^2 = eps * r^2
// exactly, so the general form leaves eps * r^3 * grad_y as the difference of two terms ~ r * grad_y. Their rounding,
// a few ulp of r * |grad_y|, exceeds that wherever |a| >> sqrt(eps) (float32: errors of 1.5e-4 at |a| ~ 1e-2, where
// the exact value is ~1e-2 * grad_y). With one channel the kernels therefore write the exact form, grad_scale
// eps * r^3 (as r * (eps * r^2): eps * r^2 <= 1, so it cannot overflow where r^3 would) and no projection; the same
// inner loops then compute it. `projection` is the general coefficient, returned as it is for more channels.
template <typename T>
PF_HD PixelNormGradScalars<T> pixel_norm_grad_scalars(int64_t channels, T r, T projection, T eps) {
  if (channels == 1) return {r * (eps * r * r), T(0)};
  return {r, projection};
}

}  // namespace progan_fast
