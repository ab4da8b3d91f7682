"""Device settings (`device`, `backbone_device`): one parser, one sentence for every bad value."""

from __future__ import annotations

import re

from seer.errors import BadRequest

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_name(name: str, setting: str) -> None:
    """The value's form (no torch import): auto | cpu | cuda | cuda:N."""
    if not DEVICE_PATTERN.fullmatch(str(name).strip().lower()):
        raise BadRequest(f"Setting '{setting}' must be auto, cpu, cuda or cuda:N, got {name!r}.")


def select_device(name: str, setting: str = "device"):
    """torch.device for a device setting; auto = cuda when available, else cpu. A CUDA device this machine does not
    have is refused with a sentence (BadRequest) instead of failing later inside torch."""
    import torch

    name = str(name or "auto").strip().lower()
    check_device_name(name, setting)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.split(":")[1]) if ":" in name else 0
        if count == 0:
            raise BadRequest(f"Setting '{setting}' is {name}, but this machine has no CUDA device; use cpu or auto.")
        if index >= count:
            raise BadRequest(f"Setting '{setting}' is {name}, but this machine has {count} CUDA device(s) "
                             f"(cuda:0 to cuda:{count - 1}).")
    return torch.device(name)
