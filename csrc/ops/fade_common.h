// What the fade-in kernels (upsample_blend, fade_reals, fade_from_rgb) share on the device: how they read alpha
// and the lerp they end in. ATen-free (csrc/ops/hd.h), compiled by nvcc and by g++ for the emulated family.
#pragma once
#include "ops/hd.h"

namespace progan_fast::fade_cuda {

// alpha as a kernel reads it: from a 0-dim tensor in the op-math dtype on the kernel's device (so a scheduled
// alpha is read at run time: CUDA graphs and compiled graphs keep it an input), or, for a CPU alpha with device
// tensors, the value itself.
struct Alpha {
  const void* ptr = nullptr;
  double value = 0;

  template <typename acc_t>
  PF_HD acc_t load() const {
    return ptr != nullptr ? hd::load_ro(static_cast<const acc_t*>(ptr)) : static_cast<acc_t>(value);
  }
};

// torch.lerp's formula, exact at both ends (alpha = 0 gives a, alpha = 1 gives b), each branch one FMA as the CPU
// kernels' (csrc/cpu/blend.cpp): alpha - 1 is -(1 - alpha) exactly.
template <typename acc_t>
PF_HD acc_t lerp(acc_t a, acc_t b, acc_t alpha) {
  return alpha < acc_t(0.5) ? hd::mul_add(alpha, b - a, a) : hd::mul_add(alpha - acc_t(1), b - a, b);
}

}  // namespace progan_fast::fade_cuda
