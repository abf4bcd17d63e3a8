"""MaxBoxAccV2: box accuracy of thresholded CAMs against ground-truth boxes, as clovaai/wsolevaluation computes it.

**MaxBoxAccV2** (`max_box_acc_v2`; `BoxEvaluator` with ``multi_contour_eval=True`` and ``multi_iou_eval=True``):
the upsampled map is min-max normalised and quantised as an 8-bit image ``q = floor(255 * score)``; at CAM
threshold ``t`` the foreground is ``q > floor(255 * t)`` (OpenCV's THRESH_BINARY). Its boxes are those of *every*
contour `cv2.findContours(RETR_TREE)` returns: the outer border of each 8-connected foreground component and the
border of each hole (a 4-connected background component that does not touch the image border). A hole's box can
beat its component's box (a ring of activation around the object), so holes are included. A box is the
`cv2.boundingRect` of its contour's pixels turned into (x0, y0, x1, y1) as wsolevaluation does: ``x0 = min col``,
``x1 = min(max col + 1, W - 1)`` (and likewise for rows); a hole's contour runs through the foreground pixels
4-adjacent to it, so its box is the hole's pixel extent grown by one pixel on each side before that step. IoU is
wsolevaluation's, with *inclusive* pixel coordinates: a box covers ``(x1 - x0 + 1) * (y1 - y0 + 1)`` pixels.
Per image and CAM threshold the best IoU over its boxes and the image's ground-truth boxes counts; box accuracy
at (t, delta) is the fraction of images whose best IoU is >= delta; MaxBoxAcc@delta is its maximum over t, and
MaxBoxAccV2 the mean over delta in (0.3, 0.5, 0.7). Ground-truth boxes are (x0, y0, x1, y1) pixel indices in the
H x W grid, inclusive (``0 <= x0 <= x1 <= W - 1``), as wsolevaluation's metadata (`mask_to_box` makes one from a
mask). Components and holes are found with run-length labelling (numpy + scipy.sparse.csgraph), not OpenCV; the
boxes equal OpenCV's exactly (tests/test_metrics_localization.py compares them on random maps when OpenCV is
installed). One deliberate difference: where no pixel exceeds the threshold (a constant map) wsolevaluation
scores the dummy box (0, 0, 0, 0), which overlaps a ground-truth box containing pixel (0, 0); here such a
threshold scores IoU 0, so a constant map is a miss, as in the pointing game.
With ``multi_contour=False`` (the CVPR paper's MaxBoxAcc) only the largest component's box counts, largest by
pixel count; wsolevaluation ranks contours by `cv2.contourArea` (the polygon through the border pixels' centres,
holes filled), so the two can pick differently between components of nearly equal size (on random smooth maps,
about 5 % of the thresholds with two or more components): that mode is not bit-exact; MaxBoxAccV2 is.

Maps and ground truth follow `localization`'s conventions (maps upsampled bilinearly to the ground truth's grid).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy import sparse
from scipy.sparse import csgraph

from .cam_agreement import MapsLike
from .map_inputs import DEFAULT_CAM_CURVE_INTERVAL, ArrayLike, _check_maps, _scores, cam_thresholds

DEFAULT_IOU_THRESHOLDS = (0.3, 0.5, 0.7)  # wsolevaluation's iou_threshold_list (30, 50, 70)


# ----------------------------------------------------------------------------------------------- boxes
def mask_to_box(mask: ArrayLike) -> tuple[int, int, int, int]:
    """The tight (x0, y0, x1, y1) box, inclusive pixel indices, of a mask's nonzero pixels (e.g. a `box_mask`)."""
    arr = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W); got shape {arr.shape}")
    rows, cols = np.nonzero(arr)
    if len(rows) == 0:
        raise ValueError(f"mask of shape {arr.shape} is empty: it has no box")
    return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


