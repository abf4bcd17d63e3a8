"""Evaluation metrics on CAMs: agreement between two sets of maps, and the pointing game.

Maps are (B, h, w) torch tensors or numpy arrays (any float dtype, any device), or sequences of (h_i, w_i) maps;
every computation runs in float64 on the CPU so the numbers do not depend on the device or autocast dtype.

Conventions, shared by all functions here:
- A map's *peak* is found after bilinear upsampling (align_corners=False, as `torch.nn.functional.interpolate`) to the
  resolution it is judged at, as `torch.argmax` finds it (the first maximum in row-major order; exactly equal raw
  cells are exceptional in real CAMs and, after upsampling, may differ by rounding). Note that bilinear
  upsampling replicates the outermost cells over a half-cell border, so a peak in a border cell lands on the first
  pixel of that plateau, up to half a cell from the cell's centre towards the top-left.
- A map whose values are all equal (an all-zero Grad-CAM after its ReLU included) has no peak: it is a pointing-game
  miss, never a hit by accident of argmax returning index 0.
- Non-finite values (NaN, inf) raise ValueError: they mean a broken CAM, and a silent NaN mean hides it.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch

MapsLike = Union[torch.Tensor, np.ndarray, Sequence[torch.Tensor], Sequence[np.ndarray]]

CUB_NUM_PARTS = 15  # parts/parts.txt: 1 back, 2 beak, 3 belly, ..., 15 throat


def _as_array(x: object) -> np.ndarray:
    """float64 numpy copy of a tensor (any device), array or nested sequence."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _as_maps(maps: MapsLike, name: str) -> list[torch.Tensor]:
    """List of (h, w) float64 CPU tensors, checked finite."""
    if isinstance(maps, (torch.Tensor, np.ndarray)):
        if maps.ndim != 3:
            raise ValueError(f"{name} must have shape (B, h, w); got {tuple(maps.shape)}")
        items = list(maps)
    else:
        items = list(maps)
    out = []
    for i, m in enumerate(items):
        t = torch.as_tensor(m).detach().to("cpu", torch.float64)
        if t.ndim != 2 or t.numel() == 0:
            raise ValueError(f"{name}[{i}] must be a non-empty (h, w) map; got shape {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name}[{i}] contains NaN or inf")
        out.append(t)
    if not out:
        raise ValueError(f"{name} is empty: need at least one map")
    return out


def cam_cosine_similarities(maps_a: MapsLike, maps_b: MapsLike) -> np.ndarray:
    """Per-image cosine similarity of two batches of maps (each map flattened), shape (B,), float64.

    A pair in which either map is all zeros scores 0.0: a map with no mass agrees with nothing, and scoring two empty
    maps 1.0 would reward a model whose CAMs vanish. This matches the training loss's `cam_core.map_cosine`, which
    gives 0 for a zero map; here the cosine is otherwise exact (no epsilon). Maps must have equal shapes pairwise
    (resize them first if the two heads produce different resolutions).
    """
    a, b = _as_maps(maps_a, "maps_a"), _as_maps(maps_b, "maps_b")
    if len(a) != len(b):
        raise ValueError(f"maps_a has {len(a)} maps but maps_b has {len(b)}")
    sims = np.zeros(len(a), dtype=np.float64)
    for i, (x, y) in enumerate(zip(a, b)):
        if x.shape != y.shape:
            raise ValueError(f"map {i}: maps_a is {tuple(x.shape)} but maps_b is {tuple(y.shape)}")
        norm = float(x.norm() * y.norm())
        sims[i] = float((x * y).sum()) / norm if norm > 0 else 0.0
    return sims


def cam_cosine_agreement(maps_a: MapsLike, maps_b: MapsLike) -> float:
    """Mean over images of `cam_cosine_similarities` (a zero map scores 0.0 against anything)."""
    return float(cam_cosine_similarities(maps_a, maps_b).mean())


