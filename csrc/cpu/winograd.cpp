// The tile transforms of a Winograd F(4x4, 3x3) convolution on the CPU (progan_fast/ops/winograd.py has the
// algorithm, its accuracy and why it exists): a 3x3 'same' conv computes each 4x4 output tile from a 6x6 input
// patch as A^T [(G w G^T) . (B^T d B)] A, the 36 elementwise products over channels being one matrix product per
// tile point (torch's grouped 1x1 convolution, oneDNN). These kernels are the four linear maps around it:
//   input_transform            x  [N, C, H, W]  ->  V = B^T d B per tile     [N, 36 C, ceil(H/4), ceil(W/4)]
//   input_transform_adjoint    dV               ->  dx = sum over tiles of B dV B^T, overlaps added
//   output_transform           M                ->  y = A^T M A per tile, clipped to [H, W]
//   output_transform_adjoint   dy               ->  dM = A dy A^T per tile (dy zero outside [H, W])
// Every tensor is channels_last (the 36 tile points of one channel block sit next to each other: channel index
// point * C + c), so a tile's work is 36 rows of contiguous channels, taken kChunk channels at a time.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "cpu/isa.h"

// The chunk vectors live only inside always-inline functions of one ISA variant, never across a call boundary, so
// GCC's note that passing them by value would change the ABI does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace progan_fast {
namespace winograd_cpu {

constexpr int kTile = 4;    // output tile side
constexpr int kPatch = 6;   // input patch side (kTile + 3 - 1)
constexpr int kPoints = kPatch * kPatch;
constexpr int kChunk = 16;  // channels per step: one AVX-512 vector of float

#define WINOGRAD_INLINE PROGAN_FAST_ISA_INLINE

// A row of kChunk channels as one GCC vector (an AVX-512 register of float in the x86-64-v4 variant; narrower
// ISAs split it), and its loads and stores: whole chunks straight, a last partial chunk through zeros.
// (GCC ignores vector_size on a dependent type, so each element type names its vector.)
typedef float FloatChunk __attribute__((vector_size(kChunk * sizeof(float))));
typedef double DoubleChunk __attribute__((vector_size(kChunk * sizeof(double))));
template <typename T>
using Vec = std::conditional_t<std::is_same_v<T, float>, FloatChunk, DoubleChunk>;
static_assert(sizeof(Vec<float>) == kChunk * sizeof(float) && sizeof(Vec<double>) == kChunk * sizeof(double));

template <typename T>
WINOGRAD_INLINE Vec<T> load(const T* p, int cn) {
  Vec<T> v = {};
  if (cn == kChunk)
    std::memcpy(&v, p, sizeof(v));  // one vector load
  else
    for (int c = 0; c < cn; ++c) v[c] = p[c];
  return v;
}

template <typename T>
WINOGRAD_INLINE void store(T* p, const Vec<T>& v, int cn) {
  if (cn == kChunk)
    std::memcpy(p, &v, sizeof(v));
  else
    for (int c = 0; c < cn; ++c) p[c] = v[c];
}

template <typename T>
WINOGRAD_INLINE void add_store(T* p, const Vec<T>& v, int cn) {
  store<T>(p, load<T>(p, cn) + v, cn);
}

// The 1-D transforms of F(4, 3) (interpolation points 0, +-1, +-2 and infinity) along one axis of a tile held as
// rows of vectors: o[i * OS] from v[i * VS]. B^T and A^T go forward; B and A are their adjoints.
template <typename T, int VS, int OS>
WINOGRAD_INLINE void apply_bt(const Vec<T>* v, Vec<T>* o) {
  const Vec<T> v0 = v[0], v1 = v[VS], v2 = v[2 * VS], v3 = v[3 * VS], v4 = v[4 * VS], v5 = v[5 * VS];
  o[0] = v0 * T(4) - v2 * T(5) + v4;
  o[OS] = v3 + v4 - (v1 + v2) * T(4);
  o[2 * OS] = (v1 - v2) * T(4) - v3 + v4;
  o[3 * OS] = (v3 - v1) * T(2) - v2 + v4;
  o[4 * OS] = (v1 - v3) * T(2) - v2 + v4;
  o[5 * OS] = v1 * T(4) - v3 * T(5) + v5;
}

template <typename T, int VS, int OS>
WINOGRAD_INLINE void apply_b(const Vec<T>* v, Vec<T>* o) {
  const Vec<T> v0 = v[0], v1 = v[VS], v2 = v[2 * VS], v3 = v[3 * VS], v4 = v[4 * VS], v5 = v[5 * VS];
  o[0] = v0 * T(4);
  o[OS] = (v2 - v1 + v5) * T(4) + (v4 - v3) * T(2);
  o[2 * OS] = -(v1 + v2) * T(4) - v0 * T(5) - v3 - v4;
  o[3 * OS] = v1 - v2 + (v3 - v4) * T(2) - v5 * T(5);
  o[4 * OS] = v0 + v1 + v2 + v3 + v4;
  o[5 * OS] = v5;
}

template <typename T, int VS, int OS>
WINOGRAD_INLINE void apply_at(const Vec<T>* v, Vec<T>* o) {
  const Vec<T> v0 = v[0], v1 = v[VS], v2 = v[2 * VS], v3 = v[3 * VS], v4 = v[4 * VS], v5 = v[5 * VS];
  const Vec<T> p12 = v1 + v2, m12 = v1 - v2, p34 = v3 + v4, m34 = v3 - v4;
  o[0] = v0 + p12 + p34;
  o[OS] = m12 + m34 * T(2);
  o[2 * OS] = p12 + p34 * T(4);
  o[3 * OS] = m12 + m34 * T(8) + v5;
}

template <typename T, int VS, int OS>
WINOGRAD_INLINE void apply_a(const Vec<T>* v, Vec<T>* o) {
  const Vec<T> v0 = v[0], v1 = v[VS], v2 = v[2 * VS], v3 = v[3 * VS];
  const Vec<T> p02 = v0 + v2, p13 = v1 + v3, q02 = v0 + v2 * T(4), q13 = v1 * T(2) + v3 * T(8);
  o[0] = v0;
  o[OS] = p02 + p13;
  o[2 * OS] = p02 - p13;
  o[3 * OS] = q02 + q13;
  o[4 * OS] = q02 - q13;
  o[5 * OS] = v3;
}

// The geometry every kernel shares: channels_last [N, H, W, C] pixels and [N, th, tw, 36, C] tile points.
struct Geometry {
  int64_t N, C, H, W, th, tw;
  int64_t tile_offset(int64_t n, int64_t ti, int64_t tj) const { return ((n * th + ti) * tw + tj) * kPoints * C; }
  int64_t pixel_offset(int64_t n, int64_t h, int64_t w) const { return ((n * H + h) * W + w) * C; }
  bool inside(int64_t h, int64_t w) const { return h >= 0 && h < H && w >= 0 && w < W; }
};

// One row of tiles (n, ti) of the input transform: V = B^T d B of the zero-padded patch at (4 ti - 1, 4 tj - 1).
template <typename T>
WINOGRAD_INLINE void input_row(const T* __restrict x, T* __restrict v, const Geometry& g, int64_t n, int64_t ti) {
  Vec<T> d[kPoints], t[kPoints];
  for (int64_t tj = 0; tj < g.tw; ++tj) {
    T* out = v + g.tile_offset(n, ti, tj);
    const int64_t h0 = kTile * ti - 1, w0 = kTile * tj - 1;
    const bool interior = g.inside(h0, w0) && g.inside(h0 + kPatch - 1, w0 + kPatch - 1);
    for (int64_t c0 = 0; c0 < g.C; c0 += kChunk) {
      const int cn = static_cast<int>(std::min<int64_t>(kChunk, g.C - c0));
      for (int r = 0; r < kPatch; ++r)
        for (int s = 0; s < kPatch; ++s)
          d[r * kPatch + s] = interior || g.inside(h0 + r, w0 + s)
                                  ? load<T>(x + g.pixel_offset(n, h0 + r, w0 + s) + c0, cn)
                                  : Vec<T>{};
      for (int s = 0; s < kPatch; ++s) apply_bt<T, kPatch, kPatch>(d + s, t + s);  // down each column
      for (int i = 0; i < kPatch; ++i) apply_bt<T, 1, 1>(t + i * kPatch, d + i * kPatch);  // along each row
      for (int p = 0; p < kPoints; ++p) store<T>(out + p * g.C + c0, d[p], cn);
    }
  }
}

// One row of tiles of the adjoint: dx[patch] += B dV B^T. Rows of tiles overlap their neighbours by two pixel
// rows, so the caller runs every other row of tiles at a time.
template <typename T>
WINOGRAD_INLINE void input_adjoint_row(const T* __restrict dv, T* __restrict dx, const Geometry& g, int64_t n,
                                       int64_t ti) {
  Vec<T> d[kPoints], t[kPoints];
  for (int64_t tj = 0; tj < g.tw; ++tj) {
    const T* in = dv + g.tile_offset(n, ti, tj);
    const int64_t h0 = kTile * ti - 1, w0 = kTile * tj - 1;
    for (int64_t c0 = 0; c0 < g.C; c0 += kChunk) {
      const int cn = static_cast<int>(std::min<int64_t>(kChunk, g.C - c0));
      for (int p = 0; p < kPoints; ++p) d[p] = load<T>(in + p * g.C + c0, cn);
      for (int i = 0; i < kPatch; ++i) apply_b<T, 1, 1>(d + i * kPatch, t + i * kPatch);
      for (int s = 0; s < kPatch; ++s) apply_b<T, kPatch, kPatch>(t + s, d + s);
      for (int r = 0; r < kPatch; ++r)
        for (int s = 0; s < kPatch; ++s)
          if (g.inside(h0 + r, w0 + s)) add_store<T>(dx + g.pixel_offset(n, h0 + r, w0 + s) + c0, d[r * kPatch + s], cn);
    }
  }
}

// One row of tiles of the output transform: y[tile] = A^T M A, clipped to the image.
template <typename T>
WINOGRAD_INLINE void output_row(const T* __restrict m, T* __restrict y, const Geometry& g, int64_t n, int64_t ti) {
  Vec<T> d[kPoints], t[kPoints];
  for (int64_t tj = 0; tj < g.tw; ++tj) {
    const T* in = m + g.tile_offset(n, ti, tj);
    for (int64_t c0 = 0; c0 < g.C; c0 += kChunk) {
      const int cn = static_cast<int>(std::min<int64_t>(kChunk, g.C - c0));
      for (int p = 0; p < kPoints; ++p) d[p] = load<T>(in + p * g.C + c0, cn);
      for (int s = 0; s < kPatch; ++s) apply_at<T, kPatch, kPatch>(d + s, t + s);  // 4 rows of 6
      for (int a = 0; a < kTile; ++a) apply_at<T, 1, 1>(t + a * kPatch, d + a * kPatch);  // 4 x 4
      for (int a = 0; a < kTile; ++a)
        for (int b = 0; b < kTile; ++b)
          if (g.inside(kTile * ti + a, kTile * tj + b))
            store<T>(y + g.pixel_offset(n, kTile * ti + a, kTile * tj + b) + c0, d[a * kPatch + b], cn);
    }
  }
}

// One row of tiles of the output adjoint: dM = A dy A^T, dy taken as zero outside the image.
template <typename T>
WINOGRAD_INLINE void output_adjoint_row(const T* __restrict dy, T* __restrict dm, const Geometry& g, int64_t n,
                                        int64_t ti) {
  Vec<T> d[kPoints], t[kPoints];
  for (int64_t tj = 0; tj < g.tw; ++tj) {
    T* out = dm + g.tile_offset(n, ti, tj);
    for (int64_t c0 = 0; c0 < g.C; c0 += kChunk) {
      const int cn = static_cast<int>(std::min<int64_t>(kChunk, g.C - c0));
      for (int a = 0; a < kTile; ++a)
        for (int b = 0; b < kTile; ++b)
          d[a * kPatch + b] = g.inside(kTile * ti + a, kTile * tj + b)
                                  ? load<T>(dy + g.pixel_offset(n, kTile * ti + a, kTile * tj + b) + c0, cn)
                                  : Vec<T>{};
      for (int a = 0; a < kTile; ++a) apply_a<T, 1, 1>(d + a * kPatch, t + a * kPatch);  // 4 rows of 6
      for (int s = 0; s < kPatch; ++s) apply_a<T, kPatch, kPatch>(t + s, d + s);  // 6 x 6
      for (int p = 0; p < kPoints; ++p) store<T>(out + p * g.C + c0, d[p], cn);
    }
  }
}

// float32 entry points, multi-versioned (isa.h); float64 (gradcheck) runs the same rows compiled once.
PROGAN_FAST_MULTIVERSION(input_rows_f32, (const float* x, float* v, const Geometry& g, int64_t begin, int64_t end),
                         (x, v, g, begin, end)) {
  for (int64_t r = begin; r < end; ++r) input_row<float>(x, v, g, r / g.th, r % g.th);
}
PROGAN_FAST_MULTIVERSION(input_adjoint_rows_f32,
                         (const float* dv, float* dx, const Geometry& g, int64_t begin, int64_t end, int parity),
                         (dv, dx, g, begin, end, parity)) {
  const int64_t half = (g.th + 1 - parity) / 2;  // rows of tiles with this parity per image
  for (int64_t r = begin; r < end; ++r) input_adjoint_row<float>(dv, dx, g, r / half, 2 * (r % half) + parity);
}
PROGAN_FAST_MULTIVERSION(output_rows_f32, (const float* m, float* y, const Geometry& g, int64_t begin, int64_t end),
                         (m, y, g, begin, end)) {
  for (int64_t r = begin; r < end; ++r) output_row<float>(m, y, g, r / g.th, r % g.th);
}
PROGAN_FAST_MULTIVERSION(output_adjoint_rows_f32,
                         (const float* dy, float* dm, const Geometry& g, int64_t begin, int64_t end),
                         (dy, dm, g, begin, end)) {
  for (int64_t r = begin; r < end; ++r) output_adjoint_row<float>(dy, dm, g, r / g.th, r % g.th);
}

namespace {

void check_operand(const at::Tensor& t, const char* name, int64_t channel_multiple) {
  TORCH_CHECK(t.dim() == 4, name, " must be 4-D (N, C, H, W); got ", t.dim(), " dimensions");
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor; got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
              " must be float32 or float64; got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast), name,
              " must be channels_last contiguous (tile points and channels innermost); got strides ", t.strides());
  TORCH_CHECK(t.size(1) % channel_multiple == 0, name, " must have a multiple of ", channel_multiple,
              " channels (36 tile points per channel); got ", t.size(1));
}

void check_size(int64_t value, const char* name) {
  TORCH_CHECK(value >= 1, name, " must be >= 1; got ", value);
}

at::Tensor empty_channels_last(const at::Tensor& like, int64_t N, int64_t C, int64_t H, int64_t W) {
  return at::empty({N, C, H, W}, like.options().memory_format(at::MemoryFormat::ChannelsLast));
}

int64_t tiles(int64_t size) { return (size + kTile - 1) / kTile; }

// Rows of tiles per parallel task: about 64 KiB of tile points each.
int64_t row_grain(const Geometry& g) {
  return std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(1, g.tw * kPoints * g.C));
}

