// How the CPU kernels cut a [outer, channels, inner] tensor (csrc/common/reduction_layout.h) into work for
// at::parallel_for, and the half-precision blocks they widen into float scratch.
//
//   rows   (inner == 1: channels_last activations, 2-D dense layers): runs of whole rows, `rows_chunk` apart.
//   planes (NCHW: a pixel's channels `inner` apart): blocks of neighbouring pixels of one sample with all their
//          channels, small enough (kPlanesBlockBytes) that a second pass over the block re-reads it from L2.
// Work is split into at most one contiguous chunk per thread, numbered, so a kernel that also reduces across
// the tensor (a bias gradient) keeps one partial result per chunk and sums them in chunk order afterwards: the
// result depends on the thread count, never on the schedule.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "cpu/isa.h"

namespace progan_fast::cpu {

// Most pixels one planes block holds; sizes per-pixel accumulators on the stack.
constexpr int64_t kMaxBlock = 1024;
// Bytes of input one planes block spans (all of its input tensors together): well inside a core's L2 with room
// for the output, and long contiguous runs per channel so the hardware prefetchers stream them.
constexpr int64_t kPlanesBlockBytes = 256 * 1024;
// A single-input pass (the pixel-norm forwards) takes a whole sample, one contiguous slab instead of C separate
// runs, up to this size: at (16, 256, 32, 32) 1.4x faster with 2 threads and 1.1x with one than 256 KB blocks of
// 1 KB runs (interleaved A/B, Zen 4). Bigger slabs spill out of L2 before the second pass re-reads them; 512 KB
// blocks of 4 KB runs at (16, 128, 64, 64) were faster with 2 threads but slower with one, so they stay 256 KB.
constexpr int64_t kWholeSampleBytes = 1024 * 1024;

// Rows reduced to one statistic each (pixel norm's, in its kernel and in the epilogue's option) go in groups of up
// to kRowGroup: the group's reductions first, independent, so their latencies overlap (one row at a time spent ~50
// cycles per row: forward ~1.4x slower at C = 128..256), with the group's inputs within kRowGroupBytes so the
// last pass re-reads them from L1.
constexpr int64_t kRowGroup = 16;
constexpr int64_t kRowGroupBytes = 16 * 1024;

// Rows per group for rows of C floats read from `streams` inputs.
inline __attribute__((always_inline)) int64_t row_group(int64_t C, int64_t streams) {
  return std::clamp<int64_t>(kRowGroupBytes / (streams * std::max<int64_t>(C, 1) * int64_t(sizeof(float))), 1,
                             kRowGroup);
}

// Elements one rows chunk holds (half-precision inputs convert whole chunks to float scratch).
constexpr int64_t kRowsChunkElems = 16 * 1024;

// Pixels per planes block: about kPlanesBlockBytes of input (`streams` tensors of C float channels; one stream:
// the whole sample up to kWholeSampleBytes), a multiple of 16 (whole vectors and cache lines), never more than one
// plane.
inline int64_t planes_block(int64_t C, int64_t inner, int64_t streams) {
  const int64_t pixel_bytes = streams * std::max<int64_t>(C, 1) * static_cast<int64_t>(sizeof(float));
  if (streams == 1 && inner <= kMaxBlock && inner * pixel_bytes <= kWholeSampleBytes) return inner;
  int64_t n = kPlanesBlockBytes / pixel_bytes;
  n = std::clamp<int64_t>(n / 16 * 16, 16, kMaxBlock);
  return std::min(n, inner);
}

// Tasks of a planes loop per chunk: at least ATen's grain of elements, so small tensors stay on the calling
// thread (waking the OpenMP team costs more than they take, and far more when the cores are busy).
inline int64_t planes_grain(int64_t C, int64_t block) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(C * block, 1));
}

inline int64_t rows_chunk(int64_t C) { return std::max<int64_t>(1, kRowsChunkElems / std::max<int64_t>(C, 1)); }

// [0, n) in `count` contiguous chunks of `size` (the last may be shorter): one per thread at most, each at least
// `grain` long unless n is shorter. The same split as at::parallel_for's.
struct Chunks {
  int64_t count = 1, size = 0;

  static Chunks of(int64_t n, int64_t grain) {
    Chunks c;
    const int64_t most = std::max<int64_t>(1, (n + std::max<int64_t>(grain, 1) - 1) / std::max<int64_t>(grain, 1));
    c.count = std::clamp<int64_t>(static_cast<int64_t>(at::get_num_threads()), 1, most);
    c.size = (n + c.count - 1) / c.count;
    c.count = c.size > 0 ? (n + c.size - 1) / c.size : 1;
    return c;
  }
};

// fn(chunk, begin, end) for every chunk of [0, n), in parallel; a single chunk runs on the calling thread.
template <typename F>
void parallel_chunks(const Chunks& chunks, int64_t n, const F& fn) {
  if (chunks.count <= 1) {
    fn(int64_t{0}, int64_t{0}, n);
    return;
  }
  at::parallel_for(0, chunks.count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) fn(k, k * chunks.size, std::min(n, (k + 1) * chunks.size));
  });
}

// One planes block: sample o, pixels [i0, i0 + n), and the same thread's next block (`next`: element offset of
// its first pixel's channel 0, -1 after the chunk's last block; next_n pixels) for prefetching.
struct PlanesBlock {
  int64_t chunk, o, i0, n, next, next_n;
};

// The planes blocks of [outer, C, inner] as tasks (`per_plane` consecutive tasks per sample), in chunks.
struct PlanesTasks {
  int64_t outer, C, inner, block, per_plane;
  Chunks chunks;

  PlanesTasks(int64_t outer_, int64_t C_, int64_t inner_, int64_t block_)
      : outer(outer_), C(C_), inner(inner_), block(block_), per_plane((inner_ + block_ - 1) / block_),
        chunks(Chunks::of(outer_ * per_plane, planes_grain(C_, block_))) {}

  int64_t tasks() const { return outer * per_plane; }

  // Task `task` of a chunk that ends at task `end`.
  PlanesBlock at(int64_t chunk, int64_t task, int64_t end) const {
    PlanesBlock b{chunk, task / per_plane, (task % per_plane) * block, 0, -1, 0};
    b.n = std::min(block, inner - b.i0);
    if (task + 1 < end) {
      const int64_t next_o = (task + 1) / per_plane, next_i0 = ((task + 1) % per_plane) * block;
      b.next = next_o * C * inner + next_i0;
      b.next_n = std::min(block, inner - next_i0);
    }
    return b;
  }
};

// fn(const PlanesBlock&) for every planes block, blocks of one plane contiguous within a chunk.
template <typename F>
void for_each_planes_block(const PlanesTasks& t, const F& fn) {
  parallel_chunks(t.chunks, t.tasks(), [&](int64_t chunk, int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) fn(t.at(chunk, task, end));
  });
}

// Copies a planes block (C channels of n pixels, `stride` apart) to or from dense float scratch [C, n].
template <typename T>
void gather_block(const T* src, float* dst, int64_t C, int64_t stride, int64_t n) {
  for (int64_t c = 0; c < C; ++c) isa::to_float(src + c * stride, dst + c * n, n);
}
template <typename T>
void scatter_block(const float* src, T* dst, int64_t C, int64_t stride, int64_t n) {
  for (int64_t c = 0; c < C; ++c) isa::from_float(src + c * n, dst + c * stride, n);
}

}  // namespace progan_fast::cpu
