// The equalized-lr epilogue on the CPU: y = act(scale * x + bias[c]), act(v) = v > 0 ? v : slope * v, then with
// pixel norm y <- y * rsqrt(mean_c(y^2) + eps). One pass over memory each way: forward reads x and writes y;
// backward reads grad_y and y (the saved output, see progan_fast/ops/scaled_bias_act.py) and writes grad_x, and
// sums grad_bias over N, H, W in the same sweep: every chunk of work keeps a per-channel partial sum, and the
// partials are added in chunk order at the end (the result depends on the thread count, not on the schedule).
//
// Without pixel norm the op is elementwise and runs as
//   rows:   runs of `period` contiguous elements that share one bias pattern: a channels_last / 2-D row of C
//           channels, or a whole NCHW sample [C, H*W] when it is small (4x4..8x8 maps: the per-element bias of
//           the period is expanded once, so tiny planes cost no per-plane loop overhead); short periods (RGB) are
//           widened to several rows;
//   planes: NCHW with large maps, one bias per plane.
// With pixel norm the per-pixel sum over channels needs a whole pixel's channels: channels_last rows in groups,
// NCHW as blocks of neighbouring pixels with all their channels, two passes over a block that stays in L2
// (csrc/cpu/blocks.h), as pixel norm does.
//
// float32 runs the multi-versioned loops below directly on the tensors (outputs > 8 MiB with streaming stores);
// float16/bfloat16, and float32 with a negative slope (whose backward reads x, not y), go through "staged"
// blocks widened into float scratch and run the same loops; float64 (gradcheck) runs plain loops.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <tuple>
#include <vector>

#include "common/scaled_bias_act_operands.h"
#include "cpu/blocks.h"
#include "cpu/isa.h"
#include "cpu/stream.h"

