"""Choosing the torch device a model runs on."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from inference.contract import Model, ModelContractError


def resolve_device(requested: str | torch.device | None = None) -> torch.device:
    """The device to run on: the requested one, else CUDA when present, else CPU."""
    if requested is None or str(requested) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelContractError("CUDA was requested but no CUDA device is available")
    return device


# Of the memory free at start, the share device batches may use: the rest is headroom for
# the allocator's fragmentation and other processes on the same GPU.
MEMORY_SHARE = 0.8
PROBE_BATCH = 8


def batch_cap(model: Model[Any, Any], configured: int) -> int:
    """The largest device batch: ``configured``, and on CUDA no more than the free memory
    holds, measured from the peak allocation of a probe batch (an out-of-memory error later
    still halves the batch, inference/batcher.py)."""
    device = getattr(model, "device", None)
    if not isinstance(device, torch.device) or device.type != "cuda":
        return configured
    size = getattr(model, "input_size", (416, 416))
    blank = model.preprocess(Image.new("RGB", size))
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    model.run_batch([blank] * PROBE_BATCH)
    torch.cuda.synchronize(device)
    per_frame = max(1, (torch.cuda.max_memory_allocated(device) - before) // PROBE_BATCH)
    free, _total = torch.cuda.mem_get_info(device)
    return max(1, min(configured, int(free * MEMORY_SHARE) // per_frame))
