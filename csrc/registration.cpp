// Every schema of the progan_fast namespace, in one place. Kernels register their implementations per
// dispatch key beside them (csrc/cpu/<op>.cpp, csrc/cuda/<op>.cpp), autograd in csrc/autograd/<op>.cpp (the
// backward is itself built from differentiable ops); fake tensors are registered in Python (progan_fast/ops/<op>.py).
#include <Python.h>
#include <torch/library.h>

#include <string>

extern "C" {
// `import progan_fast._C` only has to run the static registrations below; no Python bindings are needed.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
}

namespace progan_fast {

std::string build_info() {
  std::string info = "torch=" PROGAN_FAST_TORCH_VERSION;
#ifdef PROGAN_FAST_WITH_CUDA
  info += ";cuda=1";
#else
  info += ";cuda=0";
#endif
  return info;
}

TORCH_LIBRARY(progan_fast, m) {
  m.def("_build_info() -> str", &build_info);

  // pixel_norm: y = x * rsqrt(mean over `dim` of x^2 + eps); also returns the per-pixel rsqrt for backward.
  m.def("pixel_norm_forward(Tensor x, int dim, float eps) -> (Tensor, Tensor)");
  m.def("pixel_norm_backward(Tensor grad_y, Tensor x, Tensor rsqrt, int dim) -> Tensor");

  // Test-only: the CUDA kernels' per-thread code run on the CPU for every thread of the real launch
  // (csrc/cpu/cuda_emulation.cpp, tests/gpu/).
  m.def("_emulate_cuda_pixel_norm_forward(Tensor x, int dim, float eps) -> (Tensor, Tensor)");
  m.def("_emulate_cuda_pixel_norm_backward(Tensor grad_y, Tensor x, Tensor rsqrt, int dim) -> Tensor");
  m.def("_emulate_cuda_pixel_norm_launch_config(Tensor x, int dim) -> int[]");
}

}  // namespace progan_fast
