// Minibatch stddev on the CPU (the spec: progan_fast/reference.py; the index math: ops/minibatch_stddev_geometry.h).
//
// Forward, in one pass over x: every task takes one sample group and a run of positions, reads the group's G
// members block by block (a block of every member stays in L1 between the mean and the variance), copies each
// member's block into y, and sums sqrt(var + eps) over the run into its own partial sum. Partial sums are added in
// a fixed order (the result does not depend on the thread count), and a second, small loop writes the F statistic
// channels: planes in NCHW, the F values after each pixel's C channels in channels_last. No torch.cat, no centred
// copy: x is read once and y written once.
//
// Backward: dx = grad_y[:, :C] + a[m, f] * (x - mean) / sigma with a = sum of grad_y's statistic channels over the
// group and H x W, divided by K * D (K positions, D = G or G - 1); sigma is recomputed from x block by block (the
// backward reads x anyway), so nothing of the forward is saved but x.
//
// float32 runs the multi-versioned loops (AVX-512 / AVX2 / baseline, see isa.h); float64 (gradcheck) and
// float16/bfloat16 (statistics in float) run the same loop bodies compiled for the baseline.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <string_view>
#include <vector>

#include "common/minibatch_stddev_operands.h"
#include "cpu/isa.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace progan_fast {
namespace minibatch_stddev_cpu {

using minibatch_stddev::Geometry;

#define MS_INLINE static inline __attribute__((always_inline))

// Positions per block: G member blocks of it are read twice (mean, then variance), the second time from L1.
constexpr int64_t kBlock = 256;
// Positions per task (per member): long contiguous runs for the prefetchers, many tasks for the threads.
constexpr int64_t kTaskPositions = 4096;
// Outputs at least this large are written with non-temporal stores (far beyond the caches; see pixel_norm.cpp).
constexpr int64_t kStreamBytes = 8 << 20;

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };
template <typename T> using acc_t = typename Acc<T>::type;

MS_INLINE float to_acc(float v) { return v; }
MS_INLINE double to_acc(double v) { return v; }
MS_INLINE float to_acc(c10::Half v) { return static_cast<float>(v); }
MS_INLINE float to_acc(c10::BFloat16 v) { return static_cast<float>(v); }
template <typename T> MS_INLINE T from_acc(acc_t<T> v) { return static_cast<T>(v); }

// ---- stores, plain or streaming (always inlined: they take the ISA of the clone that calls them) ----

MS_INLINE int64_t until_aligned(const float* p, int64_t n) {
  return std::min<int64_t>(n, ((16 - (reinterpret_cast<uintptr_t>(p) & 15)) & 15) / sizeof(float));
}

template <typename T>
MS_INLINE void copy(T* __restrict dst, const T* __restrict src, int64_t n, bool /*stream*/) {
  std::copy(src, src + n, dst);
}

MS_INLINE void copy(float* __restrict dst, const float* __restrict src, int64_t n, bool stream) {
  int64_t i = 0;
#if defined(__SSE2__)
  if (stream) {
    for (const int64_t head = until_aligned(dst, n); i < head; ++i) dst[i] = src[i];
    for (; i + 4 <= n; i += 4) _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
  }
#endif
  for (; i < n; ++i) dst[i] = src[i];
}

// dx[i] = dy[i] + (x[i] - mean[i]) * scale[i]
template <typename T>
MS_INLINE void store_grad(T* __restrict dx, const T* __restrict dy, const T* __restrict x, const acc_t<T>* mean,
                          const acc_t<T>* scale, int64_t n, bool /*stream*/) {
  for (int64_t i = 0; i < n; ++i) dx[i] = from_acc<T>(to_acc(dy[i]) + (to_acc(x[i]) - mean[i]) * scale[i]);
}

MS_INLINE void store_grad(float* __restrict dx, const float* __restrict dy, const float* __restrict x,
                                 const float* mean, const float* scale, int64_t n, bool stream) {
  int64_t i = 0;
#if defined(__SSE2__)
  if (stream) {
    for (const int64_t head = until_aligned(dx, n); i < head; ++i) dx[i] = dy[i] + (x[i] - mean[i]) * scale[i];
    for (; i + 4 <= n; i += 4)
      _mm_stream_ps(dx + i, _mm_add_ps(_mm_loadu_ps(dy + i), _mm_mul_ps(_mm_sub_ps(_mm_loadu_ps(x + i),
                                                                                   _mm_loadu_ps(mean + i)),
                                                                        _mm_loadu_ps(scale + i))));
  }
#endif
  for (; i < n; ++i) dx[i] = dy[i] + (x[i] - mean[i]) * scale[i];
}