template <typename T, typename Float, typename Rows>
void run_rows(const Geometry& g, int64_t rows, Float f32, Rows generic) {
  at::parallel_for(0, rows, row_grain(g), [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<T, float>) f32(begin, end); else generic(begin, end);
  });
}

at::Tensor input_transform_cpu(const at::Tensor& x) {
  check_operand(x, "x", 1);
  const Geometry g{x.size(0), x.size(1), x.size(2), x.size(3), tiles(x.size(2)), tiles(x.size(3))};
  at::Tensor v = empty_channels_last(x, g.N, kPoints * g.C, g.th, g.tw);
  if (v.numel() == 0) return v;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "input_transform", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* vp = v.mutable_data_ptr<scalar_t>();
    run_rows<scalar_t>(
        g, g.N * g.th, [&](int64_t b, int64_t e) { input_rows_f32((const float*)xp, (float*)vp, g, b, e); },
        [&](int64_t b, int64_t e) {
          for (int64_t r = b; r < e; ++r) input_row<scalar_t>(xp, vp, g, r / g.th, r % g.th);
        });
  });
  return v;
}

at::Tensor input_transform_adjoint_cpu(const at::Tensor& dv, int64_t height, int64_t width) {
  check_operand(dv, "grad_v", kPoints);
  check_size(height, "height");
  check_size(width, "width");
  const Geometry g{dv.size(0), dv.size(1) / kPoints, height, width, tiles(height), tiles(width)};
  TORCH_CHECK(dv.size(2) == g.th && dv.size(3) == g.tw, "grad_v must have ceil(height / 4) x ceil(width / 4) = ",
              g.th, " x ", g.tw, " tiles for height ", height, " and width ", width, "; got ", dv.size(2), " x ",
              dv.size(3));
  at::Tensor dx = empty_channels_last(dv, g.N, g.C, height, width).zero_();  // at::zeros ignores memory_format
  if (dx.numel() == 0) return dx;
  AT_DISPATCH_FLOATING_TYPES(dv.scalar_type(), "input_transform_adjoint", [&] {
    const scalar_t* dvp = dv.const_data_ptr<scalar_t>();
    scalar_t* dxp = dx.mutable_data_ptr<scalar_t>();
    for (int parity = 0; parity < 2; ++parity) {
      const int64_t half = (g.th + 1 - parity) / 2;
      run_rows<scalar_t>(
          g, g.N * half,
          [&](int64_t b, int64_t e) { input_adjoint_rows_f32((const float*)dvp, (float*)dxp, g, b, e, parity); },
          [&](int64_t b, int64_t e) {
            for (int64_t r = b; r < e; ++r) input_adjoint_row<scalar_t>(dvp, dxp, g, r / half, 2 * (r % half) + parity);
          });
    }
  });
  return dx;
}

