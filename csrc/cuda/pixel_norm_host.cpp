// Host side of pixel norm's CUDA kernels: argument checks, layout, allocation, device guard and stream, then
// the plain launchers of csrc/cuda/pixel_norm.cu. Compiled only in CUDA builds (PROGAN_FAST_WITH_CUDA); named
// apart from pixel_norm.cu because both would build to the same pixel_norm.o.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common/pixel_norm_operands.h"
#include "ops/pixel_norm.h"

namespace progan_fast {
namespace {

hd::DType launcher_dtype(at::ScalarType t, const char* what) {
  switch (t) {
    case at::kFloat: return hd::DType::Float32;
    case at::kDouble: return hd::DType::Float64;
    case at::kHalf: return hd::DType::Float16;
    case at::kBFloat16: return hd::DType::BFloat16;
    default: TORCH_CHECK_TYPE(false, what, " must be float16, bfloat16, float32 or float64; got ", t);
  }
}

void check_cuda(const at::Tensor& t, const char* what, const at::Tensor& x) {
  TORCH_CHECK(t.is_cuda(), what, " must be a CUDA tensor; got one on ", t.device());
  TORCH_CHECK(t.device() == x.device(), what, " must be on ", x.device(), " like x; got ", t.device());
}

std::tuple<at::Tensor, at::Tensor> pixel_norm_forward_cuda(const at::Tensor& x_in, int64_t dim, double eps) {
  check_cuda(x_in, "x", x_in);
  const hd::DType dtype = launcher_dtype(x_in.scalar_type(), "x");
  const c10::cuda::CUDAGuard guard(x_in.device());
  PixelNormForwardOperands operands(x_in, dim);
  const ReductionLayout& layout = operands.layout;
  const at::Tensor& x = operands.x;
  at::Tensor& y = operands.y;
  at::Tensor& r = operands.rsqrt;
  if (x.numel() > 0) {
    const pixel_norm_cuda::ForwardParams p{x.const_data_ptr(), y.mutable_data_ptr(), r.mutable_data_ptr(),
                                           layout.outer, layout.channels, layout.inner, eps, dtype};
    C10_CUDA_CHECK(pixel_norm_cuda::launch_forward(p, c10::cuda::getCurrentCUDAStream()));
  }
  return {y, r};
}

at::Tensor pixel_norm_backward_cuda(const at::Tensor& dy_in, const at::Tensor& x_in, const at::Tensor& r_in,
                                    int64_t dim) {
  check_cuda(x_in, "x", x_in);
  check_cuda(dy_in, "grad_y", x_in);
  check_cuda(r_in, "rsqrt", x_in);
  const hd::DType dtype = launcher_dtype(x_in.scalar_type(), "x");
  const c10::cuda::CUDAGuard guard(x_in.device());
  PixelNormBackwardOperands operands(dy_in, x_in, r_in, dim);
  const ReductionLayout& layout = operands.layout;
  const at::Tensor& x = operands.x;
  const at::Tensor& dy = operands.grad_y;
  const at::Tensor& r = operands.rsqrt;
  at::Tensor& dx = operands.grad_x;
  if (x.numel() > 0) {
    const pixel_norm_cuda::BackwardParams p{dy.const_data_ptr(), x.const_data_ptr(), r.const_data_ptr(),
                                            dx.mutable_data_ptr(), layout.outer, layout.channels, layout.inner, dtype};
    C10_CUDA_CHECK(pixel_norm_cuda::launch_backward(p, c10::cuda::getCurrentCUDAStream()));
  }
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_fast, CUDA, m) {
  m.impl("pixel_norm_forward", &pixel_norm_forward_cuda);
  m.impl("pixel_norm_backward", &pixel_norm_backward_cuda);
}

}  // namespace progan_fast
