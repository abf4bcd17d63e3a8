"""Localisation metrics (energy pointing, PxAP, MaxBoxAccV2) and their chance / centre baselines.

Hand-computed cases pin each definition; wsolevaluation's own unit-test cases and an OpenCV transcription of its
box code (when OpenCV is installed) pin the reference behaviour; closed forms and sampling-error bounds pin the
baselines. Every tolerance on a sampled quantity is a multiple of its standard error, not a tuned number.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from cam_joint.metrics import pointing_game_keypoints, pointing_game_mask
from cam_joint.metrics.localization import (
    CENTER_SIGMA_FRAC,
    LOCALIZATION_METRICS,
    baseline_maps,
    baseline_scores,
    best_box_ious,
    box_iou,
    boxes_from_scoremap,
    cam_thresholds,
    center_prior_map,
    energy_pointing,
    mask_to_box,
    max_box_acc_from_ious,
    max_box_acc_v2,
    pixel_score_histograms,
    pxap,
    pxap_from_histograms,
    score_maps,
)

Z = 4.0  # sampled estimates must lie within Z standard errors (a false alarm once in ~16 000 seeds)


def t_bound(draws: int) -> float:
    """Z's two-sided tail probability for a standard error estimated from `draws` samples (Student's t)."""
    return float(stats.t.ppf(stats.norm.cdf(Z), draws - 1))


def upsample_normalize(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The test's own statement of the convention: bilinear (align_corners=False) in float64, then min-max."""
    t = torch.as_tensor(np.asarray(m, np.float64))[None, None]
    up = F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
    up = up - up.min()
    return up / up.max() if up.max() > 0 else up


