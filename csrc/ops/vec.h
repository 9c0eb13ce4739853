// 128-bit memory accesses for device code: a thread moves 16 bytes (4 floats, 8 halves, 2 doubles) per load or
// store instead of one element, so that enough bytes are in flight per SM to approach HBM bandwidth (one 2-byte
// load in flight per thread cannot). A kernel takes its elements per access as a template parameter N,
// instantiated for both values the launcher can pick with `vector_width`: kVec128<T> where every pointer it steps
// through is 16-byte aligned and each run of elements a thread accesses divides into vectors, else 1 (the scalar
// fallback: the same code, one element per access). On the host (the emulated family) the accesses are memcpys of
// the same bytes.
#pragma once
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <type_traits>

#include "ops/hd.h"

namespace progan_fast::hd {

// N elements moved as one access; aligned to its size, so the GPU moves it with one instruction (ld/st .v4, .v2).
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T e[N];
};

// One element per access (the scalar fallback), as the kernels' N.
using Scalar = std::integral_constant<int, 1>;

// Elements of T per 128-bit access.
template <typename T>
inline constexpr int kVec128 = 16 / static_cast<int>(sizeof(T));

// Loads of tensors no thread of the kernel writes (every input: ops never write their inputs), through the
// read-only path (ld.global.nc, hd::load_ro); a 16-byte vector as one uint4, a vector type of the load intrinsic.
template <int N, typename T>
PF_HD Vec<T, N> load_vec(const T* p) {
  Vec<T, N> v;
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(v) == 16) {
    const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
    memcpy(&v, &u, sizeof(v));
  } else {
    for (int i = 0; i < N; ++i) v.e[i] = load_ro(p + i);
  }
#else
  std::memcpy(static_cast<void*>(&v), p, sizeof(v));
#endif
  return v;
}

// nvcc merges this struct copy into one st.global.v4 only where it sees that p's offset from the tensor's pointer
// is a multiple of 16 bytes (a vector index times N, not a sum of element counts it cannot prove divisible: those
// copies it splits into 16-, 32- and 64-bit stores, as it did in fade_reals'). An inline-asm st.global.v4 instead
// made ptxas spill pixel norm's kernels, the ones that shuffle.
template <int N, typename T>
PF_HD void store_vec(T* p, const Vec<T, N>& v) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<Vec<T, N>*>(p) = v;
#else
  std::memcpy(static_cast<void*>(p), &v, sizeof(v));
#endif
}

// kVec128<T> when `divisible` (every run of elements a thread accesses starts a multiple of kVec128<T> elements
// from its tensor's pointer and spans a multiple of it) and every tensor is 16-byte aligned, else 1.
template <typename T>
int vector_width(bool divisible, std::initializer_list<const void*> tensors) {
  if (!divisible) return 1;
  for (const void* p : tensors)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return 1;
  return kVec128<T>;
}

// vector_width for a kernel over "items" of `channels` elements `inner` apart whose lanes take whole accesses of
// one item (pixel norm, the epilogue): a row (`inner` 1) splits into 128-bit vectors when `channels` divides; a
// planes thread reads one element per channel, `inner` apart (coalesced across the threads of neighbouring pixels
// instead).
template <typename T>
int rows_vector_width(int64_t channels, int64_t inner, std::initializer_list<const void*> tensors) {
  return vector_width<T>(inner == 1 && channels % kVec128<T> == 0, tensors);
}

// Calls f(N, kPow2) (integral constants) for the three instantiations of a kernel that takes 128-bit accesses only
// where its index math is shifts: kVec128<T> elements per access where `vector`, else one, with powers of two
// (`pow2`) or not.
template <typename T, typename F>
auto with_vector_case(bool vector, bool pow2, F&& f) {
  if (vector) return f(std::integral_constant<int, kVec128<T>>{}, std::true_type{});
  return with_pow2_case(pow2, [&](auto p) { return f(Scalar{}, p); });
}

// with_vector_case for a kernel over "items" whose elements lie `inner` apart (pixel norm and the epilogue): only
// rows (`inner` 1, a power of two) take vectors.
template <typename T, typename F>
auto with_rows_instantiation(int vector, int64_t inner, F&& f) {
  return with_vector_case<T>(vector > 1, Divisor::of(inner).pow2(), f);
}

}  // namespace progan_fast::hd
