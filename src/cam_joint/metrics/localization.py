"""Localisation metrics for CAMs ("where does a map look?") and the scores of maps that ignore the image.

Maps are (B, h, w) torch tensors or numpy arrays at CAM resolution, or sequences of (h_i, w_i) maps, as in
`cam_agreement`; ground truth is given at the resolution the maps are judged at (H x W, e.g. the processor's
224 x 224 output). Each map is bilinearly upsampled (align_corners=False, `torch.nn.functional.interpolate`) to its
ground truth's size in float64 on the CPU. Maps must be at least 2 x 2 cells (a 1-cell map cannot point anywhere)
and finite (a NaN map is a broken CAM: ValueError, never a silent NaN score); ground truth may not be smaller than
its map. All scores are fractions in [0, 1] (wsolevaluation prints them x100).

Definitions
-----------
* **Pointing game** (`cam_agreement.pointing_game_mask` / `pointing_game_keypoints`, reused here): the map's peak
  lies on the object's evidence. A constant map has no peak and is a miss.
* **Energy pointing** (`energy_pointing`; the "energy-based pointing game" of Score-CAM, Wang et al., CVPR-W 2020):
  ``sum(map[mask]) / sum(map)`` of the upsampled map. Negative values are clipped to 0 *at CAM resolution, before
  upsampling*, as Grad-CAM's ReLU does before a map is resized for display (for Grad-CAM maps, already >= 0, the
  order does not matter). An all-zero map scores 0. A constant positive map scores the mask's area fraction.
* **PxAP** (`pxap`; pixel average precision, Choe et al., "Evaluating Weakly Supervised Object Localization
  Methods Right", CVPR 2020, `MaskEvaluator` of github.com/clovaai/wsolevaluation): each upsampled map is min-max
  normalised to [0, 1] (a map constant at CAM resolution becomes all zeros); with thresholds
  ``t in arange(0, 1, cam_curve_interval)`` plus 1.0, a pixel is predicted positive at ``t`` when its score is >= t; true and false positives are counted
  over all pixels of all images (so large masks weigh more, as in the reference), giving precision P_t and recall
  R_t; ``PxAP = sum_t P_t (R_t - R_t')`` over thresholds in decreasing order, t' the next larger threshold
  (R = 0 above 1.0), skipping thresholds where nothing is predicted positive. Pixels in optional ignore masks count
  as neither positive nor negative (OpenImages' ignore regions).
* **MaxBoxAccV2** (`max_box_acc_v2`; `BoxEvaluator` with ``multi_contour_eval=True`` and ``multi_iou_eval=True``):
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

Baselines
---------
`baseline_scores` scores maps that ignore the image, for a set of images' ground truth and the CAM resolution
(h, w), reduced over the set as `score_maps` reduces real maps; `metrics.json` files them as ``<metric>_chance``
and ``<metric>_center`` (see `metrics/registry.py`):

* ``chance``: i.i.d. uniform [0, 1) values per CAM cell (h x w), upsampled like a real map: what a CAM with no
  information about the object scores. For the mask pointing game this is computed exactly (every cell is equally
  likely to hold the maximum, so the score is the mean over cells of "does a map peaking there hit"); at full
  resolution it is the mask's area fraction. The other metrics average `draws` independent sets of random maps
  (numpy PCG64 from `seed`; deterministic). Spread of one draw's set-level score over 500 images (12 x 12 maps,
  ellipse masks covering 3-38 % of the image, judged at 96 and 224): keypoint pointing game ~0.01-0.02, energy
  pointing ~0.001, PxAP ~0.002, MaxBoxAccV2 ~0.006 (MaxBoxAcc@30 ~0.015), which sets the default draws
  (16, 4, 2, 1).
* ``center``: one fixed isotropic Gaussian over the CAM grid, centred on the image (at cell coordinates
  ((h - 1) / 2, (w - 1) / 2)), sigma = `CENTER_SIGMA_FRAC` (a quarter) of the shorter side, in cells (isotropic in
  pixels when cells are square): the score of a "look at the middle" prior (birds and flowers are photographed
  centred). With an even h or w several cells tie for the peak; the pointing game takes the first
  (`torch.argmax`), half a cell up-left of the centre.

A baseline depends on the ground truth and the CAM resolution only, so one value serves both heads when their maps
have the same resolution.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from scipy.sparse import csgraph

from .cam_agreement import MapsLike, _as_maps, _peak, pointing_game_keypoints, pointing_game_mask

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence]

DEFAULT_IOU_THRESHOLDS = (0.3, 0.5, 0.7)  # wsolevaluation's iou_threshold_list (30, 50, 70)
DEFAULT_CAM_CURVE_INTERVAL = 0.01
CENTER_SIGMA_FRAC = 0.25  # sigma of the centre prior, as a fraction of the CAM grid's shorter side
BASELINE_KINDS = ("chance", "center")


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


# ----------------------------------------------------------------------------------------------- energy pointing
def energy_pointing(maps: MapsLike, masks: ArrayLike) -> np.ndarray:
    """Per image, the share of the map's energy inside the mask: ``sum(map[mask]) / sum(map)``, a (B,) float64 array.

    Args:
        maps: (B, h, w) CAMs or a sequence of (h_i, w_i) maps. Negative values are clipped to 0 at CAM resolution,
            then the map is upsampled bilinearly to its mask's size.
        masks: (B, H, W) masks or a sequence of (H_i, W_i) masks; nonzero means inside.

    An all-zero map (after clipping) scores 0; so does every map against an empty mask (leave such images out of a
    mean, as the pointing game does).
    """
    map_list = _check_maps(maps)
    mask_list = _as_masks(masks, "masks", map_list)
    scores = np.zeros(len(map_list), dtype=np.float64)
    for i, (m, mask) in enumerate(zip(map_list, mask_list)):
        up = _upsample(m.clamp(min=0), mask.shape)
        total = up.sum()
        scores[i] = float(up[mask].sum() / total) if total > 0 else 0.0
    return scores


# ----------------------------------------------------------------------------------------------- PxAP
def _histogram_edges(cam_curve_interval: float) -> np.ndarray:
    # wsolevaluation's bins: [0, bw), [bw, 2bw), ..., [1 - bw, 1), [1, 2), [2, 3]. A score of exactly 1.0 lands in
    # [1, 2), so the top threshold 1.0 predicts only the maximum pixels.
    return np.append(cam_thresholds(cam_curve_interval), [1.0, 2.0, 3.0])


def pixel_score_histograms(
    maps: MapsLike,
    masks: ArrayLike,
    cam_curve_interval: float = DEFAULT_CAM_CURVE_INTERVAL,
    ignore_masks: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Histograms of normalised map scores at mask pixels and at background pixels, summed over the images.

    The sufficient statistics of PxAP: sum them over batches and call `pxap_from_histograms`, so an evaluation
    loop need not keep maps or masks. Bins are wsolevaluation's (see `pxap`); returns (positive, negative), each of
    length ``len(cam_thresholds(cam_curve_interval)) + 2``.

    Args:
        maps: (B, h, w) CAMs or a sequence of (h_i, w_i) maps.
        masks: (B, H, W) masks or a sequence; nonzero means object.
        cam_curve_interval: threshold spacing.
        ignore_masks: optional masks like `masks`; their pixels count as neither object nor background.
    """
    map_list = _check_maps(maps)
    mask_list = _as_masks(masks, "masks", map_list)
    ignore_list = None if ignore_masks is None else _as_masks(ignore_masks, "ignore_masks", map_list)
    edges = _histogram_edges(cam_curve_interval)
    num_bins = len(edges) - 1
    positive = np.zeros(num_bins, dtype=np.int64)
    negative = np.zeros(num_bins, dtype=np.int64)
    for i, (m, mask) in enumerate(zip(map_list, mask_list)):
        if ignore_list is not None and ignore_list[i].shape != mask.shape:
            raise ValueError(f"ignore_masks[{i}] is {ignore_list[i].shape} but masks[{i}] is {mask.shape}")
        score = _scores(m, mask.shape)
        # np.histogram's rule for explicit edges: bin j holds edges[j] <= s < edges[j + 1].
        bins = np.searchsorted(edges, score.ravel(), side="right") - 1
        inside = mask.ravel()
        keep = np.ones_like(inside) if ignore_list is None else ~ignore_list[i].ravel()
        positive += np.bincount(bins[inside & keep], minlength=num_bins)
        negative += np.bincount(bins[~inside & keep], minlength=num_bins)
    return positive, negative


