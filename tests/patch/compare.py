"""Float64 comparison of a patched and an unpatched run: forward outputs, parameter gradients, the WGAN-GP double
backward. The patch changes the order of floating-point operations only (scale on outputs instead of weights,
fused up-convs), so the two runs agree to float64 rounding."""
import torch

RTOL, ATOL = 1e-10, 1e-12


def assert_close(actual, expected, what):
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL, msg=lambda m: f"{what}: {m}")


def param_grads(module):
    """name -> gradient (None stays None: a parameter the step did not reach must stay unreached)."""
    return {name: (None if p.grad is None else p.grad.detach().clone()) for name, p in module.named_parameters()}


def assert_same_grads(actual, expected, what):
    assert actual.keys() == expected.keys()
    for name in expected:
        if expected[name] is None:
            assert actual[name] is None, f"{what}: {name} got a gradient the library does not give it"
        else:
            assert actual[name] is not None, f"{what}: {name} got no gradient"
            assert_close(actual[name], expected[name], f"{what}: grad of {name}")