MS_INLINE void stream_fence(bool stream) {
#if defined(__SSE2__)
  if (stream) _mm_sfence();
#else
  (void)stream;
#endif
}

// ---- runs of contiguous positions of every member of a group ----
// Member k's run starts at x + x_off[k]; `n` positions. Blocks of kBlock: the members' blocks are read for the
// mean and again (from L1) for the variance.

// mean[i] and sigma^2[i] = var[i] + eps of one block.
template <typename T>
MS_INLINE void block_moments(const T* __restrict x, const int64_t* x_off, int64_t i0, int64_t members, int64_t len,
                             acc_t<T> inv_divisor, acc_t<T> eps, acc_t<T>* __restrict mean,
                             acc_t<T>* __restrict sigma_sq) {
  using A = acc_t<T>;
  for (int64_t i = 0; i < len; ++i) mean[i] = 0;
  for (int64_t k = 0; k < members; ++k) {
    const T* __restrict xk = x + x_off[k] + i0;
    for (int64_t i = 0; i < len; ++i) mean[i] += to_acc(xk[i]);
  }
  const A inv_members = A(1) / A(members);
  for (int64_t i = 0; i < len; ++i) {
    mean[i] *= inv_members;
    sigma_sq[i] = 0;
  }
  for (int64_t k = 0; k < members; ++k) {
    const T* __restrict xk = x + x_off[k] + i0;
    for (int64_t i = 0; i < len; ++i) {
      const A d = to_acc(xk[i]) - mean[i];
      sigma_sq[i] += d * d;
    }
  }
  for (int64_t i = 0; i < len; ++i) sigma_sq[i] = sigma_sq[i] * inv_divisor + eps;
}

// Sum over the run of sigma; with `sigma`, also every position's sigma (channels_last with several channel groups).
template <typename T>
MS_INLINE double sigma_run(const T* x, const int64_t* x_off, int64_t members, int64_t n, acc_t<T> inv_divisor,
                           acc_t<T> eps, acc_t<T>* sigma) {
  using A = acc_t<T>;
  A mean[kBlock], sq[kBlock];
  double total = 0;
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t len = std::min(kBlock, n - i0);
    block_moments(x, x_off, i0, members, len, inv_divisor, eps, mean, sq);
    A sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < len; ++i) {
      sq[i] = std::sqrt(sq[i]);
      sum += sq[i];
    }
    if (sigma)
      for (int64_t i = 0; i < len; ++i) sigma[i0 + i] = sq[i];
    total += sum;
  }
  return total;
}

// mean[i] and scale[i] = a / sigma[i] over the run.
template <typename T>
MS_INLINE void moments_run(const T* x, const int64_t* x_off, int64_t members, int64_t n, acc_t<T> inv_divisor,
                           acc_t<T> eps, acc_t<T> a, acc_t<T>* __restrict mean, acc_t<T>* __restrict scale) {
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t len = std::min(kBlock, n - i0);
    block_moments(x, x_off, i0, members, len, inv_divisor, eps, mean + i0, scale + i0);
    for (int64_t i = i0; i < i0 + len; ++i) scale[i] = a / std::sqrt(scale[i]);
  }
}

// `rows` rows of `len` elements, x_stride and y_stride apart: y = x.
template <typename T>
MS_INLINE void copy_rows(T* y, const T* x, int64_t rows, int64_t len, int64_t x_stride, int64_t y_stride,
                         bool stream) {
  for (int64_t r = 0; r < rows; ++r) copy(y + r * y_stride, x + r * x_stride, len, stream);
}

// dx = dy + (x - mean) * scale over `rows` rows of `len` elements; x, dx rows are contiguous (mean and scale are
// indexed like them), dy rows dy_stride apart.
template <typename T>
MS_INLINE void grad_rows(T* dx, const T* dy, const T* x, const acc_t<T>* mean, const acc_t<T>* scale, int64_t rows,
                         int64_t len, int64_t dy_stride, bool stream) {
  for (int64_t r = 0; r < rows; ++r)
    store_grad(dx + r * len, dy + r * dy_stride, x + r * len, mean + r * len, scale + r * len, len, stream);
}

// float32: one clone per ISA (external linkage so the ifunc resolvers can be emitted).
PROGAN_FAST_MULTIVERSION
double sigma_run_f32(const float* x, const int64_t* x_off, int64_t members, int64_t n, float inv_divisor, float eps,
                     float* sigma) {
  return sigma_run<float>(x, x_off, members, n, inv_divisor, eps, sigma);
}

