"""The machinery shared by every supported library: options, class-level and instance-level patching, the report.

A library module (pro_gan_pth.py, gan_zoo.py) describes what it replaces as a list of `Replacement`s: an attribute
(`forward`, or a trainer method) of one of the library's classes, the options that enable it, and a factory that
builds the replacement from the options and the library's own function (the fallback for every input the fast
path does not cover, so behaviour outside it stays the library's, errors included).

Class level (no target): the attribute is set on the library's class, so every instance, built before or after,
runs the replacement; the original attribute object is recorded and put back by `restore_class_level`.
Instance level (a model): each matching object's `__class__` is swapped for a subclass that carries the
replacements (and swapped back on unpatch). A subclass rather than a bound method in the instance's __dict__
(Liger-Kernel's way): `nn.DataParallel` replicas copy __dict__ and would keep calling the original module's bound
method with the original module's parameters, while a replica's class is the subclass; `copy.deepcopy` (an EMA
generator) keeps it too. A pickle (torch.save of a whole model) records the library's class instead, so it loads
without progan_fast, unpatched. Parameters, buffers and submodules are never touched, so state_dict keys are
unchanged.
"""
import copy
import copyreg
import dataclasses
import numbers

from torch import nn
from torch.nn.modules import module as _torch_module

# Set on every replacement function: (owner class, attribute name) it replaces.
REPLACES = "__progan_fast_replaces__"
# Set on every instance-level subclass: the library class it was derived from.
ORIGINAL_CLASS = "__progan_fast_original_class__"


class UnsupportedLibraryVersion(RuntimeError):
    """A library that progan_fast.patch knows, at a version (or layout) it does not support."""


@dataclasses.dataclass(frozen=True)
class Options:
    pixel_norm: bool = True
    eq_conv: bool = True
    mbstd: bool = True
    fade: bool = True
    resample: bool = True

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, bool):
                raise TypeError(f"{field.name} must be a bool; got {type(value).__name__}")
        if self.resample and not self.eq_conv:
            raise ValueError("resample=True fuses the resampling into the equalized convolutions, so it needs "
                             "eq_conv=True; pass resample=False too")


@dataclasses.dataclass(frozen=True)
class Replacement:
    owner: type          # the library class whose __dict__ holds the attribute
    name: str            # attribute name
    enabled_by: tuple    # Options fields, any of which enables it; () = always (a compatibility fix)
    make: object         # make(options, original_function) -> replacement function
    what: str            # one line for the report
    static: bool = False  # the attribute is a staticmethod

    def enabled(self, options):
        return not self.enabled_by or any(getattr(options, flag) for flag in self.enabled_by)

    def build(self, options, original):
        fn = self.make(options, original)
        setattr(fn, REPLACES, (self.owner, self.name))
        fn.__name__ = self.name
        fn.__qualname__ = f"{self.owner.__name__}.{self.name}"
        fn.__doc__ = f"progan_fast replacement of {self.owner.__module__}.{self.owner.__qualname__}.{self.name}: " \
                     f"{self.what}"
        return staticmethod(fn) if self.static else fn


@dataclasses.dataclass(frozen=True)
class Library:
    name: str                # as users know it ("pro-gan-pth", "pytorch_GAN_zoo")
    version: str             # installed version, or where its modules were found
    modules: tuple           # the library's python modules (their names identify its classes)
    replacements: tuple      # of Replacement

    def owns(self, cls):
        return any(cls.__module__ == m.__name__ for m in self.modules)


# ---- hooks, resolution, fallbacks -----------------------------------------------------------------------------

def has_hooks(*modules):
    """A fused forward computes several modules at once without calling them, so any hook on them (or a global
    one, torch.nn.modules.module.register_module_forward_hook & co.) sends the call to the library's own forward
    instead."""
    if _torch_module._global_forward_hooks or _torch_module._global_forward_pre_hooks or \
            _torch_module._global_backward_hooks or _torch_module._global_backward_pre_hooks:
        return True
    for m in modules:
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
            return True
    return False


