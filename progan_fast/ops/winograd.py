"""conv3x3_winograd: a 3x3 'same' convolution by Winograd's minimal filtering F(4x4, 3x3) on the CPU.

Why: a ProGAN step on the CPU is mostly 3x3 convolutions (about 70 % of its convolution FLOPs; the rest are the
fused up/down convs), and oneDNN already runs them near the cores' peak, so the only way to make them faster is
fewer multiplies. F(4x4, 3x3) computes each 4x4 output tile from a 6x6 input patch with 36 multiplies per channel
pair instead of 144 (Lavin & Gray 2015, "Fast Algorithms for Convolutional Neural Networks"):

    y[tile] = A^T [ (G w G^T) . (B^T d B) ] A      (. is the elementwise product over the 6x6 tile points,
                                                     summed over input channels: one matrix product per point)

Here the 36 per-point matrix products are one grouped 1x1 convolution (groups = 36, oneDNN), and the three linear
maps around it are this module's kernels (csrc/cpu/winograd.cpp: input transform B^T d B, output transform
A^T M A, and their adjoints) and one small matrix product (the weight transform G w G^T).

Accuracy: the algorithm is exact in real arithmetic (float64 agrees with torch's conv to ~1e-14), but its
transforms have constants up to 8 and 1/24, so in float32 its rounding error is about ten times a direct conv's:
relative to the output's scale, about 3e-6 RMS and 1e-5 at worst against 3e-7 and 3e-7 (measured over 128-512
input channels; tests/ops/test_winograd.py bounds it), far below bf16's 4e-3. It is therefore an explicit choice,
never a silent substitute: `use_conv_algorithm("winograd")` (the trainer's `--conv-algorithm`) makes eq_conv2d's
plain 3x3 convolutions on the CPU use it; the default, "direct", keeps torch's convolution and its numerics (the
drop-in `patch()` never changes it).

Autograd: the conv, its adjoint in x (the backward's grad_x) and its adjoint in w (grad_w) are three
autograd Functions whose backwards call each other, so every order of derivative runs through the same fast
pieces (the gradient penalty differentiates twice) and each saves only its two inputs.
"""
import contextlib
import threading

import torch
import torch.nn.functional as F

from .. import backends

backends.register_op("conv3x3_winograd", ("cpu",))

NAMESPACE = "progan_fast_winograd"
_lib = torch.library.Library(NAMESPACE, "DEF")
_lib.define("input_transform(Tensor x) -> Tensor")
_lib.define("input_transform_adjoint(Tensor grad_v, int height, int width) -> Tensor")
_lib.define("output_transform(Tensor m, int height, int width) -> Tensor")
_lib.define("output_transform_adjoint(Tensor grad_y) -> Tensor")

TILE = 4
POINTS = 36
# Channels from which the per-point products run as one batched matrix product (_point_products).
BMM_CHANNELS = 512


def _tiles(size):
    return (size + TILE - 1) // TILE


def _channels_last(shape, like):
    return like.new_empty(shape).contiguous(memory_format=torch.channels_last)


@torch.library.register_fake(f"{NAMESPACE}::input_transform", lib=_lib)
def _(x):
    n, c, h, w = x.shape
    return _channels_last((n, POINTS * c, _tiles(h), _tiles(w)), x)


