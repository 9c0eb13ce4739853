"""Drop-in backend for other ProGAN trainers: `progan_fast.patch()` / `progan_fast.unpatch()`.

    import progan_fast
    progan_fast.patch()                 # before building the models: every supported library's classes
    G, D = Generator(...), Discriminator(...)
    ...
    progan_fast.patch(model)            # or: these modules (already built) only
    progan_fast.unpatch(model); progan_fast.unpatch()

Supported: pro-gan-pth 3.4 (pro_gan_pth.py) and pytorch_GAN_zoo's PGAN (gan_zoo.py). Each replaced layer and
block calls progan_fast's public ops (progan_fast.ops), so a kernel that lands in an op speeds the patched trainer
up without a change here. Parameters, buffers and module names are untouched (state_dicts load both ways);
numerics are the library's up to floating-point rounding (equalized-lr scales are applied to layer outputs, fused
up-convs sum in another order).

This package's functions are reached as `progan_fast.patch(...)` (the function shadows the package name on
`progan_fast`); import the library modules with `from progan_fast.patch import pro_gan_pth`.
"""
import warnings

from . import _common
from ._common import Options, PatchReport, UnsupportedLibraryVersion

__all__ = ["Options", "PatchReport", "UnsupportedLibraryVersion", "patch", "unpatch"]


def _importable_libraries(report):
    """Every supported library importable now, for class-level patching; an unsupported version is warned about
    and left alone (the caller did not name it)."""
    from . import gan_zoo, pro_gan_pth
    libraries = []
    if pro_gan_pth.installed():
        try:
            libraries.append(pro_gan_pth.load(report))
        except UnsupportedLibraryVersion as error:
            warnings.warn(f"progan_fast.patch: {error}; it is left unpatched", stacklevel=3)
            report.note(pro_gan_pth.NAME, "all", str(error))
    for package in gan_zoo.imported_packages():
        try:
            libraries.append(gan_zoo.load(package))
        except UnsupportedLibraryVersion as error:
            warnings.warn(f"progan_fast.patch: {error}; it is left unpatched", stacklevel=3)
            report.note(gan_zoo.NAME, package, str(error))
    return libraries


def _libraries_of(target, report):
    """The supported libraries whose classes occur in `target`; an unsupported version raises, naming it."""
    from . import gan_zoo, pro_gan_pth
    libraries, zoo_packages, pro_gan = [], set(), False
    for obj in _common.walk(target):
        for cls in _common.original_class(obj).__mro__:
            if cls.__module__.split(".")[0] == pro_gan_pth.PACKAGE:
                pro_gan = True
            package = gan_zoo.package_of(cls)
            if package is not None:
                zoo_packages.add(package)
    if pro_gan:
        libraries.append(pro_gan_pth.load(report))
    libraries.extend(gan_zoo.load(package) for package in sorted(zoo_packages))
    return libraries


def patch(target=None, *, pixel_norm=True, eq_conv=True, mbstd=True, fade=True, resample=True):
    """Run a supported ProGAN library on progan_fast's ops; returns a PatchReport (print it).

    target=None: patch the classes of every supported library importable now (pro-gan-pth when installed;
    pytorch_GAN_zoo when its networks modules are imported), so every instance uses the ops, including those
    built later. target=a model (or a pro-gan-pth `ProGAN` trainer, with the networks it holds): patch those
    instances in place only (each gets a subclass of its class; other models are unaffected).

    Switches (all on by default): pixel_norm (pixel norm layers), eq_conv (equalized conv / dense layers, and the
    blocks' conv + bias + lrelu (+ pixel norm) epilogues), mbstd (minibatch stddev), fade (fade-in blends and the
    reals' fade), resample (nearest-up + conv -> fused stride-2 transposed conv; needs eq_conv). pro-gan-pth's
    EqualizedConvTranspose2d is always replaced: its 3.4 forward raises a TypeError on current torch.

    Calling again is harmless: what is already patched with the same switches is left as is; other switches
    replace the earlier ones. An unsupported library version raises UnsupportedLibraryVersion for a target and is
    skipped with a warning for target=None.
    """
    options = Options(pixel_norm=pixel_norm, eq_conv=eq_conv, mbstd=mbstd, fade=fade, resample=resample)
    report = PatchReport("patch")
    if target is None:
        for library in _importable_libraries(report):
            _common.apply_class_level(library, options, report)
        return report
    libraries = _libraries_of(target, report)
    if not libraries:
        report.note("-", type(target).__name__, "no class of a supported library found in the target")
        return report
    _common.apply_instance_level(target, libraries, options, report)
    return report


def unpatch(target=None):
    """Undo patch(): target=None restores every class patched at class level; a target restores the instances
    patched in place (their original classes come back). Returns a PatchReport of what was restored."""
    report = PatchReport("unpatch")
    if target is None:
        _common.restore_class_level(report)
        return report
    _common.restore_instance_level(target, report, _library_name)
    if any(_common.class_level_patched(lib_cls) for lib_cls in _classes_in(target)):
        warnings.warn("progan_fast.unpatch(target): classes of this model are patched at class level "
                      "(progan_fast.patch() without a target); call progan_fast.unpatch() to restore them",
                      stacklevel=2)
    return report


def _library_name(cls):
    from . import gan_zoo, pro_gan_pth
    for base in cls.__mro__:
        if base.__module__.split(".")[0] == pro_gan_pth.PACKAGE:
            return pro_gan_pth.NAME
        if gan_zoo.package_of(base) is not None:
            return gan_zoo.NAME
    return "?"


def _classes_in(target):
    return {cls for obj in _common.walk(target) for cls in type(obj).__mro__}