def ellipse_masks(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(0.3, 0.7, (2, n, 1, 1)) * size
    ry, rx = rng.uniform(0.1, 0.35, (2, n, 1, 1)) * size
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


# ---------------------------------------------------------------- energy pointing


def test_energy_pointing_hand_computed():
    maps = np.array([
        [[1.0, 2.0], [3.0, 4.0]],   # top row holds (1 + 2) / 10 of the energy
        [[-1.0, 1.0], [1.0, 2.0]],  # the -1 is clipped: left column holds 1 / (1 + 1 + 2)
        [[0.0, 0.0], [0.0, 0.0]],   # no energy: 0, not NaN
        [[-3.0, -1.0], [-2.0, -1.0]],  # all negative: clipped to zero energy
    ])
    top = np.array([[1, 1], [0, 0]], bool)
    left = np.array([[1, 0], [1, 0]], bool)
    scores = energy_pointing(maps, [top, left, top, top])
    np.testing.assert_allclose(scores, [0.3, 0.25, 0.0, 0.0], atol=1e-15)


def test_energy_pointing_upsamples_bilinearly():
    # Columns (0, 4) upsampled 2 -> 4 with align_corners=False: 0, 1, 3, 4 (the edges replicate), every row alike.
    maps = torch.tensor([[[0.0, 4.0], [0.0, 4.0]]])
    right_half = np.zeros((4, 4), bool)
    right_half[:, 2:] = True
    assert energy_pointing(maps, right_half[None])[0] == pytest.approx((3 + 4) / (0 + 1 + 3 + 4), abs=1e-15)
    # Negative cells are clipped before upsampling (Grad-CAM's ReLU): (-4, 4) -> (0, 4) -> 0, 1, 3, 4 again;
    # clipping after upsampling would give -4, -2, 2, 4 -> 0, 0, 2, 4 and a share of 1.
    signed = torch.tensor([[[-4.0, 4.0], [-4.0, 4.0]]])
    assert energy_pointing(signed, right_half[None])[0] == pytest.approx(7 / 8, abs=1e-15)


def test_energy_pointing_of_a_uniform_map_is_the_area_fraction():
    rng = np.random.default_rng(0)
    masks = rng.random((5, 60, 45)) < rng.uniform(0.05, 0.9, (5, 1, 1))
    scores = energy_pointing(np.full((5, 7, 9), 2.5), masks)
    np.testing.assert_allclose(scores, masks.mean(axis=(1, 2)), rtol=1e-12)


# ---------------------------------------------------------------- PxAP


def test_pxap_hand_computed():
    # One 2x2 image judged at 2x2 (no upsampling); scores are already in [0, 1]. Object pixels score 1.0 and 0.25,
    # background 0.5 and 0.0. Going down the thresholds: at 1.0 one TP (P = 1, R = 1/2); at 0.5 one TP + one FP
    # (R unchanged); at 0.25 two TP + one FP (P = 2/3, R = 1); at 0 (P = 1/2, R unchanged).
    # AP = 1 * 1/2 + 2/3 * 1/2 = 5/6.
    maps = np.array([[[1.0, 0.5], [0.25, 0.0]]])
    mask = np.array([[[1, 0], [1, 0]]], bool)
    ap, curve = pxap(maps, mask, return_curve=True)
    assert ap == pytest.approx(5 / 6, abs=1e-12)
    assert curve["thresholds"][0] == 1.0 and curve["thresholds"][-1] == 0.0
    assert len(curve["thresholds"]) == len(curve["precision"]) == len(curve["recall"]) == 101
    assert curve["precision"][0] == 1.0 and curve["recall"][0] == 0.5
    assert curve["precision"][-1] == 0.5 and curve["recall"][-1] == 1.0
    # Ignoring the background pixel at 0.5 removes the only false positive above 0.25: AP = 1.
    ignore = np.array([[[0, 1], [0, 0]]], bool)
    assert pxap(maps, mask, ignore_masks=ignore) == pytest.approx(1.0, abs=1e-12)


def test_pxap_of_a_perfect_map_and_of_the_mask_itself_is_one():
    rng = np.random.default_rng(1)
    masks = ellipse_masks(rng, 4, 40)
    assert pxap(masks.astype(np.float64), masks) == 1.0  # the map is exactly the mask
    # Any map that ranks every object pixel above every background pixel (by more than a bin) is perfect too.
    perfect = np.where(masks, rng.uniform(0.6, 1.0, masks.shape), rng.uniform(0.0, 0.4, masks.shape))
    assert pxap(perfect, masks) == 1.0
    assert pxap(1.0 - perfect, masks) < 0.5  # and its inverse is not


def test_pxap_of_a_constant_map_is_the_object_fraction():
    # wsolevaluation's own test: a constant score map scores (object pixels) / (all pixels).
    rng = np.random.default_rng(2)
    masks = ellipse_masks(rng, 3, 32)
    assert pxap(np.full((3, 4, 4), 0.7), masks) == pytest.approx(masks.mean(), abs=1e-12)


def reference_pxap(scores: list[np.ndarray], masks: list[np.ndarray], interval: float) -> float:
    """PxAP restated as plain loops: for each threshold, from the top, count pixels scoring >= it."""
    s = np.concatenate([x.ravel() for x in scores])
    y = np.concatenate([m.ravel() for m in masks])
    ap, last_recall = 0.0, 0.0
    for t in [1.0] + list(np.arange(0, 1, interval))[::-1]:
        predicted = s >= t
        tp, fp = int((predicted & y).sum()), int((predicted & ~y).sum())
        if tp + fp == 0:
            continue
        recall = tp / y.sum()
        ap += tp / (tp + fp) * (recall - last_recall)
        last_recall = recall
    return ap


@pytest.mark.parametrize("interval", [0.01, 0.05])
def test_pxap_matches_a_loop_transcription_of_wsolevaluation(interval):
    rng = np.random.default_rng(3)
    masks = ellipse_masks(rng, 6, 48)
    maps = rng.random((6, 6, 6)) + 2 * torch.nn.functional.avg_pool2d(
        torch.as_tensor(masks, dtype=torch.float64)[:, None], 8)[:, 0].numpy()
    expected = reference_pxap([upsample_normalize(m, (48, 48)) for m in maps], list(masks), interval)
    assert pxap(maps, masks, cam_curve_interval=interval) == pytest.approx(expected, abs=1e-12)
    assert 0.3 < expected < 1.0  # a non-trivial case


def test_pxap_histograms_add_up_over_batches():
    rng = np.random.default_rng(4)
    masks = ellipse_masks(rng, 6, 24)
    maps = rng.random((6, 5, 5))
    pos_a, neg_a = pixel_score_histograms(maps[:2], masks[:2])
    pos_b, neg_b = pixel_score_histograms(maps[2:], masks[2:])
    assert pos_a.sum() + pos_b.sum() == masks.sum()
    assert neg_a.sum() + neg_b.sum() == (~masks).sum()
    assert pxap_from_histograms(pos_a + pos_b, neg_a + neg_b) == pxap(maps, masks)


# ---------------------------------------------------------------- boxes


def test_box_iou_and_mask_to_box_hand_computed():
    # wsolevaluation's realistic case: inclusive boxes, 2 x 4 = 8 shared pixels of 25 + 10 - 8 = 27.
    assert box_iou(np.array([[1, 2, 5, 6]]), np.array([[3, 1, 4, 5]]))[0, 0] == pytest.approx(8 / 27, abs=1e-15)
    ious = box_iou(np.array([[0, 0, 0, 0], [2, 2, 3, 3]]), np.array([[0, 0, 0, 0], [5, 5, 6, 6]]))
    np.testing.assert_array_equal(ious, [[1.0, 0.0], [0.0, 0.0]])  # a 1-pixel box is a real box
    mask = np.zeros((6, 8), bool)
    mask[1:4, 2:7] = True
    assert mask_to_box(mask) == (2, 1, 6, 3)


def test_boxes_from_scoremap_on_wsolevaluations_cases():
    unimodal = np.array([[0.0, 0.0, 0.0, 0.0, 0.0],
                         [0.0, 0.4, 0.4, 0.4, 0.6],
                         [0.0, 0.4, 1.0, 0.8, 0.6],
                         [0.0, 0.4, 0.4, 0.4, 0.6]])
    boxes = boxes_from_scoremap(unimodal, cam_curve_interval=0.2)
    assert [b.tolist() for b in boxes] == [[[1, 1, 4, 3]], [[1, 1, 4, 3]], [[2, 1, 4, 3]], [[2, 2, 4, 3]],
                                          [[2, 2, 3, 3]]]  # wsolevaluation's expected boxes
    multimodal = np.array([[0.4, 0.0, 0.2, 0.2, 0.2],
                           [0.4, 0.4, 0.0, 0.4, 0.0],
                           [0.0, 0.0, 0.0, 0.4, 0.0],
                           [1.0, 0.6, 0.8, 0.2, 0.2]])
    # All contours (wsolevaluation's test keeps only the largest: the first box of each row where it differs).
    # At 0.2 the 0.4 at (2, 3) joins the bottom row diagonally; at 0.6 the 0.6 itself drops out (255 * 0.6 is
    # not above int(255 * 0.6)), splitting the bottom row in two single pixels.
    expected = [{(0, 0, 4, 3)}, {(0, 0, 2, 2), (0, 1, 4, 3)}, {(0, 3, 3, 3)}, {(0, 3, 1, 3), (2, 3, 3, 3)},
                {(0, 3, 1, 3)}]
    got = [set(map(tuple, b.tolist())) for b in boxes_from_scoremap(multimodal, cam_curve_interval=0.2)]
    assert got == expected
    assert [b.shape for b in boxes_from_scoremap(np.zeros((3, 3)), 0.2)] == [(0, 4)] * 5  # nothing to box


def ring_map() -> np.ndarray:
    m = np.ones((5, 5))
    m[2, 2] = 0.0
    return m


def test_a_hole_contour_adds_a_box_that_can_win():
    # A ring of activation around the object: its component's box is the whole 5x5 grid, the hole's contour runs
    # through the 3x3 ring of pixels around (2, 2), so its box is x 1..3 + 1 = (1, 1, 4, 4).
    assert set(map(tuple, boxes_from_scoremap(ring_map())[0].tolist())) == {(0, 0, 4, 4), (1, 1, 4, 4)}
    gt = [[(1, 1, 3, 3)]]
    # Best IoU: the hole's box, 9 / 16 = 0.5625; the component's box only 9 / 25 = 0.36.
    assert best_box_ious(ring_map()[None], gt, (5, 5))[0, 0] == pytest.approx(9 / 16)
    assert max_box_acc_v2(ring_map()[None], gt, (5, 5)) == pytest.approx(
        {"max_box_acc_iou30": 1.0, "max_box_acc_iou50": 1.0, "max_box_acc_iou70": 0.0, "max_box_acc_v2": 2 / 3})
    single = max_box_acc_v2(ring_map()[None], gt, (5, 5), multi_contour=False)
    assert single == pytest.approx(
        {"max_box_acc_iou30": 1.0, "max_box_acc_iou50": 0.0, "max_box_acc_iou70": 0.0, "max_box_acc_mean": 1 / 3})


def test_max_box_acc_v2_hand_computed_over_a_set():
    # Three 4x4 images judged at full resolution. Image 0: the map is a 2x2 block at rows/cols 1..2, its box
    # (1, 1, 3, 3) against the ground truth (1, 1, 2, 2): IoU 4 / 9. Image 1: the same block against a far box
    # (0, 3, 0, 3): no overlap. Image 2: a block at (0..1, 0..1) whose box (0, 0, 2, 2) against ground truth
    # (0, 0, 1, 1) and (0, 0, 2, 2): the best is 1.
    block = np.zeros((4, 4))
    block[1:3, 1:3] = 1.0
    corner = np.zeros((4, 4))
    corner[:2, :2] = 1.0
    ious = best_box_ious(np.stack([block, block, corner]), [[(1, 1, 2, 2)], (0, 3, 0, 3), [(0, 0, 1, 1), (0, 0, 2, 2)]],
                         (4, 4))
    np.testing.assert_allclose(ious, np.tile([[4 / 9], [0.0], [1.0]], (1, 100)), atol=1e-15)
    # An IoU equal to delta counts (wsolevaluation's >=): 3 / 10, 1 / 2 and 7 / 10 are the same floats as 30 / 100...
    at_delta = max_box_acc_from_ious(np.array([[3 / 10], [1 / 2], [7 / 10]]))
    assert at_delta == pytest.approx({"max_box_acc_iou30": 1.0, "max_box_acc_iou50": 2 / 3,
                                      "max_box_acc_iou70": 1 / 3, "max_box_acc_v2": 2 / 3})
    scores = max_box_acc_from_ious(ious)
    assert scores == pytest.approx({"max_box_acc_iou30": 2 / 3, "max_box_acc_iou50": 1 / 3,
                                    "max_box_acc_iou70": 1 / 3, "max_box_acc_v2": 4 / 9})


def test_max_box_acc_v2_of_maps_that_are_boxes_is_one():
    rng = np.random.default_rng(5)
    maps, boxes = [], []
    for _ in range(6):  # 12x12 CAMs that are blocks of cells, judged at 96x96 (8 pixels a cell)
        r0, c0 = rng.integers(0, 6, 2)
        hgt, wid = rng.integers(3, 7, 2)
        m = np.zeros((12, 12))
        m[r0:r0 + hgt, c0:c0 + wid] = 1.0
        maps.append(m)
        boxes.append([(8 * c0, 8 * r0, 8 * (c0 + wid) - 1, 8 * (r0 + hgt) - 1)])
    scores = max_box_acc_v2(np.stack(maps), boxes, (96, 96))
    assert scores["max_box_acc_v2"] == 1.0
    # At full resolution the box of an indicator map is one pixel wider (wsolevaluation's x + w): IoU
    # (w h) / ((w + 1)(h + 1)), here 20 * 10 / (21 * 11) = 0.866.
    m = np.zeros((32, 32))
    m[5:15, 3:23] = 1.0
    assert best_box_ious(m[None], [[(3, 5, 22, 14)]], (32, 32)).max() == pytest.approx(200 / 231)


def test_a_constant_map_finds_no_box():
    ious = best_box_ious(np.full((2, 6, 6), 0.3), [[(0, 0, 0, 0)], [(0, 0, 95, 95)]], (96, 96))
    assert not ious.any()  # wsolevaluation would score its dummy box (0, 0, 0, 0) against the first: IoU 1


def test_box_statistics_add_up_over_batches():
    rng = np.random.default_rng(6)
    maps = rng.random((5, 6, 6))
    boxes = [[(x0, y0, x0 + 10, y0 + 10)] for x0, y0 in rng.integers(0, 37, (5, 2))]
    whole = best_box_ious(maps, boxes, (48, 48))
    parts = np.concatenate([best_box_ious(maps[:2], boxes[:2], (48, 48)), best_box_ious(maps[2:], boxes[2:], (48, 48))])
    np.testing.assert_array_equal(whole, parts)
    assert max_box_acc_from_ious(whole) == max_box_acc_v2(maps, boxes, (48, 48))


# ---------------------------------------------------------------- against OpenCV (wsolevaluation's own code path)


def opencv_boxes(score: np.ndarray, thresholds: np.ndarray) -> list[np.ndarray]:
    """wsolevaluation's compute_bboxes_from_scoremaps(multi_contour_eval=True), restated with OpenCV."""
    cv2 = pytest.importorskip("cv2")
    height, width = score.shape
    image = (score * 255).astype(np.uint8)
    out = []
    for t in thresholds:
        _, binary = cv2.threshold(image, int(t * np.max(image)), 255, cv2.THRESH_BINARY)
        contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
        boxes = []
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            boxes.append((x, y, min(x + w, width - 1), min(y + h, height - 1)))
        out.append(boxes)
    return out


def random_scoremaps(rng: np.random.Generator, count: int):
    for i in range(count):
        height, width = (int(v) for v in rng.integers(6, 48, 2))
        if i % 3 == 0:  # pixel noise: many components, holes and islands in holes
            h, w = height, width
        else:  # CAM-like: a few cells upsampled
            h, w = (int(v) for v in rng.integers(2, min(height, width, 12) + 1, 2))
        yield upsample_normalize(rng.random((h, w)), (height, width))


def test_boxes_equal_opencv_contours_on_random_maps():
    pytest.importorskip("cv2")
    rng = np.random.default_rng(7)
    thresholds = cam_thresholds(0.01)
    compared = holes_seen = 0
    for score in random_scoremaps(rng, 36):
        ours = boxes_from_scoremap(score)
        ref = opencv_boxes(score, thresholds)
        for t, (a, b) in enumerate(zip(ours, ref)):
            assert sorted(map(tuple, a.tolist())) == sorted(b), f"threshold {thresholds[t]:.2f}"
            compared += 1
        single = boxes_from_scoremap(score, multi_contour=False)
        holes_seen += sum(len(a) > len(s) for a, s in zip(ours, single) if len(s))
    assert compared == 36 * 100 and holes_seen > 0


def reference_max_box_acc(scores: list[np.ndarray], gt: list[list[tuple]], deltas=(30, 50, 70)) -> list[float]:
    """wsolevaluation's BoxEvaluator (multi-contour), in percent, with its dummy box where nothing is found."""
    thresholds = cam_thresholds(0.01)
    correct = {d: np.zeros(len(thresholds)) for d in deltas}
    for score, boxes in zip(scores, gt):
        for t, found in enumerate(opencv_boxes(score, thresholds)):
            found = found or [(0, 0, 0, 0)]
            best = max(
                max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1) * max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
                / ((a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
                   - max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1) * max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1))
                for a in found for b in boxes)
            for d in deltas:
                correct[d][t] += best >= d / 100
    return [100 * correct[d].max() / len(scores) for d in deltas]