def _unwrap(attr):
    return attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr


def library_function(owner, name):
    """The library's own function for owner.name, also while the class is patched."""
    record = _class_level.get((owner, name))
    return _unwrap(record.original if record is not None else owner.__dict__[name])


def runs_library_code(obj, owner, name="forward"):
    """obj is an `owner` whose `name` is the library's own (or progan_fast's replacement of it) and that has no
    hooks: what the library's block would compute by calling it, a fused block can compute without calling it."""
    if not isinstance(obj, owner) or (isinstance(obj, nn.Module) and has_hooks(obj)):
        return False
    fn = _unwrap(_class_attribute(type(obj), name))
    return fn is library_function(owner, name) or getattr(fn, REPLACES, None) == (owner, name)


def _class_attribute(cls, name):
    """What `cls.name` resolves to, without invoking descriptors."""
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return None


def plain_lrelu(module):
    """An nn.LeakyReLU without hooks: its slope can go into a fused epilogue."""
    return type(module) is nn.LeakyReLU and not has_hooks(module)


def plain_alpha(alpha):
    """The fade-in weight as a float when it is a python real in [0, 1] (the fused blends' domain), else None,
    and the library's own formula runs (it extrapolates outside [0, 1]; a tensor alpha is left to it too)."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        return None
    alpha = float(alpha)
    return alpha if 0.0 <= alpha <= 1.0 else None


def plain_eps(eps):
    """An epsilon the ops take (a finite python real >= 0) as a float, else None (the library's forward runs)."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        return None
    eps = float(eps)
    return eps if 0.0 <= eps < float("inf") else None


def same_padding_conv(conv, check_padding_mode=True):
    """An nn.Conv2d whose geometry eq_conv2d computes: square odd kernel, 'same' zero padding, stride 1,
    dilation 1, one group."""
    kh, kw = conv.kernel_size
    if kh != kw or kh % 2 == 0 or tuple(conv.stride) != (1, 1) or tuple(conv.dilation) != (1, 1) or conv.groups != 1:
        return False
    if check_padding_mode and conv.padding_mode != "zeros":
        return False
    if isinstance(conv.padding, str):
        return conv.padding == "same" or (conv.padding == "valid" and kh == 1)
    return tuple(conv.padding) == (kh // 2, kh // 2)


def eq_gain(scale, weight):
    """eq_conv2d / eq_linear apply gain * lr_mul / sqrt(fan_in) with fan_in = weight[0].numel(); the gain that
    makes that the library's runtime factor `scale`."""
    return float(scale) * weight[0].numel() ** 0.5


# ---- class level ------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _ClassPatch:
    original: object      # the attribute object found in owner.__dict__ (None: it was inherited)
    replacement: object
    library: Library
    options: Options


_MISSING = object()
# (owner, name) -> _ClassPatch, for every attribute replaced at class level now.
_class_level = {}


def apply_class_level(library, options, report):
    for rep in library.replacements:
        key = (rep.owner, rep.name)
        record = _class_level.get(key)
        if not rep.enabled(options):
            if record is not None:
                _restore(key)
            continue
        if record is not None and record.options == options:
            report.skip(library, rep, "already patched with these options")
            continue
        original = record.original if record is not None else rep.owner.__dict__.get(rep.name, _MISSING)
        if original is _MISSING:
            raise RuntimeError(f"{library.name}: {rep.owner.__qualname__}.{rep.name} not found; this layout is "
                               f"not the one progan_fast.patch supports")
        replacement = rep.build(options, _unwrap(original))
        setattr(rep.owner, rep.name, replacement)
        _class_level[key] = _ClassPatch(original, replacement, library, options)
        report.add(library, rep.owner.__qualname__, "class", None, [rep])


def _restore(key):
    owner, name = key
    record = _class_level.pop(key)
    setattr(owner, name, record.original)


def restore_class_level(report):
    for key, record in list(_class_level.items()):
        owner, name = key
        _restore(key)
        report.add_restored(record.library.name, owner.__qualname__, None, (name,))


def class_level_patched(owner, name="forward"):
    return (owner, name) in _class_level


# ---- instance level ---------------------------------------------------------------------------------------------

_subclasses = {}


def original_class(obj):
    return getattr(type(obj), ORIGINAL_CLASS, type(obj))


def _applicable(cls, library, options):
    """The enabled replacements of `library` that apply to instances of cls: cls inherits the attribute from the
    replacement's owner (a subclass that overrides it keeps its own)."""
    found, overridden = [], []
    for rep in library.replacements:
        if rep.owner not in cls.__mro__ or not rep.enabled(options):
            continue
        definer = next(c for c in cls.__mro__ if rep.name in c.__dict__)
        (found if definer is rep.owner else overridden).append(rep)
    return found, overridden


def _default_copying(cls):
    """cls copies and pickles the default way (the library classes do), which the subclass's own ways mirror."""
    return getattr(cls, "__deepcopy__", None) is None and getattr(cls, "__copy__", None) is None and \
        cls.__reduce_ex__ is object.__reduce_ex__ and cls.__reduce__ is object.__reduce__


def _set_state(obj, state):
    if hasattr(obj, "__setstate__"):
        obj.__setstate__(state)
    else:
        obj.__dict__.update(state)


def _copy_keeping_the_patch(self):
    clone = type(self).__new__(type(self))
    _set_state(clone, dict(self.__getstate__()))
    return clone


def _deepcopy_keeping_the_patch(self, memo):
    clone = type(self).__new__(type(self))
    memo[id(self)] = clone
    _set_state(clone, copy.deepcopy(dict(self.__getstate__()), memo))
    return clone


def _reduce_as_library_class(self, protocol):
    # copyreg's reconstructor (object.__new__ of the class, then the state) rather than __newobj__, which pickle
    # insists be given the object's own class
    return copyreg._reconstructor, (getattr(type(self), ORIGINAL_CLASS), object, None), self.__getstate__()


def _subclass(cls, replacements, options):
    # a Library is rebuilt on every patch() call; what a replacement does is fixed by its (owner, name)
    key = (cls, tuple((rep.owner, rep.name) for rep in replacements), options)
    sub = _subclasses.get(key)
    if sub is None:
        namespace = {rep.name: rep.build(options, _current_library_function(rep.owner, rep.name))
                     for rep in replacements}
        namespace[ORIGINAL_CLASS] = cls
        if _default_copying(cls):
            namespace.update(__copy__=_copy_keeping_the_patch, __deepcopy__=_deepcopy_keeping_the_patch,
                             __reduce_ex__=_reduce_as_library_class)
        namespace["__module__"] = cls.__module__
        namespace["__doc__"] = cls.__doc__
        sub = type(cls.__name__, (cls,), namespace)
        sub.__qualname__ = cls.__qualname__
        _subclasses[key] = sub
    return sub


def _current_library_function(owner, name):
    """The fallback of an instance-level replacement: the library's function as it is when called (a subclass
    outlives later changes to the library's class, class-level patching included)."""
    def original(*args, **kwargs):
        return library_function(owner, name)(*args, **kwargs)
    return original


def walk(target):
    """Every object an instance-level patch looks at: a module's submodules, or a trainer object and the modules
    it holds in its attributes."""
    seen = set()
    roots = [target] if isinstance(target, nn.Module) else \
        [target] + [v for v in vars(target).values() if isinstance(v, nn.Module)]
    for root in roots:
        for obj in (root.modules() if isinstance(root, nn.Module) else [root]):
            if id(obj) not in seen:
                seen.add(id(obj))
                yield obj


def apply_instance_level(target, libraries, options, report):
    counts = {}
    for obj in walk(target):
        cls = original_class(obj)
        for library in libraries:
            if not library.owns(cls) and not any(library.owns(base) for base in cls.__mro__):
                continue
            found, overridden = _applicable(cls, library, options)
            for rep in overridden:
                report.skip(library, rep, f"{cls.__qualname__} overrides {rep.name}; its own is kept")
            if not found:
                if type(obj) is not cls:  # patched earlier with options that enable nothing now
                    obj.__class__ = cls
                continue
            sub = _subclass(cls, found, options)
            if type(obj) is sub:
                report.skip(library, found[0], f"{cls.__qualname__} instance already patched with these options")
                continue
            obj.__class__ = sub
            entry = counts.setdefault((library, cls.__qualname__), [0, found])
            entry[0] += 1
    for (library, name), (count, reps) in counts.items():
        report.add(library, name, "instance", count, reps)


def restore_instance_level(target, report, library_name):
    counts = {}
    for obj in walk(target):
        cls = getattr(type(obj), ORIGINAL_CLASS, None)
        if cls is None:
            continue
        replaced = tuple(name for name in type(obj).__dict__ if not name.startswith("__"))
        obj.__class__ = cls
        entry = counts.setdefault((library_name(cls), cls.__qualname__), [0, replaced])
        entry[0] += 1
    for (library, name), (count, replaced) in counts.items():
        report.add_restored(library, name, count, replaced)


# ---- the report -------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class ReportRow:
    library: str
    version: str
    target: str          # class name
    mode: str            # "class" or "instance"
    count: object        # instances changed (instance mode); None at class level (every instance)
    replaced: tuple      # attribute names
    what: tuple          # one line per replaced attribute


class PatchReport:
    """What patch() replaced or unpatch() restored: one row per library class. Printable; `count(name)` sums the
    instances (instance mode) or attributes (class mode) changed for a class name."""

    def __init__(self, action):
        self.action = action
        self.rows = []
        self.skipped = []   # (library, what, reason)

    def add(self, library, target, mode, count, replacements):
        self._add(library.name, library.version, target, mode, count, tuple(rep.name for rep in replacements),
                  tuple(rep.what for rep in replacements))

    def add_restored(self, library_name, target, count, names):
        self._add(library_name, "", target, "class" if count is None else "instance", count, tuple(names),
                  ("restored",) * len(names))

    def _add(self, library, version, target, mode, count, names, what):
        for row in self.rows:
            if mode == "class" and (row.library, row.target, row.mode) == (library, target, mode):
                row.replaced += names
                row.what += what
                return
        self.rows.append(ReportRow(library, version, target, mode, count, names, what))

    def skip(self, library, rep, reason):
        self.note(library.name, f"{rep.owner.__qualname__}.{rep.name}", reason)

    def note(self, library_name, what, reason):
        if (library_name, what, reason) not in self.skipped:
            self.skipped.append((library_name, what, reason))

    def count(self, target, library=None):
        total = 0
        for row in self.rows:
            if row.target == target and (library is None or row.library == library):
                total += row.count if row.count is not None else len(row.replaced)
        return total

    def __bool__(self):
        return bool(self.rows)

    def __len__(self):
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __str__(self):
        verb = "replaced" if self.action == "patch" else "restored"
        lines = [f"progan_fast.{self.action}: {len(self.rows)} class(es) {verb}"]
        if self.rows:
            table = [("library", "version", "class", "mode", "count", verb)]
            for row in self.rows:
                count = "all" if row.count is None else str(row.count)
                table.append((row.library, row.version, row.target, row.mode, count, ", ".join(row.replaced)))
            widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
            for r in table:
                lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
            if self.action == "patch":
                lines.append("  how:")
                seen = set()
                for row in self.rows:
                    for name, what in zip(row.replaced, row.what):
                        if (row.target, name) not in seen:
                            seen.add((row.target, name))
                            lines.append(f"    {row.target}.{name}: {what}")
        for library, what, reason in self.skipped:
            lines.append(f"  not changed: {library} {what}: {reason}")
        return "\n".join(lines)

    def __repr__(self):
        return f"<PatchReport {self.action}: {len(self.rows)} row(s), {len(self.skipped)} not changed>"
