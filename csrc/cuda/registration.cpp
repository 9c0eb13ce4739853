// The CUDA family's kernels (compiled only in CUDA builds): one line per raw op. Schemas are defined in Python
// (progan_fast/_library.py), fakes and autograd beside them.
#include <torch/library.h>

#include "host/minibatch_stddev.h"
#include "host/fade.h"
#include "host/pixel_norm.h"
#include "host/scaled_bias_act.h"

namespace progan_fast {

TORCH_LIBRARY_IMPL(progan_fast, CUDA, m) {
  m.impl("pixel_norm_forward", &pixel_norm_host::forward<CudaDevice>);
  m.impl("pixel_norm_backward", &pixel_norm_host::backward<CudaDevice>);
  m.impl("minibatch_stddev_forward", &minibatch_stddev_host::forward<CudaDevice>);
  m.impl("minibatch_stddev_backward", &minibatch_stddev_host::backward<CudaDevice>);
  m.impl("scaled_bias_act_forward", &scaled_bias_act_host::forward<CudaDevice>);
  m.impl("scaled_bias_act_backward", &scaled_bias_act_host::backward<CudaDevice>);
  m.impl("upsample_blend_forward", &fade_host::upsample_blend_forward<CudaDevice>);
  m.impl("upsample_blend_backward", &fade_host::upsample_blend_backward<CudaDevice>);
  m.impl("fade_reals_forward", &fade_host::fade_reals_forward<CudaDevice>);
  m.impl("fade_from_rgb_forward", &fade_host::fade_from_rgb_forward<CudaDevice>);
  m.impl("fade_from_rgb_backward", &fade_host::fade_from_rgb_backward<CudaDevice>);
}

}  // namespace progan_fast