def test_max_box_acc_v2_equals_the_opencv_reference():
    pytest.importorskip("cv2")
    rng = np.random.default_rng(8)
    maps = rng.random((40, 6, 6)) ** 3  # peaky CAM-like maps
    gt = []
    for _ in range(40):  # one or two ground-truth boxes in the 48x48 grid
        boxes = []
        for _ in range(int(rng.integers(1, 3))):
            x0, y0 = (int(v) for v in rng.integers(0, 40, 2))
            boxes.append((x0, y0, int(rng.integers(x0, 48)), int(rng.integers(y0, 48))))
        gt.append(boxes)
    expected = reference_max_box_acc([upsample_normalize(m, (48, 48)) for m in maps], gt)
    ours = max_box_acc_v2(maps, gt, (48, 48))
    assert [100 * ours[k] for k in ("max_box_acc_iou30", "max_box_acc_iou50", "max_box_acc_iou70")] == \
        pytest.approx(expected, abs=1e-9)
    assert 100 * ours["max_box_acc_v2"] == pytest.approx(np.mean(expected), abs=1e-9)
    assert 0 < expected[2] < expected[0] < 100  # a non-trivial case


# ---------------------------------------------------------------- baselines


def test_baseline_maps():
    a = baseline_maps("chance", 3, (4, 5), 11)
    assert a.shape == (3, 4, 5) and a.min() >= 0 and a.max() < 1
    np.testing.assert_array_equal(a, baseline_maps("chance", 3, (4, 5), 11))  # deterministic for a seed
    c = center_prior_map((12, 12))
    assert c.shape == (12, 12) and np.unravel_index(c.argmax(), c.shape) == (5, 5)  # 4 cells tie; argmax: first
    np.testing.assert_allclose(c, c[::-1, ::-1], rtol=0, atol=0)  # centred
    # sigma is a quarter of the side: one sigma from the centre along a row, exp(-1/2) of the peak (interpolated).
    sigma = CENTER_SIGMA_FRAC * 13
    assert center_prior_map((13, 13))[6, 6] == 1.0
    assert center_prior_map((13, 13))[6, 6 + 3] == pytest.approx(math.exp(-9 / (2 * sigma**2)))


