// Run-time ISA dispatch for the CPU kernels, and the half-precision <-> float block conversions they share.
//
// The extension is built for the portable x86-64 baseline (never -march=native, so one build runs on any x86-64).
// Hot loops are plain functions on raw pointers marked PROGAN_FAST_MULTIVERSION: GCC/Clang compile one clone per
// listed ISA and pick the best one for the running CPU once, at load time (an ifunc), so the loops still run with
// AVX-512 or AVX2+FMA where the CPU has them. Keep those functions free of templates and lambdas (clones are made
// per function, not for what they call) and write their loops so they auto-vectorize: __restrict pointers,
// independent iterations, `#pragma omp simd reduction` for sums (the build has -fopenmp, which enables the pragma).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>

// target_clones needs ifunc support (GNU toolchain on Linux); elsewhere the loops build for the baseline only.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define PROGAN_FAST_X86_DISPATCH 1
#define PROGAN_FAST_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PROGAN_FAST_X86_DISPATCH 0
#define PROGAN_FAST_MULTIVERSION
#endif

namespace progan_fast {
namespace isa {

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
