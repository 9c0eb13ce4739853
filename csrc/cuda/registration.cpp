// The CUDA family's kernels (compiled only in CUDA builds): one line per raw op. Schemas are defined in Python
// (progan_fast/_library.py), fakes and autograd beside them.
#include <torch/library.h>

#include "host/pixel_norm.h"

namespace progan_fast {

TORCH_LIBRARY_IMPL(progan_fast, CUDA, m) {
  m.impl("pixel_norm_forward", &pixel_norm_host::forward<CudaDevice>);
  m.impl("pixel_norm_backward", &pixel_norm_host::backward<CudaDevice>);
}

}  // namespace progan_fast
