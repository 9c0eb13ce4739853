// Run-time ISA dispatch for the CPU kernels, and the half-precision <-> float block conversions they share.
//
// The extension is built for the portable x86-64 baseline (never -march=native, so one build runs on any x86-64).
// Hot loops are written once with PROGAN_FAST_MULTIVERSION, which compiles them for each ISA variant (x86-64-v4:
// AVX-512; x86-64-v3: AVX2+FMA+F16C; the baseline) and calls the variant chosen at load time (the best this CPU
// runs), so the loops still run with AVX-512 or AVX2+FMA where the CPU has them. The choice is one switch on a
// global rather than an ifunc (target_clones) so that tests can force every variant the CPU runs, not only the best:
// torch.ops.progan_fast._force_cpu_isa(variant), test-only (tests/ops/parity.py runs the CPU parity checks under
// each variant). A loop's body is always inlined into each variant, so it and everything it inlines compile at
// that variant's ISA: keep what it calls always-inline, and write its loops so they auto-vectorize: __restrict
// pointers, independent iterations, `#pragma omp simd reduction` for sums (the build has -fopenmp, which enables
// the pragma).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <atomic>
#include <cstdint>
#include <cstring>

// The ISA variants need GCC's x86 target attributes; elsewhere the loops build for the baseline only.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define PROGAN_FAST_X86_DISPATCH 1
#else
#define PROGAN_FAST_X86_DISPATCH 0
#endif

namespace progan_fast {
namespace isa {

// The ISA variants of the multi-versioned loops, in increasing order (zero, the baseline, is what a loop called
// before the choice is made at load time would run).
enum Variant : int { kBaseline, kX86_64_V3, kX86_64_V4, kVariantCount };

// The variant every multi-versioned loop runs, and whether each variant has run since the last forced choice
// (tests assert that the variant they forced is the one that computed their result). Defined in isa.cpp.
extern std::atomic<int> active_variant;
extern std::atomic<bool> variant_ran[kVariantCount];

// The variant to run now, recorded as run. The record is written once per forced choice, not per call, so the
// threads of a parallel loop only read its cache line.
inline Variant enter() {
  const int variant = active_variant.load(std::memory_order_relaxed);
  if (!variant_ran[variant].load(std::memory_order_relaxed))
    variant_ran[variant].store(true, std::memory_order_relaxed);
  return static_cast<Variant>(variant);
}

// Half-precision blocks are widened to float, processed by the float loops, and narrowed back; the float math
// and rounding match c10's scalar conversions exactly (round to nearest even, NaN kept NaN).
void to_float(const c10::Half* src, float* dst, int64_t n);
void to_float(const c10::BFloat16* src, float* dst, int64_t n);
void from_float(const float* src, c10::Half* dst, int64_t n);
void from_float(const float* src, c10::BFloat16* dst, int64_t n);
// float itself, for code templated over the kernel dtypes
inline void to_float(const float* src, float* dst, int64_t n) { std::memcpy(dst, src, n * sizeof(float)); }
inline void from_float(const float* src, float* dst, int64_t n) { std::memcpy(dst, src, n * sizeof(float)); }

}  // namespace isa
}  // namespace progan_fast

// PROGAN_FAST_MULTIVERSION(name, (parameters), (arguments)) { body }  defines `void name(parameters)`, which runs
// the body compiled for the active ISA variant. `arguments` names the parameters, in order.
#define PROGAN_FAST_ISA_INLINE static inline __attribute__((always_inline))
#if PROGAN_FAST_X86_DISPATCH
#define PROGAN_FAST_MULTIVERSION(name, params, args)                                                              \
  PROGAN_FAST_ISA_INLINE void name##_body params;                                                                 \
  __attribute__((target("arch=x86-64-v4"))) static void name##_x86_64_v4 params { name##_body args; }            \
  __attribute__((target("arch=x86-64-v3"))) static void name##_x86_64_v3 params { name##_body args; }            \
  static void name##_baseline params { name##_body args; }                                                        \
  void name params {                                                                                              \
    switch (::progan_fast::isa::enter()) {                                                                        \
      case ::progan_fast::isa::kX86_64_V4: return name##_x86_64_v4 args;                                         \
      case ::progan_fast::isa::kX86_64_V3: return name##_x86_64_v3 args;                                         \
      default: return name##_baseline args;                                                                       \
    }                                                                                                             \
  }                                                                                                               \
  PROGAN_FAST_ISA_INLINE void name##_body params
#else
#define PROGAN_FAST_MULTIVERSION(name, params, args) \
  PROGAN_FAST_ISA_INLINE void name##_body params;    \
  void name params {                                 \
    ::progan_fast::isa::enter();                     \
    name##_body args;                                \
  }                                                  \
  PROGAN_FAST_ISA_INLINE void name##_body params
#endif
