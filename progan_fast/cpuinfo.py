"""What the CPU computes natively, read from /proc/cpuinfo's flags (Linux; elsewhere no flag is known, so every
choice below falls back to float32 NCHW)."""

# CPUs that compute in bf16 natively: oneDNN then runs bf16 convolutions at about twice the float32 rate (AVX-512
# BF16) or more (AMX tiles); elsewhere bf16 is emulated and no faster.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
AMX_BF16_FLAG = "amx_bf16"


def cpu_flags():
    """The CPU's feature flags as a set (empty where /proc/cpuinfo cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _given_or_read(flags):
    return cpu_flags() if flags is None else set(flags)


def native_bf16_flags(flags=None):
    """The flags (sorted) that give this CPU (or the given flags) native bf16 math; empty when there are none."""
    return sorted(set(BF16_FLAGS) & _given_or_read(flags))


def has_amx_bf16(flags=None):
    return AMX_BF16_FLAG in _given_or_read(flags)
