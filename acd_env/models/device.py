"""Check a `device` argument before torch sees it, so that a typo or an absent GPU is one clear error."""

from __future__ import annotations

from typing import Any

from acd_env.errors import ACDError

VALID_DEVICES = "'cpu', 'cuda', 'cuda:N' (with a CUDA GPU), 'mps' (Apple silicon), or None (CPU)"


def check_device(device: Any) -> str | None:
    """Return `device` as a string (None stays None), or raise ACDError naming it and the valid ones."""
    if device is None:
        return None
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise ACDError(f"device must be a string such as 'cpu', got {type(device).__name__} {device!r}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ACDError(f"unknown device {device!r}; valid devices: {VALID_DEVICES}") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ACDError(f"device {device!r} needs a CUDA GPU, and torch sees none here; use device='cpu'")
        if dev.index is not None and dev.index >= n:
            raise ACDError(f"device {device!r}: this machine has {n} CUDA GPU(s), cuda:0 to cuda:{n - 1}")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ACDError(f"device {device!r} needs Apple's MPS backend, which is not available; use 'cpu'")
    elif dev.type != "cpu":
        raise ACDError(f"device {device!r} is not supported; valid devices: {VALID_DEVICES}")
    return device
