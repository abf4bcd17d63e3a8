"""CAM agreement, the pointing game (masks and CUB part keypoints), and top-k accuracy."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cam_joint.cam_core import map_cosine
from cam_joint.metrics import (
    cam_cosine_agreement,
    cam_cosine_similarities,
    pointing_game_keypoints,
    pointing_game_mask,
    resize_center_crop_box,
    topk_accuracy,
)

BEAK, CROWN, LEFT_EYE = 2, 5, 7  # parts/parts.txt


def one_hot_map(h: int, w: int, row: int, col: int) -> torch.Tensor:
    m = torch.zeros(h, w)
    m[row, col] = 1.0
    return m


# ---------------------------------------------------------------- CAM agreement


def test_cosine_of_known_pairs():
    a = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [3.0, 4.0]], [[1.0, 0.0], [0.0, 0.0]]])
    b = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[2.0, 4.0], [6.0, 8.0]], [[0.0, 0.0], [0.0, 5.0]]])
    sims = cam_cosine_similarities(a, b)
    # 1/sqrt(2); a rescaled copy agrees fully; disjoint supports do not agree at all.
    np.testing.assert_allclose(sims, [1 / math.sqrt(2), 1.0, 0.0], atol=1e-12)
    assert cam_cosine_agreement(a, b) == pytest.approx((1 / math.sqrt(2) + 1.0) / 3, abs=1e-12)


def test_zero_maps_score_zero_not_nan():
    zero, ones = torch.zeros(1, 7, 7), torch.ones(1, 7, 7)
    assert cam_cosine_agreement(zero, ones) == 0.0
    assert cam_cosine_agreement(ones, zero) == 0.0
    assert cam_cosine_agreement(zero, zero) == 0.0  # two vanished CAMs are not "in agreement"
    both = cam_cosine_agreement(torch.stack([zero[0], ones[0]]), torch.stack([ones[0], ones[0]]))
    assert both == pytest.approx(0.5)


def test_agrees_with_the_training_loss_cosine():
    """The evaluation metric measures what the disagreement loss optimises (cam_core.map_cosine)."""
    g = torch.Generator().manual_seed(0)
    a = torch.relu(torch.randn(16, 7, 7, generator=g))
    b = torch.relu(torch.randn(16, 7, 7, generator=g))
    ours = cam_cosine_similarities(a, b)
    np.testing.assert_allclose(ours, map_cosine(a, b).double().numpy(), atol=1e-6)


def test_inputs_of_any_kind_give_the_same_number():
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(4, 14, 14, generator=g), torch.rand(4, 14, 14, generator=g)
    expected = cam_cosine_agreement(a, b)
    assert cam_cosine_agreement(a.numpy(), b.numpy()) == pytest.approx(expected, abs=1e-12)
    assert cam_cosine_agreement(list(a), list(b)) == pytest.approx(expected, abs=1e-12)
    assert cam_cosine_agreement(a.half(), b.bfloat16()) == pytest.approx(expected, abs=1e-2)


def test_agreement_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"\(7, 7\).*\(14, 14\)"):
        cam_cosine_agreement(torch.rand(2, 7, 7), torch.rand(2, 14, 14))
    with pytest.raises(ValueError, match="2 maps but maps_b has 3"):
        cam_cosine_agreement(torch.rand(2, 7, 7), torch.rand(3, 7, 7))
    with pytest.raises(ValueError, match="NaN or inf"):
        cam_cosine_agreement(torch.full((1, 7, 7), float("nan")), torch.rand(1, 7, 7))
    with pytest.raises(ValueError, match="empty"):
        cam_cosine_agreement([], [])


# ---------------------------------------------------------------- pointing game, masks


def cell_mask(size: int, grid: int, row: int, col: int) -> torch.Tensor:
    """The pixels of map cell (row, col) at resolution size x size."""
    step = size // grid
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[row * step : (row + 1) * step, col * step : (col + 1) * step] = True
    return mask


def test_mask_hit_when_the_peak_cell_is_inside_the_part():
    maps = torch.stack([one_hot_map(7, 7, 2, 5), one_hot_map(7, 7, 2, 5), one_hot_map(7, 7, 4, 1)])
    masks = torch.stack([cell_mask(224, 7, 2, 5), ~cell_mask(224, 7, 2, 5), cell_mask(224, 7, 4, 1)])
    assert pointing_game_mask(maps, masks).tolist() == [True, False, True]


def test_constant_maps_are_misses_even_where_argmax_would_hit():
    # argmax of a constant map is pixel (0, 0), inside this mask; a map with no peak must still not score.
    mask = torch.zeros(1, 56, 56, dtype=torch.bool)
    mask[0, :8, :8] = True
    assert pointing_game_mask(torch.zeros(1, 7, 7), mask).tolist() == [False]
    assert pointing_game_mask(torch.full((1, 7, 7), 0.3), mask).tolist() == [False]
    assert pointing_game_mask(one_hot_map(7, 7, 0, 0)[None], mask).tolist() == [True]


def test_masks_at_each_images_own_size():
    # A portrait and a landscape image; each map is upsampled to its own mask.
    tall = torch.zeros(300, 120, dtype=torch.bool)
    tall[150:200, 60:120] = True  # lower-right area: map cell (3, 1) of a 6 x 2 grid
    wide = torch.zeros(100, 400, dtype=torch.bool)
    wide[:, :100] = True  # left quarter
    maps = [one_hot_map(6, 2, 3, 1), one_hot_map(4, 4, 2, 3)]
    assert pointing_game_mask(maps, [tall, wide]).tolist() == [True, False]


def test_mask_rejects_bad_inputs():
    with pytest.raises(ValueError, match="2 maps but 1 masks"):
        pointing_game_mask(torch.rand(2, 7, 7), torch.ones(1, 10, 10, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN"):
        pointing_game_mask(torch.full((1, 7, 7), float("inf")), torch.ones(1, 10, 10, dtype=torch.bool))


# ---------------------------------------------------------------- pointing game, keypoints


def keypoints_15(**parts: tuple[float, float, int]) -> np.ndarray:
    """(15, 3) CUB keypoints, invisible (0, 0, 0) except those given as part_<id>=(x, y, visible)."""
    kps = np.zeros((15, 3))
    for name, value in parts.items():
        kps[int(name.split("_")[1]) - 1] = value
    return kps


def test_keypoint_radius_rule_on_the_whole_image():
    # 400 x 300 image, 10 x 10 map peaked at cell (row 3, col 7): peak near x = 7.5 * 40 = 300, y = 3.5 * 30 = 105.
    # Radius = 0.1 * min(400, 300) = 30 pixels.
    peak_map = one_hot_map(10, 10, 3, 7)
    cases = {
        "beak 6 px away": (keypoints_15(part_2=(305, 100, 1)), None, True),
        "beak 45 px away": (keypoints_15(part_2=(345, 105, 1)), None, False),
        "beak near but not visible": (keypoints_15(part_2=(300, 105, 0)), None, False),
        "near part is not among part_ids": (keypoints_15(part_5=(300, 105, 1), part_2=(50, 50, 1)), [BEAK], False),
        "one of several parts is near": (keypoints_15(part_5=(300, 105, 1), part_2=(50, 50, 1)), [BEAK, CROWN], True),
    }
    kps = np.stack([c[0] for c in cases.values()])
    sizes = [(400, 300)] * len(cases)
    for i, (name, (_, part_ids, expected)) in enumerate(cases.items()):
        hit = pointing_game_keypoints(peak_map[None], kps[i : i + 1], sizes[:1], part_ids=part_ids)
        assert hit.tolist() == [expected], name
    # radius_frac scales the radius: 45 px is inside 0.2 * 300 = 60.
    assert pointing_game_keypoints(peak_map[None], kps[1:2], sizes[:1], radius_frac=0.2).tolist() == [True]


def test_constant_map_and_no_visible_part_are_misses_and_flagged():
    maps = torch.stack([torch.zeros(7, 7), one_hot_map(7, 7, 0, 0)])
    kps = np.stack([keypoints_15(part_2=(10, 10, 1)), keypoints_15()])
    hits, evaluable = pointing_game_keypoints(maps, kps, [(200, 200)] * 2, return_evaluable=True)
    assert hits.tolist() == [False, False]
    assert evaluable.tolist() == [True, False]  # the second image has nothing to point at


def test_resize_center_crop_box_matches_torchvision():
    transforms = pytest.importorskip("torchvision.transforms")
    for size, dot in [((500, 375), (400, 60)), ((300, 450), (40, 330)), ((257, 256), (128, 30))]:
        image = np.zeros(size[::-1], dtype=np.uint8)
        image[dot[1] - 4 : dot[1] + 5, dot[0] - 4 : dot[0] + 5] = 255  # a 9 x 9 blob centred on pixel `dot`
        crop = np.asarray(transforms.CenterCrop(224)(transforms.Resize(256)(Image.fromarray(image))), dtype=float)
        # Where the blob lands in the crop, mapped back through the box, must be where it was drawn.
        ys, xs = np.nonzero(crop)
        left, top, right, bottom = resize_center_crop_box(size, 256, 224)
        x = left + (np.average(xs, weights=crop[ys, xs]) + 0.5) * (right - left) / 224
        y = top + (np.average(ys, weights=crop[ys, xs]) + 0.5) * (bottom - top) / 224
        assert abs(x - (dot[0] + 0.5)) < 1.0 and abs(y - (dot[1] + 0.5)) < 1.0, (size, dot, x, y)
    assert resize_center_crop_box((500, 375), (224, 224)) == (0.0, 0.0, 500.0, 375.0)


def test_keypoints_with_a_center_crop():
    # 500 x 375 image, Resize(256) + CenterCrop(224): the crop keeps x in [62.5, 437.5] and all of y up to 328.1.
    size = (500, 375)
    box = resize_center_crop_box(size, 256, 224)
    # The map peaks at the crop's cell (1, 12) of 14 x 14, i.e. near the crop's top right.
    left, top, right, bottom = box
    x = left + 12.5 / 14 * (right - left)
    y = top + 1.5 / 14 * (bottom - top)
    maps = one_hot_map(14, 14, 1, 12)[None]
    kps = keypoints_15(part_2=(x, y, 1))[None]
    assert pointing_game_keypoints(maps, kps, [size], crop_boxes=[box]).tolist() == [True]
    # Read as if the map covered the whole image, the same peak is ~50 px off: the box matters.
    assert pointing_game_keypoints(maps, kps, [size]).tolist() == [False]
    # A part the crop cut away is not evaluable, even right at the crop's edge.
    outside = keypoints_15(part_2=(30.0, y, 1))[None]
    hits, evaluable = pointing_game_keypoints(
        one_hot_map(14, 14, 1, 0)[None], outside, [size], crop_boxes=[box], return_evaluable=True
    )
    assert hits.tolist() == [False] and evaluable.tolist() == [False]


def test_keypoint_inputs_are_checked():
    with pytest.raises(ValueError, match="keypoints must have shape"):
        pointing_game_keypoints(torch.rand(2, 7, 7), np.zeros((1, 15, 3)), [(10, 10)] * 2)
    with pytest.raises(ValueError, match="part_ids"):
        pointing_game_keypoints(torch.rand(1, 7, 7), np.zeros((1, 15, 3)), [(10, 10)], part_ids=[16])
    with pytest.raises(ValueError, match="image_sizes"):
        pointing_game_keypoints(torch.rand(1, 7, 7), np.zeros((1, 15, 3)), [(10, 10, 3)])


def read_cub_parts(cub: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (count, 15, 3) and bird boxes (count, 4) as (left, top, right, bottom) of CUB images 1..count."""
    kps = np.zeros((count, 15, 3))
    with open(cub / "parts" / "part_locs.txt") as f:
        for line in f:
            image_id, part_id, x, y, visible = line.split()
            if int(image_id) > count:
                break
            kps[int(image_id) - 1, int(part_id) - 1] = (float(x), float(y), float(visible))
    boxes = np.zeros((count, 4))
    with open(cub / "bounding_boxes.txt") as f:
        for line, _ in zip(f, range(count)):
            image_id, x, y, w, h = line.split()
            boxes[int(image_id) - 1] = (float(x), float(y), float(x) + float(w), float(y) + float(h))
    return kps, boxes


