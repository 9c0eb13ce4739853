"""The one place a device name given by the user (`--device`, device=) becomes a torch.device."""
import torch


def resolve_device(device, name="device"):
    """None or "auto": cuda when a GPU is visible, else cpu. Otherwise cpu, cuda or cuda:N (N a visible GPU).
    Errors name the setting as `name`."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        parsed = device
    else:
        try:
            parsed = torch.device(device)
        except (RuntimeError, TypeError):
            parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} must be auto, cpu, cuda or cuda:N; got {device!r}")
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{name} {device!r}: no CUDA device is visible; use cpu (or auto)")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"{name} {device!r} does not exist: {count} CUDA device(s) are visible (cuda:0 .. "
                             f"cuda:{count - 1})")
    return parsed