def test_pointing_game_chance_at_full_resolution_is_the_area_fraction():
    rng = np.random.default_rng(9)
    masks = rng.random((8, 20, 30)) < rng.uniform(0.05, 0.6, (8, 1, 1))
    masks[3] = False  # not evaluable: left out of the mean, as evaluation.py does
    expected = masks[[i for i in range(8) if i != 3]].mean(axis=(1, 2)).mean()
    exact = baseline_scores("pointing_game", {"masks": masks}, (20, 30))
    assert exact == {"pointing_game_chance": pytest.approx(expected, abs=1e-12)}
    # The exact value is what sampling converges to: 200 draws of 7 evaluable images, a binomial standard error.
    hits = [score_maps("pointing_game", baseline_maps("chance", 8, (20, 30), seed), {"masks": masks})["pointing_game"]
            for seed in range(200)]
    se = math.sqrt(expected * (1 - expected) / (200 * 7))
    assert abs(np.mean(hits) - expected) < Z * se


def test_pointing_game_chance_at_cam_resolution_counts_cells():
    # 4x4 maps judged at 8x8: each cell's peak lands at its centre pixel (2 i + 1, 2 j + 1); a mask holding the
    # centre pixels of 3 cells is hit by chance 3 / 16 of the time, whatever else it covers.
    mask = np.zeros((8, 8), bool)
    mask[1, 1] = mask[1, 3] = mask[5, 7] = True
    mask[0, :] = True  # no cell peaks on row 0
    assert baseline_scores("pointing_game", {"masks": [mask]}, (4, 4)) == {"pointing_game_chance": 3 / 16}
    # And the centre prior peaks at the first of its 4 tied centre cells, cell (1, 1): pixel (3, 3).
    hit = np.zeros((8, 8), bool)
    hit[3, 3] = True
    assert baseline_scores("pointing_game", {"masks": [hit, ~hit]}, (4, 4), kind="center") == \
        {"pointing_game_center": 0.5}


