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
  ``t in arange(0, 1, cam_curve_interval)`` plus 1.0, a pixel is predicted positive at ``t`` when its score is
  >= t; true and false positives are counted
  over all pixels of all images (so large masks weigh more, as in the reference), giving precision P_t and recall
  R_t; ``PxAP = sum_t P_t (R_t - R_t')`` over thresholds in decreasing order, t' the next larger threshold
  (R = 0 above 1.0), skipping thresholds where nothing is predicted positive. Pixels in optional ignore masks count
  as neither positive nor negative (OpenImages' ignore regions).
* **MaxBoxAccV2** (`max_box_acc_v2`, defined in `box_accuracy`): wsolevaluation's `BoxEvaluator` with
  ``multi_contour_eval`` and ``multi_iou_eval``: boxes of every contour of the thresholded map, best IoU per
  threshold, best threshold per IoU 0.3/0.5/0.7, their mean.

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

from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from .box_accuracy import (DEFAULT_IOU_THRESHOLDS, best_box_ious, box_iou, boxes_from_scoremap, mask_to_box,
                           max_box_acc_from_ious, max_box_acc_v2)
from .cam_agreement import MapsLike, _peak, pointing_game_keypoints, pointing_game_mask
from .map_inputs import (DEFAULT_CAM_CURVE_INTERVAL, ArrayLike, _as_masks, _check_maps, _scores, _upsample,
                         cam_thresholds)

CENTER_SIGMA_FRAC = 0.25  # sigma of the centre prior, as a fraction of the CAM grid's shorter side
BASELINE_KINDS = ("chance", "center")


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