@torch.library.register_fake(f"{NAMESPACE}::input_transform_adjoint", lib=_lib)
def _(grad_v, height, width):
    return _channels_last((grad_v.shape[0], grad_v.shape[1] // POINTS, height, width), grad_v)


@torch.library.register_fake(f"{NAMESPACE}::output_transform", lib=_lib)
def _(m, height, width):
    return _channels_last((m.shape[0], m.shape[1] // POINTS, height, width), m)


@torch.library.register_fake(f"{NAMESPACE}::output_transform_adjoint", lib=_lib)
def _(grad_y):
    n, c, h, w = grad_y.shape
    return _channels_last((n, POINTS * c, _tiles(h), _tiles(w)), grad_y)


_ops = getattr(torch.ops, NAMESPACE)

# G of F(4, 3) (interpolation points 0, +-1, +-2 and infinity; the scaling that keeps B^T's entries integers), and
# the weight transform U = G w G^T as one matrix on the 9 taps: U[i * 6 + j] = sum over a, b of
# G[i, a] G[j, b] w[a * 3 + b], so a layer's transform is one small matrix product.
_G = torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
                   [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=torch.float64)
_G_KRON = torch.kron(_G, _G)  # [36, 9]


def _kron(like):
    return _G_KRON.to(like.device, like.dtype)


def _weight_transform(w, transpose=False):
    """U = G w G^T per (out, in) pair, as the grouped 1x1 conv's weight [36 * Cout, Cin, 1, 1] (point-major), or
    with transpose=True its per-point transpose [36 * Cin, Cout, 1, 1]."""
    if transpose:
        w = w.transpose(0, 1)
    rows, cols = w.shape[:2]
    return torch.mm(_kron(w), w.reshape(rows * cols, 9).T).view(POINTS * rows, cols, 1, 1)


def _weight_transform_adjoint(grad_u, cout, cin):
    """The adjoint of _weight_transform (not transposed): grad_w = G^T grad_U G per (out, in) pair."""
    return torch.mm(_kron(grad_u).T.contiguous(), grad_u.view(POINTS, cout * cin)).T.reshape(cout, cin, 3, 3)


def _cl(t):
    return t.contiguous(memory_format=torch.channels_last)


def _layout_of(t, like):
    """t (channels_last, as the transforms write it) in `like`'s memory format, as torch's conv would return it:
    an NCHW model keeps NCHW activations and gradients (a trainer may .view() them), for two copies per conv."""
    return t if like.is_contiguous(memory_format=torch.channels_last) else t.contiguous()


def _point_products(v, u):
    """The 36 per-point matrix products, M[p] = V[p] U[p]^T over the tiles: the grouped 1x1 convolution of v
    [N, 36 Cin, th, tw] (channels_last) with u [36 Cout, Cin, 1, 1], output channels_last. torch's conv picks its
    reference kernel for batches under 16 on one thread, which copies every group (1.3-1.4x the time of oneDNN's
    at 128 channels), so float32 calls oneDNN itself; from 512 channels oneDNN's grouped 1x1 runs at 35-70 GFLOP/s
    and one batched matrix product over strided views of the same memory takes 0.5-0.75x its time."""
    if v.dtype != torch.float32 or not torch.backends.mkldnn.is_available():
        return F.conv2d(v, u, groups=POINTS)
    n, _, th, tw = v.shape
    cout, cin = u.shape[0] // POINTS, u.shape[1]
    if max(cin, cout) < BMM_CHANNELS:
        return torch.ops.aten.mkldnn_convolution(v, u, None, [0, 0], [1, 1], [1, 1], POINTS)
    rows = n * th * tw
    m = torch.empty((n, POINTS * cout, th, tw), dtype=v.dtype, device=v.device, memory_format=torch.channels_last)
    torch.bmm(v.permute(0, 2, 3, 1).reshape(rows, POINTS, cin).transpose(0, 1),
              u.view(POINTS, cout, cin).transpose(1, 2),
              out=m.permute(0, 2, 3, 1).view(rows, POINTS, cout).transpose(0, 1))
    return m


def _forward(x, w):
    h, wd = x.shape[-2:]
    m = _point_products(_ops.input_transform(_cl(x)), _weight_transform(w))
    return _ops.output_transform(_cl(m), h, wd)


def _transformed_grad(grad_y):
    return _ops.output_transform_adjoint(_cl(grad_y))


def _adjoint_x(grad_y, w, grad_m=None):
    """grad_x of the conv: the adjoint of _forward in x, stage by stage (grad_m: grad_y already transformed)."""
    h, wd = grad_y.shape[-2:]
    grad_m = _transformed_grad(grad_y) if grad_m is None else grad_m
    grad_v = _point_products(grad_m, _weight_transform(w, transpose=True))
    return _ops.input_transform_adjoint(_cl(grad_v), h, wd)


def _adjoint_w(x, grad_y, grad_m=None):
    """grad_w of the conv: per tile point, the product of the transformed gradient and input summed over the tiles
    (one batched matrix product over channels_last views, no copies), then G^T . G."""
    cin, cout = x.shape[1], grad_y.shape[1]
    tiles = x.shape[0] * _tiles(x.shape[2]) * _tiles(x.shape[3])
    v = _ops.input_transform(_cl(x)).permute(0, 2, 3, 1).reshape(tiles, POINTS, cin)
    grad_m = (_transformed_grad(grad_y) if grad_m is None else grad_m).permute(0, 2, 3, 1).reshape(tiles, POINTS, cout)
    grad_u = torch.bmm(grad_m.permute(1, 2, 0), v.permute(1, 0, 2))                            # [36, Cout, Cin]
    return _weight_transform_adjoint(grad_u, cout, cin)


def _needed(ctx, index):
    """Whether the running backward uses this Function's gradient for input `index`. ctx.needs_input_grad only
    says the input requires grad: the gradient penalty's autograd.grad(scores, images) runs every conv's backward
    but needs no weight gradient, and one costs as much as the conv. The engine knows which nodes it will run
    (torch._C._will_engine_execute_node, private: if it is missing, or refuses a leaf that autograd.grad returns,
    the gradient is computed)."""
    if not ctx.needs_input_grad[index]:
        return False
    node = ctx.next_functions[index][0]
    will_execute = getattr(torch._C, "_will_engine_execute_node", None)
    if node is None or will_execute is None:
        return True
    try:
        return will_execute(node)
    except RuntimeError:
        return True


class _Conv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return _layout_of(_forward(x, w), x)

    @staticmethod
    def backward(ctx, grad_y):
        x, w = ctx.saved_tensors
        need_x, need_w = _needed(ctx, 0), _needed(ctx, 1)
        # Both adjoints start from the transformed grad_y: transform it once (a hint, not an autograd input: its
        # derivative is each Function's own).
        grad_m = _transformed_grad(grad_y.detach()) if need_x and need_w else None
        grad_x = _AdjointX.apply(grad_y, w, grad_m) if need_x else None
        grad_w = _AdjointW.apply(x, grad_y, grad_m) if need_w else None
        return grad_x, grad_w


class _AdjointX(torch.autograd.Function):
    """(grad_y, w) -> grad_x; <adjoint_x(g, w), h> = <g, conv(h, w)>."""

    @staticmethod
    def forward(ctx, grad_y, w, grad_m=None):
        ctx.save_for_backward(grad_y, w)
        return _layout_of(_adjoint_x(grad_y, w, grad_m), grad_y)

    @staticmethod
    def backward(ctx, grad):
        grad_y, w = ctx.saved_tensors
        d_grad_y = _Conv.apply(grad, w) if _needed(ctx, 0) else None
        d_w = _AdjointW.apply(grad, grad_y) if _needed(ctx, 1) else None
        return d_grad_y, d_w, None


class _AdjointW(torch.autograd.Function):
    """(x, grad_y) -> grad_w; <adjoint_w(x, g), H> = <g, conv(x, H)>."""

    @staticmethod
    def forward(ctx, x, grad_y, grad_m=None):
        ctx.save_for_backward(x, grad_y)
        return _adjoint_w(x, grad_y, grad_m)

    @staticmethod
    def backward(ctx, grad):
        x, grad_y = ctx.saved_tensors
        d_x = _AdjointX.apply(grad_y, grad) if _needed(ctx, 0) else None
        d_grad_y = _Conv.apply(x, grad) if _needed(ctx, 1) else None
        return d_x, d_grad_y, None


def conv3x3_winograd(x, weight):
    """F.conv2d(x, weight, padding=1) for a [Cout, Cin, 3, 3] weight, by Winograd F(4x4, 3x3) on the CPU
    (float32 or float64; the output in x's memory format: channels_last, or NCHW for any other). Differentiable to
    any order."""
    if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor):
        raise TypeError("x and weight must be tensors")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D (N, C, H, W); got shape {tuple(x.shape)}")
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3) or weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight must be [Cout, {x.shape[1]}, 3, 3] for x of shape {tuple(x.shape)}; "
                         f"got {tuple(weight.shape)}")
    if x.shape[1] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"x must have at least one channel and a non-empty map; got shape {tuple(x.shape)}")
    if x.device.type != "cpu" or weight.device != x.device:
        raise ValueError(f"x and weight must both be CPU tensors; got {x.device} and {weight.device}")
    if x.dtype not in (torch.float32, torch.float64) or weight.dtype != x.dtype:
        raise TypeError(f"x and weight must both be float32 or both float64; got {x.dtype} and {weight.dtype}")
    return _Conv.apply(x, weight)


