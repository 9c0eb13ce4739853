// How many threads of a block share one item (a pixel's channels) in the lane kernels of pixel norm, the epilogue
// (csrc/ops/scaled_bias_act.h) and fade_from_rgb's pixel kernels: one choice, made on the host from the shape and
// shared by the launcher and the emulation, so both run the same threads and add in the same order. The first two
// take their whole geometry and thread slots from here (ChannelItems, item_slot).
//
// An item's `lanes` (a power of two) split its accesses; a block of kThreads holds kThreads / lanes items. More
// lanes make more, smaller blocks. The lanes double, from a warp per row (rows) or a thread per pixel (planes), while
//   - a block's slice (items per block x elements per item) exceeds its bound (the write phase re-reads it from L2;
//     the epilogue's backward keeps it in a shared tile), or
//   - planes: the grid has fewer than kMinBlocks blocks (two waves of 2 blocks per SM on a 132-SM H100) and a block
//     still covers at least kMinPixelsPerBlock pixels (a 32-byte sector of float32 per channel load), or
//   - the grid has fewer than kFillBlocks blocks (2 per SM) and every lane keeps at least one access: small maps
//     (4x4 and 8x8 at N = 16 to 64 have 256 to 4096 pixels) give up whole sectors per channel load, or a row's
//     warp, for blocks on every SM. Without this, N = 16 at C = 512 launched 32 blocks at 4x4 and 128 at 8x8.
// Each condition only holds for fewer lanes than some bound, so a wider vector (fewer accesses per item) never gets
// more lanes than one element per access: the scalar geometry has the most blocks (the epilogue sizes its bias
// workspace by it).
#pragma once
#include "ops/hd.h"
#include "ops/phases.h"

namespace progan_fast::hd {

constexpr int64_t kFillBlocks = 2 * 132;
constexpr int64_t kMinBlocks = 512;
constexpr int kMinPixelsPerBlock = 8;

struct ItemWork {
  int64_t items = 0;     // items of the launch
  int64_t accesses = 1;  // accesses of one item (its channels / elements per access)
  bool rows = true;      // an item's lanes are consecutive threads (channels contiguous), else planes (NCHW)
  int64_t item_elems = 0;       // elements of one item, for max_block_elems
  int64_t max_block_elems = 0;  // bound on a block's slice; 0: none
  int max_lanes = 1 << 30;  // e.g. a warp for fade_from_rgb's runs of pixels, each lane pooling all of them
};

template <int kThreads>
constexpr int item_lanes(const ItemWork& w) {
  const int64_t channel_lanes = next_pow2(w.accesses);
  int cap = kThreads < w.max_lanes ? kThreads : w.max_lanes;
  if (channel_lanes < cap) cap = static_cast<int>(channel_lanes);
  int lanes = !w.rows ? 1 : cap < kWarpSize ? cap : kWarpSize;
  auto blocks = [&](int l) { return ceil_div(w.items, kThreads / l); };
  auto more = [&](int l) {
    if (w.max_block_elems > 0 && (kThreads / l) * w.item_elems > w.max_block_elems) return true;
    if (!w.rows && l < kThreads / kMinPixelsPerBlock && blocks(l) < kMinBlocks) return true;
    return 2 * l <= w.accesses && blocks(l) < kFillBlocks;
  };
  while (lanes < cap && more(lanes)) lanes *= 2;
  return lanes;
}

// Rows' geometry: `geometry(vector)` (16-byte accesses) unless its grid is short of kFillBlocks and that of one
// element per access has more blocks. A row's lanes stop at one access each, so on small maps vectors cost blocks:
// at 4x4, N = 16, C = 512 a row is 128 float32 vectors (128 blocks) or 64 of 16-bit elements (64 blocks), where
// single elements give it 256 lanes (256 blocks, a pixel per block, as NCHW). `geometry(v)` returns a config with
// `blocks`.
template <typename Geometry>
auto filling_geometry(int vector, Geometry&& geometry) {
  const auto cfg = geometry(vector);
  if (vector == 1 || cfg.blocks >= kFillBlocks) return cfg;
  const auto scalar = geometry(1);
  return scalar.blocks > cfg.blocks ? scalar : cfg;
}

// How the `lanes` threads of each item of a block add their sums (pixel norm, the epilogue, fade_from_rgb): a warp
// exchange (csrc/ops/phases.h) over the item's lanes within each warp, then, where its lanes lie in several warps,
// one barrier and the sum of those warps' sums (in shared memory, in warp order). Whatever the layout, one barrier
// at most, where a tree over shared memory takes one per halving.
//   rows   an item's lanes are consecutive threads: a warp holds whole items, or an item lanes / 32 whole warps;
//   planes item i of a block has threads i, i + items_per_block, ... (consecutive threads take consecutive items,
//          NCHW pixels): with items_per_block <= 16 each warp holds 32 / items_per_block lanes of each item,
//          items_per_block apart, added by a butterfly over offsets 16 down to items_per_block (an exchange of
//          strided lanes), and all 8 warps hold some; with more items per block a warp holds one lane of each of
//          its items, and the item's `lanes` lanes lie in as many warps.
template <int kThreads>
struct LaneSum {
  int exchange_lanes = 1, exchange_stride = 1;  // the exchange groups: exchange_lanes lanes exchange_stride apart
  int parts = 1;       // an item's sums after the exchange, one per warp holding its lanes (1: each lane has the total)
  int keep_mask = 0;   // thread tid keeps its warp's sum of its item (in slot tid) where tid & keep_mask is 0
  int first_mask = 0;  // the slot of the first kept sum of thread tid's item: tid & first_mask
  int part_step = 0;   // slots between the kept sums of an item

