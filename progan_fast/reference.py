"""The specification: every progan_fast op in plain PyTorch.

Forward only; autograd provides the backward. These functions are the ground truth of every test and benchmark
and are what the `reference` backend runs. Half-precision inputs are computed in float32 and cast back, as the
kernels do.
"""
import math

import torch


def _opmath(x):
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def pixel_norm(x, dim=1, eps=1e-8):
    """Pixelwise feature normalisation (Karras et al. 2017, sec. 4.2; TF official `pixel_norm`).

    y = x * rsqrt(mean over `dim` of x^2 + eps). `dim=1` normalises each pixel's feature vector of an NCHW
    activation, or each row of a 2-D latent batch. TF official and pro-gan-pth use eps = 1e-8 (the TF fp16 preset
    1e-4); pytorch_GAN_zoo uses the same formula.
    """
    xf = _opmath(x)
    return (xf * torch.rsqrt(xf.square().mean(dim, keepdim=True) + eps)).to(x.dtype)


# ---- equalized-lr epilogue and convolutions -------------------------------------------------------------------

ACTIVATIONS = ("lrelu", "relu", "linear")


def scaled_bias_act(x, bias=None, scale=1.0, activation="lrelu", negative_slope=0.2, pixel_norm=False, eps=1e-8):
    """The equalized-learning-rate epilogue of a conv or dense layer (TF official `networks.py`).

    y = act(x * scale + bias[c]) with c the channel (dim 1), act one of
      lrelu:  max(v, negative_slope * v)   (TF official `leaky_relu`, slope 0.2; same as torch leaky_relu for
              0 <= slope <= 1)
      relu:   max(v, 0)
      linear: v
    then, with `pixel_norm`, y <- y * rsqrt(mean over dim 1 of y^2 + eps) (the `PN` that follows every G conv).
    `scale` is the runtime weight scale gain * lr_mul / sqrt(fan_in) applied to the layer OUTPUT (TF official
    and pro-gan-pth multiply the weight instead, pytorch_GAN_zoo the output; the results are equal, the weight
    copy is avoided). `bias` is added unscaled, as in TF official and pro-gan-pth (pytorch_GAN_zoo scales it too).
    Half inputs are computed in float32 and cast back.
    """
    xf = _opmath(x)
    y = xf * scale
    if bias is not None:
        y = y + _opmath(bias).reshape((1, -1) + (1,) * (x.dim() - 2))
    if activation == "lrelu":
        y = torch.nn.functional.leaky_relu(y, negative_slope)
    elif activation == "relu":
        y = torch.relu(y)
    if pixel_norm:
        y = y * torch.rsqrt(y.square().mean(1, keepdim=True) + eps)
    return y.to(x.dtype)


def equalized_scale(fan_in, gain, lr_mul):
    """c = gain * lr_mul / sqrt(fan_in): TF official `get_weight` with use_wscale=True (lr_mul from StyleGAN)."""
    return gain * lr_mul / math.sqrt(fan_in)


def resample_kernel(weight):
    """The 4x4 (generally (k+1)x(k+1)) kernel K = sum of the 4 one-pixel shifts of the zero-padded k x k `weight`.

    TF official `upscale2d_conv2d` / `conv2d_downscale2d`: K = P[1:,1:] + P[:-1,1:] + P[1:,:-1] + P[:-1,:-1], with
    P the weight zero-padded by one on each spatial side.
    """
    p = torch.nn.functional.pad(weight, (1, 1, 1, 1))
    return p[:, :, 1:, 1:] + p[:, :, :-1, 1:] + p[:, :, 1:, :-1] + p[:, :, :-1, :-1]


def conv2d_resample(x, weight, up=False, down=False):
    """'same' conv of x with the (unscaled) odd k x k `weight`, optionally fused with a 2x resampling.

    up:   nearest-up x2 then the conv  = conv_transpose2d(x, K.flip(-1,-2).transpose(0,1), stride 2, pad (k-1)/2)
    down: the conv then 2x2 avg-pool   = conv2d(x, K / 4, stride 2, pad (k-1)/2)
    with K = resample_kernel(weight) (TF official fused_scale=True; equal to the unfused pair up to rounding,
    including odd sizes, where the pool drops the last row/column as avg_pool2d does).
    """
    pad = (weight.shape[-1] - 1) // 2
    if up:
        k = resample_kernel(weight)
        return torch.nn.functional.conv_transpose2d(x, k.flip(-1, -2).transpose(0, 1), stride=2, padding=pad)
    if down:
        return torch.nn.functional.conv2d(x, resample_kernel(weight) * 0.25, stride=2, padding=pad)
    return torch.nn.functional.conv2d(x, weight, padding=pad)