# ---- the algorithm choice for eq_conv2d ----

ALGORITHMS = ("direct", "winograd")
# Smallest feature map (H * W) that runs Winograd: a 4x4 map is one tile whose 6x6 patch is mostly padding. An NCHW
# map pays two layout copies per conv on top: at 8x8 that made the layer slower than torch's conv (128 channels,
# batch 8, forward + backward + double backward: 1.08-1.18x the time), from 16x16 up faster (0.6-0.9x).
MIN_PIXELS = 64
MIN_PIXELS_NCHW = 256
_state = threading.local()


def conv_algorithm():
    return getattr(_state, "algorithm", "direct")


def set_conv_algorithm(algorithm):
    if algorithm not in ALGORITHMS:
        raise ValueError(f"conv algorithm must be one of {', '.join(ALGORITHMS)}; got {algorithm!r}")
    _state.algorithm = algorithm


@contextlib.contextmanager
def use_conv_algorithm(algorithm):
    """Within the block, eq_conv2d's plain 3x3 convs on the CPU run by `algorithm` ("direct" or "winograd")."""
    before = conv_algorithm()
    set_conv_algorithm(algorithm)
    try:
        yield
    finally:
        _state.algorithm = before


def applies(x, weight):
    """Whether eq_conv2d runs this conv by Winograd now: chosen, and a 3x3 float32 CPU conv on a map of at least
    MIN_PIXELS, or MIN_PIXELS_NCHW when x is not channels_last (converted for the transforms and back)."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last)
    return (conv_algorithm() == "winograd" and weight.shape[-1] == 3 and x.dtype == torch.float32
            and x.device.type == "cpu" and x.shape[-2] * x.shape[-1] >= (MIN_PIXELS if channels_last else MIN_PIXELS_NCHW)
            and backends.resolve("conv3x3_winograd", x.device, warn=False) == "cpu")
