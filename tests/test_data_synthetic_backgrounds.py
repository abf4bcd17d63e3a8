"""The shortcut testbed: class backgrounds on a fraction P of each class's images, a test_shifted split that ignores
the class, the same birds and captions as without, and a cue that the border pixels' colours read."""

import math
from collections import Counter

import numpy as np
import pytest

from cam_joint.data.synthetic import (
    NEUTRAL_COLOURS,
    SATURATED_COLOURS,
    class_specs,
    generate_example,
    make_synthetic_dataset,
    make_synthetic_split,
)
from cam_joint.data.synthetic_backgrounds import (
    BACKGROUND_PAIRS,
    BACKGROUND_TINTS,
    MAX_BACKGROUND_CLASSES,
    assign_background_classes,
    paint_background,
)

SMALL = dict(num_classes=4, train_per_class=10, validation_per_class=5, test_per_class=3, image_size=48, seed=0)


@pytest.fixture(scope="module")
def biased():
    return make_synthetic_dataset(**SMALL, distractors=2, background_bias=0.75, shifted_per_class=30)


def test_each_class_shows_its_own_background_on_exactly_the_biased_fraction(biased):
    # floor(P * n + 0.5) of each class's n images: 0.75 * 10 = 7.5 -> 8, 0.75 * 5 = 3.75 -> 4, 0.75 * 3 = 2.25 -> 2.
    for split, expected in (("train", 8), ("validation", 4), ("test", 2)):
        rows = biased[split]
        for label in range(4):
            own = [m for y, m in zip(rows["label"], rows["background_matches"]) if y == label]
            assert sum(own) == expected, (split, label)
        for y, background, matches in zip(rows["label"], rows["background_class"], rows["background_matches"]):
            assert matches == (background == y) and 0 <= background < 4


@pytest.mark.parametrize("bias", [0.0, 0.3, 0.95, 1.0])
def test_the_count_logic_for_any_bias_and_the_others_are_another_class(bias):
    labels = [i % 5 for i in range(5 * 37)]
    backgrounds = assign_background_classes(labels, 5, bias, np.random.default_rng(3))
    for label in range(5):
        mine = [b for y, b in zip(labels, backgrounds) if y == label]
        assert sum(b == label for b in mine) == math.floor(bias * 37 + 0.5)
    # Mismatches are spread over the other classes: with P = 0 each class shows all four others.
    if bias == 0.0:
        for label in range(5):
            assert {b for y, b in zip(labels, backgrounds) if y == label} == set(range(5)) - {label}


def test_shifted_backgrounds_ignore_the_class():
    labels = [i % 4 for i in range(4 * 400)]
    backgrounds = assign_background_classes(labels, 4, 0.95, np.random.default_rng(0), shifted=True)
    counts = Counter(zip(labels, backgrounds))
    # Every (class, background) pair appears, each near 1/4 of the class's 400 images (100 +- 8.7): far from 0.95.
    assert set(counts) == {(y, b) for y in range(4) for b in range(4)}
    assert all(50 <= n <= 150 for n in counts.values()), counts


def test_the_shifted_split_in_the_dataset(biased):
    shifted = biased["test_shifted"]
    assert len(shifted) == 4 * 30 and set(biased) == {"train", "validation", "test", "test_shifted"}
    assert set(shifted["background_class"]) == set(range(4))
    assert 0.05 < np.mean(shifted["background_matches"]) < 0.5  # ~1/4, not ~P = 0.75
    assert shifted[0]["image_id"] == "synthetic/test_shifted/00000"


def test_tints_are_dull_and_far_from_every_part_colour():
    tints = np.array(BACKGROUND_TINTS, dtype=float)
    parts = np.array([*SATURATED_COLOURS.values(), *NEUTRAL_COLOURS.values()], dtype=float)
    assert np.linalg.norm(tints[:, None] - parts[None], axis=-1).min() > 45
    between = np.linalg.norm(tints[:, None] - tints[None], axis=-1)
    assert between[~np.eye(len(tints), dtype=bool)].min() > 45
    saturation = (tints.max(1) - tints.min(1)) / tints.max(1)
    assert saturation.max() < 0.45  # the saturated part colours are >= 0.8
    assert len(set(map(frozenset, BACKGROUND_PAIRS))) == MAX_BACKGROUND_CLASSES  # one pair per class