def test_keypoint_pointing_game_chance_matches_its_closed_form():
    # 40x40 maps over a 40x40 image (full resolution): the peak pixel is uniform over the 1600 pixels, and a hit
    # when its centre lies within 0.1 * 40 = 4 pixels of the keypoint: count those pixel centres.
    n, draws = 60, 16
    kp = np.zeros((n, 15, 3))
    kp[:, 1] = (20.0, 17.0, 1.0)  # the beak, visible, well inside the image
    centres = np.arange(40) + 0.5
    inside = (np.hypot(centres[None, :] - 20.0, centres[:, None] - 17.0) <= 4.0).sum()
    expected = inside / 1600
    gt = {"keypoints": kp, "image_sizes": np.full((n, 2), 40.0), "part_ids": [2]}
    got = baseline_scores("pointing_game_keypoints", gt, (40, 40), draws=draws, seed=3, key="pointing_game")
    se = math.sqrt(expected * (1 - expected) / (n * draws))
    assert set(got) == {"pointing_game_chance"} and abs(got["pointing_game_chance"] - expected) < Z * se


def test_energy_pointing_chance_at_full_resolution_is_the_area_fraction():
    # For i.i.d. cells E[x_i / sum(x)] = 1 / N by symmetry, so the expected energy share is the area fraction.
    rng = np.random.default_rng(10)
    masks = ellipse_masks(rng, 30, 16)
    draws = 16
    got = baseline_scores("energy_pointing", {"masks": masks}, (16, 16), draws=draws, seed=1, return_std=True)
    se = got["energy_pointing_chance_std"] / math.sqrt(draws)
    assert 0 < se < 0.01
    assert abs(got["energy_pointing_chance"] - masks.mean(axis=(1, 2)).mean()) < t_bound(draws) * se


