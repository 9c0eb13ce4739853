// The extension module and its build record. The raw ops' schemas are defined in Python, once for every kernel
// family (progan_fast/_library.py); C++ only registers kernels: csrc/cpu/<op>.cpp (CPU key),
// csrc/cuda/registration.cpp (CUDA key), csrc/emulated/registration.cpp (the emulated family), and
// csrc/autograd/<op>.cpp where an op's autograd is in C++.
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
}

}  // namespace progan_fast