def pxap_from_histograms(
    positive: np.ndarray,
    negative: np.ndarray,
    cam_curve_interval: float = DEFAULT_CAM_CURVE_INTERVAL,
    return_curve: bool = False,
) -> float | tuple[float, dict[str, np.ndarray]]:
    """PxAP from `pixel_score_histograms`' counts (summed over any number of batches).

    Returns:
        PxAP in [0, 1]; with `return_curve`, also ``{"thresholds", "precision", "recall"}``: arrays over the
        thresholds 1.0, 1 - bw, ..., 0 (a pixel with score >= t is predicted positive); precision is NaN where no
        pixel is predicted positive.

    Raises:
        ValueError: no object pixel in the set (recall undefined), or no pixel at all outside the ignore masks.
    """
    edges = _histogram_edges(cam_curve_interval)
    positive, negative = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if positive.shape != (len(edges) - 1,) or negative.shape != positive.shape:
        raise ValueError(
            f"histograms must have {len(edges) - 1} bins for cam_curve_interval={cam_curve_interval}; got "
            f"{positive.shape} and {negative.shape}"
        )
    if positive.sum() <= 0:
        raise ValueError("PxAP needs at least one object pixel in the set; every mask is empty (or ignored)")
    # Cumulating from the top bin: entry j counts the pixels scoring >= edges[-2 - j], i.e. >= 2, 1, 1 - bw, ..., 0.
    tp, fp = np.cumsum(positive[::-1]), np.cumsum(negative[::-1])
    predicted = tp + fp
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, np.nan)
    recall = tp / positive.sum()
    # Entry 0 (score >= 2) never predicts anything; it is the R = 0 start of the step integral.
    defined = predicted[1:] > 0
    ap = float((precision[1:][defined] * np.diff(recall)[defined]).sum())
    if not return_curve:
        return ap
    curve = {"thresholds": edges[:-2][::-1].copy(), "precision": precision[1:], "recall": recall[1:]}
    return ap, curve