  // For `lanes` per item (a power of two <= kThreads), on the host: the kernels divide nothing.
  static constexpr LaneSum of(int lanes, bool rows) {
    const int items_per_block = kThreads / lanes;
    LaneSum s;
    if (rows) {
      s.exchange_lanes = lanes < kWarpSize ? lanes : kWarpSize;
      s.first_mask = ~(lanes - 1);
      s.part_step = kWarpSize;
    } else {
      s.exchange_lanes = items_per_block < kWarpSize ? kWarpSize / items_per_block : 1;
      s.exchange_stride = items_per_block;
      s.first_mask = items_per_block - 1;
      s.part_step = items_per_block < kWarpSize ? kWarpSize : items_per_block;
    }
    s.parts = lanes / s.exchange_lanes;
    s.keep_mask = (s.exchange_lanes - 1) * s.exchange_stride;
    return s;
  }

  // Whether thread tid keeps its warp's sum: the first lane of its exchange group.
  PF_HD bool keeps(int tid) const { return (tid & keep_mask) == 0; }
  // The total of thread tid's item from the kept slots: its warps' sums in warp order.
  template <typename T>
  PF_HD T total(const T* slots, int tid) const {
    const int first = tid & first_mask;
    T sum = 0;
    for (int part = 0; part < parts; ++part) sum += slots[first + part * part_step];
    return sum;
  }
};

// The launch geometry of a kernel over items of `channels` elements `inner` apart (a reduction over the channels in
// ReductionLayout's terms: a pixel of NCHW, a row of channels last), each split over `lanes` threads (item_lanes):
// pixel norm and the epilogue, which extend it with their own fields. Lanes and items per block are powers of two:
// thread index math is shifts and masks.
template <int kThreads>
struct ChannelItems {
  int64_t items = 0;     // outer * inner
  int64_t channels = 1;  // elements of each item
  int64_t inner = 1;     // distance between consecutive channels of an item (1: rows layout)
  Divisor inner_divisor;  // item -> its outer index (a shift in the kernels instantiated for pow2())
  int64_t blocks = 0;
  int vector = 1;             // elements per access: kVec128 for aligned rows, else 1 (rows_vector_width)
  int64_t vectors = 1;        // accesses per item: channels / vector
  int64_t vector_stride = 1;  // elements between an item's consecutive accesses: vector (rows) or inner (planes)
  int lanes = 1;              // threads per item, a power of two <= kThreads
  int lanes_log2 = 0;
  int items_per_block = 1;  // kThreads / lanes
  int items_per_block_log2 = 0;
  bool rows = true;
  LaneSum<kThreads> sum;  // how an item's lanes add their sums

  // With `vector` elements per access and a block's slice (items per block x channels) bounded by max_block_elems.
  static ChannelItems of(int64_t outer, int64_t channels, int64_t inner, int vector, int64_t max_block_elems) {
    ChannelItems g;
    g.items = outer * inner;
    g.channels = channels;
    g.inner = inner;
    g.inner_divisor = Divisor::of(inner);
    g.rows = inner == 1;
    g.vector = vector;
    g.vectors = channels / vector;
    g.vector_stride = g.rows ? vector : inner;
    g.lanes = item_lanes<kThreads>({.items = g.items, .accesses = g.vectors, .rows = g.rows, .item_elems = channels,
                                    .max_block_elems = max_block_elems});
    g.lanes_log2 = log2_of(g.lanes);
    g.items_per_block = kThreads / g.lanes;
    g.items_per_block_log2 = log2_of(g.items_per_block);
    g.blocks = ceil_div(g.items, g.items_per_block);
    g.sum = LaneSum<kThreads>::of(g.lanes, g.rows);
    return g;
  }
};

// Where one thread of a ChannelItems launch works: its item and its lane.
struct ItemSlot {
  int64_t item;
  int item_in_block;
  int lane;
  bool active;   // item < items (the last block may be partial)
  int64_t base;  // element offset of the item's channel 0
};

// The launch config of a ChannelItems kernel, shared by its launcher and the emulation so both run the same threads:
// the geometry of filling_geometry for `vector` (from rows_vector_width; the config's own `vector` is what the kernels
// are instantiated for), made into the op's config (a ChannelItems with its own fields) by `extend`.
template <int kThreads, typename Extend>
auto channel_items_config(int64_t outer, int64_t channels, int64_t inner, int vector, int64_t max_block_elems,
                          Extend&& extend) {
  return filling_geometry(vector, [&](int v) {
    return extend(ChannelItems<kThreads>::of(outer, channels, inner, v, max_block_elems));
  });
}

template <bool kPow2Inner, int kThreads>
PF_HD ItemSlot item_slot(const ChannelItems<kThreads>& g, int64_t block, int tid) {
  ItemSlot s;
  if (g.rows) {
    s.item_in_block = tid >> g.lanes_log2;
    s.lane = tid & (g.lanes - 1);
  } else {
    s.item_in_block = tid & (g.items_per_block - 1);
    s.lane = tid >> g.items_per_block_log2;
  }
  s.item = block * g.items_per_block + s.item_in_block;
  s.active = s.item < g.items;
  const int64_t outer = g.inner_divisor.template divide<kPow2Inner>(s.item);
  s.base = outer * g.channels * g.inner + (s.item - outer * g.inner);
  return s;
}

}  // namespace progan_fast::hd
