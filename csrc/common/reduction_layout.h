// How a tensor reduced over one dimension is laid out in memory, shared by the CPU and CUDA host code.
// Kernels see [outer, channels, inner] with the reduced dimension in the middle:
//   inner == 1  -> "rows": each reduction is contiguous (channels_last activations, 2-D latents);
//   inner  > 1  -> "planes": consecutive elements of one channel are contiguous (NCHW).
// channels_last inputs reduced over dim 1 are used as they are; any other non-contiguous input is copied to
// contiguous first (the documented fallback), and the output then comes back contiguous.
#pragma once
#include <ATen/ATen.h>

namespace progan_fast {

struct ReductionLayout {
  int64_t dim = 1;
  int64_t outer = 1, channels = 1, inner = 1;
  bool channels_last = false;

  bool rows() const { return inner == 1; }

  static bool is_channels_last_only(const at::Tensor& x) {
    return x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  }

  static ReductionLayout of(const at::Tensor& x, int64_t dim) {
    ReductionLayout l;
    l.dim = c10::maybe_wrap_dim(dim, x.dim());
    l.channels_last = l.dim == 1 && is_channels_last_only(x);
    l.channels = x.size(l.dim);
    if (l.channels_last) {
      l.outer = x.size(0) * x.size(2) * x.size(3);
      return l;
    }
    for (int64_t d = 0; d < l.dim; ++d) l.outer *= x.size(d);
    for (int64_t d = l.dim + 1; d < x.dim(); ++d) l.inner *= x.size(d);
    return l;
  }

  at::Tensor dense(const at::Tensor& x) const {
    return channels_last ? x : x.contiguous();
  }
  // Another tensor of x's shape (a gradient) in the same memory order as dense(x).
  at::Tensor dense_like(const at::Tensor& t) const {
    return channels_last ? t.contiguous(at::MemoryFormat::ChannelsLast) : t.contiguous();
  }
  // Shape of the per-pixel statistics: x's shape with the reduced dimension set to 1, contiguous. For
  // channels_last that is also the order in which rows are visited.
  std::vector<int64_t> stat_sizes(const at::Tensor& x) const {
    std::vector<int64_t> sizes = x.sizes().vec();
    sizes[dim] = 1;
    return sizes;
  }
};

}  // namespace progan_fast
