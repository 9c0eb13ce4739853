// Building blocks for kernels whose per-thread bodies are compiled twice: by nvcc for the GPU and by g++ for
// the CPU emulation that runs every thread of a launch in a test (see csrc/cpu/cuda_emulation.cpp). Nothing
// here includes ATen, so the .cu files that use it stay cheap to compile.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define PF_HD __host__ __device__ __forceinline__
#else
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#define PF_HD inline
#endif

namespace progan_fast::hd {

// Element types a launcher accepts; the host side maps at::ScalarType onto this so .cu files never see ATen.
enum class DType : int { Float32, Float64, Float16, BFloat16 };

// The type math is done in: float, or double for double (at::opmath_type without ATen).
template <typename T> struct OpMath { using type = float; };
template <> struct OpMath<double> { using type = double; };
template <typename T> using opmath_t = typename OpMath<T>::type;

// Load/store conversions: the same kernel body works on c10::Half/BFloat16 (host) and __half/__nv_bfloat16
// (device). torch's nvcc flags disable the implicit half conversions, so they are spelled out.
PF_HD float to_acc(float v) { return v; }
PF_HD double to_acc(double v) { return v; }
template <typename T> PF_HD T from_acc(float v);
template <typename T> PF_HD T from_acc(double v);
template <> PF_HD float from_acc<float>(float v) { return v; }
template <> PF_HD double from_acc<double>(double v) { return v; }
#if defined(__CUDACC__)
PF_HD float to_acc(__half v) { return __half2float(v); }
PF_HD float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> PF_HD __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <> PF_HD __nv_bfloat16 from_acc<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
#else
PF_HD float to_acc(c10::Half v) { return static_cast<float>(v); }
PF_HD float to_acc(c10::BFloat16 v) { return static_cast<float>(v); }
template <> PF_HD c10::Half from_acc<c10::Half>(float v) { return c10::Half(v); }
template <> PF_HD c10::BFloat16 from_acc<c10::BFloat16>(float v) { return c10::BFloat16(v); }
#endif

// a * b + c rounded once, where a kernel's math wants a fused multiply-add: fmaf / fma on the device, std::fma in
// the emulation, the same bits. Nothing else fuses: nvcc compiles the kernels with --fmad=false (setup.py) and the
// emulated family's C++ contracts nothing (csrc/emulated/registration.cpp), so a product and a sum written apart
// are rounded apart on both sides: every add, multiply and FMA of the GPU rounds as in its emulation by
// construction (rsqrt_acc below, an approximation on the device, is the one operation that differs).
PF_HD float mul_add(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return ::fmaf(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
PF_HD double mul_add(double a, double b, double c) {
#if defined(__CUDA_ARCH__)
  return ::fma(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

PF_HD float rsqrt_acc(float v) {
#if defined(__CUDA_ARCH__)
  return ::rsqrtf(v);
#else
  return 1.0f / std::sqrt(v);
#endif
}
PF_HD double rsqrt_acc(double v) {
#if defined(__CUDA_ARCH__)
  return ::rsqrt(v);
#else
  return 1.0 / std::sqrt(v);
#endif
}

// A load of a tensor no thread of the kernel writes, through the read-only data path (ld.global.nc). nvcc picks that
// path by itself only where it proves it from __restrict__, which it does not always (a loop loading and storing
// at the same computed index, two restrict pointers, defeated it), so the kernels ask for it.
template <typename T>
PF_HD T load_ro(const T* p) {
#if defined(__CUDA_ARCH__)
  return __ldg(p);
#else
  return *p;
#endif
}

// Storage types of the launchers' element types on this side of the compiler (device: CUDA's half types).
#if defined(__CUDACC__)
using half_t = __half;
using bfloat16_t = __nv_bfloat16;
#else
using half_t = c10::Half;
using bfloat16_t = c10::BFloat16;
#endif

template <typename T> struct Type { using type = T; };

// Calls f(Type<scalar_t>{}) with the storage type for `dtype`: the one dtype switch of every launcher, on the
// device side and in the CPU emulation alike. Every branch must return the same type.
template <typename F>
auto dispatch(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float64: return f(Type<double>{});
    case DType::Float16: return f(Type<half_t>{});
    case DType::BFloat16: return f(Type<bfloat16_t>{});
    case DType::Float32: break;
  }
  return f(Type<float>{});
}

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
constexpr int next_pow2(int64_t v) {
  int p = 1;
  while (p < v && p < (1 << 30)) p <<= 1;
  return p;
}
// log2 of a power of two (lanes, items per block: thread index math is then shifts and masks).
constexpr int log2_of(int64_t pow2) {
  int exponent = 0;
  while ((int64_t(1) << exponent) < pow2) ++exponent;
  return exponent;
}

// Division of a non-negative index by a launch constant. A kernel is instantiated for both cases (kPow2 =
// pow2()): a power of two (every ProGAN feature map, 4x4 to 1024x1024) divides with a shift; anything else takes
// a 64-bit divide, a subroutine of tens of instructions on the GPU (it has no integer divider). A run-time
// choice between the two in one kernel costs the registers of the call on the fast path too (it spilled).
struct Divisor {
  int64_t value = 1;
  int shift = 0;  // log2(value) when value is a power of two, else -1

  static constexpr Divisor of(int64_t value) {
    Divisor d;
    d.value = value;
    d.shift = value > 0 && (value & (value - 1)) == 0 ? log2_of(value) : -1;
    return d;
  }
  constexpr bool pow2() const { return shift >= 0; }
  template <bool kPow2>
  PF_HD int64_t divide(int64_t n) const {
    if constexpr (kPow2) return n >> shift;
    else return n / value;
  }
  // The same for an index the kernel keeps in 32 bits (value < 2^32): a 32-bit divide, inline on the GPU, where
  // it is not a power of two.
  template <bool kPow2>
  PF_HD uint32_t divide(uint32_t n) const {
    if constexpr (kPow2) return n >> shift;
    else return n / static_cast<uint32_t>(value);
  }
  // n / value and n % value (Index: int64_t or uint32_t). The remainder of a power of two is a mask: from the
  // quotient's multiply-subtract, ptxas spilled a register in minibatch stddev's forward (sm_80, half types).
  template <typename Index>
  struct Split {
    Index quotient, remainder;
  };
  template <bool kPow2, typename Index>
  PF_HD Split<Index> split(Index n) const {
    const Index q = divide<kPow2>(n);
    if constexpr (kPow2) return {q, n & static_cast<Index>(value - 1)};
    else return {q, n - q * static_cast<Index>(value)};
  }
};

// Calls f(std::bool_constant<pow2>{}): the kernel instantiated for index math by shifts (every divisor a power of
// two) or by divisions.
template <typename F>
auto with_pow2_case(bool pow2, F&& f) {
  if (pow2) return f(std::true_type{});
  return f(std::false_type{});
}

// Calls f(std::bool_constant<d.pow2()>{}): the kernel instantiated for d's case.
template <typename F>
auto with_divisor_case(const Divisor& d, F&& f) {
  return with_pow2_case(d.pow2(), f);
}

}  // namespace progan_fast::hd
