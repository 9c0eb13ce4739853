// Pixel norm's CUDA launchers: the phase kernels of csrc/ops/pixel_norm.h through the generic launch. No ATen
// here (the host side is csrc/host/pixel_norm.h), so this file compiles in seconds.
#include "cuda/launch.cuh"
#include "ops/pixel_norm.h"

namespace progan_fast::pixel_norm_cuda {

cudaError_t cuda_launch(const ForwardParams& p, cudaStream_t stream) { return run(p, hd::CudaLaunch{stream}); }
cudaError_t cuda_launch(const BackwardParams& p, cudaStream_t stream) { return run(p, hd::CudaLaunch{stream}); }

}  // namespace progan_fast::pixel_norm_cuda