namespace progan_fast {
namespace scaled_bias_act_cpu {

using cpu::kMaxBlock;
using cpu::kRowGroup;
using cpu::row_group;
using cpu::load;
using cpu::prefetch_row;
using cpu::stream_fence;
using cpu::v4f;
using cpu::write_elements;
using cpu::write_scaled_accumulate;
using cpu::write_scaled_sum;

// Rows-form periods: a sample's [C, H*W] is one period while it spans at most this many elements (its expanded
// bias stays in L1/L2); short periods are widened to about kTargetPeriod.
constexpr int64_t kMaxPeriod = 8192;
constexpr int64_t kTargetPeriod = 1024;
// Planes-form bias sums are accumulated in float over at most this many elements, then in double.
constexpr int64_t kFloatSum = 4096;

#define SBA_INLINE inline __attribute__((always_inline))

template <typename V>
SBA_INLINE V act(V v, float slope) {
  return v > 0.f ? v : v * slope;
}
// g * act'(v), with the sign of v read from `sign` (y itself for slope >= 0, the pre-activation otherwise).
template <typename V>
SBA_INLINE V gate(V sign, V g, float slope) {
  return sign > 0.f ? g : g * slope;
}

// Element functors for the output loops of csrc/cpu/stream.h (V = float or v4f).

// act(scale * x[i] + bias[i]): a rows-form period with its bias pattern.
struct ActPattern {
  const float* x;
  const float* bias;
  float scale, slope;
  template <typename V>
  SBA_INLINE V at(int64_t i) const {
    return act(load<V>(x + i) * scale + load<V>(bias + i), slope);
  }
};

// act(scale * x[i] + b) (* r[i] with pixel norm): a plane of one channel.
struct ActPlane {
  const float* x;
  const float* r;  // null without pixel norm
  float b, scale, slope;
  template <typename V>
  SBA_INLINE V at(int64_t i) const {
    const V a = act(load<V>(x + i) * scale + b, slope);
    return r ? a * load<V>(r + i) : a;
  }
};

// a[i] * r: a pixel-norm row.
struct ScaledRow {
  const float* a;
  float r;
  template <typename V>
  SBA_INLINE V at(int64_t i) const {
    return load<V>(a + i) * r;
  }
};

// gv = act'(v) * grad_y.
struct Gate {
  const float* gy;
  const float* sign;
  float slope;
  template <typename V>
  SBA_INLINE V at(int64_t i) const {
    return gate(load<V>(sign + i), load<V>(gy + i), slope);
  }
};

// gv = act'(v) * r[i] * (grad_y - y * m[i]): a plane of one channel under pixel norm (m = mean_c(grad_y * y)).
struct GateNormPlane {
  const float* gy;
  const float* y;
  const float* sign;
  const float* r;
  const float* m;
  float slope;
  template <typename V>
  SBA_INLINE V at(int64_t i) const {
    return gate(load<V>(sign + i), (load<V>(gy + i) - load<V>(y + i) * load<V>(m + i)) * load<V>(r + i), slope);
  }
};

// The same for a row (one pixel): r and m are scalars.
struct GateNormRow {
  const float* gy;
  const float* y;
  const float* sign;
  float r, m, slope;
  template <typename V>
  SBA_INLINE V at(int64_t i) const {
    return gate(load<V>(sign + i), (load<V>(gy + i) - load<V>(y + i) * m) * r, slope);
  }
};

PF_CPU_INLINE float norm_fix(float mean_sq, float r, float eps) {
  return scaled_bias_act_norm_fix(mean_sq, r, eps);
}

// ---- float32 loops (multi-versioned, isa.h) ----

// Rows form, forward: `rows` rows of L elements, y = act(scale * x + bias[j]) with bias the row's pattern.
PROGAN_FAST_MULTIVERSION(forward_rows_f32,
                         (const float* __restrict x, float* __restrict y, const float* __restrict bias, float scale,
                          float slope, int64_t rows, int64_t L, bool stream),
                         (x, y, bias, scale, slope, rows, L, stream)) {
  for (int64_t row = 0; row < rows; ++row)
    write_elements(y + row * L, L, stream, ActPattern{x + row * L, bias, scale, slope});
  stream_fence(stream);
}

// Rows form, backward: gv = act'(v) * grad_y, grad_x = scale * gv, acc[j] += gv (the bias pattern's partial sums).
// Called once per flush of acc; the caller fences its streaming stores once at the end (a fence per call cost
// ~2x at S3 channels_last).
PROGAN_FAST_MULTIVERSION(backward_rows_f32,
                         (const float* __restrict gy, const float* __restrict sign, float* __restrict gx,
                          float* __restrict acc, float scale, float slope, int64_t rows, int64_t L, bool stream),
                         (gy, sign, gx, acc, scale, slope, rows, L, stream)) {
  for (int64_t row = 0; row < rows; ++row)
    write_scaled_accumulate(gx + row * L, acc, L, scale, stream, Gate{gy + row * L, sign + row * L, slope});
}

// Planes form, forward: planes [p0, p1) of `inner` elements from x, y (pointing at plane p0); plane p is
// channel p % C.
PROGAN_FAST_MULTIVERSION(forward_planes_f32,
                         (const float* __restrict x, float* __restrict y, const float* __restrict bias, float scale,
                          float slope, int64_t p0, int64_t p1, int64_t C, int64_t inner, bool stream),
                         (x, y, bias, scale, slope, p0, p1, C, inner, stream)) {
  int64_t c = p0 % C;
  for (int64_t p = p0; p < p1; ++p, c = c + 1 == C ? 0 : c + 1) {
    const int64_t off = (p - p0) * inner;
    write_elements(y + off, inner, stream, ActPlane{x + off, nullptr, bias[c], scale, slope});
  }
  stream_fence(stream);
}

// Planes form, backward; bias_sum[c] += sum over the plane of gv, in float over kFloatSum elements at a time.
PROGAN_FAST_MULTIVERSION(backward_planes_f32,
                         (const float* __restrict gy, const float* __restrict sign, float* __restrict gx,
                          double* __restrict bias_sum, float scale, float slope, int64_t p0, int64_t p1, int64_t C,
                          int64_t inner, bool stream),
                         (gy, sign, gx, bias_sum, scale, slope, p0, p1, C, inner, stream)) {
  int64_t c = p0 % C;
  for (int64_t p = p0; p < p1; ++p, c = c + 1 == C ? 0 : c + 1) {
    double total = 0;
    for (int64_t i0 = 0; i0 < inner; i0 += kFloatSum) {
      const int64_t off = (p - p0) * inner + i0;
      total += write_scaled_sum(gx + off, std::min(kFloatSum, inner - i0), scale, stream,
                                Gate{gy + off, sign + off, slope});
    }
    bias_sum[c] += total;
  }
  stream_fence(stream);
}

// Pixel norm, planes: a block of n <= kMaxBlock neighbouring pixels; channel c of pixel i at [c * stride + i].
// `next` (may be null): the same thread's next block, prefetched during the second pass.
PROGAN_FAST_MULTIVERSION(forward_planes_pn_f32,
                         (const float* __restrict x, float* __restrict y, float* __restrict r,
                          const float* __restrict bias, float scale, float slope, int64_t C, int64_t stride, int64_t n,
                          float eps, bool stream, const float* next, int64_t next_n),
                         (x, y, r, bias, scale, slope, C, stride, n, eps, stream, next, next_n)) {
  float acc[kMaxBlock];
  for (int64_t i = 0; i < n; ++i) acc[i] = 0.f;
  for (int64_t c = 0; c < C; ++c) {
    const float* __restrict xc = x + c * stride;
    const float b = bias[c];
    for (int64_t i = 0; i < n; ++i) {
      const float a = act(xc[i] * scale + b, slope);
      acc[i] += a * a;
    }
  }
  const float fc = static_cast<float>(C);
  for (int64_t i = 0; i < n; ++i) acc[i] = 1.f / std::sqrt(acc[i] / fc + eps);
  for (int64_t c = 0; c < C; ++c) {
    if (next) prefetch_row(next + c * stride, next_n);
    write_elements(y + c * stride, n, stream, ActPlane{x + c * stride, acc, bias[c], scale, slope});
  }
  for (int64_t i = 0; i < n; ++i) r[i] = acc[i];
  stream_fence(stream);
}

// ga = r * (gy - y * mean_c(gy * y) * fix) with y's norm restored (norm_fix), eps * r^3 * gy over one channel
// (pixel_norm_grad_scalars), gv = act'(v) * ga, grad_x = scale * gv, bias_sum[c] += sum_i gv.
PROGAN_FAST_MULTIVERSION(backward_planes_pn_f32,
                         (const float* __restrict gy, const float* __restrict y, const float* __restrict sign,
                          const float* __restrict r, float* __restrict gx, double* __restrict bias_sum, float scale,
                          float slope, float eps, int64_t C, int64_t stride, int64_t n, bool stream,
                          const float* next_gy, const float* next_y, int64_t next_n),
                         (gy, y, sign, r, gx, bias_sum, scale, slope, eps, C, stride, n, stream, next_gy, next_y,
                          next_n)) {
  float m[kMaxBlock];
  float q[kMaxBlock];
  float rg[kMaxBlock];
  for (int64_t i = 0; i < n; ++i) m[i] = q[i] = 0.f;
  for (int64_t c = 0; c < C; ++c) {
    const float* __restrict gyc = gy + c * stride;
    const float* __restrict yc = y + c * stride;
    for (int64_t i = 0; i < n; ++i) {
      m[i] += gyc[i] * yc[i];
      q[i] += yc[i] * yc[i];
    }
  }
  const float fc = static_cast<float>(C);
  for (int64_t i = 0; i < n; ++i) {
    const PixelNormGradScalars<float> g =
        pixel_norm_grad_scalars(C, r[i], m[i] / fc * norm_fix(q[i] / fc, r[i], eps), eps);
    rg[i] = g.grad_scale;
    m[i] = g.projection;
  }
  for (int64_t c = 0; c < C; ++c) {
    if (next_gy) {
      prefetch_row(next_gy + c * stride, next_n);
      prefetch_row(next_y + c * stride, next_n);
    }
    const int64_t off = c * stride;
    bias_sum[c] += write_scaled_sum(gx + off, n, scale, stream,
                                    GateNormPlane{gy + off, y + off, sign + off, rg, m, slope});
  }
  stream_fence(stream);
}

// Pixel norm, rows: `rows` contiguous rows of C channels, in groups: the group's activations into `scratch`
// (group * C floats, L1) with their sums of squares, then the group's rsqrts, then y = a * r.
PROGAN_FAST_MULTIVERSION(forward_rows_pn_f32,
                         (const float* __restrict x, float* __restrict y, float* __restrict r,
                          const float* __restrict bias, float scale, float slope, int64_t rows, int64_t C, float eps,
                          bool stream, float* __restrict scratch),
                         (x, y, r, bias, scale, slope, rows, C, eps, stream, scratch)) {
  const float fc = static_cast<float>(C);
  const int64_t group = row_group(C, 1);
  for (int64_t row0 = 0; row0 < rows; row0 += group) {
    const int64_t nr = std::min(group, rows - row0);
    float rs[kRowGroup];
    for (int64_t j = 0; j < nr; ++j) {
      const float* __restrict xr = x + (row0 + j) * C;
      float* __restrict ar = scratch + j * C;
      float sum = 0.f;
#pragma omp simd reduction(+ : sum)
      for (int64_t c = 0; c < C; ++c) {
        const float a = act(xr[c] * scale + bias[c], slope);
        ar[c] = a;
        sum += a * a;
      }
      rs[j] = sum;
    }
    for (int64_t j = 0; j < nr; ++j) rs[j] = 1.f / std::sqrt(rs[j] / fc + eps);
    for (int64_t j = 0; j < nr; ++j) {
      write_elements(y + (row0 + j) * C, C, stream, ScaledRow{scratch + j * C, rs[j]});
      r[row0 + j] = rs[j];
    }
  }
  stream_fence(stream);
}

// acc[c] += gv over the rows. The caller fences, as for backward_rows_f32.
PROGAN_FAST_MULTIVERSION(backward_rows_pn_f32,
                         (const float* __restrict gy, const float* __restrict y, const float* __restrict sign,
                          const float* __restrict r, float* __restrict gx, float* __restrict acc, float scale,
                          float slope, float eps, int64_t rows, int64_t C, bool stream),
                         (gy, y, sign, r, gx, acc, scale, slope, eps, rows, C, stream)) {
  const float fc = static_cast<float>(C);
  const int64_t group = row_group(C, 2);
  for (int64_t row0 = 0; row0 < rows; row0 += group) {
    const int64_t nr = std::min(group, rows - row0);
    float m[kRowGroup], rg[kRowGroup];
    for (int64_t j = 0; j < nr; ++j) {
      const float* __restrict gyr = gy + (row0 + j) * C;
      const float* __restrict yr = y + (row0 + j) * C;
      float dot = 0.f, sq = 0.f;
#pragma omp simd reduction(+ : dot, sq)
      for (int64_t c = 0; c < C; ++c) {
        dot += gyr[c] * yr[c];
        sq += yr[c] * yr[c];
      }
      const float rj = r[row0 + j];
      const PixelNormGradScalars<float> g = pixel_norm_grad_scalars(C, rj, dot / fc * norm_fix(sq / fc, rj, eps), eps);
      rg[j] = g.grad_scale;
      m[j] = g.projection;
    }
    for (int64_t j = 0; j < nr; ++j) {
      const int64_t off = (row0 + j) * C;
      write_scaled_accumulate(gx + off, acc, C, scale, stream,
                              GateNormRow{gy + off, y + off, sign + off, rg[j], m[j], slope});
    }
  }
}

namespace {

using cpu::Chunks;
using cpu::for_each_planes_block;
using cpu::gather_block;
using cpu::parallel_chunks;
using cpu::planes_block;
using cpu::PlanesBlock;
using cpu::PlanesTasks;
using cpu::rows_chunk;
using cpu::scatter_block;

struct Args {
  float scale, slope, eps;
};

// How an elementwise (no pixel norm) pass walks the tensor, and the bias pattern of one rows-form period.
struct Elementwise {
  bool planes = false;
  int64_t count = 0;  // rows (of `len` elements) or planes
  int64_t len = 0;
  int64_t C = 1;
  std::vector<float> pattern;      // rows form: the bias of each element of a period
  std::vector<int64_t> channel;    // rows form: the channel of each element of a period

