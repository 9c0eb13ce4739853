"""The fused up/down convs with their (k+1) x (k+1) kernel rebuilt in backward instead of saved.

progan_fast.reference.conv2d_resample runs F.conv2d(x, K / 4, stride=2) (down) or F.conv_transpose2d(x, K_t,
stride=2) (up) with the kernel K built from the k x k weight W (progan_fast.ops._resample_kernel). Autograd then
saves K for backward: (k+1)^2 / k^2 = 16/9 times the weight's bytes, for every layer and every forward pass (15.8
MB per WGAN-GP training step at 32x32, benchmarks/train_step.py), while W itself is a parameter that autograd keeps
anyway. Here the conv is one autograd.Function that saves x and W, and whose backward builds K again (a copy and
three adds of K's size, next to a conv) and runs the conv's own backward, aten.convolution_backward, the call that
the conv's autograd node makes, on the same values; the kernel's gradient goes to W through the kernel's adjoint.
The gradient penalty's first backward, recorded for the second, still saves its rebuilt K in that record (as it
saves the other arguments of convolution_backward): 3.1 of the 15.8 MB at 32x32 remain.

Values: forward is the same kernel and the same conv call, bit for bit; the first derivatives are the same
convolution_backward call followed by the same adjoint (K's `* 0.25` is exact), bit for bit. Higher orders: with
create_graph the backward is recorded like any other code (convolution_backward has a derivative formula, the
kernel and its adjoint are each other's backward), so the graph is the one autograd recorded for the plain conv,
except that the two gradients reaching the weight (the forward conv's, and the double backward's through the
rebuilt kernel) are each mapped through the adjoint and then added, where the plain conv added them first: equal up
to the rounding of that one sum.

Only the gradients the engine will use are computed (the plain conv's node gets the same output mask from the
engine): the gradient penalty's first backward, taken with respect to D's input only, computes no weight gradient.
"""
import torch
import torch.nn.functional as F

from . import _resample_kernel

_STRIDE = (2, 2)
_DILATION = (1, 1)
_OUTPUT_PADDING = (0, 0)


def _kernel(weight, transposed):
    """The conv's weight: K_t for the up conv's conv_transpose2d, K / 4 for the down conv (as the reference)."""
    if transposed:
        return _resample_kernel.transposed_resample_kernel(weight)
    return _resample_kernel.resample_kernel(weight) * 0.25


def _engine_will_use(ctx, index):
    """Whether the gradient of input `index` will be used by the running backward: ctx.needs_input_grad says only
    whether the input required grad at forward; autograd.grad(..., inputs) may not need it (the penalty's first
    backward, with respect to D's input, needs no weight gradient). Built-in nodes get this from the engine as
    their output mask; a custom Function asks it about the node its gradient goes to."""
    if not ctx.needs_input_grad[index]:
        return False
    if torch.compiler.is_compiling():  # traced ahead of any backward call: the partitioner drops what's unused
        return True
    will_execute = getattr(torch._C, "_will_engine_execute_node", None)
    node = ctx.next_functions[index][0]
    if will_execute is None or node is None:
        return True
    try:
        return will_execute(node)
    except RuntimeError:
        # a leaf that autograd.grad was asked for (the engine refuses to answer for those): it is used
        return True


class _ResampleConv(torch.autograd.Function):
    @staticmethod
    def forward(x, weight, transposed, pad):
        kernel = _kernel(weight, transposed)  # not recorded: forward runs without grad
        if transposed:
            return F.conv_transpose2d(x, kernel, stride=2, padding=pad)
        return F.conv2d(x, kernel, stride=2, padding=pad)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, transposed, pad = inputs
        ctx.save_for_backward(x, weight)
        ctx.transposed, ctx.pad = transposed, pad

    @staticmethod
    def backward(ctx, grad_y):
        need_x, need_weight = _engine_will_use(ctx, 0), _engine_will_use(ctx, 1)
        if not (need_x or need_weight):
            return None, None, None, None
        x, weight = ctx.saved_tensors
        transposed, pad = ctx.transposed, ctx.pad
        # Recorded (with the kernel's own cheap autograd) when create_graph is on, like everything below.
        kernel = _kernel(weight, transposed)
        grad_x, grad_kernel, _ = torch.ops.aten.convolution_backward(
            grad_y, x, kernel, None, _STRIDE, (pad, pad), _DILATION, transposed, _OUTPUT_PADDING, 1,
            [need_x, need_weight, False])
        grad_weight = None
        if need_weight:
            if not transposed:
                grad_kernel = grad_kernel * 0.25
            grad_weight = _resample_kernel._ResampleKernelAdjoint.apply(grad_kernel, transposed)
        return grad_x, grad_weight, None, None


def conv2d_resample(x, weight, transposed):
    """reference.conv2d_resample(x, weight, up=transposed, down=not transposed) (the same convs on the same values),
    saving x and weight for backward, not the (k+1) x (k+1) kernel."""
    return _ResampleConv.apply(x, weight, transposed, (weight.shape[-1] - 1) // 2)
