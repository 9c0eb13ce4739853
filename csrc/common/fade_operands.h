// The operands of the fade-in kernels (upsample_blend, fade_reals, fade_from_rgb) for every family that runs C++
// host code (CPU, CUDA, and the CPU emulation of the CUDA kernels): checked once, dense in the layout the
// kernels read, outputs allocated. The Python checks in progan_fast/ops/{blend,fade_from_rgb}.py refuse the
// same things with the same messages.
//
// Layout: the big tensor of each op (high, x, new, grad_y) decides. Channels_last (and not also contiguous) is
// used as it is, anything else is made contiguous; the other operands are laid out the same way (copied if
// they are not) and the outputs are allocated in that format.
#pragma once
#include <ATen/ATen.h>

#include <cmath>

#include "common/checks.h"
#include "common/reduction_layout.h"

namespace progan_fast {

inline bool fade_channels_last(const at::Tensor& x) { return ReductionLayout::is_channels_last_only(x); }

inline at::MemoryFormat fade_format(bool channels_last) {
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

inline at::Tensor fade_empty(at::IntArrayRef sizes, const at::Tensor& like, bool channels_last) {
  return at::empty(sizes, like.options().memory_format(fade_format(channels_last)));
}

inline void check_fade_4d(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 4, name, " must be 4-D (N x C x H x W); got shape ", t.sizes());
}

inline void check_fade_same(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name) {
  TORCH_CHECK(t.device() == ref.device(), name, " must be on ", ref.device(), " like ", ref_name, "; got ",
              t.device());
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), name, " must have ", ref_name, "'s dtype ",
                   ref.scalar_type(), "; got ", t.scalar_type());
}

// alpha: a 0-dim floating tensor on the CPU or on the blended tensors' device.
inline void check_fade_alpha(const at::Tensor& alpha, const at::Tensor& like) {
  TORCH_CHECK(alpha.dim() == 0 && at::isFloatingType(alpha.scalar_type()),
              "alpha must be a 0-dim floating tensor; got shape ", alpha.sizes(), " and ", alpha.scalar_type());
  TORCH_CHECK(alpha.device().is_cpu() || alpha.device() == like.device(), "alpha must be on the CPU or on ",
              like.device(), "; got ", alpha.device());
}

inline void check_fade_factor(int64_t factor) {
  TORCH_CHECK(factor >= 1 && (factor & (factor - 1)) == 0, "factor must be a power of two; got ", factor);
}

// The value of a CPU alpha, read without a dispatcher call, and checked: finite and in [0, 1].
inline double fade_alpha_value(const at::Tensor& alpha) {
  TORCH_CHECK(alpha.device().is_cpu(), "alpha must be a CPU tensor here; got one on ", alpha.device());
  double v = 0;
  switch (alpha.scalar_type()) {
    case at::kFloat: v = *alpha.const_data_ptr<float>(); break;
    case at::kDouble: v = *alpha.const_data_ptr<double>(); break;
    case at::kHalf: v = static_cast<float>(*alpha.const_data_ptr<at::Half>()); break;
    case at::kBFloat16: v = static_cast<float>(*alpha.const_data_ptr<at::BFloat16>()); break;
    default: TORCH_CHECK_TYPE(false, "alpha must be a floating tensor; got ", alpha.scalar_type());
  }
  TORCH_CHECK_VALUE(std::isfinite(v) && v >= 0.0 && v <= 1.0, "alpha must be finite and in [0, 1]; got ", v);
  return v;
}

// What every fade kernel sees of a 4-D tensor: `planes` planes of height x width pixels of `vec` contiguous
// values each (NCHW: planes = N * C, vec = 1; channels_last: planes = N, vec = C).
struct FadePlanes {
  int64_t planes = 0, height = 0, width = 0, vec = 1;

  static FadePlanes of(const at::Tensor& x, bool channels_last) {
    FadePlanes p;
    p.planes = channels_last ? x.size(0) : x.size(0) * x.size(1);
    p.vec = channels_last ? x.size(1) : 1;
    p.height = x.size(2);
    p.width = x.size(3);
    return p;
  }
  int64_t row() const { return width * vec; }
};

struct UpsampleBlendOperands {
  bool channels_last;
  int64_t factor;
  at::Tensor low, high, y;
  FadePlanes low_planes;

  UpsampleBlendOperands(const at::Tensor& low_in, const at::Tensor& high_in, const at::Tensor& alpha,
                        int64_t factor_in)
      : factor(factor_in) {
    check_float_tensor(high_in, "high");
    check_fade_4d(low_in, "low");
    check_fade_4d(high_in, "high");
    check_fade_same(low_in, "low", high_in, "high");
    check_fade_alpha(alpha, high_in);
    check_fade_factor(factor);
    TORCH_CHECK(high_in.size(0) == low_in.size(0) && high_in.size(1) == low_in.size(1) &&
                    high_in.size(2) == low_in.size(2) * factor && high_in.size(3) == low_in.size(3) * factor,
                "high must have shape [", low_in.size(0), ", ", low_in.size(1), ", ", low_in.size(2) * factor, ", ",
                low_in.size(3) * factor, "] (low at ", factor, "x); got ", high_in.sizes());
    channels_last = fade_channels_last(high_in);
    high = high_in.contiguous(fade_format(channels_last));
    low = low_in.contiguous(fade_format(channels_last));
    y = fade_empty(high.sizes(), high, channels_last);
    low_planes = FadePlanes::of(low, channels_last);
  }
};

