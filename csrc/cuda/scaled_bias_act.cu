// The epilogue's CUDA launchers: the phase kernels of csrc/ops/scaled_bias_act.h through the generic launch. No
// ATen here (the host side is csrc/host/scaled_bias_act.h), so this file compiles in seconds.
#include "cuda/launch.cuh"
#include "ops/scaled_bias_act.h"

namespace progan_fast::scaled_bias_act_cuda {

cudaError_t cuda_launch(const ForwardParams& p, cudaStream_t stream) { return run(p, hd::CudaLaunch{stream}); }
cudaError_t cuda_launch(const BackwardParams& p, cudaStream_t stream) { return run(p, hd::CudaLaunch{stream}); }

}  // namespace progan_fast::scaled_bias_act_cuda
