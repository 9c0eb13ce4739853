"""minibatch_stddev: append the group's mean feature stddev as one extra channel (D's 4x4 block).

No fused kernel yet: every backend runs progan_fast.reference.minibatch_stddev.
"""
from .. import backends, reference
from . import _checks

OP = "minibatch_stddev"
backends.register_op(OP, ())
GROUPINGS = ("strided", "contiguous")


def minibatch_stddev(x, group_size=4, grouping="strided", unbiased=False, eps=1e-8):
    """N x C x H x W -> N x (C+1) x H x W. grouping="strided": TF official / pro-gan-pth (use unbiased=False);
    grouping="contiguous": pytorch_GAN_zoo (use unbiased=True). See progan_fast.reference.minibatch_stddev."""
    _checks.tensor("x", x, ndims=(4,))
    (x,) = _checks.autocast(x.device.type, x)
    group_size = _checks.positive_int("group_size", group_size)
    grouping = _checks.choice("grouping", grouping, GROUPINGS)
    unbiased = _checks.flag("unbiased", unbiased)
    eps = _checks.finite_float("eps", eps, minimum=0.0)
    n = x.shape[0]
    if grouping == "strided":
        if n > group_size and n % group_size:
            raise ValueError(f"group_size={group_size} does not divide the batch of {n} samples; with "
                             f"grouping='strided' (TF official) the batch must be a multiple of group_size or "
                             f"at most group_size")
        if unbiased and min(group_size, n) == 1:
            raise ValueError(f"unbiased=True needs groups of at least 2 samples; group_size={group_size} and a "
                             f"batch of {n} give groups of 1")
    backends.resolve(OP, x.device)
    return reference.minibatch_stddev(x, group_size, grouping, unbiased, eps)
