// The emulated family (progan_fast_emulated::*): the CUDA kernels' device code run on the CPU for every thread
// of the real launch (csrc/ops/phases.h), registered with the same raw ops as every family so the shared op
// tests run it. Sequential and slow by design: for small test tensors.
#include <torch/library.h>

#include "host/minibatch_stddev.h"
#include "host/fade.h"
#include "host/pixel_norm.h"
#include "host/scaled_bias_act.h"

namespace progan_fast {
namespace {

// The launch geometry the CUDA launcher picks for the forward of x, so tests can check that every schedule is
// exercised: (items, blocks, lanes, items_per_block, rows, elements per access).
std::vector<int64_t> pixel_norm_launch_config(const at::Tensor& x, int64_t dim) {
  const PixelNormForwardOperands o(x, dim, /*eps=*/1e-8);  // the geometry does not depend on eps
  const int vector = hd::dispatch(launcher_dtype(x, "x"), [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    return hd::rows_vector_width<scalar_t>(o.layout.channels, o.layout.inner,
                                           {o.x.const_data_ptr(), o.y.const_data_ptr()});
  });
  const auto cfg = pixel_norm_cuda::launch_config(o.layout.outer, o.layout.channels, o.layout.inner, vector);
  return {cfg.items, cfg.blocks, cfg.lanes, cfg.items_per_block, cfg.rows ? 1 : 0, cfg.vector};
}

// The same for the epilogue's forward of x with a bias (its geometry is pixel norm's rule: hd::item_lanes).
std::vector<int64_t> scaled_bias_act_launch_config(const at::Tensor& x) {
  TORCH_CHECK(x.dim() >= 2, "x must have at least 2 dimensions (batch and channels); got shape ", x.sizes());
  const ScaledBiasActForwardOperands o(x, at::zeros({x.size(1)}, x.options()), 1.0, 0.2, /*pixel_norm=*/true, 1e-8);
  const int vector = hd::dispatch(launcher_dtype(x, "x"), [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    return hd::rows_vector_width<scalar_t>(o.layout.channels, o.layout.inner,
                                           {o.x.const_data_ptr(), o.bias.const_data_ptr(), o.y.const_data_ptr()});
  });
  const auto cfg = scaled_bias_act_cuda::launch_config(o.layout.outer, o.layout.channels, o.layout.inner, vector);
  return {cfg.items, cfg.blocks, cfg.lanes, cfg.items_per_block, cfg.rows ? 1 : 0, cfg.vector};
}

// (blocks of the position kernels, positions per block, blocks writing the statistic channels, positions per
// access, whether y's accesses are vectors too, member slices, elements per access of the statistic channels) for x
// and a fresh (aligned) y.
std::vector<int64_t> minibatch_stddev_launch_config(const at::Tensor& x, int64_t group_size,
                                                    c10::string_view grouping, bool unbiased, int64_t features) {
  const auto geo = minibatch_stddev_geometry(x, group_size, std::string_view(grouping.data(), grouping.size()),
                                             unbiased, /*eps=*/0.0, features);
  const auto cfg = minibatch_stddev_cuda::launch_config(geo, launcher_dtype(x, "x"), {x.const_data_ptr()}, {});
  return {geo.groups * geo.features * cfg.chunks.value, cfg.chunk, geo.samples * geo.features * cfg.pixel_runs.value,
          cfg.vector, cfg.vector_y ? 1 : 0, cfg.slices, cfg.stat_vector};
}

// fade_from_rgb's geometries for `images` and `main` (new or grad_y; the outputs freshly allocated, as the host
// does): (pixel lanes, pixel blocks, pixels per item, channels per access, channel-kernel lanes, chunks,
// channel-kernel blocks, its pixels per access, image-channel groups). The pixel kernels' vectors are the forward's
// (the pixel backward's match them: its further tensors, grad_images, are fresh too).
std::vector<int64_t> fade_from_rgb_launch_config(const at::Tensor& images, const at::Tensor& main) {
  TORCH_CHECK(images.dim() == 4 && main.dim() == 4, "images and main: 4-D tensors expected");
  const at::Tensor weight = at::empty({main.size(1), images.size(1), 1, 1}, main.options());
  const at::Tensor bias = at::empty({main.size(1)}, main.options());
  const FadeFromRgbOperands o(main, "main", images, weight, bias, at::scalar_tensor(0.5, at::kDouble), 1.0, 1.0, 0.2);
  const at::Tensor out = fade_empty(o.main.sizes(), o.main, o.channels_last);
  const fade_from_rgb_cuda::CommonParams common{o.images.const_data_ptr(), o.weight.const_data_ptr(),
                                                o.bias.const_data_ptr(), fade_host::from_rgb_shape(o), {1.0, 1.0, 0.2},
                                                {}, launcher_dtype(o.main, "main")};
  return hd::dispatch(common.dtype, [&](auto type) {
    using scalar_t = typename decltype(type)::type;
    const auto pixels = fade_from_rgb_cuda::forward_config<scalar_t>({common, o.main.const_data_ptr(), out.data_ptr()});
    const auto channels = fade_from_rgb_cuda::channel_backward_config<scalar_t>({common, o.main.const_data_ptr(),
                                                                                nullptr, 0});
    return std::vector<int64_t>{pixels.lanes, pixels.blocks, pixels.pixels_per_item, pixels.channels_per_access,
                                channels.lanes, channels.chunks, channels.blocks, channels.pixels_per_access,
                                common.shape.groups()};
  });
}

// fade_reals' geometry for x: (blocks, elements per access, whether a thread takes the rows unit).
std::vector<int64_t> fade_reals_launch_config(const at::Tensor& x) {
  const FadeRealsOperands o(x, at::scalar_tensor(0.5, at::kDouble));
  const fade_reals_cuda::Params p{o.x.const_data_ptr(), o.y.mutable_data_ptr(),
                                  o.planes.planes * o.planes.height / 2, o.planes.width, o.planes.vec, {},
                                  launcher_dtype(x, "x")};
  const auto g = hd::dispatch(p.dtype, [&](auto type) {
    return fade_reals_cuda::geometry<typename decltype(type)::type>(p);
  });
  return {g.blocks, g.vector, g.rows ? 1 : 0};
}

// upsample_blend's forward geometry: (blocks, elements per access, whether the low values are vectors too).
std::vector<int64_t> upsample_blend_launch_config(const at::Tensor& low, const at::Tensor& high, int64_t factor) {
  const UpsampleBlendOperands o(low, high, at::scalar_tensor(0.5, at::kDouble), factor);
  const upsample_blend_cuda::ForwardParams p{o.low.const_data_ptr(), o.high.const_data_ptr(), o.y.mutable_data_ptr(),
                                             fade_host::upsample_geometry(o.low_planes, factor), {},
                                             launcher_dtype(high, "high")};
  const auto cfg = hd::dispatch(p.dtype, [&](auto type) {
    return upsample_blend_cuda::forward_config<typename decltype(type)::type>(p);
  });
  return {cfg.blocks, cfg.vector, cfg.pixels ? 1 : 0};
}

// A two-phase kernel: a warp exchange of one float per thread over groups of `lanes`, whose sums cross a barrier
// in shared memory to the phase that writes them out. For the test that the emulated exchange is the GPU's
// butterfly, bit for bit.
struct WarpSumKernel {
  static constexpr int kThreads = 256;
  struct Shared {
    float sums[kThreads];
  };
  using Exchange = hd::Sums<float, 1>;
  const float* values;
  float* out;
  int64_t block_count;
  int lanes;

