"""Shared checks for every op test: a backend's op against progan_fast.reference, forward, gradients and the
double backward of a WGAN-GP style gradient penalty, with per-dtype tolerances."""
import torch

from progan_fast import use_backend

# (rtol, atol) for the forward and for gradients. fp16/bf16 store results in half precision after fp32 math, so
# they are compared with the float32 reference cast to the same dtype: one or two units in the last place.
TOLERANCES = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}
GRAD_TOLERANCES = {
    torch.float64: (1e-9, 1e-11),
    torch.float32: (1e-4, 1e-5),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (5e-2, 5e-2),
}


def layout(x, memory_format):
    return x.contiguous(memory_format=memory_format) if x.dim() == 4 else x


def assert_close(actual, expected, dtype, grad=False):
    rtol, atol = (GRAD_TOLERANCES if grad else TOLERANCES)[dtype]
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=rtol, atol=atol)


def _penalty_grads(fn, inputs, weights):
    """Gradient of sum((d<fn(inputs), weights>/d inputs[0])^2) w.r.t. every input: WGAN-GP's double backward."""
    out = fn(*inputs)
    (grad,) = torch.autograd.grad((out.to(weights.dtype) * weights).sum(), inputs[0], create_graph=True)
    penalty = grad.to(weights.dtype).square().sum()
    return torch.autograd.grad(penalty, inputs)


def check_parity(backend, fn, reference_fn, inputs, dtype, check_double_backward=True):
    """fn (under `backend`) and reference_fn agree on outputs, input gradients and the double backward.

    The reference runs in float64 on the same values, so the comparison measures the kernel's error only."""
    inputs = [t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
    ref_inputs = [t.detach().double().requires_grad_(t.is_floating_point()) for t in inputs]
    with use_backend(backend):
        out = fn(*inputs)
    ref_out = reference_fn(*ref_inputs)
    assert out.shape == ref_out.shape
    assert out.dtype == dtype
    assert_close(out, ref_out, dtype)
    if inputs[0].dim() == 4:
        expected_cl = inputs[0].is_contiguous(memory_format=torch.channels_last) and not inputs[0].is_contiguous()
        assert out.is_contiguous(memory_format=torch.channels_last if expected_cl else torch.contiguous_format)

    weights = torch.randn(out.shape, dtype=torch.float64)
    work_weights = weights.to(torch.float64 if dtype == torch.float64 else torch.float32)
    with use_backend(backend):
        grads = torch.autograd.grad((out.to(work_weights.dtype) * work_weights).sum(), inputs)
    ref_grads = torch.autograd.grad((ref_out * weights).sum(), ref_inputs)
    for g, rg in zip(grads, ref_grads):
        assert_close(g, rg, dtype, grad=True)

    if check_double_backward:
        with use_backend(backend):
            grads2 = _penalty_grads(fn, inputs, work_weights)
        ref_grads2 = _penalty_grads(reference_fn, ref_inputs, weights)
        for g, rg in zip(grads2, ref_grads2):
            # second-order terms amplify rounding: compare against the gradient's own scale
            scale = rg.abs().max().clamp_min(1.0)
            assert_close(g / scale.to(g.dtype), rg / scale, dtype, grad=True)