def pxap(
    maps: MapsLike,
    masks: ArrayLike,
    cam_curve_interval: float = DEFAULT_CAM_CURVE_INTERVAL,
    ignore_masks: ArrayLike | None = None,
    return_curve: bool = False,
) -> float | tuple[float, dict[str, np.ndarray]]:
    """Pixel average precision of the maps against the masks over the whole set, as wsolevaluation's MaskEvaluator.

    Args:
        maps: (B, h, w) CAMs or a sequence of (h_i, w_i) maps; each is upsampled to its mask and min-max normalised.
        masks: (B, H, W) masks or a sequence of (H_i, W_i) masks; nonzero means object.
        cam_curve_interval: threshold spacing (wsolevaluation's CLI default 0.01).
        ignore_masks: optional; pixels counted as neither object nor background.
        return_curve: also return the precision-recall curve (see `pxap_from_histograms`).

    Returns:
        PxAP in [0, 1] (wsolevaluation prints x100). A map equal to the mask scores 1; a map independent of the mask
        scores about the set's object-pixel fraction.
    """
    positive, negative = pixel_score_histograms(maps, masks, cam_curve_interval, ignore_masks)
    return pxap_from_histograms(positive, negative, cam_curve_interval, return_curve)


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


# ----------------------------------------------------------------------------------------------- baselines
class _MetricSpec(NamedTuple):
    score: Callable[[MapsLike, Mapping[str, Any]], dict[str, float]]  # set-level score(s) of maps
    count_key: str | None  # the ground-truth entry with one item per image (None: the first entry)
    draws: int  # default number of chance draws (sampling std of one draw on 500 images in the module docstring)
    exact_chance: Callable[[Mapping[str, Any], tuple[int, int]], dict[str, float]] | None = None


