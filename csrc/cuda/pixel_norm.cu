// Pixel norm CUDA kernels: thin __global__ wrappers around the phase functions of csrc/ops/pixel_norm.h, which
// the CPU emulation also runs. No ATen here: the host side (csrc/cuda/pixel_norm_host.cpp) checks, allocates and
// picks the stream.
#include "ops/pixel_norm.h"

namespace progan_fast::pixel_norm_cuda {
namespace {

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) forward_kernel(ForwardArgs<scalar_t> args, LaunchConfig cfg) {
  __shared__ Shared<opmath_t<scalar_t>> sh;
  const int64_t block = blockIdx.x;
  const int tid = threadIdx.x;
  forward_accumulate(args, cfg, sh, block, tid);
  for (int half = cfg.lanes / 2; half > 0; half /= 2) {
    __syncthreads();
    reduce_step(cfg, sh, tid, half);
  }
  __syncthreads();
  forward_write(args, cfg, sh, block, tid);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) backward_kernel(BackwardArgs<scalar_t> args, LaunchConfig cfg) {
  __shared__ Shared<opmath_t<scalar_t>> sh;
  const int64_t block = blockIdx.x;
  const int tid = threadIdx.x;
  backward_accumulate(args, cfg, sh, block, tid);
  for (int half = cfg.lanes / 2; half > 0; half /= 2) {
    __syncthreads();
    reduce_step(cfg, sh, tid, half);
  }
  __syncthreads();
  backward_write(args, cfg, sh, block, tid);
}

template <typename scalar_t>
cudaError_t forward(const ForwardParams& p, cudaStream_t stream) {
  const LaunchConfig cfg = launch_config(p.outer, p.channels, p.inner);
  if (cfg.blocks == 0) return cudaSuccess;
  if (cfg.blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  ForwardArgs<scalar_t> args{static_cast<const scalar_t*>(p.x), static_cast<scalar_t*>(p.y),
                             static_cast<opmath_t<scalar_t>*>(p.rsqrt), static_cast<opmath_t<scalar_t>>(p.eps)};
  forward_kernel<scalar_t><<<static_cast<unsigned>(cfg.blocks), kThreads, 0, stream>>>(args, cfg);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t backward(const BackwardParams& p, cudaStream_t stream) {
  const LaunchConfig cfg = launch_config(p.outer, p.channels, p.inner);
  if (cfg.blocks == 0) return cudaSuccess;
  if (cfg.blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  BackwardArgs<scalar_t> args{static_cast<const scalar_t*>(p.grad_y), static_cast<const scalar_t*>(p.x),
                              static_cast<const opmath_t<scalar_t>*>(p.rsqrt), static_cast<scalar_t*>(p.grad_x)};
  backward_kernel<scalar_t><<<static_cast<unsigned>(cfg.blocks), kThreads, 0, stream>>>(args, cfg);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_forward(const ForwardParams& p, cudaStream_t stream) {
  switch (p.dtype) {
    case hd::DType::Float32: return forward<float>(p, stream);
    case hd::DType::Float64: return forward<double>(p, stream);
    case hd::DType::Float16: return forward<__half>(p, stream);
    case hd::DType::BFloat16: return forward<__nv_bfloat16>(p, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_backward(const BackwardParams& p, cudaStream_t stream) {
  switch (p.dtype) {
    case hd::DType::Float32: return backward<float>(p, stream);
    case hd::DType::Float64: return backward<double>(p, stream);
    case hd::DType::Float16: return backward<__half>(p, stream);
    case hd::DType::BFloat16: return backward<__nv_bfloat16>(p, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace progan_fast::pixel_norm_cuda
