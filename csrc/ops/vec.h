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

#include "ops/hd.h"

namespace progan_fast::hd {

// N elements moved as one access; aligned to its size, so the GPU moves it with one instruction (ld/st .v4, .v2).
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T e[N];
};

// Elements of T per 128-bit access.
template <typename T>
inline constexpr int kVec128 = 16 / static_cast<int>(sizeof(T));

template <int N, typename T>
PF_HD Vec<T, N> load_vec(const T* p) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const Vec<T, N>*>(p);
#else
  Vec<T, N> v;
  std::memcpy(static_cast<void*>(&v), p, sizeof(v));
  return v;
#endif
}

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

}  // namespace progan_fast::hd