def _mean_where(values: np.ndarray, keep: np.ndarray, what: str) -> float:
    if not keep.any():
        raise ValueError(f"no image has {what}; the score is undefined")
    return float(np.asarray(values, np.float64)[keep].mean())


def _nonempty(masks: ArrayLike) -> np.ndarray:
    return np.array([bool((m.detach().cpu() != 0).any()) if isinstance(m, torch.Tensor) else bool(np.any(m))
                     for m in masks])


def _score_pointing_game(maps: MapsLike, gt: Mapping[str, Any]) -> dict[str, float]:
    return {"pointing_game": _mean_where(pointing_game_mask(maps, gt["masks"]), _nonempty(gt["masks"]),
                                         "a non-empty mask")}


def _score_pointing_game_keypoints(maps: MapsLike, gt: Mapping[str, Any]) -> dict[str, float]:
    hits, evaluable = pointing_game_keypoints(maps, return_evaluable=True, **gt)
    return {"pointing_game_keypoints": _mean_where(hits, evaluable, "an eligible keypoint")}


def _score_energy_pointing(maps: MapsLike, gt: Mapping[str, Any]) -> dict[str, float]:
    return {"energy_pointing": _mean_where(energy_pointing(maps, gt["masks"]), _nonempty(gt["masks"]),
                                           "a non-empty mask")}


def _score_pxap(maps: MapsLike, gt: Mapping[str, Any]) -> dict[str, float]:
    return {"pxap": pxap(maps, **gt)}


def _score_max_box_acc(maps: MapsLike, gt: Mapping[str, Any]) -> dict[str, float]:
    return max_box_acc_v2(maps, **gt)


def _one_hot_maps(map_size: tuple[int, int]) -> np.ndarray:
    """(h * w, h, w): one map per cell, peaking at that cell."""
    h, w = map_size
    return np.eye(h * w, dtype=np.float64).reshape(h * w, h, w)


# The pointing game looks at the argmax cell only, and for i.i.d. continuous cells every cell is the argmax with
# probability 1 / (h w) (ties have probability 0). So its chance score is exactly the mean, over cells, of whether
# the peak of a map peaking at that cell hits: no sampling noise. The peaks come from `cam_agreement._peak`, the
# function `pointing_game_mask` itself uses.
def _exact_chance_pointing_game(gt: Mapping[str, Any], map_size: tuple[int, int]) -> dict[str, float]:
    cells = torch.as_tensor(_one_hot_maps(map_size))
    masks = [np.asarray(m.detach().cpu() if isinstance(m, torch.Tensor) else m) != 0 for m in gt["masks"]]
    peaks: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    rates = np.zeros(len(masks))
    for i, mask in enumerate(masks):
        if mask.ndim != 2 or mask.size == 0:
            raise ValueError(f"masks[{i}] must be a non-empty (H, W) mask; got shape {mask.shape}")
        if mask.shape not in peaks:
            rows, cols = zip(*(_peak(cell, *mask.shape) for cell in cells))
            peaks[mask.shape] = (np.asarray(rows), np.asarray(cols))
        rates[i] = mask[peaks[mask.shape]].mean()
    return {"pointing_game": _mean_where(rates, _nonempty(masks), "a non-empty mask")}


_METRICS: dict[str, _MetricSpec] = {
    "pointing_game": _MetricSpec(_score_pointing_game, "masks", 1, _exact_chance_pointing_game),
    "pointing_game_keypoints": _MetricSpec(_score_pointing_game_keypoints, "keypoints", 16),
    "energy_pointing": _MetricSpec(_score_energy_pointing, "masks", 4),
    "pxap": _MetricSpec(_score_pxap, "masks", 2),
    "max_box_acc_v2": _MetricSpec(_score_max_box_acc, "boxes", 1),
}
LOCALIZATION_METRICS = tuple(_METRICS)


