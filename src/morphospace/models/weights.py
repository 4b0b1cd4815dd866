"""Reading local weight files (pretrained encoders, VGG for perceptual losses) without unpickling objects."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from morphospace.errors import InputError

__all__ = ["read_state_dict", "transfer_weights"]


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


def transfer_weights(source: dict[str, torch.Tensor], target: torch.nn.Module,
                     output_index: int | None = None) -> dict[str, int]:
    """Copy the tensors of ``source`` (a state dict) into ``target`` where names and shapes agree.

    A tensor that differs only along axes where ``target`` has size 1 and ``source`` the same size
    on each (an output layer with fewer channels) takes the slice ``output_index`` of those axes:
    the DAPI row of an in-silico-labeling head starts a one-channel nuclei head, and a final
    output-to-output convolution keeps its DAPI-to-DAPI weights. Returns the counts ``copied``,
    ``sliced`` and ``skipped`` (target tensors left as initialised).

    >>> source = torch.nn.Conv2d(4, 3, 1).state_dict()
    >>> target = torch.nn.Conv2d(4, 1, 1)
    >>> transfer_weights(source, target, output_index=2)
    {'copied': 0, 'sliced': 2, 'skipped': 0}
    >>> bool(torch.equal(target.weight[0], source["weight"][2]))
    True
    """
    own = target.state_dict()
    counts = {"copied": 0, "sliced": 0, "skipped": 0}
    for name, tensor in own.items():
        value = source.get(name)
        if value is not None and value.shape == tensor.shape:
            own[name] = value.clone()
            counts["copied"] += 1
            continue
        axes = _output_axes(value, tensor) if value is not None and output_index is not None else []
        if not axes or not 0 <= output_index < value.shape[axes[0]]:
            counts["skipped"] += 1
            continue
        for axis in axes:
            value = value.narrow(axis, output_index, 1)
        own[name] = value.clone()
        counts["sliced"] += 1
    target.load_state_dict(own)
    return counts


def _output_axes(source: torch.Tensor, target: torch.Tensor) -> list[int]:
    """The axes along which ``source`` and ``target`` differ, when ``target`` has size 1 on all of
    them and ``source`` one common size; otherwise none."""
    if source.ndim != target.ndim:
        return []
    differing = [axis for axis, (a, b) in enumerate(zip(source.shape, target.shape)) if a != b]
    if all(target.shape[axis] == 1 for axis in differing) and len({source.shape[a] for a in differing}) == 1:
        return differing
    return []
