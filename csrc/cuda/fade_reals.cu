// fade_reals' CUDA launcher: the phase kernel of csrc/ops/fade_reals.h through the generic launch. No ATen here
// (the host side is csrc/host/fade.h), so this file compiles in seconds.
#include "cuda/launch.cuh"
#include "ops/fade_reals.h"

namespace progan_fast::fade_reals_cuda {

cudaError_t cuda_launch(const Params& p, cudaStream_t stream) { return run(p, hd::CudaLaunch{stream}); }

}  // namespace progan_fast::fade_reals_cuda