PROGAN_FAST_MULTIVERSION
void moments_run_f32(const float* x, const int64_t* x_off, int64_t members, int64_t n, float inv_divisor, float eps,
                     float a, float* mean, float* scale) {
  moments_run<float>(x, x_off, members, n, inv_divisor, eps, a, mean, scale);
}

PROGAN_FAST_MULTIVERSION
void copy_rows_f32(float* y, const float* x, int64_t rows, int64_t len, int64_t x_stride, int64_t y_stride,
                   bool stream) {
  copy_rows<float>(y, x, rows, len, x_stride, y_stride, stream);
}

PROGAN_FAST_MULTIVERSION
void grad_rows_f32(float* dx, const float* dy, const float* x, const float* mean, const float* scale, int64_t rows,
                   int64_t len, int64_t dy_stride, bool stream) {
  grad_rows<float>(dx, dy, x, mean, scale, rows, len, dy_stride, stream);
}

namespace {

// The loops for any element type: float32 through its ISA clones, the others compiled for the baseline.
template <typename T>
struct Loops {
  using A = acc_t<T>;
  static double sigma(const T* x, const int64_t* x_off, int64_t members, int64_t n, A inv_divisor, A eps, A* sigma) {
    if constexpr (std::is_same_v<T, float>) return sigma_run_f32(x, x_off, members, n, inv_divisor, eps, sigma);
    else return sigma_run<T>(x, x_off, members, n, inv_divisor, eps, sigma);
  }
  static void moments(const T* x, const int64_t* x_off, int64_t members, int64_t n, A inv_divisor, A eps, A a,
                      A* mean, A* scale) {
    if constexpr (std::is_same_v<T, float>) moments_run_f32(x, x_off, members, n, inv_divisor, eps, a, mean, scale);
    else moments_run<T>(x, x_off, members, n, inv_divisor, eps, a, mean, scale);
  }
  static void copy(T* y, const T* x, int64_t rows, int64_t len, int64_t x_stride, int64_t y_stride, bool stream) {
    if constexpr (std::is_same_v<T, float>) copy_rows_f32(y, x, rows, len, x_stride, y_stride, stream);
    else copy_rows<T>(y, x, rows, len, x_stride, y_stride, stream);
  }
  static void grad(T* dx, const T* dy, const T* x, const A* mean, const A* scale, int64_t rows, int64_t len,
                   int64_t dy_stride, bool stream) {
    if constexpr (std::is_same_v<T, float>) grad_rows_f32(dx, dy, x, mean, scale, rows, len, dy_stride, stream);
    else grad_rows<T>(dx, dy, x, mean, scale, rows, len, dy_stride, stream);
  }
};

// ---- work split ----
// A task is one sample group and a run of positions. NCHW: a run of the K positions of one channel group (tasks
// ordered group, channel group, run; the run is contiguous in x and y). channels_last: a run of whole pixels, all
// channel groups (contiguous in x; y rows have the F statistic values after each pixel's C channels).
struct Task {
  int64_t group, feature;  // feature: the channel group (NCHW only)
  int64_t start;           // first position within the channel group [NCHW] or first pixel [channels_last]
  int64_t length;          // positions [NCHW] or pixels [channels_last]
};

struct Tasks {
  const Geometry& g;
  int64_t run_length;  // positions [NCHW] or pixels [channels_last] per task
  int64_t runs;        // per group [channels_last] or per (group, channel group) [NCHW]

  explicit Tasks(const Geometry& geo) : g(geo) {
    if (g.channels_last) {
      run_length = std::max<int64_t>(1, kTaskPositions / std::max<int64_t>(g.channels, 1));
      runs = (g.pixels + run_length - 1) / run_length;
    } else {
      run_length = kTaskPositions;
      runs = (g.positions() + run_length - 1) / run_length;
    }
  }
  int64_t count() const { return g.groups * (g.channels_last ? 1 : g.features) * runs; }
  // Elements of x (per member) a task covers at most: the size of its per-position buffers.
  int64_t max_elements() const { return g.channels_last ? run_length * g.channels : run_length; }
  Task operator[](int64_t task) const {
    const int64_t run = task % runs, rest = task / runs;
    const int64_t total = g.channels_last ? g.pixels : g.positions();
    const int64_t start = run * run_length;
    if (g.channels_last) return {rest, 0, start, std::min(run_length, total - start)};
    return {rest / g.features, rest % g.features, start, std::min(run_length, total - start)};
  }
  // Tasks per parallel_for chunk: at least ATen's grain of elements, so small tensors stay on the calling thread.
  int64_t grain() const {
    return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, g.group_size * max_elements()));
  }
  // Offsets of the task's first element in every member's sample: in x (and dx), and in y (and grad_y).
  void offsets(const Task& t, int64_t* x_off, int64_t* y_off) const {
    for (int64_t k = 0; k < g.group_size; ++k) {
      const int64_t n = g.sample(t.group, k);
      if (g.channels_last) {
        x_off[k] = n * g.x_sample_stride() + t.start * g.channels;
        y_off[k] = n * g.y_sample_stride() + t.start * (g.channels + g.features);
      } else {
        x_off[k] = n * g.x_sample_stride() + g.x_offset(t.feature, t.start);
        y_off[k] = n * g.y_sample_stride() + g.y_offset(t.feature, t.start);
      }
    }
  }
};

