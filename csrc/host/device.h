// The host side shared by every op's GPU-style kernels, for the two families that run them: `CudaDevice` (the
// real launch, CUDA builds only) and `EmulatedDevice` (the same device code run on the CPU, thread by thread).
// An op's host function (csrc/host/<op>.h) is a template over these: it checks its tensors with `check`, scopes
// the device with `Device device(x)`, and hands each kernel's parameters to `device.launch(params)`, which finds
// the op's `run(params, executor)` (emulated) or `cuda_launch(params, stream)` (CUDA) by argument-dependent lookup.
#pragma once
#include <ATen/ATen.h>

#include "ops/hd.h"
#include "ops/phases.h"

#if defined(PROGAN_FAST_WITH_CUDA)
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

namespace progan_fast {

// The element type a launcher is instantiated for; anything else is refused naming the argument.
inline hd::DType launcher_dtype(const at::Tensor& t, const char* what) {
  switch (t.scalar_type()) {
    case at::kFloat: return hd::DType::Float32;
    case at::kDouble: return hd::DType::Float64;
    case at::kHalf: return hd::DType::Float16;
    case at::kBFloat16: return hd::DType::BFloat16;
    default: TORCH_CHECK_TYPE(false, what, " must be float16, bfloat16, float32 or float64; got ", t.scalar_type());
  }
}

struct EmulatedDevice {
  explicit EmulatedDevice(const at::Tensor&) {}

  static void check(const at::Tensor& t, const char* what, const at::Tensor& x) {
    TORCH_CHECK(t.device().is_cpu(), what, " must be a CPU tensor for the emulated CUDA kernels; got one on ",
                t.device());
    (void)x;
  }

  template <typename Params>
  void launch(const Params& params) const {
    run(params, hd::Emulate{});
  }
};

#if defined(PROGAN_FAST_WITH_CUDA)
struct CudaDevice {
  c10::cuda::CUDAGuard guard;
  explicit CudaDevice(const at::Tensor& x) : guard(x.device()) {}

  static void check(const at::Tensor& t, const char* what, const at::Tensor& x) {
    TORCH_CHECK(t.is_cuda(), what, " must be a CUDA tensor; got one on ", t.device());
    TORCH_CHECK(t.device() == x.device(), what, " must be on ", x.device(), " like x; got ", t.device());
  }

  // `cuda_launch(params, stream)` is the op's entry point compiled by nvcc (csrc/cuda/<op>.cu).
  template <typename Params>
  void launch(const Params& params) const {
    C10_CUDA_CHECK(cuda_launch(params, c10::cuda::getCurrentCUDAStream()));
  }
};
#endif

}  // namespace progan_fast