def test_real_cub_keypoints(shared_data):
    """Real part_locs (invisible parts sit at (0, 0)); maps over each bird's bounding box, as a bbox crop would be."""
    n = 120
    kps, boxes = read_cub_parts(shared_data / "cub", n)
    sizes = np.ceil(boxes[:, 2:])  # the images are not here; only boxes are used when crop_boxes is given
    grid = 28
    eye = kps[:, LEFT_EYE - 1]  # visible in about half of CUB's images
    eye_inside = (eye[:, 2] > 0) & (eye[:, 0] >= boxes[:, 0]) & (eye[:, 0] <= boxes[:, 2])
    eye_inside &= (eye[:, 1] >= boxes[:, 1]) & (eye[:, 1] <= boxes[:, 3])
    assert 20 < eye_inside.sum() < n - 20

    on_eye, far_from_eye = [], []
    for i in range(n):
        left, top, right, bottom = boxes[i]
        col = min(grid - 1, int((eye[i, 0] - left) / (right - left) * grid)) if eye_inside[i] else 0
        row = min(grid - 1, int((eye[i, 1] - top) / (bottom - top) * grid)) if eye_inside[i] else 0
        on_eye.append(one_hot_map(grid, grid, row, col))
        # The box corner farthest from the eye: at least half a side away, far beyond the radius.
        far_row, far_col = (0 if row >= grid // 2 else grid - 1), (0 if col >= grid // 2 else grid - 1)
        far_from_eye.append(one_hot_map(grid, grid, far_row, far_col))
    hits, evaluable = pointing_game_keypoints(
        on_eye, kps, sizes, part_ids=[LEFT_EYE], crop_boxes=boxes, return_evaluable=True
    )
    assert evaluable.tolist() == eye_inside.tolist()
    assert hits.tolist() == eye_inside.tolist()
    far = pointing_game_keypoints(far_from_eye, kps, sizes, part_ids=[LEFT_EYE], crop_boxes=boxes)
    assert not far.any()
    # Over the whole image, a peak in the top-left corner must not "hit" the invisible parts stored at (0, 0).
    corner = [one_hot_map(grid, grid, 0, 0)] * n
    corner_hits = pointing_game_keypoints(corner, kps, sizes)
    visible = kps[:, :, 2] > 0
    near_corner = (np.hypot(kps[:, :, 0], kps[:, :, 1]) < 0.1 * sizes.min(axis=1)[:, None] + 2) & visible
    assert (~near_corner.any(axis=1)).sum() > n // 2
    assert not corner_hits[~near_corner.any(axis=1)].any()


# ---------------------------------------------------------------- top-k accuracy


def test_topk_on_a_worked_example():
    logits = torch.tensor(
        [
            [0.1, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0],  # label 1: top-1
            [0.9, 0.1, 0.8, 0.7, 0.6, 0.5, 0.0],  # label 5: 5th best -> top-5 only
            [0.9, 0.1, 0.8, 0.7, 0.6, 0.5, 0.0],  # label 1: 6th best -> neither
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],  # label 6: top-1
        ]
    )
    labels = torch.tensor([1, 5, 1, 6])
    assert topk_accuracy(logits, labels) == {"top1": 0.5, "top5": 0.75}
    assert topk_accuracy(logits.numpy(), labels.tolist(), ks=(1, 2, 7)) == {"top1": 0.5, "top2": 0.5, "top7": 1.0}


def test_topk_matches_a_direct_count_on_random_logits():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(500, 200, generator=g), torch.randint(0, 200, (500,), generator=g)
    rank = (logits > logits.gather(1, labels[:, None])).sum(1)  # how many classes beat the label (no ties here)
    out = topk_accuracy(logits, labels, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert out[f"top{k}"] == pytest.approx(float((rank < k).double().mean()), abs=1e-12)


def test_topk_with_fewer_classes_than_k_is_one():
    assert topk_accuracy(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))["top5"] == 1.0


def test_topk_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        topk_accuracy(torch.randn(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="N > 0"):
        topk_accuracy(torch.randn(0, 3), torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        topk_accuracy(torch.randn(2, 3), torch.tensor([0]))