  Elementwise(const ReductionLayout& l, const float* bias) : C(l.channels) {
    const int64_t total = l.outer * l.channels * l.inner;
    planes = !l.rows() && l.channels * l.inner > kMaxPeriod;
    if (planes) {
      count = l.outer * l.channels;
      len = l.inner;
      return;
    }
    const int64_t base = l.rows() ? l.channels : l.channels * l.inner;  // NCHW: one whole sample
    const int64_t units = base > 0 ? total / base : 0;
    // widen short periods by the largest divisor of the unit count that keeps them near kTargetPeriod
    int64_t widen = 1;
    for (int64_t m = std::max<int64_t>(1, kTargetPeriod / std::max<int64_t>(base, 1)); m > 1; --m)
      if (units % m == 0) {
        widen = m;
        break;
      }
    len = base * widen;
    count = len > 0 ? total / len : 0;
    pattern.resize(len);
    channel.resize(len);
    const int64_t per_channel = l.rows() ? 1 : l.inner;
    for (int64_t j = 0; j < len; ++j) {
      channel[j] = (j / per_channel) % l.channels;
      pattern[j] = bias[channel[j]];
    }
  }

  // Per-chunk grain: about ATen's grain of elements.
  int64_t grain() const { return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(len, 1)); }
  // Rows per kernel call in the rows form: the float partial sums are flushed to double that often.
  int64_t rows_per_flush() const { return rows_chunk(len); }
};

// Sums the chunks' per-channel partials (in chunk order) into grad_bias.
template <typename T>
void finish_bias(const std::vector<double>& partial, int64_t chunks, int64_t C, T* grad_bias) {
  for (int64_t c = 0; c < C; ++c) {
    double sum = 0;
    for (int64_t k = 0; k < chunks; ++k) sum += partial[k * C + c];
    grad_bias[c] = static_cast<T>(sum);
  }
}

// ---- float32, straight from the tensors ----

void forward_f32(const ReductionLayout& l, const float* x, const float* bias, float* y, float* r, const Args& a,
                 bool pixel_norm) {
  const int64_t C = l.channels;
  const bool stream = cpu::should_stream(l.outer * C * l.inner * static_cast<int64_t>(sizeof(float)));
  if (!pixel_norm) {
    const Elementwise e(l, bias);
    parallel_chunks(Chunks::of(e.count, e.grain()), e.count, [&](int64_t, int64_t begin, int64_t end) {
      if (e.planes)
        forward_planes_f32(x + begin * e.len, y + begin * e.len, bias, a.scale, a.slope, begin, end, C, e.len, stream);
      else
        forward_rows_f32(x + begin * e.len, y + begin * e.len, e.pattern.data(), a.scale, a.slope, end - begin, e.len,
                         stream);
    });
    return;
  }
  if (l.rows()) {
    const int64_t rows = l.outer;
    parallel_chunks(Chunks::of(rows, rows_chunk(C)), rows, [&](int64_t, int64_t begin, int64_t end) {
      std::vector<float> scratch(row_group(C, 1) * C);
      forward_rows_pn_f32(x + begin * C, y + begin * C, r + begin, bias, a.scale, a.slope, end - begin, C, a.eps,
                          stream, scratch.data());
    });
    return;
  }
  const int64_t inner = l.inner;
  for_each_planes_block(PlanesTasks(l.outer, C, inner, planes_block(C, inner, 1)), [&](const PlanesBlock& b) {
    const int64_t base = b.o * C * inner + b.i0;
    forward_planes_pn_f32(x + base, y + base, r + b.o * inner + b.i0, bias, a.scale, a.slope, C, inner, b.n, a.eps,
                          stream, b.next >= 0 ? x + b.next : nullptr, b.next_n);
  });
}

// `sign`: y, or grad_y itself for a linear activation without pixel norm (slope 1: act' is 1 either way).
// partial: one C-vector per chunk (chunks.count * C doubles, zeroed).
void backward_f32(const ReductionLayout& l, const float* gy, const float* y, const float* sign, const float* r,
                  float* gx, std::vector<double>& partial, int64_t& chunks, const Args& a, bool pixel_norm) {
  const int64_t C = l.channels;
  const bool stream = cpu::should_stream(l.outer * C * l.inner * static_cast<int64_t>(sizeof(float)));
  if (!pixel_norm) {
    const std::vector<float> no_bias(C, 0.f);
    const Elementwise e(l, no_bias.data());
    const Chunks ch = Chunks::of(e.count, e.grain());
    chunks = ch.count;
    partial.assign(ch.count * C, 0.0);
    parallel_chunks(ch, e.count, [&](int64_t chunk, int64_t begin, int64_t end) {
      double* sums = partial.data() + chunk * C;
      if (e.planes) {
        backward_planes_f32(gy + begin * e.len, sign + begin * e.len, gx + begin * e.len, sums, a.scale, a.slope,
                            begin, end, C, e.len, stream);
        return;
      }
      std::vector<float> acc(e.len);
      for (int64_t r0 = begin; r0 < end; r0 += e.rows_per_flush()) {
        const int64_t nr = std::min(e.rows_per_flush(), end - r0);
        std::fill(acc.begin(), acc.end(), 0.f);
        backward_rows_f32(gy + r0 * e.len, sign + r0 * e.len, gx + r0 * e.len, acc.data(), a.scale, a.slope, nr,
                          e.len, stream);
        for (int64_t j = 0; j < e.len; ++j) sums[e.channel[j]] += acc[j];
      }
      stream_fence(stream);
    });
    return;
  }
  if (l.rows()) {
    const int64_t rows = l.outer, flush = rows_chunk(C);
    const Chunks ch = Chunks::of(rows, rows_chunk(C));
    chunks = ch.count;
    partial.assign(ch.count * C, 0.0);
    parallel_chunks(ch, rows, [&](int64_t chunk, int64_t begin, int64_t end) {
      double* sums = partial.data() + chunk * C;
      std::vector<float> acc(C);
      for (int64_t r0 = begin; r0 < end; r0 += flush) {
        const int64_t nr = std::min(flush, end - r0);
        std::fill(acc.begin(), acc.end(), 0.f);
        backward_rows_pn_f32(gy + r0 * C, y + r0 * C, sign + r0 * C, r + r0, gx + r0 * C, acc.data(), a.scale,
                             a.slope, a.eps, nr, C, stream);
        for (int64_t c = 0; c < C; ++c) sums[c] += acc[c];
      }
      stream_fence(stream);
    });
    return;
  }
  const int64_t inner = l.inner;
  const PlanesTasks t(l.outer, C, inner, planes_block(C, inner, 2));
  chunks = t.chunks.count;
  partial.assign(t.chunks.count * C, 0.0);
  for_each_planes_block(t, [&](const PlanesBlock& b) {
    const int64_t base = b.o * C * inner + b.i0;
    backward_planes_pn_f32(gy + base, y + base, sign + base, r + b.o * inner + b.i0, gx + base,
                           partial.data() + b.chunk * C, a.scale, a.slope, a.eps, C, inner, b.n, stream,
                           b.next >= 0 ? gy + b.next : nullptr, b.next >= 0 ? y + b.next : nullptr, b.next_n);
  });
}

// ---- staged: float16 / bfloat16 (and float32 whose backward reads x) in float scratch ----

// The forward's y and the sign of v, in float scratch, from what the backward saved. For x (slope < 0): the
// pre-activation v = scale * x + bias goes to `sign`, y = act(v) (* r with pixel norm) to `y`; `channel_of(j)`
// gives element j's channel, `pixel_of(j)` its pixel's rsqrt index within r.
template <typename ChannelOf, typename PixelOf>
void recompute_from_input(float* v_inout, float* y, int64_t n, const float* bias, const float* r, const Args& a,
                          const ChannelOf& channel_of, const PixelOf& pixel_of) {
  for (int64_t j = 0; j < n; ++j) {
    const float v = v_inout[j] * a.scale + bias[channel_of(j)];
    v_inout[j] = v;
    y[j] = r ? act(v, a.slope) * r[pixel_of(j)] : act(v, a.slope);
  }
}

template <typename T>
void forward_staged(const ReductionLayout& l, const T* x, const float* bias, T* y, float* r, const Args& a,
                    bool pixel_norm) {
  const int64_t C = l.channels;
  if (!pixel_norm) {
    const Elementwise e(l, bias);
    // planes longer than a chunk of scratch are cut into segments (each still one channel)
    const int64_t seg = e.planes ? std::min<int64_t>(e.len, cpu::kRowsChunkElems) : e.len;
    const int64_t per_call = std::max<int64_t>(1, cpu::kRowsChunkElems / seg);
    const int64_t segs = (e.len + seg - 1) / seg;
    parallel_chunks(Chunks::of(e.count, e.grain()), e.count, [&](int64_t, int64_t begin, int64_t end) {
      std::vector<float> xs(per_call * seg), ys(per_call * seg);
      if (!e.planes || segs == 1) {
        for (int64_t u0 = begin; u0 < end; u0 += per_call) {
          const int64_t nu = std::min(per_call, end - u0), n = nu * e.len;
          isa::to_float(x + u0 * e.len, xs.data(), n);
          if (e.planes)
            forward_planes_f32(xs.data(), ys.data(), bias, a.scale, a.slope, u0, u0 + nu, C, e.len, false);
          else
            forward_rows_f32(xs.data(), ys.data(), e.pattern.data(), a.scale, a.slope, nu, e.len, false);
          isa::from_float(ys.data(), y + u0 * e.len, n);
        }
        return;
      }
      for (int64_t p = begin; p < end; ++p)
        for (int64_t i0 = 0; i0 < e.len; i0 += seg) {
          const int64_t n = std::min(seg, e.len - i0), off = p * e.len + i0;
          isa::to_float(x + off, xs.data(), n);
          forward_planes_f32(xs.data(), ys.data(), bias, a.scale, a.slope, p, p + 1, C, n, false);
          isa::from_float(ys.data(), y + off, n);
        }
    });
    return;
  }
  if (l.rows()) {
    const int64_t rows = l.outer, chunk = rows_chunk(C);
    parallel_chunks(Chunks::of(rows, chunk), rows, [&](int64_t, int64_t begin, int64_t end) {
      std::vector<float> xs(chunk * C), ys(chunk * C), scratch(row_group(C, 1) * C);
      for (int64_t r0 = begin; r0 < end; r0 += chunk) {
        const int64_t nr = std::min(chunk, end - r0);
        isa::to_float(x + r0 * C, xs.data(), nr * C);
        forward_rows_pn_f32(xs.data(), ys.data(), r + r0, bias, a.scale, a.slope, nr, C, a.eps, false,
                            scratch.data());
        isa::from_float(ys.data(), y + r0 * C, nr * C);
      }
    });
    return;
  }
  const int64_t inner = l.inner;
  const PlanesTasks t(l.outer, C, inner, planes_block(C, inner, 2));
  parallel_chunks(t.chunks, t.tasks(), [&](int64_t chunk, int64_t begin, int64_t end) {
    std::vector<float> xs(C * t.block), ys(C * t.block);
    for (int64_t task = begin; task < end; ++task) {
      const PlanesBlock b = t.at(chunk, task, end);
      const int64_t base = b.o * C * inner + b.i0;
      gather_block(x + base, xs.data(), C, inner, b.n);
      forward_planes_pn_f32(xs.data(), ys.data(), r + b.o * inner + b.i0, bias, a.scale, a.slope, C, b.n, b.n, a.eps,
                            false, nullptr, 0);
      scatter_block(ys.data(), y + base, C, inner, b.n);
    }
  });
}

// saved: y, x (saved_is_input), or null (linear without pixel norm: grad_y stands in as the sign).
template <typename T>
void backward_staged(const ReductionLayout& l, const T* gy, const T* saved, bool saved_is_input, const float* bias,
                     const float* r, T* gx, std::vector<double>& partial, int64_t& chunks, const Args& a,
                     bool pixel_norm) {
  const int64_t C = l.channels;
  if (!pixel_norm) {
    const std::vector<float> no_bias(C, 0.f);
    const Elementwise e(l, no_bias.data());
    const int64_t seg = e.planes ? std::min<int64_t>(e.len, cpu::kRowsChunkElems) : e.len;
    const int64_t per_call = std::max<int64_t>(1, cpu::kRowsChunkElems / seg);
    const Chunks ch = Chunks::of(e.count, e.grain());
    chunks = ch.count;
    partial.assign(ch.count * C, 0.0);
    const T* sign_src = saved ? saved : gy;
    parallel_chunks(ch, e.count, [&](int64_t chunk, int64_t begin, int64_t end) {
      double* sums = partial.data() + chunk * C;
      std::vector<float> gys(per_call * seg), ss(per_call * seg), gxs(per_call * seg), unused(per_call * seg);
      std::vector<float> acc(e.planes ? 0 : e.len);
      // units [u0, u0 + nu) of e.len elements, or a segment [i0, i0 + n) of plane u0
      auto run = [&](int64_t u0, int64_t nu, int64_t i0, int64_t n) {
        const int64_t off = u0 * e.len + i0;
        isa::to_float(gy + off, gys.data(), n);
        isa::to_float(sign_src + off, ss.data(), n);
        if (saved_is_input)
          recompute_from_input(ss.data(), unused.data(), n, bias, nullptr, a,
                               [&](int64_t j) { return e.planes ? (u0 + (j + i0) / e.len) % C : e.channel[j % e.len]; },
                               [](int64_t) { return int64_t{0}; });
        if (e.planes) {
          backward_planes_f32(gys.data(), ss.data(), gxs.data(), sums, a.scale, a.slope, u0, u0 + nu, C,
                              nu == 1 ? n : e.len, false);
        } else {
          std::fill(acc.begin(), acc.end(), 0.f);
          backward_rows_f32(gys.data(), ss.data(), gxs.data(), acc.data(), a.scale, a.slope, nu, e.len, false);
          for (int64_t j = 0; j < e.len; ++j) sums[e.channel[j]] += acc[j];
        }
        isa::from_float(gxs.data(), gx + off, n);
      };
      if (!e.planes || seg == e.len) {
        for (int64_t u0 = begin; u0 < end; u0 += per_call) {
          const int64_t nu = std::min(per_call, end - u0);
          run(u0, nu, 0, nu * e.len);
        }
      } else {
        for (int64_t p = begin; p < end; ++p)
          for (int64_t i0 = 0; i0 < e.len; i0 += seg) run(p, 1, i0, std::min(seg, e.len - i0));
      }
    });
    return;
  }
  if (l.rows()) {
    const int64_t rows = l.outer, chunk = rows_chunk(C);
    const Chunks ch = Chunks::of(rows, chunk);
    chunks = ch.count;
    partial.assign(ch.count * C, 0.0);
    parallel_chunks(ch, rows, [&](int64_t k, int64_t begin, int64_t end) {
      double* sums = partial.data() + k * C;
      std::vector<float> gys(chunk * C), ys(chunk * C), vs(saved_is_input ? chunk * C : 0), gxs(chunk * C), acc(C);
      for (int64_t r0 = begin; r0 < end; r0 += chunk) {
        const int64_t nr = std::min(chunk, end - r0);
        isa::to_float(gy + r0 * C, gys.data(), nr * C);
        const float* sign = ys.data();
        if (saved_is_input) {
          isa::to_float(saved + r0 * C, vs.data(), nr * C);
          recompute_from_input(vs.data(), ys.data(), nr * C, bias, r + r0, a, [&](int64_t j) { return j % C; },
                               [&](int64_t j) { return j / C; });
          sign = vs.data();
        } else {
          isa::to_float(saved + r0 * C, ys.data(), nr * C);
        }
        std::fill(acc.begin(), acc.end(), 0.f);
        backward_rows_pn_f32(gys.data(), ys.data(), sign, r + r0, gxs.data(), acc.data(), a.scale, a.slope, a.eps,
                             nr, C, false);
        for (int64_t c = 0; c < C; ++c) sums[c] += acc[c];
        isa::from_float(gxs.data(), gx + r0 * C, nr * C);
      }
    });
    return;
  }
  const int64_t inner = l.inner;
  const PlanesTasks t(l.outer, C, inner, planes_block(C, inner, 3));
  chunks = t.chunks.count;
  partial.assign(t.chunks.count * C, 0.0);
  parallel_chunks(t.chunks, t.tasks(), [&](int64_t chunk, int64_t begin, int64_t end) {
    const int64_t cap = C * t.block;
    std::vector<float> gys(cap), ys(cap), vs(saved_is_input ? cap : 0), gxs(cap);
    for (int64_t task = begin; task < end; ++task) {
      const PlanesBlock b = t.at(chunk, task, end);
      const int64_t base = b.o * C * inner + b.i0;
      const float* rb = r + b.o * inner + b.i0;
      gather_block(gy + base, gys.data(), C, inner, b.n);
      const float* sign = ys.data();
      if (saved_is_input) {
        gather_block(saved + base, vs.data(), C, inner, b.n);
        const int64_t n = b.n;
        recompute_from_input(vs.data(), ys.data(), C * n, bias, rb, a, [&](int64_t j) { return j / n; },
                             [&](int64_t j) { return j % n; });
        sign = vs.data();
      } else {
        gather_block(saved + base, ys.data(), C, inner, b.n);
      }
      backward_planes_pn_f32(gys.data(), ys.data(), sign, rb, gxs.data(), partial.data() + chunk * C, a.scale, a.slope,
                             a.eps, C, b.n, b.n, false, nullptr, nullptr, 0);
      scatter_block(gxs.data(), gx + base, C, inner, b.n);
    }
  });
}

// ---- float64: plain loops (gradcheck precision; speed is not the point) ----

void forward_f64(const ReductionLayout& l, const double* x, const double* bias, double* y, double* r, double scale,
                 double slope, bool pixel_norm, double eps) {
  const int64_t C = l.channels, inner = l.inner;
  at::parallel_for(0, l.outer * inner, std::max<int64_t>(1, 4096 / std::max<int64_t>(C, 1)), [&](int64_t begin,
                                                                                                  int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t base = (p / inner) * C * inner + p % inner;
      double sum = 0;
      for (int64_t c = 0; c < C; ++c) {
        const double v = x[base + c * inner] * scale + bias[c];
        const double act_v = v > 0 ? v : v * slope;
        y[base + c * inner] = act_v;
        sum += act_v * act_v;
      }
      if (!pixel_norm) continue;
      const double rs = 1.0 / std::sqrt(sum / double(C) + eps);
      for (int64_t c = 0; c < C; ++c) y[base + c * inner] *= rs;
      r[p] = rs;
    }
  });
}

void backward_f64(const ReductionLayout& l, const double* gy, const double* saved, bool saved_is_input,
                  const double* bias, const double* r, double* gx, std::vector<double>& partial, int64_t& chunks,
                  double scale, double slope, bool pixel_norm, double eps) {
  const int64_t C = l.channels, inner = l.inner, pixels = l.outer * inner;
  const Chunks ch = Chunks::of(pixels, std::max<int64_t>(1, 4096 / std::max<int64_t>(C, 1)));
  chunks = ch.count;
  partial.assign(ch.count * C, 0.0);
  parallel_chunks(ch, pixels, [&](int64_t k, int64_t begin, int64_t end) {
    double* sums = partial.data() + k * C;
    std::vector<double> ys(C), signs(C);
    for (int64_t p = begin; p < end; ++p) {
      const int64_t base = (p / inner) * C * inner + p % inner;
      const double rs = pixel_norm ? r[p] : 1.0;
      double m = 0, q = 0;
      for (int64_t c = 0; c < C; ++c) {
        const int64_t off = base + c * inner;
        if (!saved) {
          signs[c] = 1;  // linear: act' is 1
          ys[c] = 0;
        } else if (saved_is_input) {
          const double v = saved[off] * scale + bias[c];
          signs[c] = v;
          ys[c] = (v > 0 ? v : v * slope) * rs;
        } else {
          signs[c] = ys[c] = saved[off];
        }
        m += gy[off] * ys[c];
        q += ys[c] * ys[c];
      }
      const PixelNormGradScalars<double> g =
          pixel_norm_grad_scalars(C, rs, m / double(C) * scaled_bias_act_norm_fix(q / double(C), rs, eps), eps);
      for (int64_t c = 0; c < C; ++c) {
        const int64_t off = base + c * inner;
        const double ga = pixel_norm ? g.grad_scale * (gy[off] - ys[c] * g.projection) : gy[off];
        const double gv = signs[c] > 0 ? ga : ga * slope;
        gx[off] = gv * scale;
        sums[c] += gv;
      }
    }
  });
}

// ---- entry points ----

template <typename T>
std::vector<float> bias_as_float(const at::Tensor& bias, int64_t C) {
  std::vector<float> b(C, 0.f);
  if (bias.defined()) isa::to_float(bias.const_data_ptr<T>(), b.data(), C);
  return b;
}

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& x_in, const std::optional<at::Tensor>& bias_in,
                                               double scale, double slope, bool pixel_norm, double eps) {
  ScaledBiasActForwardOperands o(x_in, bias_in, scale, slope, pixel_norm, eps);
  if (o.x.numel() == 0) return {o.y, o.rsqrt};
  const ReductionLayout& l = o.layout;
  const Args a{static_cast<float>(scale), static_cast<float>(slope), static_cast<float>(eps)};
  float* r = pixel_norm && o.x.scalar_type() != at::kDouble ? o.rsqrt.mutable_data_ptr<float>() : nullptr;
  switch (o.x.scalar_type()) {
    case at::kFloat: {
      const auto bias = bias_as_float<float>(o.bias, l.channels);
      forward_f32(l, o.x.const_data_ptr<float>(), bias.data(), o.y.mutable_data_ptr<float>(), r, a, pixel_norm);
      break;
    }
    case at::kHalf: {
      const auto bias = bias_as_float<at::Half>(o.bias, l.channels);
      forward_staged(l, o.x.const_data_ptr<at::Half>(), bias.data(), o.y.mutable_data_ptr<at::Half>(), r, a,
                     pixel_norm);
      break;
    }
    case at::kBFloat16: {
      const auto bias = bias_as_float<at::BFloat16>(o.bias, l.channels);
      forward_staged(l, o.x.const_data_ptr<at::BFloat16>(), bias.data(), o.y.mutable_data_ptr<at::BFloat16>(), r, a,
                     pixel_norm);
      break;
    }
    case at::kDouble: {
      std::vector<double> bias(l.channels, 0.0);
      if (o.bias.defined()) std::copy_n(o.bias.const_data_ptr<double>(), l.channels, bias.begin());
      forward_f64(l, o.x.const_data_ptr<double>(), bias.data(), o.y.mutable_data_ptr<double>(),
                  pixel_norm ? o.rsqrt.mutable_data_ptr<double>() : nullptr, scale, slope, pixel_norm, eps);
      break;
    }
    default:
      TORCH_CHECK_TYPE(false, "scaled_bias_act_forward: x must be float16, bfloat16, float32 or float64; got ",
                       o.x.scalar_type());
  }
  return {o.y, o.rsqrt};
}

