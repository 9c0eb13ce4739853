// upsample_blend's CUDA launchers: the phase kernels of csrc/ops/upsample_blend.h through the generic launch. No
// ATen here (the host side is csrc/host/fade.h), so this file compiles in seconds.
#include "cuda/launch.cuh"
#include "ops/upsample_blend.h"

namespace progan_fast::upsample_blend_cuda {

cudaError_t cuda_launch(const ForwardParams& p, cudaStream_t stream) { return run(p, hd::CudaLaunch{stream}); }
cudaError_t cuda_launch(const BackwardParams& p, cudaStream_t stream) { return run(p, hd::CudaLaunch{stream}); }

}  // namespace progan_fast::upsample_blend_cuda