def test_pxap_chance_is_the_object_pixel_fraction():
    # A map independent of the masks has precision = the object-pixel fraction at every threshold, so AP = that
    # fraction (up to an O(1 / pixels) ratio bias, far below the standard error here).
    rng = np.random.default_rng(11)
    masks = ellipse_masks(rng, 20, 64)
    draws = 16
    got = baseline_scores("pxap", {"masks": masks}, (64, 64), draws=draws, seed=2, return_std=True)
    se = got["pxap_chance_std"] / math.sqrt(draws)
    assert 0 < se < 0.01
    assert abs(got["pxap_chance"] - masks.mean()) < t_bound(draws) * se


def test_center_baselines_of_symmetric_ground_truth():
    left = np.zeros((12, 12), bool)
    left[:, :6] = True
    # The centred Gaussian is mirror-symmetric, so half of its energy, and half of every threshold's pixels,
    # fall on the left half.
    assert baseline_scores("energy_pointing", {"masks": [left]}, (12, 12), kind="center") == \
        {"energy_pointing_center": pytest.approx(0.5, abs=1e-12)}
    assert baseline_scores("pxap", {"masks": [left]}, (12, 12), kind="center") == \
        {"pxap_center": pytest.approx(0.5, abs=1e-12)}
    left96 = np.repeat(np.repeat(left, 8, 0), 8, 1)
    assert baseline_scores("energy_pointing", {"masks": [left96]}, (12, 12), kind="center")[
        "energy_pointing_center"] == pytest.approx(0.5, abs=1e-9)