def _cam_levels(score: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per pixel, the number of CAM thresholds at which it is foreground (pixel in slice k iff level > k).

    Quantisation as wsolevaluation: the 8-bit image ``uint8(255 * score)`` against ``int(t * max(image))``."""
    image = (score * 255).astype(np.uint8)
    cut = (thresholds * float(image.max())).astype(np.int64)  # int() truncation; max is 255 unless constant
    return np.searchsorted(cut, image.astype(np.int64), side="left")


def _expand(lo: np.ndarray, hi: np.ndarray, plane: int, dtype: type) -> np.ndarray:
    """Sorted keys ``k * plane + pixel`` for every pixel and every slice k in [lo[pixel], hi[pixel])."""
    counts = np.clip(hi - lo, 0, None).ravel()
    total = int(counts.sum())
    pixel = np.flatnonzero(counts).astype(dtype)
    counts = counts[pixel]
    # k = lo + 0, 1, ..., count - 1 for each pixel: a running index minus each pixel's first position.
    first = np.cumsum(counts) - counts
    base = (lo.ravel()[pixel].astype(dtype) - first.astype(dtype)) * plane + pixel
    keys = np.arange(total, dtype=dtype) * plane + np.repeat(base, counts)
    keys.sort()
    return keys


def _components(level: np.ndarray, num_slices: int, foreground: bool) -> dict[str, np.ndarray]:
    """Connected components of every threshold slice at once, from horizontal runs.

    Foreground (level > k) components are 8-connected, background (level <= k) ones 4-connected: the pair OpenCV's
    border following uses. Instead of labelling T binary images pixel by pixel, a run starts where the level
    crosses k between two horizontal neighbours, so runs are generated per pixel pair and slice, and runs in
    adjacent rows of a slice are joined by `csgraph.connected_components`.

    Returns per component: slice ``k``, pixel extent ``r0, r1, c0, c1`` (inclusive), pixel count ``area`` and
    ``border`` (it touches the image border).
    """
    height, width = level.shape
    plane = height * width
    # Keys k * plane + row * width + col fit int32 for any realistic grid; int32 sorts and searches faster.
    dtype = np.int32 if (num_slices + 1) * plane < 2**31 else np.int64
    pad = np.full((height, 1), 0 if foreground else num_slices, dtype=level.dtype)  # outside: background / foreground
    padded = np.concatenate([pad, level, pad], axis=1)
    left, here, right = padded[:, :-2], padded[:, 1:-1], padded[:, 2:]
    if foreground:  # a run of slice k starts at c when level[c] > k >= level[c - 1]
        starts, ends = _expand(left, here, plane, dtype), _expand(right, here, plane, dtype)
    else:  # background runs: level[c] <= k < level[c - 1]
        starts, ends = _expand(here, left, plane, dtype), _expand(here, right, plane, dtype)
    n = len(starts)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return {"k": empty, "r0": empty, "r1": empty, "c0": empty, "c1": empty, "area": empty,
                "border": np.zeros(0, dtype=bool)}
    # Within a slice and row the runs are disjoint and ordered, so the i-th start and the i-th end are one run.
    k, rest = np.divmod(starts, plane)
    row, c0 = np.divmod(rest, width)
    c1 = ends % width
    # Runs b in the next row that touch run a: b.c1 >= a.c0 - 1 and b.c0 <= a.c1 + 1 (8-connected), or without the
    # +-1 (4-connected). Both bounds are monotone along the next row, so the partners are one index range [lo, hi).
    reach = 1 if foreground else 0
    next_row = starts - c0 + width  # key of (k, row + 1, 0)
    lo = np.searchsorted(ends, next_row + np.maximum(c0 - reach, 0), side="left")
    hi = np.searchsorted(starts, next_row + np.minimum(c1 + 1 + reach, width), side="left")  # width: next row's 0
    counts = np.clip(hi - lo, 0, None)
    counts[row == height - 1] = 0  # the "next row" of the last row is the next slice's first
    # Run a's partners lo[a], ..., hi[a] - 1 as a CSR adjacency matrix (rows in order, so no sorting is needed).
    indptr = np.concatenate([[0], np.cumsum(counts)])
    total = int(indptr[-1])
    indices = np.arange(total) + np.repeat(lo - indptr[:-1], counts)
    graph = sparse.csr_matrix((np.ones(total, dtype=np.int8), indices, indptr), shape=(n, n))
    num, label = csgraph.connected_components(graph, directed=False)
    label = label.astype(np.intp)
    # ufunc.at is fast only when the output and the values share a dtype.
    out = {"k": np.zeros(num, dtype), "r0": np.full(num, height, dtype), "r1": np.full(num, -1, dtype),
           "c0": np.full(num, width, dtype), "c1": np.full(num, -1, dtype), "area": np.zeros(num, dtype)}
    out["k"][label] = k
    np.minimum.at(out["r0"], label, row)
    np.maximum.at(out["r1"], label, row)
    np.minimum.at(out["c0"], label, c0)
    np.maximum.at(out["c1"], label, c1)
    np.add.at(out["area"], label, c1 - c0 + 1)
    out["border"] = (out["r0"] == 0) | (out["r1"] == height - 1) | (out["c0"] == 0) | (out["c1"] == width - 1)
    return out


def _contour_boxes(score: np.ndarray, thresholds: np.ndarray, multi_contour: bool) -> tuple[np.ndarray, np.ndarray]:
    """(slice index (n,), boxes (n, 4) as (x0, y0, x1, y1)) of all CAM thresholds of one normalised (H, W) map."""
    height, width = score.shape
    level = _cam_levels(score, thresholds)
    num_slices = len(thresholds)
    fg = _components(level, num_slices, foreground=True)
    if not multi_contour:
        # The largest component per slice (ties: the first in raster order of its top-left run).
        order = np.lexsort((-fg["area"], fg["k"]))
        first = order[np.r_[True, np.diff(fg["k"][order]) != 0]] if len(order) else order
        fg = {key: value[first] for key, value in fg.items()}
    # cv2.boundingRect gives width = extent + 1; wsolevaluation's x1 = x + width, clipped to W - 1.
    boxes = [np.stack([fg["c0"], fg["r0"], np.minimum(fg["c1"] + 1, width - 1),
                       np.minimum(fg["r1"] + 1, height - 1)], axis=1)]
    slices = [fg["k"]]
    if multi_contour:
        bg = _components(level, num_slices, foreground=False)
        hole = ~bg["border"]
        # A hole's contour: the foreground pixels 4-adjacent to it, one pixel beyond its extent on every side.
        boxes.append(np.stack([bg["c0"][hole] - 1, bg["r0"][hole] - 1, np.minimum(bg["c1"][hole] + 2, width - 1),
                               np.minimum(bg["r1"][hole] + 2, height - 1)], axis=1))
        slices.append(bg["k"][hole])
    return np.concatenate(slices), np.concatenate(boxes).astype(np.int64)


def boxes_from_scoremap(
    scoremap: ArrayLike, cam_curve_interval: float = DEFAULT_CAM_CURVE_INTERVAL, multi_contour: bool = True
) -> list[np.ndarray]:
    """Boxes at every CAM threshold of one normalised score map, as wsolevaluation's `compute_bboxes_from_scoremaps`.

    Args:
        scoremap: (H, W) scores in [0, 1] at the judged resolution (an upsampled, min-max normalised CAM).
        cam_curve_interval: threshold spacing.
        multi_contour: boxes of all contours (components and holes), or only the largest component's.

    Returns:
        One (n_t, 4) int64 array of (x0, y0, x1, y1) boxes per threshold of `cam_thresholds`, in no particular
        order; (0, 4) where nothing exceeds the threshold (wsolevaluation returns the dummy box (0, 0, 0, 0) there).
    """
    score = scoremap.detach().cpu().numpy() if isinstance(scoremap, torch.Tensor) else np.asarray(scoremap)
    score = score.astype(np.float64)
    if score.ndim != 2 or score.shape[0] < 1 or score.shape[1] < 1:
        raise ValueError(f"scoremap must be a non-empty 2-D (H, W) array; got shape {score.shape}")
    if not np.isfinite(score).all():
        raise ValueError("scoremap contains NaN or inf")
    if score.min() < 0 or score.max() > 1:
        raise ValueError(f"scoremap must lie in [0, 1]; got min {score.min()}, max {score.max()}")
    thresholds = cam_thresholds(cam_curve_interval)
    slices, boxes = _contour_boxes(score, thresholds, multi_contour)
    order = np.argsort(slices, kind="stable")
    return np.split(boxes[order], np.cumsum(np.bincount(slices, minlength=len(thresholds)))[:-1])


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """(n_a, n_b) IoU of (x0, y0, x1, y1) boxes with inclusive pixel coordinates (wsolevaluation's convention)."""
    a, b = np.asarray(boxes_a, np.float64)[:, None, :], np.asarray(boxes_b, np.float64)[None, :, :]
    inter = (np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1, 0, None)
             * np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1, 0, None))
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _grid_sizes(grid_size: ArrayLike, n: int) -> list[tuple[int, int]]:
    sizes = np.asarray(grid_size)
    if sizes.shape == (2,):
        sizes = np.broadcast_to(sizes, (n, 2))
    if sizes.shape != (n, 2) or not np.all(sizes == np.round(sizes)) or (sizes < 1).any():
        raise ValueError(
            f"grid_size must be one (height, width) pair of positive ints or {n} of them; got {grid_size!r}"
        )
    return [(int(h), int(w)) for h, w in sizes]


