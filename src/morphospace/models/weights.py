"""Reading local weight files (pretrained encoders, VGG for perceptual losses) without unpickling objects."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import torch

from morphospace.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["read_state_dict", "transfer_weights", "adapt_first_convolution", "load_pretrained"]


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


def adapt_first_convolution(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """Pretrained first-layer weights (out, 3, k, k) for ``channels`` inputs: their mean over the
    colour channels, repeated and rescaled so the summed response to a grey image is unchanged.

    >>> adapt_first_convolution(torch.ones(2, 3, 1, 1), 1).flatten().tolist()
    [3.0, 3.0]
    """
    mean = weight.mean(dim=1, keepdim=True)
    return mean.repeat(1, channels, 1, 1) * (weight.shape[1] / channels)


def load_pretrained(module: torch.nn.Module, path: str | os.PathLike, what: str,
                    rename: Callable[[str], str] = str) -> dict[str, int]:
    """Load the tensors of the local state dict at ``path`` (``what`` it holds, for messages) into
    ``module`` where their names, after ``rename``, and shapes match; a convolution weight that
    differs only in its input channels (an RGB network's first layer) is adapted with
    :func:`adapt_first_convolution`. Returns the counts ``loaded`` and ``tensors`` (of ``module``).

    Raises InputError naming the file when it is missing, unreadable or matches no tensor.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.pt"
    >>> torch.save({"backbone.weight": torch.ones(2, 3, 1, 1)}, path)
    >>> target = torch.nn.Conv2d(1, 2, 1, bias=False)
    >>> load_pretrained(target, path, "weights", rename=lambda k: k.removeprefix("backbone."))
    {'loaded': 1, 'tensors': 1}
    >>> target.weight.flatten().tolist()
    [3.0, 3.0]
    """
    own = module.state_dict()
    loaded = {}
    for key, value in read_state_dict(path, what).items():
        key = rename(key)
        if key not in own:
            continue
        target = own[key]
        if value.dim() == 4 and value.shape[1] != target.shape[1] and value.shape[0] == target.shape[0]:
            value = adapt_first_convolution(value, target.shape[1])
        if value.shape == target.shape:
            loaded[key] = value
    if not loaded:
        example = next(iter(own), "")
        raise InputError(f"{path}: no tensor matches the network by name and shape ({what}; its names look like "
                         f"{example!r})")
    module.load_state_dict(loaded, strict=False)
    counts = {"loaded": len(loaded), "tensors": len(own)}
    logger.info("%s from %s: %d of %d tensors", what, path, counts["loaded"], counts["tensors"])
    return counts
