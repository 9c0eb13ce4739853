// Memory-traffic helpers of the CPU kernels: non-temporal (streaming) stores, their fence, software prefetch.
//
// Everything here is always inlined, so it takes the ISA of the multi-versioned loop that calls it (isa.h). The
// streaming stores are SSE2 (the x86-64 baseline, legal in every clone); they are bandwidth-bound anyway, and the
// write-combining buffers merge them into whole lines.
#pragma once

#include <algorithm>
#include <cstdint>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#define PF_CPU_INLINE static inline __attribute__((always_inline))

namespace progan_fast::cpu {

// Outputs at least this large are written with non-temporal stores: they are far larger than the caches anyway,
// and streaming them skips the read-for-ownership of every destination line and keeps the output from evicting
// the block that a second pass re-reads (measured ~1.5-2x faster pixel norm forward at S2/S3 on a 2-core Zen 4).
constexpr int64_t kStreamBytes = 8 << 20;

inline bool should_stream(int64_t output_bytes) { return output_bytes >= kStreamBytes; }

// Elements before p is 16-byte aligned (at most n).
PF_CPU_INLINE int64_t until_aligned(const float* p, int64_t n) {
  return std::min<int64_t>(n, ((16 - (reinterpret_cast<uintptr_t>(p) & 15)) & 15) / sizeof(float));
}

// dst[i] = src[i] with non-temporal stores (src is a small L1-resident scratch row the caller just computed with
// full-width vector code).
PF_CPU_INLINE void stream_copy(float* __restrict dst, const float* __restrict src, int64_t n) {
  int64_t i = 0;
#if defined(__SSE2__)
  for (const int64_t head = until_aligned(dst, n); i < head; ++i) dst[i] = src[i];
  for (; i + 4 <= n; i += 4) _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
#endif
  for (; i < n; ++i) dst[i] = src[i];
}

// Non-temporal stores are weakly ordered: fence before another thread may read what this one streamed.
PF_CPU_INLINE void stream_fence(bool stream) {
#if defined(__SSE2__)
  if (stream) _mm_sfence();
#else
  (void)stream;
#endif
}

// Prefetches n floats from p into L2. Planes blocks run a DRAM-bound first pass and then a second pass from
// cache, during which the hardware prefetchers (which only follow short runs of a strided block) leave DRAM idle;
// prefetching the next block's channel rows while the second pass computes keeps it busy.
PF_CPU_INLINE void prefetch_row(const float* p, int64_t n) {
  for (int64_t i = 0; i < n; i += 64 / sizeof(float)) __builtin_prefetch(p + i, 0, 2);
}

}  // namespace progan_fast::cpu
