// The ISA variant choice (see isa.h) with its test-only controls, and the half-precision <-> float block
// conversions, multi-versioned so they vectorize with F16C/AVX-512 where the CPU has them.
#include "cpu/isa.h"

#include <torch/library.h>

#include <bit>
#include <string>
#include <vector>

#if PROGAN_FAST_X86_DISPATCH
#include <immintrin.h>
#endif

namespace progan_fast {
namespace isa {
namespace {

// Names as in GCC's -march levels; the baseline is x86-64 itself (SSE2), or whatever a non-x86 build targets.
constexpr const char* kVariantNames[kVariantCount] = {"baseline", "x86-64-v3", "x86-64-v4"};

Variant best_supported() {
#if PROGAN_FAST_X86_DISPATCH
  __builtin_cpu_init();  // static initializers may run before libgcc's own CPU detection
  if (__builtin_cpu_supports("x86-64-v4")) return kX86_64_V4;
  if (__builtin_cpu_supports("x86-64-v3")) return kX86_64_V3;
#endif
  return kBaseline;
}

const Variant kBestSupported = best_supported();

}  // namespace

std::atomic<int> active_variant{kBestSupported};
std::atomic<bool> variant_ran[kVariantCount] = {};

namespace {

// ---- test-only controls (torch.ops.progan_fast._cpu_isa_variants / _force_cpu_isa / _cpu_isa_ran) ----

// The variants this CPU runs, best (the one chosen at load time) first.
std::vector<std::string> supported_variants() {
  std::vector<std::string> names;
  for (int v = kBestSupported; v >= kBaseline; --v) names.emplace_back(kVariantNames[v]);
  return names;
}

// Every multi-versioned loop runs `name` from now on, and the record of variants that ran starts empty.
void force_variant(const std::string& name) {
  for (int v = kBaseline; v <= kBestSupported; ++v) {
    if (name != kVariantNames[v]) continue;
    active_variant.store(v);
    for (auto& ran : variant_ran) ran.store(false);
    return;
  }
  std::string supported;
  for (const auto& s : supported_variants()) supported += (supported.empty() ? "" : ", ") + s;
  TORCH_CHECK(false, "_force_cpu_isa: variant must be one this CPU runs (", supported, "), got '", name, "'");
}

// The variants whose loops ran since the last forced choice.
std::vector<std::string> variants_ran() {
  std::vector<std::string> names;
  for (int v = kVariantCount - 1; v >= kBaseline; --v)
    if (variant_ran[v].load()) names.emplace_back(kVariantNames[v]);
  return names;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(progan_fast, m) {
  m.def("_cpu_isa_variants() -> str[]", &supported_variants);
  m.def("_force_cpu_isa(str variant) -> ()", &force_variant);
  m.def("_cpu_isa_ran() -> str[]", &variants_ran);
}

namespace {
// c10::BFloat16 is a 16-bit struct; its buffers are read and written through this alias.
typedef uint16_t u16_alias __attribute__((may_alias));
}  // namespace

// GCC does not vectorize _Float16 <-> float conversions without AVX512-FP16, so the F16C path is written with
// intrinsics and run by the variants that have F16C (x86-64-v3 and up); the scalar fallback is c10's own conversion.
#if PROGAN_FAST_X86_DISPATCH
namespace {
__attribute__((target("avx,f16c"))) void to_float_f16c(const c10::Half* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

__attribute__((target("avx,f16c"))) void from_float_f16c(const float* src, c10::Half* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; i < n; ++i) dst[i] = static_cast<c10::Half>(src[i]);
}
}  // namespace
#endif

void to_float(const c10::Half* src, float* dst, int64_t n) {
#if PROGAN_FAST_X86_DISPATCH
  if (enter() >= kX86_64_V3) return to_float_f16c(src, dst, n);
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

void from_float(const float* src, c10::Half* dst, int64_t n) {
#if PROGAN_FAST_X86_DISPATCH
  if (enter() >= kX86_64_V3) return from_float_f16c(src, dst, n);
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<c10::Half>(src[i]);
}

PROGAN_FAST_MULTIVERSION(to_float, (const c10::BFloat16* src, float* dst, int64_t n), (src, dst, n)) {
  const u16_alias* __restrict s = reinterpret_cast<const u16_alias*>(src);
  float* __restrict d = dst;
  for (int64_t i = 0; i < n; ++i) d[i] = std::bit_cast<float>(static_cast<uint32_t>(s[i]) << 16);
}

PROGAN_FAST_MULTIVERSION(from_float, (const float* src, c10::BFloat16* dst, int64_t n), (src, dst, n)) {
  const float* __restrict s = src;
  u16_alias* __restrict d = reinterpret_cast<u16_alias*>(dst);
  for (int64_t i = 0; i < n; ++i) {
    // c10::round_to_nearest_even, branch-free so the loop vectorizes.
    const uint32_t u = std::bit_cast<uint32_t>(s[i]);
    const uint32_t rounded = (u + (((u >> 16) & 1u) + 0x7FFFu)) >> 16;
    d[i] = static_cast<uint16_t>(s[i] != s[i] ? 0x7FC0u : rounded);
  }
}

}  // namespace isa
}  // namespace progan_fast
