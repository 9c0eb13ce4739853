// Half-precision <-> float block conversions (see isa.h), multi-versioned so they vectorize with F16C/AVX-512
// where the CPU has them.
#include "cpu/isa.h"

#include <bit>

#if PROGAN_FAST_X86_DISPATCH
#include <immintrin.h>
#endif

namespace progan_fast {
namespace isa {
namespace {
// c10::BFloat16 is a 16-bit struct; its buffers are read and written through this alias.
typedef uint16_t u16_alias __attribute__((may_alias));
}  // namespace

// GCC does not vectorize _Float16 <-> float conversions without AVX512-FP16, so the F16C path is written with
// intrinsics and chosen once at run time; the scalar fallback is c10's own conversion.
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

const bool kHasF16C = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
}  // namespace
#endif

void to_float(const c10::Half* src, float* dst, int64_t n) {
#if PROGAN_FAST_X86_DISPATCH
  if (kHasF16C) return to_float_f16c(src, dst, n);
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

void from_float(const float* src, c10::Half* dst, int64_t n) {
#if PROGAN_FAST_X86_DISPATCH
  if (kHasF16C) return from_float_f16c(src, dst, n);
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<c10::Half>(src[i]);
}

PROGAN_FAST_MULTIVERSION
void to_float(const c10::BFloat16* src, float* dst, int64_t n) {
  const u16_alias* __restrict s = reinterpret_cast<const u16_alias*>(src);
  float* __restrict d = dst;
  for (int64_t i = 0; i < n; ++i) d[i] = std::bit_cast<float>(static_cast<uint32_t>(s[i]) << 16);
}

PROGAN_FAST_MULTIVERSION
void from_float(const float* src, c10::BFloat16* dst, int64_t n) {
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