template <typename T>
void backward_typed(ScaledBiasActBackwardOperands& o, const Args& a, bool pixel_norm, std::vector<double>& partial,
                    int64_t& chunks) {
  const ReductionLayout& l = o.layout;
  const T* gy = o.grad_y.const_data_ptr<T>();
  const T* saved = o.saved.defined() ? o.saved.const_data_ptr<T>() : nullptr;
  const float* r = pixel_norm ? o.rsqrt.const_data_ptr<float>() : nullptr;
  T* gx = o.grad_x.mutable_data_ptr<T>();
  const auto bias = bias_as_float<T>(o.bias, l.channels);
  if constexpr (std::is_same_v<T, float>) {
    if (!o.saved_is_input) {
      backward_f32(l, gy, saved, saved ? saved : gy, r, gx, partial, chunks, a, pixel_norm);
      return;
    }
  }
  backward_staged(l, gy, saved, o.saved_is_input, bias.data(), r, gx, partial, chunks, a, pixel_norm);
}

std::tuple<at::Tensor, at::Tensor> backward_cpu(const at::Tensor& grad_y_in, const std::optional<at::Tensor>& saved_in,
                                                const std::optional<at::Tensor>& rsqrt_in,
                                                const std::optional<at::Tensor>& bias_in, double scale, double slope,
                                                bool pixel_norm, double eps, bool saved_is_input, bool bias_grad) {
  ScaledBiasActBackwardOperands o(grad_y_in, saved_in, rsqrt_in, bias_in, scale, slope, pixel_norm, eps, saved_is_input,
                                  bias_grad);
  const ReductionLayout& l = o.layout;
  if (o.grad_y.numel() == 0) return {o.grad_x, o.grad_bias};
  std::vector<double> partial;
  int64_t chunks = 0;
  const Args a{static_cast<float>(scale), static_cast<float>(slope), static_cast<float>(eps)};
  switch (o.grad_y.scalar_type()) {
    case at::kFloat: backward_typed<float>(o, a, pixel_norm, partial, chunks); break;
    case at::kHalf: backward_typed<at::Half>(o, a, pixel_norm, partial, chunks); break;
    case at::kBFloat16: backward_typed<at::BFloat16>(o, a, pixel_norm, partial, chunks); break;
    case at::kDouble: {
      std::vector<double> bias(l.channels, 0.0);
      if (o.bias.defined()) std::copy_n(o.bias.const_data_ptr<double>(), l.channels, bias.begin());
      backward_f64(l, o.grad_y.const_data_ptr<double>(),
                   o.saved.defined() ? o.saved.const_data_ptr<double>() : nullptr, o.saved_is_input, bias.data(),
                   pixel_norm ? o.rsqrt.const_data_ptr<double>() : nullptr, o.grad_x.mutable_data_ptr<double>(),
                   partial, chunks, scale, slope, pixel_norm, eps);
      break;
    }
    default:
      TORCH_CHECK_TYPE(false, "scaled_bias_act_backward: grad_y must be float16, bfloat16, float32 or float64; got ",
                       o.grad_y.scalar_type());
  }
  if (bias_grad) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, o.grad_bias.scalar_type(), "scaled_bias_act_bias", [&] {
      finish_bias(partial, chunks, l.channels, o.grad_bias.mutable_data_ptr<scalar_t>());
    });
  }
  return {o.grad_x, o.grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_fast, CPU, m) {
  m.impl("scaled_bias_act_forward", &forward_cpu);
  m.impl("scaled_bias_act_backward", &backward_cpu);
}

}  // namespace scaled_bias_act_cpu
}  // namespace progan_fast