def test_max_box_acc_v2_baselines_closed_forms():
    # Centre prior: its thresholded blobs are centred squares of every size, so a centred 48x48 object is found
    # (IoU > 0.9) and a 24x24 object in a corner never (best IoU at most (24 / 96) ** 2 = 1/16 < 0.3).
    centred, corner = (24, 24, 71, 71), (0, 0, 23, 23)
    boxes = [[centred]] * 3 + [[corner]] * 7
    center = baseline_scores("max_box_acc_v2", {"boxes": boxes, "grid_size": (96, 96)}, (12, 12), kind="center")
    assert center == pytest.approx({"max_box_acc_iou30_center": 0.3, "max_box_acc_iou50_center": 0.3,
                                    "max_box_acc_iou70_center": 0.3, "max_box_acc_v2_center": 0.3})
    # Chance: the lowest threshold keeps all but the minimum pixels, whose box is the whole image, so an object
    # that fills the image is always found; a 1-pixel object, never at IoU 0.3 (the smallest box has 4 pixels
    # since wsolevaluation's box is one pixel wider than the component).
    boxes = [[(0, 0, 47, 47)]] * 4 + [[(20, 20, 20, 20)]] * 4
    chance = baseline_scores("max_box_acc_v2", {"boxes": boxes, "grid_size": (48, 48)}, (6, 6), draws=2)
    assert chance["max_box_acc_iou70_chance"] == chance["max_box_acc_iou30_chance"] == 0.5


def test_baselines_are_deterministic_and_seeded():
    rng = np.random.default_rng(12)
    masks = ellipse_masks(rng, 10, 24)
    a = baseline_scores("energy_pointing", {"masks": masks}, (6, 6), seed=5)
    assert a == baseline_scores("energy_pointing", {"masks": masks}, (6, 6), seed=5)
    assert a != baseline_scores("energy_pointing", {"masks": masks}, (6, 6), seed=6)
    # key= files a score under the name metrics.json uses, e.g. the pointing game on box masks.
    assert set(baseline_scores("pointing_game", {"masks": masks}, (6, 6), key="pointing_game_bbox")) == \
        {"pointing_game_bbox_chance"}
    # A callable metric: a per-image array is averaged.
    got = baseline_scores(energy_pointing, {"masks": masks}, (6, 6), kind="center")
    assert got == {"energy_pointing_center": pytest.approx(energy_pointing(
        np.repeat(center_prior_map((6, 6))[None], 10, 0), masks).mean())}
    assert set(LOCALIZATION_METRICS) == {"pointing_game", "pointing_game_keypoints", "energy_pointing", "pxap",
                                         "max_box_acc_v2"}


def test_score_maps_reduces_as_the_baselines_do():
    rng = np.random.default_rng(13)
    masks = ellipse_masks(rng, 6, 24)
    masks[0] = False
    maps = rng.random((6, 6, 6))
    assert score_maps("pointing_game", maps, {"masks": masks})["pointing_game"] == \
        pytest.approx(pointing_game_mask(maps, masks)[1:].mean())
    assert score_maps("pxap", maps, {"masks": masks}) == {"pxap": pxap(maps, masks)}
    kp = np.zeros((6, 15, 3))
    kp[:3, 1] = (10.0, 10.0, 1.0)  # only the first three images show the beak
    gt = {"keypoints": kp, "image_sizes": np.full((6, 2), 24.0)}
    hits = pointing_game_keypoints(maps, kp, gt["image_sizes"])
    assert score_maps("pointing_game_keypoints", maps, gt) == {"pointing_game_keypoints": hits[:3].mean()}