def _resolve(metric: str | Callable) -> _MetricSpec:
    if callable(metric):
        name = getattr(metric, "__name__", "metric")

        def score(maps: MapsLike, gt: Mapping[str, Any]) -> dict[str, float]:
            value = metric(maps, **gt)
            if isinstance(value, Mapping):
                return {k: float(v) for k, v in value.items()}
            return {name: float(np.asarray(value, np.float64).mean())}

        return _MetricSpec(score, None, 4)
    if metric not in _METRICS:
        raise ValueError(f"unknown localisation metric {metric!r}; known: {', '.join(_METRICS)}, or pass a callable")
    return _METRICS[metric]


def _num_images(spec: _MetricSpec, gt: Mapping[str, Any]) -> int:
    if spec.count_key is None:
        if not gt:
            raise ValueError("ground_truth is empty; a callable metric's image count is the length of its first entry")
        return len(next(iter(gt.values())))
    if spec.count_key not in gt:
        raise ValueError(f"ground_truth needs {spec.count_key!r}; got keys {sorted(gt)}")
    return len(gt[spec.count_key])


def score_maps(metric: str | Callable, maps: MapsLike, ground_truth: Mapping[str, Any]) -> dict[str, float]:
    """Set-level score(s) of real maps, reduced exactly as `baseline_scores` reduces its baseline maps.

    Args:
        metric: one of `LOCALIZATION_METRICS` or a callable ``fn(maps, **ground_truth)`` returning a float, a (B,)
            array (averaged) or a dict of floats.
        maps: (B, h, w) CAMs.
        ground_truth: the metric's keyword arguments besides the maps:
            ``pointing_game``, ``energy_pointing``: ``{"masks"}``, averaged over images with a non-empty mask
            (as evaluation.py averages the pointing game);
            ``pointing_game_keypoints``: `pointing_game_keypoints`' arguments (``keypoints``, ``image_sizes``, and
            optionally ``crop_boxes``, ``part_ids``, ``radius_frac``), averaged over evaluable images;
            ``pxap``: ``{"masks"}`` and optionally ``ignore_masks``, ``cam_curve_interval``;
            ``max_box_acc_v2``: ``{"boxes", "grid_size"}`` and optionally ``iou_thresholds``,
            ``cam_curve_interval``, ``multi_contour``.

    Returns:
        ``{metric: value}`` for a single score; `max_box_acc_v2`'s keys for boxes.
    """
    return _resolve(metric).score(maps, dict(ground_truth))


def _map_size(map_size: Sequence[int]) -> tuple[int, int]:
    size = tuple(map_size)
    if len(size) != 2 or any(isinstance(v, bool) or int(v) != v for v in size):
        raise ValueError(f"map_size must be (h, w) ints; got {map_size!r}")
    h, w = int(size[0]), int(size[1])
    if h < 2 or w < 2:
        raise ValueError(f"map_size is {h}x{w}; a CAM needs at least 2x2 cells to localise anything")
    return h, w


def center_prior_map(map_size: tuple[int, int], sigma_frac: float = CENTER_SIGMA_FRAC) -> np.ndarray:
    """(h, w) isotropic Gaussian in cell units centred on the grid, sigma = sigma_frac * min(h, w) cells, peak 1
    at the centre (the cells themselves peak below 1 when h or w is even)."""
    h, w = _map_size(map_size)
    if not sigma_frac > 0:
        raise ValueError(f"sigma_frac must be positive; got {sigma_frac}")
    sigma = sigma_frac * min(h, w)
    rows = (np.arange(h) - (h - 1) / 2.0)[:, None]
    cols = (np.arange(w) - (w - 1) / 2.0)[None, :]
    return np.exp(-(rows**2 + cols**2) / (2.0 * sigma**2))


