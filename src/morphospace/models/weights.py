"""Reading local weight files (pretrained encoders, VGG for perceptual losses) without unpickling objects."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from morphospace.errors import InputError

__all__ = ["read_state_dict"]


def read_state_dict(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a local ``.pt``/``.pth`` state dict (a ``state_dict`` entry is unwrapped).

    Raises InputError naming the file and ``what`` it should hold when it is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise InputError(f"{path}: unreadable {what} ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"{path}: expected a state dict of {what}, got {type(state).__name__}")
    return state