// ---- forward ----

template <typename T>
void forward(const Geometry& g, const T* x, T* y, double eps_in) {
  using A = acc_t<T>;
  const Tasks tasks(g);
  const int64_t F = g.features, G = g.group_size, C = g.channels, Cf = g.channels_per_feature();
  const bool stream = g.samples * g.y_sample_stride() * int64_t(sizeof(T)) >= kStreamBytes;
  const A inv_divisor = static_cast<A>(g.inv_divisor), eps = static_cast<A>(eps_in);
  // partial[task * F + f]: the task's sum of sigma over channel group f.
  std::vector<double> partial(tasks.count() * F, 0.0);
  at::parallel_for(0, tasks.count(), tasks.grain(), [&](int64_t begin, int64_t end) {
    std::vector<int64_t> x_off(G), y_off(G);
    std::vector<A> sigma(g.channels_last && F > 1 ? tasks.max_elements() : 0);
    for (int64_t i = begin; i < end; ++i) {
      const Task t = tasks[i];
      tasks.offsets(t, x_off.data(), y_off.data());
      const int64_t rows = g.channels_last ? t.length : 1, len = g.channels_last ? C : t.length;
      if (!g.zero) {
        const double total = Loops<T>::sigma(x, x_off.data(), G, rows * len, inv_divisor, eps,
                                             sigma.empty() ? nullptr : sigma.data());
        if (sigma.empty()) {
          partial[i * F + t.feature] = total;
        } else {  // channels_last, several channel groups: channel c of each pixel belongs to group c / Cf
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t f = 0; f < F; ++f) {
              A sum = 0;
              for (int64_t c = f * Cf; c < (f + 1) * Cf; ++c) sum += sigma[r * C + c];
              partial[i * F + f] += sum;
            }
        }
      }
      for (int64_t k = 0; k < G; ++k)
        Loops<T>::copy(y + y_off[k], x + x_off[k], rows, len, len, g.channels_last ? C + F : len, stream);
    }
    stream_fence(stream);
  });

  // s[m, f] = (sum of the partials in task order) / K; zero for contiguous groups of one.
  std::vector<T> stat(g.groups * F);
  const double K = static_cast<double>(g.positions());
  for (int64_t m = 0; m < g.groups; ++m)
    for (int64_t f = 0; f < F; ++f) {
      double sum = 0;
      for (int64_t run = 0; run < tasks.runs; ++run) {
        const int64_t task = (g.channels_last ? m : m * F + f) * tasks.runs + run;
        sum += partial[task * F + f];
      }
      stat[m * F + f] = g.zero ? T(0) : static_cast<T>(static_cast<A>(sum / K));
    }

  const int64_t P = g.pixels;
  at::parallel_for(0, g.samples, std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, F * P)),
                   [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const T* s = stat.data() + g.group_of(n) * F;
      T* yn = y + n * g.y_sample_stride();
      if (g.channels_last) {
        for (int64_t p = 0; p < P; ++p)
          for (int64_t f = 0; f < F; ++f) yn[g.stat_offset(f, p)] = s[f];
      } else {
        for (int64_t f = 0; f < F; ++f) std::fill(yn + g.stat_offset(f, 0), yn + g.stat_offset(f, 0) + P, s[f]);
      }
    }
  });
}

// ---- backward ----