def _peak(m: torch.Tensor, height: int, width: int) -> tuple[int, int] | None:
    """(row, col), at (height, width), of the maximum of `m` upsampled bilinearly; None for a constant map.

    The bilinear maximum is the strongest cell's centre (align_corners=False), so no upsampling is needed; taking the
    argmax of an upsampled map instead would snap a border cell's flat maximum to the image edge."""
    if bool(m.max() == m.min()):
        return None
    h, w = m.shape
    i, j = divmod(int(torch.argmax(m)), w)
    return min(height - 1, int((i + 0.5) * height / h)), min(width - 1, int((j + 0.5) * width / w))


def pointing_game_mask(maps: MapsLike, masks: MapsLike) -> np.ndarray:
    """Per image: is the map's peak, at the mask's resolution, inside the mask? Returns a (B,) bool array.

    Args:
        maps: (B, h, w) CAMs, or a sequence of (h_i, w_i) maps.
        masks: (B, H, W) boolean masks of the discriminative part(s), or a sequence of (H_i, W_i) masks (e.g. each at
            its image's size); nonzero means inside. Each map is upsampled to its mask's size, so the mask must cover
            the same image region as the map (the preprocessed image, or the original when preprocessing was a plain
            resize).

    A constant map is a miss (no peak); so is any image whose mask is empty, which can never be hit: drop such images
    before averaging if the score should cover evaluable images only.
    """
    map_list = _as_maps(maps, "maps")
    mask_list = [torch.as_tensor(m).detach().to("cpu") != 0 for m in masks]
    if len(mask_list) != len(map_list):
        raise ValueError(f"{len(map_list)} maps but {len(mask_list)} masks")
    hits = np.zeros(len(map_list), dtype=bool)
    for i, (m, mask) in enumerate(zip(map_list, mask_list)):
        if mask.ndim != 2 or mask.numel() == 0:
            raise ValueError(f"masks[{i}] must be a non-empty (H, W) mask; got shape {tuple(mask.shape)}")
        peak = _peak(m, *mask.shape)
        hits[i] = peak is not None and bool(mask[peak])
    return hits


def resize_center_crop_box(
    image_size: tuple[int, int], resize: int | tuple[int, int], crop: int | tuple[int, int] | None = None
) -> tuple[float, float, float, float]:
    """The region of the original image that torchvision's `Resize(resize)` then `CenterCrop(crop)` keeps.

    Args:
        image_size: original (width, height), as PIL's `Image.size`.
        resize: `Resize`'s size: an int resizes the shorter side to it (the longer to int(resize * long / short)),
            a (height, width) pair resizes to exactly that.
        crop: `CenterCrop`'s size, int or (height, width); None for no crop.

    Returns:
        (left, top, right, bottom) in original-image pixels, for `pointing_game_keypoints(crop_boxes=...)`.
    """
    width, height = image_size
    if isinstance(resize, int):
        if width <= height:
            new_w, new_h = resize, int(resize * height / width)
        else:
            new_w, new_h = int(resize * width / height), resize
    else:
        new_h, new_w = resize
    if crop is None:
        return (0.0, 0.0, float(width), float(height))
    crop_h, crop_w = (crop, crop) if isinstance(crop, int) else crop
    if crop_h > new_h or crop_w > new_w:
        raise ValueError(
            f"crop {crop_h}x{crop_w} is larger than the resized image {new_h}x{new_w} (padding unsupported)"
        )
    # torchvision's center_crop offsets, in resized pixels.
    top = int(round((new_h - crop_h) / 2.0))
    left = int(round((new_w - crop_w) / 2.0))
    sx, sy = width / new_w, height / new_h
    return (left * sx, top * sy, (left + crop_w) * sx, (top + crop_h) * sy)


