// Runs the CUDA kernels' per-thread phase functions (csrc/ops/*.h) on the CPU, for every thread of the launch
// configuration the real launcher uses, phase by phase: every thread of a block finishes a phase before any
// starts the next, which is what the __syncthreads() between phases guarantees on the GPU. Registered as test
// ops (progan_fast::_emulate_cuda_*) so tests/gpu can compare the device code with the reference without a GPU.
// Sequential and slow by design; only for small test tensors.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "common/pixel_norm_operands.h"
#include "ops/pixel_norm.h"

namespace progan_fast {
namespace {

namespace pn = pixel_norm_cuda;

// One block of a pixel-norm kernel: accumulate, tree-reduce (a barrier before each step), write.
template <typename acc_t, typename Accumulate, typename Write>
void run_pixel_norm_block(const pn::LaunchConfig& cfg, int64_t block, Accumulate accumulate, Write write) {
  pn::Shared<acc_t> sh;
  for (int tid = 0; tid < pn::kThreads; ++tid) accumulate(sh, block, tid);
  for (int half = cfg.lanes / 2; half > 0; half /= 2)
    for (int tid = 0; tid < pn::kThreads; ++tid) pn::reduce_step(cfg, sh, tid, half);
  for (int tid = 0; tid < pn::kThreads; ++tid) write(sh, block, tid);
}

std::tuple<at::Tensor, at::Tensor> emulate_pixel_norm_forward(const at::Tensor& x_in, int64_t dim, double eps) {
  PixelNormForwardOperands operands(x_in, dim);
  const ReductionLayout& layout = operands.layout;
  const at::Tensor& x = operands.x;
  at::Tensor& y = operands.y;
  at::Tensor& r = operands.rsqrt;
  if (x.numel() == 0) return {y, r};
  const pn::LaunchConfig cfg = pn::launch_config(layout.outer, layout.channels, layout.inner);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "emulate_pixel_norm_forward", [&] {
    using acc_t = hd::opmath_t<scalar_t>;
    const pn::ForwardArgs<scalar_t> args{x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(),
                                         r.mutable_data_ptr<acc_t>(), static_cast<acc_t>(eps)};
    for (int64_t block = 0; block < cfg.blocks; ++block)
      run_pixel_norm_block<acc_t>(
          cfg, block, [&](pn::Shared<acc_t>& sh, int64_t b, int t) { pn::forward_accumulate(args, cfg, sh, b, t); },
          [&](pn::Shared<acc_t>& sh, int64_t b, int t) { pn::forward_write(args, cfg, sh, b, t); });
  });
  return {y, r};
}

at::Tensor emulate_pixel_norm_backward(const at::Tensor& dy_in, const at::Tensor& x_in, const at::Tensor& r_in,
                                       int64_t dim) {
  PixelNormBackwardOperands operands(dy_in, x_in, r_in, dim);
  const ReductionLayout& layout = operands.layout;
  const at::Tensor& x = operands.x;
  const at::Tensor& dy = operands.grad_y;
  const at::Tensor& r = operands.rsqrt;
  at::Tensor& dx = operands.grad_x;
  if (x.numel() == 0) return dx;
  const pn::LaunchConfig cfg = pn::launch_config(layout.outer, layout.channels, layout.inner);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "emulate_pixel_norm_backward", [&] {
    using acc_t = hd::opmath_t<scalar_t>;
    const pn::BackwardArgs<scalar_t> args{dy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                          r.const_data_ptr<acc_t>(), dx.mutable_data_ptr<scalar_t>()};
    for (int64_t block = 0; block < cfg.blocks; ++block)
      run_pixel_norm_block<acc_t>(
          cfg, block, [&](pn::Shared<acc_t>& sh, int64_t b, int t) { pn::backward_accumulate(args, cfg, sh, b, t); },
          [&](pn::Shared<acc_t>& sh, int64_t b, int t) { pn::backward_write(args, cfg, sh, b, t); });
  });
  return dx;
}

// The launch geometry the CUDA launcher would pick, so tests can check both layouts' schedules are exercised:
// (items, blocks, lanes, items_per_block, rows).
std::vector<int64_t> emulate_pixel_norm_launch_config(const at::Tensor& x, int64_t dim) {
  const ReductionLayout layout = ReductionLayout::of(x, dim);
  const pn::LaunchConfig cfg = pn::launch_config(layout.outer, layout.channels, layout.inner);
  return {cfg.items, cfg.blocks, cfg.lanes, cfg.items_per_block, cfg.rows ? 1 : 0};
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_fast, CPU, m) {
  m.impl("_emulate_cuda_pixel_norm_forward", &emulate_pixel_norm_forward);
  m.impl("_emulate_cuda_pixel_norm_backward", &emulate_pixel_norm_backward);
}

TORCH_LIBRARY_IMPL(progan_fast, CompositeExplicitAutograd, m) {
  m.impl("_emulate_cuda_pixel_norm_launch_config", &emulate_pixel_norm_launch_config);
}

}  // namespace progan_fast