def eq_conv2d(x, weight, bias=None, *, gain=math.sqrt(2), lr_mul=1.0, activation="lrelu", negative_slope=0.2,
              pixel_norm=False, up=False, down=False):
    """Equalized-lr conv layer (TF official `conv2d` / `upscale2d_conv2d` / `conv2d_downscale2d` + bias + act).

    y = scaled_bias_act(conv2d_resample(x, weight, up, down), bias * lr_mul, gain * lr_mul / sqrt(Cin*k*k), ...)
    with `weight` [Cout, Cin, k, k] stored unscaled (init N(0, 1) / lr_mul) and fan_in = Cin*k*k also for the
    fused up/down convs (TF official passes the 3x3 fan_in explicitly; pro-gan-pth uses Cin for its transposed
    conv, pytorch_GAN_zoo has no fused convs).
    """
    cin, k = weight.shape[1], weight.shape[-1]
    y = conv2d_resample(x, weight, up, down)
    return scaled_bias_act(y, None if bias is None else bias * lr_mul, equalized_scale(cin * k * k, gain, lr_mul),
                           activation, negative_slope, pixel_norm)


def eq_linear(x, weight, bias=None, *, gain=math.sqrt(2), lr_mul=1.0, activation="lrelu", negative_slope=0.2,
              pixel_norm=False):
    """Equalized-lr dense layer (TF official `dense` + bias + act): weight [out, in] unscaled, fan_in = in.

    y = scaled_bias_act(x @ weight^T, bias * lr_mul, gain * lr_mul / sqrt(in), ...).
    """
    y = torch.nn.functional.linear(x, weight)
    return scaled_bias_act(y, None if bias is None else bias * lr_mul, equalized_scale(weight.shape[1], gain, lr_mul),
                           activation, negative_slope, pixel_norm)


# ---- fade-in blends --------------------------------------------------------------------------------------------

def _lerp(a, b, alpha):
    """a + (b - a) * alpha, TF official `lerp` (torch.lerp: exact at alpha = 0 and alpha = 1)."""
    if isinstance(alpha, torch.Tensor):
        alpha = alpha.to(device=a.device, dtype=a.dtype)
    return torch.lerp(a, b, alpha)


def nearest_up(x, factor=2):
    """TF official `upscale2d(x, factor)`: every pixel replicated factor x factor."""
    return torch.nn.functional.interpolate(x, size=(x.shape[2] * factor, x.shape[3] * factor), mode="nearest")


def avg_pool2(x):
    """TF official `downscale2d(x, 2)`: 2x2 box filter, stride 2 (an odd last row/column is dropped)."""
    return torch.nn.functional.avg_pool2d(x, 2)


def upsample_blend(low, high, alpha, factor=2):
    """G's fade-in output: lerp(nearest_up(low, factor), high, alpha), alpha = weight of the NEW (high-res) path.

    low: N x C x H x W (the old path's RGB), high: N x C x factor*H x factor*W (the new path's), factor a power of
    two (2 blends at the current resolution; larger factors emit the blend at a higher resolution, as TF official
    does at low lod). TF official `G_paper` computes lerp_clip(toRGB_r(x_r), up2(out_{r-1}), t) with
    t = lod - floor(lod) the OLD path's weight, i.e. alpha = 1 - t; pro-gan-pth and mmgeneration use alpha =
    new-path weight as here (pytorch_GAN_zoo's alpha is the old-path weight). Half inputs are blended in float32
    and cast back.
    """
    return _lerp(nearest_up(_opmath(low), factor), _opmath(high), alpha).to(high.dtype)


def fade_from_rgb(images, new, weight, bias, alpha, gain=math.sqrt(2), lr_mul=1.0, negative_slope=0.2):
    """D's fade-in at its input: lerp(fromRGB_old(avg_pool2(images)), new, alpha), alpha = new-path weight.

    images: N x C_img x 2H x 2W, the images D sees at the new resolution; new: N x C x H x W, the new path's
    features after its first block (block_r(fromRGB_r(images)); that block's fused conv ends in the 2x2 pool);
    fromRGB_old is the previous resolution's equalized-lr 1x1 conv with a leaky ReLU, weight [C, C_img, 1, 1]
    stored unscaled and bias [C]:
      old[n, c] = lrelu(gain * lr_mul / sqrt(C_img) * sum_k weight[c, k] * avg_pool2(images)[n, k] + lr_mul * bias[c])
    with lrelu(v) = v if v > 0 else negative_slope * v (eq_conv2d with a 1x1 kernel and activation "lrelu").
    This is TF official `D_paper`'s lerp_clip(x_r, fromRGB_{r-1}(downscale2d(img)), t) with t = 1 - alpha the old
    path's weight, blended in feature space after the new block's downsample; pro-gan-pth's D uses alpha as here.
    Half inputs are computed in float32 throughout and cast back once.
    """
    old = eq_conv2d(avg_pool2(_opmath(images)), _opmath(weight), _opmath(bias), gain=gain, lr_mul=lr_mul,
                    activation="lrelu", negative_slope=negative_slope)
    return _lerp(old, _opmath(new), alpha).to(new.dtype)