template <typename T>
void backward(const Geometry& g, const T* dy, const T* x, T* dx, double eps_in) {
  using A = acc_t<T>;
  const Tasks tasks(g);
  const int64_t F = g.features, G = g.group_size, C = g.channels, Cf = g.channels_per_feature(), P = g.pixels;
  const bool stream = g.samples * g.x_sample_stride() * int64_t(sizeof(T)) >= kStreamBytes;
  const A inv_divisor = static_cast<A>(g.inv_divisor), eps = static_cast<A>(eps_in);

  // a[m, f] = (sum over group m's samples and H x W of dy's statistic channel f) / (K * D); zero when the
  // statistic is the constant 0 (dx is then dy's first C channels).
  std::vector<double> stat_grad(g.samples * F, 0.0);
  if (!g.zero)
    at::parallel_for(0, g.samples, std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, F * P)),
                     [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n)
        for (int64_t f = 0; f < F; ++f) {
          const T* dyn = dy + n * g.y_sample_stride();
          double sum = 0;
          for (int64_t p = 0; p < P; ++p) sum += static_cast<double>(to_acc(dyn[g.stat_offset(f, p)]));
          stat_grad[n * F + f] = sum;
        }
    });
  std::vector<A> a(g.groups * F, A(0));
  const double KD = static_cast<double>(g.positions()) / g.inv_divisor;
  for (int64_t m = 0; m < g.groups && !g.zero; ++m)
    for (int64_t f = 0; f < F; ++f) {
      double sum = 0;
      for (int64_t k = 0; k < G; ++k) sum += stat_grad[g.sample(m, k) * F + f];
      a[m * F + f] = static_cast<A>(sum / KD);
    }

  at::parallel_for(0, tasks.count(), tasks.grain(), [&](int64_t begin, int64_t end) {
    std::vector<int64_t> x_off(G), y_off(G);
    std::vector<A> mean(tasks.max_elements()), scale(tasks.max_elements());
    for (int64_t i = begin; i < end; ++i) {
      const Task t = tasks[i];
      tasks.offsets(t, x_off.data(), y_off.data());
      const int64_t rows = g.channels_last ? t.length : 1, len = g.channels_last ? C : t.length;
      const int64_t dy_stride = g.channels_last ? C + F : len;
      if (g.zero) {
        for (int64_t k = 0; k < G; ++k) Loops<T>::copy(dx + x_off[k], dy + y_off[k], rows, len, dy_stride, len, stream);
        continue;
      }
      const bool per_channel = g.channels_last && F > 1;
      Loops<T>::moments(x, x_off.data(), G, rows * len, inv_divisor, eps,
                        per_channel ? A(1) : a[t.group * F + t.feature], mean.data(), scale.data());
      if (per_channel)
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < C; ++c) scale[r * C + c] *= a[t.group * F + c / Cf];
      for (int64_t k = 0; k < G; ++k)
        Loops<T>::grad(dx + x_off[k], dy + y_off[k], x + x_off[k], mean.data(), scale.data(), rows, len, dy_stride,
                       stream);
    }
    stream_fence(stream);
  });
}

// ---- dispatch ----

at::Tensor minibatch_stddev_forward_cpu(const at::Tensor& x_in, int64_t group_size, c10::string_view grouping,
                                        bool unbiased, double eps, int64_t features) {
  MinibatchStddevForwardOperands o(x_in, group_size, std::string_view(grouping.data(), grouping.size()), unbiased,
                                   features);
  if (o.y.numel() == 0) return o.y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, o.x.scalar_type(), "minibatch_stddev_forward", [&] {
    forward<scalar_t>(o.geo, o.x.const_data_ptr<scalar_t>(), o.y.mutable_data_ptr<scalar_t>(), eps);
  });
  return o.y;
}

at::Tensor minibatch_stddev_backward_cpu(const at::Tensor& grad_y_in, const at::Tensor& x_in, int64_t group_size,
                                         c10::string_view grouping, bool unbiased, double eps, int64_t features) {
  MinibatchStddevBackwardOperands o(grad_y_in, x_in, group_size, std::string_view(grouping.data(), grouping.size()),
                                    unbiased, features);
  if (o.grad_x.numel() == 0) return o.grad_x;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, o.x.scalar_type(), "minibatch_stddev_backward", [&] {
    backward<scalar_t>(o.geo, o.grad_y.const_data_ptr<scalar_t>(), o.x.const_data_ptr<scalar_t>(),
                       o.grad_x.mutable_data_ptr<scalar_t>(), eps);
  });
  return o.grad_x;
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_fast, CPU, m) {
  m.impl("minibatch_stddev_forward", &minibatch_stddev_forward_cpu);
  m.impl("minibatch_stddev_backward", &minibatch_stddev_backward_cpu);
}

}  // namespace minibatch_stddev_cpu
}  // namespace progan_fast