def _as_boxes(boxes: Sequence, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    items = list(boxes)
    if len(items) != len(sizes):
        raise ValueError(f"{len(sizes)} maps but {len(items)} entries in boxes; need each image's list of boxes")
    out = []
    for i, (item, (height, width)) in enumerate(zip(items, sizes)):
        arr = np.asarray(item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else item, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] != 4 or len(arr) == 0:
            raise ValueError(f"boxes[{i}] must be one or more (x0, y0, x1, y1) boxes; got shape {arr.shape}")
        bad = (~np.isfinite(arr).all(1) | (arr != np.round(arr)).any(1) | (arr[:, 0] < 0) | (arr[:, 1] < 0)
               | (arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1]) | (arr[:, 2] > width - 1) | (arr[:, 3] > height - 1))
        if bad.any():
            raise ValueError(
                f"boxes[{i}] has {arr[bad][0].tolist()}: boxes are integer (x0, y0, x1, y1), inclusive, with "
                f"0 <= x0 <= x1 <= {width - 1} and 0 <= y0 <= y1 <= {height - 1} in the {height}x{width} grid"
            )
        out.append(arr)
    return out


def best_box_ious(
    maps: MapsLike,
    boxes: Sequence,
    grid_size: ArrayLike,
    cam_curve_interval: float = DEFAULT_CAM_CURVE_INTERVAL,
    multi_contour: bool = True,
) -> np.ndarray:
    """Per image and CAM threshold, the best IoU between the map's boxes and the image's ground-truth boxes.

    The per-image statistics of MaxBoxAcc: concatenate them over batches and call `max_box_acc_from_ious`.

    Args:
        maps: (B, h, w) CAMs or a sequence of (h_i, w_i) maps.
        boxes: per image, one or more ground-truth (x0, y0, x1, y1) boxes (a (4,) or (G, 4) array-like), integer
            pixel indices in the grid, inclusive.
        grid_size: (height, width) of the grid the boxes are in and the maps are judged at (e.g. (224, 224)), or
            one pair per image.
        cam_curve_interval: threshold spacing.
        multi_contour: boxes of all contours (MaxBoxAccV2) or of the largest component only (MaxBoxAcc).

    Returns:
        (B, T) float64, T = len(cam_thresholds(cam_curve_interval)); 0 where nothing exceeds the threshold.
    """
    map_list = _check_maps(maps)
    sizes = _grid_sizes(grid_size, len(map_list))
    gt = _as_boxes(boxes, sizes)
    thresholds = cam_thresholds(cam_curve_interval)
    out = np.zeros((len(map_list), len(thresholds)), dtype=np.float64)
    for i, (m, size) in enumerate(zip(map_list, sizes)):
        if size[0] < m.shape[0] or size[1] < m.shape[1]:
            raise ValueError(f"grid_size {size} is smaller than maps[{i}] ({m.shape[0]}x{m.shape[1]})")
        slices, found = _contour_boxes(_scores(m, size), thresholds, multi_contour)
        if len(found):
            np.maximum.at(out[i], slices, box_iou(found, gt[i]).max(axis=1))
    return out