def downsample_blend(high, low, alpha):
    """A fade-in where the new path ends in a 2x2 pool: lerp(low, avg_pool2(high), alpha), alpha = new-path weight.

    `high` is the new path before its 2x2 avg-pool (TF official `downscale2d`; pro-gan-pth's and pytorch_GAN_zoo's
    discriminators pool their top block's output before blending), `low` the old path at the lower resolution.
    Same alpha convention as upsample_blend. Half inputs are blended in float32 and cast back.
    """
    return _lerp(_opmath(low), avg_pool2(_opmath(high)), alpha).to(low.dtype)


def fade_reals(x, alpha):
    """Reals seen by D during a fade: lerp(nearest_up(avg_pool2(x)), x, alpha) at the current resolution.

    TF official `process_reals` FadeLOD: x <- lerp(x, up2(down2(x)), lod - floor(lod)), i.e. alpha = 1 - frac(lod)
    here (new-path weight), computed at the current resolution instead of after upscaling to full resolution
    (the same values: box-down of a nearest-up by the same factor is the identity).
    """
    xf = _opmath(x)
    return _lerp(nearest_up(avg_pool2(xf)), xf, alpha).to(x.dtype)


# ---- minibatch standard deviation ------------------------------------------------------------------------------

def minibatch_stddev(x, group_size=4, grouping="strided", unbiased=False, eps=1e-8, num_new_features=1):
    """Append F = `num_new_features` maps: for each group of samples and each group of channels, the mean over those
    channels, H and W of the per-position stddev across the group's samples (Karras et al. 2017, sec. 3).

    The C channels split into F contiguous channel groups of C/F (channel c is in group c // (C/F)); F must divide C.
    For a sample group m and a channel group f:
        s[m, f] = mean_{c in f, h, w} sqrt(var_{n in m}(x[n, c, h, w]) + eps)
    and the output is concat(x, t) of shape N x (C+F) x H x W, where t[n, f, h, w] = s[m(n), f] (the statistic of
    sample n's group, repeated over H x W). Statistics in float32 for half inputs (TF official casts to float32),
    cast back to x's dtype. var divides by G (biased) unless `unbiased` (divides by G - 1).

    Sample groups, from G = min(group_size, N):
    grouping="strided" (TF official `minibatch_stddev_layer`, pro-gan-pth, mmgeneration, NVlabs): M = N / G groups,
      group m = {m, m+M, m+2M, ...} (sample n is in group n mod M); N > group_size with N mod group_size != 0 has
      no defined grouping (the public op raises). G = 1 gives s = sqrt(eps). Use unbiased=False to match them.
    grouping="contiguous" (pytorch_GAN_zoo `miniBatchStdDev`): G = N when N mod G != 0 (one group of the whole
      batch), group m = {mG, ..., mG+G-1}; G == 1 gives zero maps (biased or not). Use unbiased=True to match it.
    group_size >= N makes the whole batch one group (the paper's original Theano code).
    num_new_features: NVlabs' `networks_progan.py` (stylegan repository) form; F = 1 is every other
      implementation's single map.
    """
    n, c, h, w = x.shape
    nf = num_new_features
    # torch.cat keeps channels_last only when every input has it, so the small extra maps are laid out like x
    # (materialised from an expand: a fresh N x F x H x W tensor with F == 1 already counts as channels_last and
    # keeps NCHW strides, which cat then reads as contiguous).
    fmt = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
    g = min(group_size, n)
    if grouping == "contiguous":
        if n % g != 0:
            g = n
        if g == 1:
            return torch.cat([x, x.new_zeros(n, nf, 1, 1).expand(n, nf, h, w).contiguous(memory_format=fmt)], 1)
    m = n // g
    xf = _opmath(x)
    if grouping == "strided":
        groups = xf.reshape(g, m, nf, c // nf, h, w)
        var = groups.var(0, correction=1 if unbiased else 0)
    else:
        groups = xf.reshape(m, g, nf, c // nf, h, w)
        var = groups.var(1, correction=1 if unbiased else 0)
    s = torch.sqrt(var + eps).mean((2, 3, 4))  # [M, F]
    per_sample = s.repeat(g, 1) if grouping == "strided" else s.repeat_interleave(g, 0)  # [N, F]
    feature = per_sample.to(x.dtype).reshape(n, nf, 1, 1).expand(n, nf, h, w).contiguous(memory_format=fmt)
    return torch.cat([x, feature], 1)


def _is_channels_last(x):
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