def baseline_maps(
    kind: str, num_maps: int, map_size: tuple[int, int], rng: np.random.Generator | int | None = 0
) -> np.ndarray:
    """(num_maps, h, w) float64 maps that ignore the image: ``"chance"`` (i.i.d. uniform [0, 1) per cell, from
    `rng`, a Generator or a seed) or ``"center"`` (`center_prior_map`, the same for every image)."""
    h, w = _map_size(map_size)
    if num_maps < 1:
        raise ValueError(f"num_maps must be positive; got {num_maps}")
    if kind == "chance":
        generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        return generator.random((num_maps, h, w))
    if kind == "center":
        return np.repeat(center_prior_map((h, w))[None], num_maps, axis=0)
    raise ValueError(f"unknown baseline kind {kind!r}; known: {', '.join(BASELINE_KINDS)}")


def baseline_scores(
    metric: str | Callable,
    ground_truth: Mapping[str, Any],
    map_size: tuple[int, int],
    kind: str = "chance",
    draws: int | None = None,
    seed: int = 0,
    key: str | None = None,
    return_std: bool = False,
) -> dict[str, float]:
    """Scores of image-blind maps on a set of images' ground truth, keyed for metrics.json as ``<key>_<kind>``.

    Args:
        metric, ground_truth: as `score_maps` (one entry of ground truth per image).
        map_size: the CAM resolution (h, w), e.g. (12, 12); the baseline maps are upsampled like real CAMs.
        kind: ``"chance"`` (uniform random cells) or ``"center"`` (centred Gaussian); see the module docstring.
        draws: independent sets of chance maps to average; None: the metric's default (keypoint pointing game 16,
            energy pointing 4, PxAP 2, MaxBoxAccV2 1, a callable 4). Unused by the mask pointing game, whose chance
            score is computed exactly, and by ``"center"``, which is deterministic.
        seed: seeds numpy's PCG64; the result is a function of (ground truth, map_size, kind, draws, seed) only.
        key: the name to file a single-score metric under, e.g. ``"pointing_game"`` for
            ``"pointing_game_keypoints"`` or ``"pointing_game_bbox"`` for box masks; default: the metric's own.
        return_std: also return ``<key>_<kind>_std``, the standard deviation of the set-level score across draws
            (sampled chance scores with draws >= 2): how far one draw's baseline would wander.

    Returns:
        e.g. ``{"pxap_chance": 0.21}``; for ``max_box_acc_v2``, ``{"max_box_acc_iou30_chance", ...,
        "max_box_acc_v2_chance"}``.
    """
    spec = _resolve(metric)
    gt = dict(ground_truth)
    size = _map_size(map_size)
    n = _num_images(spec, gt)
    if kind not in BASELINE_KINDS:
        raise ValueError(f"unknown baseline kind {kind!r}; known: {', '.join(BASELINE_KINDS)}")
    draws = spec.draws if draws is None else draws
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive int; got {draws!r}")
    if kind == "chance" and spec.exact_chance is not None:
        runs = [spec.exact_chance(gt, size)]
    else:
        rng = np.random.default_rng(seed)
        runs = [spec.score(baseline_maps(kind, n, size, rng), gt) for _ in range(draws if kind == "chance" else 1)]
    names = list(runs[0])
    if key is not None:
        if len(names) != 1:
            raise ValueError(f"key= renames a single score, but {metric!r} gives {names}")
        runs = [{key: r[names[0]]} for r in runs]
        names = [key]
    out = {f"{name}_{kind}": float(np.mean([r[name] for r in runs])) for name in names}
    if return_std and len(runs) > 1:
        out.update({f"{name}_{kind}_std": float(np.std([r[name] for r in runs], ddof=1)) for name in names})
    return out


__all__ = [
    "BASELINE_KINDS",
    "CENTER_SIGMA_FRAC",
    "DEFAULT_CAM_CURVE_INTERVAL",
    "DEFAULT_IOU_THRESHOLDS",
    "LOCALIZATION_METRICS",
    "baseline_maps",
    "baseline_scores",
    "best_box_ious",
    "box_iou",
    "boxes_from_scoremap",
    "cam_thresholds",
    "center_prior_map",
    "energy_pointing",
    "mask_to_box",
    "max_box_acc_from_ious",
    "max_box_acc_v2",
    "pixel_score_histograms",
    "pxap",
    "pxap_from_histograms",
    "score_maps",
]
