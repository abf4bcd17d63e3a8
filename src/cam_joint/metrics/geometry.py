"""Where a map's cells fall in the original image: the geometry that scores a CAM against masks, boxes and keypoints.

A CAM covers the region of the original image that the image processor keeps (timm's eval transform: resize + centre
crop, squash, or border padding), so ground truth given in original-image pixels is mapped into that region
(`preprocessed_box`) and resampled onto the judged grid (`mask_in_box`, `box_mask`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from .cam_agreement import resize_center_crop_box

__all__ = ["preprocessed_box", "sample_grid", "mask_in_box", "box_mask"]


def preprocessed_box(image_size: tuple[int, int], data_config: Mapping[str, Any]) -> tuple[float, float, float, float]:
    """The region of the original image that the image processor's eval transform turns into its output.

    Follows timm's `transforms_imagenet_eval` for the processor's ``data_config()`` (input_size, crop_pct,
    crop_mode): ``center`` = resize the shorter side to size / crop_pct then center-crop; ``squash`` = resize both
    sides to size / crop_pct then center-crop; ``border`` = resize the longer side, pad, center-crop (the box then
    extends past the image, over the padding).

    Args:
        image_size: original (width, height), as PIL's ``Image.size``.
        data_config: ``image_processor.data_config()``.

    Returns:
        (left, top, right, bottom) in original-image pixels; the output's pixel (row, col) covers
        ``left + (col + [0, 1]) * (right - left) / out_w`` (and likewise for rows).
    """
    width, height = image_size
    _, out_h, out_w = (int(v) for v in data_config["input_size"])
    crop_pct = data_config.get("crop_pct") or 0.875  # timm's DEFAULT_CROP_PCT
    mode = data_config.get("crop_mode") or "center"
    scale_h, scale_w = math.floor(out_h / crop_pct), math.floor(out_w / crop_pct)
    if mode == "squash":
        return resize_center_crop_box(image_size, (scale_h, scale_w), (out_h, out_w))
    if mode == "center" and scale_h == scale_w:
        return resize_center_crop_box(image_size, scale_h, (out_h, out_w))
    if mode not in ("center", "border"):
        raise ValueError(f"unknown crop_mode {mode!r} (timm knows center, squash, border)")
    # timm's ResizeKeepRatio: longest=1.0 for border (fit inside), 0.0 for center (cover).
    longest = 1.0 if mode == "border" else 0.0
    ratio_h, ratio_w = height / scale_h, width / scale_w
    ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1.0 - longest)
    new_h, new_w = round(height / ratio), round(width / ratio)
    pad_left = pad_top = 0
    padded_h, padded_w = new_h, new_w
    if mode == "border" and (out_w > new_w or out_h > new_h):  # timm's center_crop_or_pad pads first
        if out_w > new_w:
            pad_left, padded_w = (out_w - new_w) // 2, out_w
        if out_h > new_h:
            pad_top, padded_h = (out_h - new_h) // 2, out_h
    top = int(round((padded_h - out_h) / 2.0)) - pad_top
    left = int(round((padded_w - out_w) / 2.0)) - pad_left
    sx, sy = width / new_w, height / new_h
    return (left * sx, top * sy, (left + out_w) * sx, (top + out_h) * sy)


def sample_grid(box: Sequence[float], out_h: int, out_w: int) -> tuple[np.ndarray, np.ndarray]:
    """Original-image x (out_w,) and y (out_h,) coordinates of the output pixels' centres."""
    left, top, right, bottom = (float(v) for v in box)
    xs = left + (np.arange(out_w) + 0.5) * (right - left) / out_w
    ys = top + (np.arange(out_h) + 0.5) * (bottom - top) / out_h
    return xs, ys


def mask_in_box(mask: np.ndarray, box: Sequence[float], out_h: int, out_w: int) -> np.ndarray:
    """Nearest-neighbour resample of an original-resolution mask (H, W) to the output grid; outside = False."""
    xs, ys = sample_grid(box, out_h, out_w)
    cols, rows = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    valid_c = (cols >= 0) & (cols < mask.shape[1])
    valid_r = (rows >= 0) & (rows < mask.shape[0])
    out = np.zeros((out_h, out_w), dtype=bool)
    sub = mask[np.clip(rows, 0, mask.shape[0] - 1)][:, np.clip(cols, 0, mask.shape[1] - 1)] != 0
    out[np.ix_(valid_r, valid_c)] = sub[np.ix_(valid_r, valid_c)]
    return out


def box_mask(bbox_xywh: Sequence[float], box: Sequence[float], out_h: int, out_w: int) -> np.ndarray:
    """(out_h, out_w) mask of the output pixels whose centre lies in an (x, y, width, height) box of the original."""
    x, y, w, h = (float(v) for v in bbox_xywh)
    xs, ys = sample_grid(box, out_h, out_w)
    return ((ys >= y) & (ys <= y + h))[:, None] & ((xs >= x) & (xs <= x + w))[None, :]