def _iou_key(delta: float) -> str:
    return f"max_box_acc_iou{round(100 * delta)}"


def max_box_acc_from_ious(
    ious: np.ndarray, iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS, multi_contour: bool = True,
    return_curve: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, np.ndarray]]:
    """MaxBoxAcc per IoU threshold and their mean, from `best_box_ious`' (B, T) array; see `max_box_acc_v2`."""
    ious = np.asarray(ious, np.float64)
    if ious.ndim != 2 or ious.shape[0] == 0:
        raise ValueError(f"ious must have shape (B, T) with B > 0; got {ious.shape}")
    deltas = list(iou_thresholds)
    if not deltas or any(not 0 < d <= 1 or abs(100 * d - round(100 * d)) > 1e-9 for d in deltas):
        raise ValueError(f"iou_thresholds must be whole percentages in (0, 1], e.g. (0.3, 0.5, 0.7); got {deltas}")
    scores: dict[str, float] = {}
    curves: dict[str, np.ndarray] = {}
    for d in deltas:
        # wsolevaluation compares against _THRESHOLD / 100 with >=; the same float is used here.
        accuracy = (ious >= round(100 * d) / 100).mean(axis=0)
        scores[_iou_key(d)] = float(accuracy.max())
        curves[_iou_key(d)] = accuracy
    scores["max_box_acc_v2" if multi_contour else "max_box_acc_mean"] = float(np.mean([scores[_iou_key(d)]
                                                                                       for d in deltas]))
    return (scores, curves) if return_curve else scores