at::Tensor output_transform_cpu(const at::Tensor& m, int64_t height, int64_t width) {
  check_operand(m, "m", kPoints);
  check_size(height, "height");
  check_size(width, "width");
  const Geometry g{m.size(0), m.size(1) / kPoints, height, width, tiles(height), tiles(width)};
  TORCH_CHECK(m.size(2) == g.th && m.size(3) == g.tw, "m must have ceil(height / 4) x ceil(width / 4) = ", g.th,
              " x ", g.tw, " tiles for height ", height, " and width ", width, "; got ", m.size(2), " x ", m.size(3));
  at::Tensor y = empty_channels_last(m, g.N, g.C, height, width);
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(m.scalar_type(), "output_transform", [&] {
    const scalar_t* mp = m.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    run_rows<scalar_t>(
        g, g.N * g.th, [&](int64_t b, int64_t e) { output_rows_f32((const float*)mp, (float*)yp, g, b, e); },
        [&](int64_t b, int64_t e) {
          for (int64_t r = b; r < e; ++r) output_row<scalar_t>(mp, yp, g, r / g.th, r % g.th);
        });
  });
  return y;
}

at::Tensor output_transform_adjoint_cpu(const at::Tensor& dy) {
  check_operand(dy, "grad_y", 1);
  const Geometry g{dy.size(0), dy.size(1), dy.size(2), dy.size(3), tiles(dy.size(2)), tiles(dy.size(3))};
  at::Tensor dm = empty_channels_last(dy, g.N, kPoints * g.C, g.th, g.tw);
  if (dm.numel() == 0) return dm;
  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "output_transform_adjoint", [&] {
    const scalar_t* dyp = dy.const_data_ptr<scalar_t>();
    scalar_t* dmp = dm.mutable_data_ptr<scalar_t>();
    run_rows<scalar_t>(
        g, g.N * g.th, [&](int64_t b, int64_t e) { output_adjoint_rows_f32((const float*)dyp, (float*)dmp, g, b, e); },
        [&](int64_t b, int64_t e) {
          for (int64_t r = b; r < e; ++r) output_adjoint_row<scalar_t>(dyp, dmp, g, r / g.th, r % g.th);
        });
  });
  return dm;
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_fast_winograd, CPU, m) {
  m.impl("input_transform", &input_transform_cpu);
  m.impl("input_transform_adjoint", &input_transform_adjoint_cpu);
  m.impl("output_transform", &output_transform_cpu);
  m.impl("output_transform_adjoint", &output_transform_adjoint_cpu);
}

}  // namespace winograd_cpu
}  // namespace progan_fast