  int64_t blocks() const { return block_count; }
  int phases() const { return 2; }
  int exchange_lanes() const { return lanes; }
  Exchange before_exchange(Shared&, int64_t block, int tid) const { return {{values[block * kThreads + tid]}}; }
  void after_exchange(Shared& sh, int64_t, int tid, const Exchange& sums) const { sh.sums[tid] = sums.v[0]; }
  void phase(int, Shared& sh, int64_t block, int tid) const { out[block * kThreads + tid] = sh.sums[tid]; }
};

at::Tensor warp_exchange_sum(const at::Tensor& values, int64_t lanes) {
  TORCH_CHECK(values.scalar_type() == at::kFloat && values.dim() == 1 && values.numel() % WarpSumKernel::kThreads == 0,
              "values: a 1-d float32 tensor of whole blocks of ", WarpSumKernel::kThreads, " expected");
  TORCH_CHECK(lanes >= 1 && lanes <= hd::kWarpSize && (lanes & (lanes - 1)) == 0,
              "lanes: a power of two up to a warp expected, got ", lanes);
  const at::Tensor v = values.contiguous();
  at::Tensor out = at::empty_like(v);
  hd::emulate(WarpSumKernel{v.const_data_ptr<float>(), out.mutable_data_ptr<float>(),
                            v.numel() / WarpSumKernel::kThreads, static_cast<int>(lanes)});
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_fast_emulated, CPU, m) {
  m.impl("pixel_norm_forward", &pixel_norm_host::forward<EmulatedDevice>);
  m.impl("pixel_norm_backward", &pixel_norm_host::backward<EmulatedDevice>);
  m.impl("minibatch_stddev_forward", &minibatch_stddev_host::forward<EmulatedDevice>);
  m.impl("minibatch_stddev_backward", &minibatch_stddev_host::backward<EmulatedDevice>);
  m.impl("scaled_bias_act_forward", &scaled_bias_act_host::forward<EmulatedDevice>);
  m.impl("scaled_bias_act_backward", &scaled_bias_act_host::backward<EmulatedDevice>);
  m.impl("upsample_blend_forward", &fade_host::upsample_blend_forward<EmulatedDevice>);
  m.impl("upsample_blend_backward", &fade_host::upsample_blend_backward<EmulatedDevice>);
  m.impl("fade_reals_forward", &fade_host::fade_reals_forward<EmulatedDevice>);
  m.impl("fade_from_rgb_forward", &fade_host::fade_from_rgb_forward<EmulatedDevice>);
  m.impl("fade_from_rgb_backward", &fade_host::fade_from_rgb_backward<EmulatedDevice>);
}

// Test-only introspection, outside the shared raw ops.
TORCH_LIBRARY_FRAGMENT(progan_fast_emulated, m) {
  m.def("pixel_norm_launch_config(Tensor x, int dim) -> int[]", &pixel_norm_launch_config);
  m.def("scaled_bias_act_launch_config(Tensor x) -> int[]", &scaled_bias_act_launch_config);
  m.def("minibatch_stddev_launch_config(Tensor x, int group_size, str grouping, bool unbiased, int num_new_features)"
        " -> int[]", &minibatch_stddev_launch_config);
  m.def("fade_from_rgb_launch_config(Tensor images, Tensor main) -> int[]", &fade_from_rgb_launch_config);
  m.def("fade_reals_launch_config(Tensor x) -> int[]", &fade_reals_launch_config);
  m.def("upsample_blend_launch_config(Tensor low, Tensor high, int factor) -> int[]", &upsample_blend_launch_config);
  m.def("warp_exchange_sum(Tensor values, int lanes) -> Tensor", &warp_exchange_sum);
}

}  // namespace progan_fast
