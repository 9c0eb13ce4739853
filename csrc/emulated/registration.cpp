// The emulated family (progan_fast_emulated::*): the CUDA kernels' device code run on the CPU for every thread
// of the real launch (csrc/ops/phases.h), registered with the same raw ops as every family so the shared op
// tests run it. Sequential and slow by design: for small test tensors.
#include <torch/library.h>

#include "host/pixel_norm.h"

namespace progan_fast {
namespace {

// The launch geometry the CUDA launcher picks, so tests can check that every schedule is exercised:
// (items, blocks, lanes, items_per_block, rows).
std::vector<int64_t> pixel_norm_launch_config(const at::Tensor& x, int64_t dim) {
  const ReductionLayout layout = ReductionLayout::of(x, dim);
  const auto cfg = pixel_norm_cuda::launch_config(layout.outer, layout.channels, layout.inner);
  return {cfg.items, cfg.blocks, cfg.lanes, cfg.items_per_block, cfg.rows ? 1 : 0};
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_fast_emulated, CPU, m) {
  m.impl("pixel_norm_forward", &pixel_norm_host::forward<EmulatedDevice>);
  m.impl("pixel_norm_backward", &pixel_norm_host::backward<EmulatedDevice>);
}

// Test-only introspection, outside the shared raw ops.
TORCH_LIBRARY_FRAGMENT(progan_fast_emulated, m) {
  m.def("pixel_norm_launch_config(Tensor x, int dim) -> int[]", &pixel_norm_launch_config);
}

}  // namespace progan_fast
