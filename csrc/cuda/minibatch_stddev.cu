// Minibatch stddev's CUDA launchers: the phase kernels of csrc/ops/minibatch_stddev.h through the generic launch.
// No ATen here (the host side is csrc/host/minibatch_stddev.h), so this file compiles in seconds.
#include "cuda/launch.cuh"
#include "ops/minibatch_stddev.h"

namespace progan_fast::minibatch_stddev_cuda {

cudaError_t cuda_launch(const ForwardStatParams& p, cudaStream_t stream) { return run(p, hd::CudaLaunch{stream}); }
cudaError_t cuda_launch(const ForwardWriteParams& p, cudaStream_t stream) { return run(p, hd::CudaLaunch{stream}); }
cudaError_t cuda_launch(const BackwardStatParams& p, cudaStream_t stream) { return run(p, hd::CudaLaunch{stream}); }
cudaError_t cuda_launch(const BackwardParams& p, cudaStream_t stream) { return run(p, hd::CudaLaunch{stream}); }

}  // namespace progan_fast::minibatch_stddev_cuda