struct UpsampleBlendBackwardOperands {
  bool channels_last;
  int64_t factor;
  at::Tensor grad_y, grad_low, grad_high;
  FadePlanes low_planes;

  UpsampleBlendBackwardOperands(const at::Tensor& grad_y_in, const at::Tensor& alpha, int64_t factor_in)
      : factor(factor_in) {
    check_float_tensor(grad_y_in, "grad_y");
    check_fade_4d(grad_y_in, "grad_y");
    check_fade_alpha(alpha, grad_y_in);
    check_fade_factor(factor);
    TORCH_CHECK(grad_y_in.size(2) % factor == 0 && grad_y_in.size(3) % factor == 0,
                "grad_y's height and width must be multiples of factor ", factor, "; got shape ", grad_y_in.sizes());
    channels_last = fade_channels_last(grad_y_in);
    grad_y = grad_y_in.contiguous(fade_format(channels_last));
    grad_high = fade_empty(grad_y.sizes(), grad_y, channels_last);
    grad_low = fade_empty({grad_y.size(0), grad_y.size(1), grad_y.size(2) / factor, grad_y.size(3) / factor}, grad_y,
                          channels_last);
    low_planes = FadePlanes::of(grad_low, channels_last);
  }
};

struct FadeRealsOperands {
  bool channels_last;
  at::Tensor x, y;
  FadePlanes planes;

  FadeRealsOperands(const at::Tensor& x_in, const at::Tensor& alpha) {
    check_float_tensor(x_in, "x");
    check_fade_4d(x_in, "x");
    check_fade_alpha(alpha, x_in);
    TORCH_CHECK(x_in.size(2) % 2 == 0 && x_in.size(3) % 2 == 0, "x must have even height and width; got shape ",
                x_in.sizes());
    channels_last = fade_channels_last(x_in);
    x = x_in.contiguous(fade_format(channels_last));
    y = fade_empty(x.sizes(), x, channels_last);
    planes = FadePlanes::of(x, channels_last);
  }
};

// fade_from_rgb: `main` is `new` (forward) or grad_y (backward), N x C x H x W; images N x Ci x 2H x 2W;
// weight [C, Ci, 1, 1]; bias [C].
struct FadeFromRgbOperands {
  bool channels_last;
  int64_t n, channels, height, width, image_channels;
  at::Tensor main, images, weight, bias;

  FadeFromRgbOperands(const at::Tensor& main_in, const char* main_name, const at::Tensor& images_in,
                      const at::Tensor& weight_in, const at::Tensor& bias_in, const at::Tensor& alpha,
                      double scale, double bias_gain, double negative_slope) {
    check_float_tensor(main_in, main_name);
    check_finite(scale, "scale");
    check_finite(bias_gain, "bias_gain");
    check_finite(negative_slope, "negative_slope");
    check_fade_4d(main_in, main_name);
    check_fade_4d(images_in, "images");
    check_fade_4d(weight_in, "weight");
    TORCH_CHECK(bias_in.dim() == 1, "bias must be 1-D; got shape ", bias_in.sizes());
    check_fade_same(images_in, "images", main_in, main_name);
    check_fade_same(weight_in, "weight", main_in, main_name);
    check_fade_same(bias_in, "bias", main_in, main_name);
    check_fade_alpha(alpha, main_in);
    n = main_in.size(0);
    channels = main_in.size(1);
    height = main_in.size(2);
    width = main_in.size(3);
    image_channels = images_in.size(1);
    TORCH_CHECK(images_in.size(0) == n && images_in.size(2) == 2 * height && images_in.size(3) == 2 * width,
                "images must have shape [", n, ", ", image_channels, ", ", 2 * height, ", ", 2 * width, "] for ",
                main_name, " of shape ", main_in.sizes(), "; got ", images_in.sizes());
    TORCH_CHECK(weight_in.size(0) == channels && weight_in.size(1) == image_channels && weight_in.size(2) == 1 &&
                    weight_in.size(3) == 1,
                "weight must have shape [", channels, ", ", image_channels, ", 1, 1]; got ", weight_in.sizes());
    TORCH_CHECK(bias_in.size(0) == channels, "bias must have shape [", channels, "]; got ", bias_in.sizes());
    channels_last = fade_channels_last(main_in);
    main = main_in.contiguous(fade_format(channels_last));
    images = images_in.contiguous(fade_format(channels_last));
    weight = weight_in.contiguous();
    bias = bias_in.contiguous();
  }

  int64_t pixels() const { return height * width; }
};

}  // namespace progan_fast
