"""What every localisation metric does with its inputs: maps checked (finite, at least 2 x 2) and upsampled, masks
checked against their maps, the CAM thresholds. See `localization` for the conventions."""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .cam_agreement import MapsLike, _as_maps

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence]

DEFAULT_CAM_CURVE_INTERVAL = 0.01


# ----------------------------------------------------------------------------------------------- inputs
def _check_maps(maps: MapsLike) -> list[torch.Tensor]:
    """`_as_maps` (float64 CPU, finite, 2-D), and at least 2 x 2 cells."""
    out = _as_maps(maps, "maps")
    for i, m in enumerate(out):
        if m.shape[0] < 2 or m.shape[1] < 2:
            raise ValueError(
                f"maps[{i}] is {m.shape[0]}x{m.shape[1]}; a CAM needs at least 2x2 cells to localise anything"
            )
    return out


def _as_masks(masks: ArrayLike, name: str, map_list: list[torch.Tensor]) -> list[np.ndarray]:
    """Boolean (H_i, W_i) masks, one per map, each at least as large as its map; nonzero means inside."""
    if isinstance(masks, (torch.Tensor, np.ndarray)) and masks.ndim != 3:
        raise ValueError(f"{name} must have shape (B, H, W) or be a sequence of (H, W) masks; got {tuple(masks.shape)}")
    items = list(masks)
    if len(items) != len(map_list):
        raise ValueError(f"{len(map_list)} maps but {len(items)} {name}; need one per map")
    out = []
    for i, (mask, m) in enumerate(zip(items, map_list)):
        arr = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        if arr.ndim != 2:
            raise ValueError(f"{name}[{i}] must be a 2-D (H, W) mask; got shape {arr.shape}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ValueError(f"{name}[{i}] contains NaN or inf")
        if arr.shape[0] < m.shape[0] or arr.shape[1] < m.shape[1]:
            raise ValueError(
                f"{name}[{i}] is {arr.shape[0]}x{arr.shape[1]}, smaller than maps[{i}] ({m.shape[0]}x{m.shape[1]}); "
                "ground truth must be at the resolution the maps are judged at, at least the CAM's own"
            )
        out.append(arr != 0)
    return out


def _upsample(m: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(H, W) float64 bilinear upsampling (align_corners=False) of an (h, w) float64 map."""
    if tuple(m.shape) == tuple(size):
        return m.numpy()
    return F.interpolate(m[None, None], size=tuple(size), mode="bilinear", align_corners=False)[0, 0].numpy()


def _normalize(x: np.ndarray) -> np.ndarray:
    """Min-max normalisation to [0, 1]; a constant map becomes all zeros (wsolevaluation's normalize_scoremap)."""
    x = x - x.min()
    top = x.max()
    return x / top if top > 0 else np.zeros_like(x)


def _scores(m: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """The upsampled, min-max normalised (H, W) score map of an (h, w) map (all zeros for a constant map).

    Constancy is judged at CAM resolution: bilinear weights of a constant map can differ from it by rounding, and
    normalising that noise would turn a flat map into a random one."""
    if bool(m.max() == m.min()):
        return np.zeros(size, dtype=np.float64)
    return _normalize(_upsample(m, size))


def cam_thresholds(cam_curve_interval: float = DEFAULT_CAM_CURVE_INTERVAL) -> np.ndarray:
    """The CAM thresholds ``arange(0, 1, cam_curve_interval)`` (0, 0.01, ..., 0.99 by default), as wsolevaluation."""
    if not (isinstance(cam_curve_interval, (int, float)) and 0 < cam_curve_interval < 1):
        raise ValueError(f"cam_curve_interval must lie in (0, 1); got {cam_curve_interval!r}")
    return np.arange(0, 1, cam_curve_interval)
