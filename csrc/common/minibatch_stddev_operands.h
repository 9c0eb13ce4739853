// The operands of every minibatch stddev kernel (CPU, CUDA, and the CPU emulation of the CUDA one), checked and
// laid out once: the arguments checked as progan_fast/ops/minibatch_stddev.py checks them, x dense in its layout
// (channels_last used as it is, anything else made contiguous), y and dx allocated in that layout.
#pragma once
#include <ATen/ATen.h>

#include <string_view>

#include "common/checks.h"
#include "common/reduction_layout.h"
#include "ops/minibatch_stddev_geometry.h"

namespace progan_fast {

inline minibatch_stddev::Geometry minibatch_stddev_geometry(const at::Tensor& x, int64_t group_size,
                                                            std::string_view grouping, bool unbiased,
                                                            double eps, int64_t features) {
  check_float_tensor(x, "x");
  check_finite(eps, "eps");
  TORCH_CHECK(x.dim() == 4, "x must be 4-D; got a ", x.dim(), "-D tensor of shape ", x.sizes());
  const int64_t n = x.size(0), c = x.size(1);
  TORCH_CHECK(n > 0, "x has an empty batch (shape ", x.sizes(), "); at least one sample is needed");
  TORCH_CHECK(group_size >= 1, "group_size must be >= 1; got ", group_size);
  TORCH_CHECK(grouping == "strided" || grouping == "contiguous",
              "grouping must be one of 'strided', 'contiguous'; got '", grouping, "'");
  TORCH_CHECK(features >= 1, "num_new_features must be >= 1; got ", features);
  TORCH_CHECK(c % features == 0, "num_new_features=", features, " must divide the ", c, " channels of x");
  const bool strided = grouping == "strided";
  TORCH_CHECK(!strided || n <= group_size || n % group_size == 0, "group_size=", group_size,
              " does not divide the batch of ", n, " samples; with grouping='strided' (TF official) the batch must ",
              "be a multiple of group_size or at most group_size");
  const auto geo = minibatch_stddev::make_geometry(n, c, x.size(2) * x.size(3), features, group_size, strided,
                                                   unbiased, ReductionLayout::is_channels_last_only(x));
  TORCH_CHECK(!unbiased || geo.group_size > 1 || geo.zero, "unbiased=True needs groups of at least 2 samples; ",
              "group_size=", group_size, " and a batch of ", n, " give groups of 1");
  return geo;
}

inline at::MemoryFormat minibatch_stddev_format(const minibatch_stddev::Geometry& geo) {
  return geo.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

struct MinibatchStddevForwardOperands {
  minibatch_stddev::Geometry geo;
  at::Tensor x, y;

  MinibatchStddevForwardOperands(const at::Tensor& x_in, int64_t group_size, std::string_view grouping,
                                 bool unbiased, double eps, int64_t features)
      : geo(minibatch_stddev_geometry(x_in, group_size, grouping, unbiased, eps, features)),
        x(x_in.contiguous(minibatch_stddev_format(geo))) {
    y = at::empty({x.size(0), x.size(1) + features, x.size(2), x.size(3)},
                  x.options().memory_format(minibatch_stddev_format(geo)));
  }
};

struct MinibatchStddevBackwardOperands {
  minibatch_stddev::Geometry geo;
  at::Tensor grad_y, x, grad_x;

  MinibatchStddevBackwardOperands(const at::Tensor& grad_y_in, const at::Tensor& x_in, int64_t group_size,
                                  std::string_view grouping, bool unbiased, double eps, int64_t features)
      : geo(minibatch_stddev_geometry(x_in, group_size, grouping, unbiased, eps, features)) {
    // The kernels read grad_y as x's type, laid out like y: anything else would be read out of bounds.
    TORCH_CHECK_TYPE(grad_y_in.scalar_type() == x_in.scalar_type(), "grad_y must have x's dtype ",
                     x_in.scalar_type(), "; got ", grad_y_in.scalar_type());
    const std::vector<int64_t> y_sizes{x_in.size(0), x_in.size(1) + features, x_in.size(2), x_in.size(3)};
    TORCH_CHECK(grad_y_in.sizes() == at::IntArrayRef(y_sizes), "grad_y must have the output's shape ",
                at::IntArrayRef(y_sizes), "; got ", grad_y_in.sizes());
    const at::MemoryFormat format = minibatch_stddev_format(geo);
    x = x_in.contiguous(format);
    grad_y = grad_y_in.contiguous(format);
    grad_x = at::empty_like(x, format);
  }
};

}  // namespace progan_fast