# ---------------------------------------------------------------- bad inputs


def test_bad_inputs_name_the_bad_value():
    maps = np.random.default_rng(14).random((2, 4, 4))
    masks = np.ones((2, 8, 8), bool)
    with pytest.raises(ValueError, match=r"2 maps but 3 masks"):
        energy_pointing(maps, np.ones((3, 8, 8)))
    with pytest.raises(ValueError, match=r"masks must have shape \(B, H, W\).*\(8, 8\)"):
        pxap(maps, np.ones((8, 8)))
    with pytest.raises(ValueError, match=r"masks\[1\] is 3x8, smaller than maps\[1\] \(4x4\)"):
        energy_pointing(maps, [np.ones((8, 8)), np.ones((3, 8))])
    with pytest.raises(ValueError, match=r"maps\[0\] is 1x5; a CAM needs at least 2x2"):
        pxap(np.ones((1, 1, 5)), np.ones((1, 8, 8)))
    with pytest.raises(ValueError, match=r"map_size is 1x12"):
        baseline_scores("pxap", {"masks": masks}, (1, 12))
    nan = maps.copy()
    nan[1, 2, 3] = np.nan
    for fn in (lambda: energy_pointing(nan, masks), lambda: pxap(nan, masks),
               lambda: max_box_acc_v2(nan, [[(0, 0, 1, 1)]] * 2, (8, 8))):
        with pytest.raises(ValueError, match=r"maps\[1\] contains NaN"):
            fn()
    with pytest.raises(ValueError, match=r"masks\[0\] contains NaN"):
        energy_pointing(maps, np.where(np.eye(8)[None], np.nan, 1.0).repeat(2, 0))
    with pytest.raises(ValueError, match=r"at least one object pixel"):
        pxap(maps, np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match=r"boxes\[1\] has \[0.0, 0.0, 8.0, 3.0\].*0 <= x0 <= x1 <= 7"):
        max_box_acc_v2(maps, [[(0, 0, 1, 1)], [(0, 0, 8, 3)]], (8, 8))
    with pytest.raises(ValueError, match=r"boxes\[0\] must be one or more"):
        max_box_acc_v2(maps, [[], [(0, 0, 1, 1)]], (8, 8))
    with pytest.raises(ValueError, match=r"grid_size .*\(2, 2\).* smaller than maps\[0\]"):
        max_box_acc_v2(maps, [[(0, 0, 1, 1)]] * 2, (2, 2))
    with pytest.raises(ValueError, match=r"cam_curve_interval must lie in \(0, 1\); got 0"):
        pxap(maps, masks, cam_curve_interval=0)
    with pytest.raises(ValueError, match=r"whole percentages.*0.555"):
        max_box_acc_v2(maps, [[(0, 0, 1, 1)]] * 2, (8, 8), iou_thresholds=(0.5, 0.555))
    with pytest.raises(ValueError, match=r"scoremap must lie in \[0, 1\]"):
        boxes_from_scoremap(np.full((4, 4), 2.0))
    with pytest.raises(ValueError, match=r"unknown localisation metric 'pixel_ap'"):
        baseline_scores("pixel_ap", {"masks": masks}, (4, 4))
    with pytest.raises(ValueError, match=r"unknown baseline kind 'random'"):
        baseline_scores("pxap", {"masks": masks}, (4, 4), kind="random")
    with pytest.raises(ValueError, match=r"ground_truth needs 'boxes'"):
        baseline_scores("max_box_acc_v2", {"masks": masks}, (4, 4))
    with pytest.raises(ValueError, match=r"key= renames a single score"):
        baseline_scores("max_box_acc_v2", {"boxes": [[(0, 0, 1, 1)]], "grid_size": (8, 8)}, (4, 4), key="x")
    with pytest.raises(ValueError, match=r"no image has a non-empty mask"):
        baseline_scores("pointing_game", {"masks": np.zeros((2, 8, 8))}, (4, 4))