def max_box_acc_v2(
    maps: MapsLike,
    boxes: Sequence,
    grid_size: ArrayLike,
    iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
    cam_curve_interval: float = DEFAULT_CAM_CURVE_INTERVAL,
    multi_contour: bool = True,
    return_curve: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, np.ndarray]]:
    """MaxBoxAccV2 (wsolevaluation's BoxEvaluator, multi-contour, multi-IoU) over a set of images.

    Args:
        maps, boxes, grid_size, cam_curve_interval, multi_contour: as `best_box_ious`.
        iou_thresholds: the deltas, whole percentages.
        return_curve: also return, per key ``max_box_acc_iou<d>``, the box accuracy at every CAM threshold.

    Returns:
        ``{"max_box_acc_iou30": ..., "max_box_acc_iou50": ..., "max_box_acc_iou70": ..., "max_box_acc_v2": mean}``
        (one ``max_box_acc_iou<100 delta>`` per delta; fractions). With ``multi_contour=False`` the mean is keyed
        ``max_box_acc_mean`` and ``max_box_acc_iou50`` is the CVPR paper's MaxBoxAcc (see the module docstring for
        how its "largest contour" differs from OpenCV's).
    """
    ious = best_box_ious(maps, boxes, grid_size, cam_curve_interval, multi_contour)
    return max_box_acc_from_ious(ious, iou_thresholds, multi_contour, return_curve)
