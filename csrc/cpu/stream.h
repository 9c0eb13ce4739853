// Memory-traffic helpers of the CPU kernels: elementwise output loops with plain or non-temporal (streaming)
// stores, their fence, software prefetch.
//
// Everything here is always inlined, so it takes the ISA of the multi-versioned loop that calls it (isa.h). The
// streaming stores are SSE2 (the x86-64 baseline, legal in every variant) of 4-float vectors computed in registers
// (GCC vector extensions, which every variant compiles at its own encoding); at DRAM bandwidth 4 lanes keep up,
// and the write-combining buffers merge the stores into whole lines. Computing into an L1 scratch row and
// streaming that out instead was measured ~1.5x slower (the extra load/store traffic stalls the streams).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

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

// Four floats, loaded and stored unaligned; arithmetic with a float scalar broadcasts it.
typedef float v4f __attribute__((vector_size(16), aligned(4)));

// load<float>(p) = *p, load<v4f>(p) = p[0..3]: element functors below are written once for both.
template <typename V>
inline __attribute__((always_inline)) V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

// Elementwise output loops over a functor `f` with `template <typename V> V at(int64_t i) const` (V = float or
// v4f: the value of elements i..i+lanes-1), a pure function of i. Without `stream` they are plain loops, which
// the compiler vectorizes at the variant's full width (outputs that stay in cache); with it, a scalar head up to
// 16-byte alignment, 4-float non-temporal stores, a scalar tail.

// out[i] = f(i)
template <typename F>
PF_CPU_INLINE void write_elements(float* __restrict out, int64_t n, bool stream, const F& f) {
  int64_t i = 0;
#if defined(__SSE2__)
  if (stream) {
    for (const int64_t head = until_aligned(out, n); i < head; ++i) out[i] = f.template at<float>(i);
    for (; i + 4 <= n; i += 4) _mm_stream_ps(out + i, (__m128)(f.template at<v4f>(i)));
  }
#endif
  for (; i < n; ++i) out[i] = f.template at<float>(i);
}

// out[i] = scale * f(i); returns the sum of f(i).
template <typename F>
PF_CPU_INLINE float write_scaled_sum(float* __restrict out, int64_t n, float scale, bool stream, const F& f) {
  int64_t i = 0;
  float sum = 0.f;
#if defined(__SSE2__)
  if (stream) {
    for (const int64_t head = until_aligned(out, n); i < head; ++i) {
      const float v = f.template at<float>(i);
      out[i] = v * scale;
      sum += v;
    }
    v4f acc = {0.f, 0.f, 0.f, 0.f};
    for (; i + 4 <= n; i += 4) {
      const v4f v = f.template at<v4f>(i);
      acc += v;
      _mm_stream_ps(out + i, (__m128)(v * scale));
    }
    sum += (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (; i < n; ++i) {
      const float v = f.template at<float>(i);
      out[i] = v * scale;
      sum += v;
    }
    return sum;
  }
#endif
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    const float v = f.template at<float>(j);
    out[j] = v * scale;
    sum += v;
  }
  return sum;
}

// out[i] = scale * f(i), acc[i] += f(i).
template <typename F>
PF_CPU_INLINE void write_scaled_accumulate(float* __restrict out, float* __restrict acc, int64_t n, float scale,
                                           bool stream, const F& f) {
  int64_t i = 0;
#if defined(__SSE2__)
  if (stream) {
    for (const int64_t head = until_aligned(out, n); i < head; ++i) {
      const float v = f.template at<float>(i);
      out[i] = v * scale;
      acc[i] += v;
    }
    for (; i + 4 <= n; i += 4) {
      const v4f v = f.template at<v4f>(i);
      const v4f a = load<v4f>(acc + i) + v;
      std::memcpy(acc + i, &a, sizeof(a));
      _mm_stream_ps(out + i, (__m128)(v * scale));
    }
  }
#endif
  for (; i < n; ++i) {
    const float v = f.template at<float>(i);
    out[i] = v * scale;
    acc[i] += v;
  }
}

// Non-temporal stores are weakly ordered: fence before another thread may read what this one streamed.
PF_CPU_INLINE void stream_fence(bool stream) {
#if defined(__SSE2__)
  if (stream) _mm_sfence();
#else
  (void)stream;
#endif
}

// Prefetches n elements from p into L2. Planes blocks run a DRAM-bound first pass and then a second pass from
// cache, during which the hardware prefetchers (which only follow short runs of a strided block) leave DRAM idle;
// prefetching the next block's channel rows while the second pass computes keeps it busy.
template <typename T>
PF_CPU_INLINE void prefetch_row(const T* p, int64_t n) {
  for (int64_t i = 0; i < n; i += 64 / int64_t(sizeof(T))) __builtin_prefetch(p + i, 0, 2);
}

// Prefetches n elements from p into L1: for loops that consume a run within the next few hundred nanoseconds
// (fade_from_rgb's next group of rows or chunk of planes), where the T1 hint above measured 1.1-1.2x slower.
template <typename T>
PF_CPU_INLINE void prefetch_row_l1(const T* p, int64_t n) {
  for (int64_t i = 0; i < n; i += 64 / int64_t(sizeof(T))) __builtin_prefetch(p + i, 0, 3);
}

}  // namespace progan_fast::cpu
