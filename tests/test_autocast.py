"""Mixed precision: under torch.autocast the ops and the models run in the autocast dtype while the parameters
(and so the optimizer's master weights) stay float32."""
import pytest
import torch

from progan_fast import ops
from progan_fast.models import Discriminator, Generator


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_ops_follow_the_autocast_dtype(dtype):
    x = torch.randn(4, 8, 4, 4)
    w = torch.randn(6, 8, 3, 3)
    b = torch.randn(6)
    with torch.autocast("cpu", dtype=dtype):
        outputs = [
            ops.pixel_norm(x),
            ops.scaled_bias_act(x, torch.randn(8), 0.5, pixel_norm=True),
            ops.eq_conv2d(x, w, b),
            ops.eq_conv2d(x, w, b, up=True),
            ops.eq_conv2d(x, w, b, down=True),
            ops.eq_linear(x.flatten(1), torch.randn(5, 128), torch.randn(5)),
            ops.upsample_blend(x, torch.randn(4, 8, 8, 8).to(dtype), 0.3),
            ops.fade_from_rgb(torch.randn(4, 3, 8, 8), x.to(dtype), torch.randn(8, 3, 1, 1), torch.randn(8), 0.3),
            ops.fade_reals(x, 0.3),
            ops.minibatch_stddev(x),
        ]
    for out in outputs:
        assert out.dtype == dtype
    # the same values as float32 math on the autocast-rounded inputs, to the dtype's precision
    expected = ops.eq_conv2d(x.to(dtype).float(), w.to(dtype).float(), b.to(dtype).float())
    torch.testing.assert_close(outputs[2].float(), expected, rtol=2e-2, atol=2e-2)


def test_models_train_under_bf16_autocast_with_float32_parameters():
    G = Generator(resolution=16, latent_size=32, fmap_base=64, fmap_max=32)
    D = Discriminator(resolution=16, fmap_base=64, fmap_max=32)
    z = torch.randn(4, 32)
    reals = torch.randn(4, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fakes = G(z, 4, 0.5)
        assert fakes.dtype == torch.bfloat16
        u = torch.rand(4, 1, 1, 1)
        mixed = (reals + (fakes.float() - reals) * u).detach().requires_grad_()
        scores = D(mixed, 4, 0.5)
        (grad,) = torch.autograd.grad(scores.float().sum(), mixed, create_graph=True)
        loss = D(fakes, 4, 0.5).float().mean() + 10 * (grad.float().flatten(1).norm(dim=1) - 1).square().mean()
    loss.backward()
    for module in (G, D):
        for name, p in module.named_parameters():
            assert p.dtype == torch.float32, name
    for module in (G, D):
        # the networks run at 16x16 fading from 8x8: only the 4x4 toRGB / fromRGB sit unused
        grads = [p.grad for name, p in module.named_parameters() if not name.startswith(("to_rgb.2.", "from_rgb.2."))]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(bool(g.abs().sum() > 0) for g in grads) > len(grads) // 2
