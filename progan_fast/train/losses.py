"""WGAN-GP losses as the official TF implementation defines them (`loss.py`: G_wgan_acgan, D_wgangp_acgan).

G:  L_G = mean(-D(G(z)))
D:  L_D = mean(D(G(z))) - mean(D(x)) + lambda / target^2 * mean((|grad_xhat D(xhat)|_2 - target)^2)
          + epsilon * mean(D(x)^2)
    xhat = x + (G(z) - x) * u, u ~ U(0, 1) per sample ([N, 1, 1, 1]); the gradient norm is over C, H, W.
Defaults lambda = 10, target = 1, epsilon (drift) = 0.001. The caller draws z and u from its own generator, so a
saved generator state replays them exactly.

Lazy regularization (StyleGAN2, Karras et al. 2020, section 3.1; `--gp-interval K`): the penalty term is computed on
every K-th D step only, with lambda multiplied by K, so that its average over K steps keeps its weight; on the other
steps D runs on the reals and fakes only (no D on the mix, no double backward). The drift term stays on every step.
K = 1 is the paper's loss, computed exactly as before.
"""
import torch

WGAN_LAMBDA = 10.0
WGAN_TARGET = 1.0
WGAN_EPSILON = 0.001


def _opmath(x):
    """Half-precision scores and gradients are reduced in float32 (as TF does under fp16)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def generator_loss(D, fakes, res_log2, alpha):
    """mean(-D(fakes)); returns (loss, scores)."""
    scores = D(fakes, res_log2, alpha)
    return -_opmath(scores).mean(), scores


def discriminator_loss(D, reals, fakes, mix, res_log2, alpha, *, wgan_lambda=WGAN_LAMBDA, wgan_target=WGAN_TARGET,
                       wgan_epsilon=WGAN_EPSILON, grad_scale=None, gradient_penalty=True, gp_weight=1.0):
    """The WGAN-GP D loss; returns (loss, parts) where parts holds the detached terms for logging.

    fakes must already be detached from G. mix is u, shaped [N, 1, 1, 1]. gradient_penalty=False leaves the penalty
    out (lazy regularization's unregularized steps: D does not run on the mix at all, mix is not read, and parts has
    no D_gp, grad_norm or gp_grad_finite); gp_weight multiplies the penalty in the loss (K on the regularized steps of
    --gp-interval K), while parts["D_gp"] stays the unweighted lambda / target^2 * mean((|grad| - target)^2), which
    is comparable across K. grad_scale: with fp16 loss scaling, the
    penalty's inner gradient is taken of the scaled scores (so it cannot underflow) and unscaled before the norm
    (the torch.amp gradient-penalty recipe); parts["gp_grad_finite"] then tells an overflow of that gradient apart
    from a diverged loss.
    """
    if gradient_penalty and mix.shape != (reals.shape[0], 1, 1, 1):
        raise ValueError(f"mix must have shape [N, 1, 1, 1] = {[reals.shape[0], 1, 1, 1]}; got {list(mix.shape)}")
    real_scores = _opmath(D(reals, res_log2, alpha))
    fake_scores = _opmath(D(fakes, res_log2, alpha))
    parts = {"D_real": real_scores.detach().mean(), "D_fake": fake_scores.detach().mean()}
    if gradient_penalty:
        # The penalty's graph is built before the other terms' (the order of the backward pass's gradient sums into
        # the parameters follows it), as it always was: K = 1 stays bit for bit the earlier loss.
        mixed = torch.lerp(reals, fakes.to(reals.dtype), mix.to(reals.dtype)).detach().requires_grad_(True)
        mixed_scores = _opmath(D(mixed, res_log2, alpha))
        outer = mixed_scores.sum() if grad_scale is None else mixed_scores.sum() * grad_scale
        (grad,) = torch.autograd.grad(outer, mixed, create_graph=True)
        grad = _opmath(grad)
        if grad_scale is not None:
            grad = grad / grad_scale
        norms = torch.linalg.vector_norm(grad.flatten(1), dim=1)
        penalty = (norms - wgan_target).square()
    drift = real_scores.square()
    wasserstein = fake_scores.mean() - real_scores.mean()
    if gradient_penalty:
        gp = penalty.mean() * (wgan_lambda / wgan_target ** 2)
        parts.update(D_gp=gp.detach(), grad_norm=norms.detach().mean())
        if grad_scale is not None:
            parts["gp_grad_finite"] = torch.isfinite(grad.detach()).all()
    drift_term = drift.mean() * wgan_epsilon
    parts["D_drift"] = drift_term.detach()
    loss = wasserstein + (gp if gp_weight == 1.0 else gp * gp_weight) if gradient_penalty else wasserstein
    return loss + drift_term, parts
