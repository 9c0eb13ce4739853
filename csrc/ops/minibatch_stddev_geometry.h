// Minibatch stddev's sample groups, channel groups and memory layout, resolved once from the op's arguments and
// shared by the CPU kernels, the CUDA device code and its emulation (ATen-free, so .cu files can include it).
//
// The op (progan_fast/reference.py): N samples in M groups of G, C channels in F groups of Cf = C/F; for group m
// and channel group f, s[m, f] = mean over the K = Cf*H*W positions of the group's samples of
// sqrt(var_m(x) + eps); the output y is N x (C+F) x H x W, x copied into channels [0, C) and s[m(n), f] written
// to channel C + f. Positions are numbered per channel group: j in [0, K), in the memory order of the layout,
// so a run of consecutive j is contiguous in x (all of K in NCHW, Cf channels of one pixel in channels_last).
#pragma once
#include "ops/hd.h"

namespace progan_fast::minibatch_stddev {

struct Geometry {
  int64_t samples = 0;    // N
  int64_t channels = 0;   // C
  int64_t pixels = 0;     // H*W
  int64_t features = 1;   // F
  int64_t group_size = 1; // G
  int64_t groups = 0;     // M = N / G
  bool strided = true;    // TF official grouping (sample n in group n mod M); else contiguous (n / G)
  bool zero = false;      // contiguous groups of one sample: the statistic is the constant 0
  bool channels_last = false;
  double inv_divisor = 1;     // 1/G (biased) or 1/(G-1) (unbiased)
  double inv_group_size = 1;  // 1/G (the GPU kernels multiply: a double division spills registers)

  hd::Divisor cf;         // C / F, and K = C / F * H * W positions per channel group: stored, not divided on the
  int64_t k = 0;          // GPU (a 64-bit division is a subroutine call there, and its registers spill)
  // What a sample index is divided by to find its group: M (strided: n mod M) or G (contiguous: n / G).
  hd::Divisor grouping;

  PF_HD int64_t channels_per_feature() const { return cf.value; }
  PF_HD int64_t positions() const { return k; }
  PF_HD int64_t x_sample_stride() const { return channels * pixels; }
  PF_HD int64_t y_sample_stride() const { return (channels + features) * pixels; }
  // Sample index of member k of group m, and the group of sample n (Index: int64_t or a GPU kernel's uint32_t).
  // Divisions are by hd::Divisor: shifts in the GPU kernels instantiated for kPow2 (the CPU kernels divide once per
  // sample or task, and pass false).
  PF_HD int64_t sample(int64_t m, int64_t k) const { return strided ? m + k * groups : m * group_size + k; }
  template <bool kPow2, typename Index>
  PF_HD Index group_of(Index n) const {
    const hd::Divisor::Split<Index> s = grouping.split<kPow2>(n);
    return strided ? s.remainder : s.quotient;
  }
  // Offsets within one sample of position j of channel group f: in x (and dx), and in y (and grad_y). Positions
  // are 32-bit (the hosts refuse K >= 2^31): a 64-bit division per element costs registers the GPU kernels
  // would spill.
  template <bool kPow2>
  PF_HD int64_t x_offset(int64_t f, uint32_t j) const {
    if (!channels_last) return f * positions() + j;
    const hd::Divisor::Split<uint32_t> s = cf.split<kPow2>(j);
    return int64_t(s.quotient) * channels + f * cf.value + s.remainder;
  }
  template <bool kPow2>
  PF_HD int64_t y_offset(int64_t f, uint32_t j) const {
    if (!channels_last) return f * positions() + j;
    const hd::Divisor::Split<uint32_t> s = cf.split<kPow2>(j);
    return int64_t(s.quotient) * (channels + features) + f * cf.value + s.remainder;
  }
  // Offset within one sample of y's statistic channel C + f at `pixel`.
  PF_HD int64_t stat_offset(int64_t f, int64_t pixel) const {
    return channels_last ? pixel * (channels + features) + channels + f : (channels + f) * pixels + pixel;
  }
};

// The grouping rule of every convention (checks are the host's: csrc/common/minibatch_stddev_operands.h):
// G = min(group_size, N); contiguous groups take the whole batch when G does not divide N.
inline Geometry make_geometry(int64_t samples, int64_t channels, int64_t pixels, int64_t features,
                              int64_t group_size, bool strided, bool unbiased, bool channels_last) {
  Geometry g;
  g.samples = samples;
  g.channels = channels;
  g.pixels = pixels;
  g.features = features;
  g.cf = hd::Divisor::of(features > 0 ? channels / features : 0);
  g.k = g.cf.value * pixels;
  g.group_size = group_size < samples ? group_size : samples;
  if (!strided && g.group_size > 0 && samples % g.group_size != 0) g.group_size = samples;
  g.groups = g.group_size > 0 ? samples / g.group_size : 0;
  g.grouping = hd::Divisor::of(strided ? g.groups : g.group_size);
  g.strided = strided;
  g.zero = !strided && g.group_size == 1;
  g.channels_last = channels_last;
  const int64_t divisor = unbiased ? g.group_size - 1 : g.group_size;
  g.inv_divisor = divisor > 0 ? 1.0 / double(divisor) : 0.0;
  g.inv_group_size = g.group_size > 0 ? 1.0 / double(g.group_size) : 0.0;
  return g;
}

}  // namespace progan_fast::minibatch_stddev
