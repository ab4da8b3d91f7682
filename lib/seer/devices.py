"""Device settings (`device`, `backbone_device`): one parser, one sentence for every bad value; the CPU threads
each concurrent inference gets (`share_cpu_threads`)."""

from __future__ import annotations

import os
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


def share_cpu_threads(concurrent: int, cores: int | None = None) -> int:
    """Give each of `concurrent` inferences an equal share of the cores (at least one thread) for SimpleITK's
    registration, so that inferences running side by side do not oversubscribe the CPU; 0 or 1 (one inference at a
    time) keeps every core. torch's CPU threads are lowered to the share, never raised above their setting (which
    follows OMP_NUM_THREADS). Returns SimpleITK's threads per inference."""
    cores = cores or os.cpu_count() or 1
    threads = max(1, cores // max(1, concurrent))
    import SimpleITK as sitk
    import torch

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    torch.set_num_threads(max(1, min(threads, torch.get_num_threads())))
    return threads