def _border_tints(image: np.ndarray) -> list[int]:
    """The two tints most border pixels are nearest to (pixels within 40 of a tint)."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(float)
    distances = np.linalg.norm(border[:, None] - np.array(BACKGROUND_TINTS, dtype=float)[None], axis=-1)
    near = distances.min(1) < 40
    return [t for t, _ in Counter(distances.argmin(1)[near].tolist()).most_common(2)]


def test_the_border_pixels_colours_read_the_background_class():
    """What the calibration's histogram classifier relies on: the border's two dominant tints are the pair of the
    image's background class (clutter and bird cover some of the border, the pattern most of it)."""
    specs = class_specs(20)
    hits = 0
    for index in range(60):
        background = index % 20
        ex = generate_example(4, "train", index, specs[(index * 7) % 20], 96, classes=specs,
                              background_class=background)
        hits += set(_border_tints(np.asarray(ex.image))) == set(BACKGROUND_PAIRS[background])
    assert hits >= 55, hits  # 200 images of 96 px: all 200


def test_a_background_bias_draws_the_same_bird_and_captions():
    specs = class_specs(20)
    for index in range(6):
        spec = specs[index]
        plain = generate_example(1, "test", index, spec, 64, distractors=2, classes=specs)
        shortcut = generate_example(1, "test", index, spec, 64, distractors=2, classes=specs,
                                    background_class=(index + 3) % 20)
        assert shortcut.captions == plain.captions
        assert repr(shortcut.attributes) == repr(plain.attributes)  # colours, pose, distractors
        assert np.array_equal(shortcut.attributes.shape_jitter, plain.attributes.shape_jitter)
        assert np.array_equal(shortcut.mask, plain.mask)
        bird = shortcut.mask > 0
        same, other = np.asarray(shortcut.image), np.asarray(plain.image)
        assert np.array_equal(same[bird], other[bird])  # the bird's pixels, noise included
        assert np.abs(same[~bird].astype(int) - other[~bird]).mean() > 10  # the background is another one


def test_captions_never_mention_the_background(biased):
    words = {w.strip(".,") for split in biased.values() for caps in split["captions"] for c in caps for w in c.split()}
    assert not words & {"background", "stripes", "striped", "checks", "checked", "pattern", "behind", "sky"}
    plain = make_synthetic_split("train", 10, 4, 48, seed=0, distractors=2)  # same images, no bias
    assert plain["captions"] == biased["train"]["captions"]


def test_without_a_bias_the_dataset_is_the_default_one():
    default = make_synthetic_dataset(**SMALL)
    explicit = make_synthetic_dataset(**SMALL, background_bias=None)
    assert set(explicit) == {"train", "validation", "test"}
    for split in default:
        assert explicit[split]._fingerprint == default[split]._fingerprint
        assert explicit[split].column_names == default[split].column_names
        assert explicit[split].data.table.equals(default[split].data.table)


def test_the_background_pattern_varies_per_image():
    first, second = (np.asarray(paint_background(np.random.default_rng(seed), 5, 48)) for seed in (0, 1))
    assert not np.array_equal(first, second)
    assert len({tuple(p) for p in first.reshape(-1, 3)}) == 2  # two tints, nothing else


@pytest.mark.parametrize("bias, message", [
    (1.5, r"background_bias must be a number from 0 to 1.*got 1\.5"),
    (-0.1, r"background_bias must be a number from 0 to 1.*got -0\.1"),
    (True, r"background_bias must be a number.*got True"),
    ("0.9", r"background_bias must be a number.*got '0\.9'"),
])
def test_a_bad_bias_is_named(bias, message):
    with pytest.raises(ValueError, match=message):
        make_synthetic_dataset(**SMALL, background_bias=bias)


def test_other_bad_arguments_are_named():
    with pytest.raises(ValueError, match="background_bias needs 2 to 28 classes.*num_classes=1"):
        make_synthetic_dataset(**{**SMALL, "num_classes": 1}, background_bias=0.9)
    with pytest.raises(ValueError, match="test_shifted split exists only with a background_bias"):
        make_synthetic_split("test_shifted", 2, 4, 32)
    with pytest.raises(ValueError, match="shifted_per_class must be a positive integer, got 0"):
        make_synthetic_dataset(**SMALL, background_bias=0.9, shifted_per_class=0)