def pointing_game_keypoints(
    maps: MapsLike,
    keypoints: torch.Tensor | np.ndarray | Sequence,
    image_sizes: torch.Tensor | np.ndarray | Sequence[tuple[float, float]],
    part_ids: Sequence[int] | None = None,
    radius_frac: float = 0.1,
    crop_boxes: torch.Tensor | np.ndarray | Sequence[tuple[float, float, float, float]] | None = None,
    return_evaluable: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Pointing game against part keypoints (CUB's parts/part_locs.txt), in original-image pixels.

    Coordinates: each map covers a box of the original image, `crop_boxes[i]` = (left, top, right, bottom) in
    original pixels; None means the whole image (0, 0, width, height), right for a plain resize of any aspect ratio.
    For resize-then-center-crop preprocessing get the box from `resize_center_crop_box`. The map is upsampled to the
    box's size in pixels (rounded), its peak pixel's centre is mapped back to original coordinates, and distances are
    measured there, so callers pass CUB's keypoints unchanged.

    Radius rule: a hit when the peak lies within `radius_frac * min(box width, box height)` pixels (Euclidean,
    inclusive) of at least one eligible keypoint. Eligible: visible (v > 0), among `part_ids`, and inside the box
    (a part cropped away was never seen by the network). With the default 0.1 and a 224-pixel crop that is 22.4
    crop pixels.

    Args:
        maps: (B, h, w) CAMs or a sequence of (h_i, w_i) maps.
        keypoints: (B, K, 3) rows of (x, y, visible); row p - 1 is part id p (K = 15 for CUB).
        image_sizes: (B, 2) original (width, height).
        part_ids: 1-based part ids that count as the discriminative part(s); None for all K.
        radius_frac: radius as a fraction of the box's shorter side.
        crop_boxes: (B, 4) boxes, or None.
        return_evaluable: also return which images have an eligible keypoint.

    Returns:
        hits, a (B,) bool array; with `return_evaluable`, (hits, evaluable). A constant map is a miss, and so is an
        image without eligible keypoints (it cannot be hit): average `hits[evaluable]` to leave those out.
    """
    map_list = _as_maps(maps, "maps")
    n = len(map_list)
    kps = _as_array(keypoints)
    sizes = _as_array(image_sizes)
    if kps.ndim != 3 or kps.shape[0] != n or kps.shape[2] != 3:
        raise ValueError(f"keypoints must have shape ({n}, K, 3) for {n} maps; got {kps.shape}")
    if sizes.shape != (n, 2):
        raise ValueError(f"image_sizes must have shape ({n}, 2) as (width, height); got {sizes.shape}")
    if crop_boxes is None:
        boxes = np.concatenate([np.zeros((n, 2)), sizes], axis=1)
    else:
        boxes = _as_array(crop_boxes)
        if boxes.shape != (n, 4):
            raise ValueError(f"crop_boxes must have shape ({n}, 4) as (left, top, right, bottom); got {boxes.shape}")
    num_parts = kps.shape[1]
    ids = list(range(1, num_parts + 1)) if part_ids is None else list(part_ids)
    bad = [p for p in ids if not 1 <= p <= num_parts]
    if bad or not ids:
        raise ValueError(f"part_ids must be a non-empty subset of 1..{num_parts}; got {list(part_ids or [])}")
    if radius_frac <= 0:
        raise ValueError(f"radius_frac must be positive; got {radius_frac}")
    rows = np.asarray(ids) - 1

    hits = np.zeros(n, dtype=bool)
    evaluable = np.zeros(n, dtype=bool)
    for i, m in enumerate(map_list):
        left, top, right, bottom = boxes[i]
        box_w, box_h = right - left, bottom - top
        if box_w <= 0 or box_h <= 0:
            raise ValueError(f"box {i} is empty: {tuple(boxes[i])}")
        pts = kps[i, rows]
        inside = (pts[:, 0] >= left) & (pts[:, 0] <= right) & (pts[:, 1] >= top) & (pts[:, 1] <= bottom)
        pts = pts[(pts[:, 2] > 0) & inside]
        evaluable[i] = len(pts) > 0
        up_h, up_w = max(1, round(box_h)), max(1, round(box_w))
        peak = _peak(m, up_h, up_w)
        if peak is None or not evaluable[i]:
            continue
        row, col = peak
        x = left + (col + 0.5) * box_w / up_w
        y = top + (row + 0.5) * box_h / up_h
        radius = radius_frac * min(box_w, box_h)
        hits[i] = bool((np.hypot(pts[:, 0] - x, pts[:, 1] - y) <= radius).any())
    return (hits, evaluable) if return_evaluable else hits


__all__ = [
    "CUB_NUM_PARTS",
    "cam_cosine_similarities",
    "cam_cosine_agreement",
    "pointing_game_mask",
    "pointing_game_keypoints",
    "resize_center_crop_box",
]
