"""Choosing the torch device a model runs on."""

from __future__ import annotations

import torch

from inference.contract import ModelContractError


def resolve_device(requested: str | torch.device | None = None) -> torch.device:
    """The device to run on: the requested one, else CUDA when present, else CPU."""
    if requested is None or str(requested) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelContractError("CUDA was requested but no CUDA device is available")
    return device
