// fade_from_rgb's CUDA launchers: the phase kernels of csrc/ops/fade_from_rgb.h through the generic launch. No
// ATen here (the host side is csrc/host/fade.h), so this file compiles in seconds.
#include "cuda/launch.cuh"
#include "ops/fade_from_rgb.h"

namespace progan_fast::fade_from_rgb_cuda {

cudaError_t cuda_launch(const ForwardParams& p, cudaStream_t stream) { return run(p, hd::CudaLaunch{stream}); }
cudaError_t cuda_launch(const PixelBackwardParams& p, cudaStream_t stream) { return run(p, hd::CudaLaunch{stream}); }
cudaError_t cuda_launch(const ChannelBackwardParams& p, cudaStream_t stream) {
  return run(p, hd::CudaLaunch{stream});
}

}  // namespace progan_fast::fade_from_rgb_cuda
