"""Class backgrounds for the synthetic birds: the shortcut testbed (``make_synthetic_dataset(background_bias=P)``).

Why. Waterbirds-style shortcut learning needs a cue that is easier than the evidence and correlated with the class
in training, but not at test time. Here each class has a background of its own: a pattern (stripes or checks at a
random angle, period and phase per image) in a *pair* of dull tints that no other class uses together. The tints are
low-saturation, far from every saturated part colour (`SATURATED_COLOURS`, the class evidence) and from the neutral
part colours, so the background never looks like a part; and the pattern fills the whole background under the usual
clutter, so a colour histogram of the border pixels reads the background class, and a CNN finds it more easily than
a small crown or beak.

The bias. In ``train``, ``validation`` and ``test`` a fraction ``P`` of each class's images (exactly
``floor(P * n + 0.5)`` of its ``n`` images, chosen at random) show their own class's background; each of the others
shows the background of another class drawn uniformly. ``test_shifted`` draws each image's background class
uniformly among all classes, independently of the bird's class, so a classifier that reads the background falls to
about chance there. Captions never mention the background.

Streams. Which image shows which background is drawn from a per-split generator, the pattern from a per-image
generator of its own; the bird's generator is untouched, so a bird drawn with a background bias has the pose, parts,
clutter, noise and captions of the same example without it (only the gradient under the clutter is replaced).
"""

from __future__ import annotations

import colorsys
import math
from typing import Sequence

import numpy as np
from PIL import Image

from cam_joint.data.synthetic_parts import _jittered, _py_random


def _tint(hue_degrees: float, value: float) -> tuple[int, int, int]:
    return tuple(round(c * 255) for c in colorsys.hsv_to_rgb(hue_degrees / 360.0, 0.40, value))


# Eight dull tints 45 degrees of hue apart, alternating in brightness: >= 48 RGB units from every neutral part colour,
# >= 60 from every saturated one and >= 49 from each other (per-image jitter is +-14, pixel noise std 6).
BACKGROUND_TINTS: tuple[tuple[int, int, int], ...] = tuple(
    _tint(20 + 45 * i, 0.80 if i % 2 == 0 else 0.66) for i in range(8))
# Class c paints its background in the tints of pair c. Pairs are listed by the hue step between their tints (1, 2,
# 3, then 4), so every tint appears about equally often among the first classes, whatever their number.
BACKGROUND_PAIRS: tuple[tuple[int, int], ...] = tuple(
    [(i, (i + step) % 8) for step in (1, 2, 3) for i in range(8)] + [(i, i + 4) for i in range(4)])
MAX_BACKGROUND_CLASSES = len(BACKGROUND_PAIRS)

SHIFTED_SPLIT = "test_shifted"  # the split whose backgrounds ignore the class

# Seed words: an example's main generator is (seed, split, index), its distractors' (seed, split, index, 1).
_BACKGROUND_STREAM = 2  # 4th seed word of an example's background generator and of its split's assignment generator
_ASSIGNMENT_INDEX = 2**32 - 1  # the "example index" word of a split's assignment generator: no example has it


def check_background_bias(background_bias: float | None, num_classes: int) -> None:
    """A clear error for a bias outside [0, 1] or a class count the backgrounds cannot serve."""
    if background_bias is None:
        return
    if isinstance(background_bias, bool) or not isinstance(background_bias, (int, float)) \
            or not 0.0 <= background_bias <= 1.0:
        raise ValueError(f"background_bias must be a number from 0 to 1 (the fraction of each class's images that "
                         f"show its own background) or None, got {background_bias!r}")
    if not 2 <= num_classes <= MAX_BACKGROUND_CLASSES:
        raise ValueError(f"background_bias needs 2 to {MAX_BACKGROUND_CLASSES} classes (one background each, and "
                         f"another class's to show), got num_classes={num_classes}")


def assign_background_classes(
    labels: Sequence[int], num_classes: int, background_bias: float, rng: np.random.Generator, shifted: bool = False
) -> list[int]:
    """Each image's background class.

    In-distribution (``shifted=False``): of each class's ``n`` images exactly ``floor(P * n + 0.5)`` (a random
    subset) get the class's own background, the others another class's, uniformly. ``shifted=True``: uniform over
    all classes, independent of the label.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if shifted:
        return rng.integers(num_classes, size=len(labels)).tolist()
    backgrounds = labels.copy()
    for label in range(num_classes):
        members = np.flatnonzero(labels == label)
        matching = math.floor(background_bias * len(members) + 0.5)
        others = rng.permutation(members)[matching:]
        drawn = rng.integers(num_classes - 1, size=len(others))
        backgrounds[others] = drawn + (drawn >= label)  # skip the own class: uniform over the other ones
    return backgrounds.tolist()


def assignment_generator(seed: int, split_id: int) -> np.random.Generator:
    """The generator that decides which image of a split shows which background (one per split)."""
    return np.random.default_rng([seed, split_id, _ASSIGNMENT_INDEX, _BACKGROUND_STREAM])


def pattern_generator(seed: int, split_id: int, index: int) -> np.random.Generator:
    """The generator of one example's background pattern: its own stream, so the bird's draws stay the same."""
    return np.random.default_rng([seed, split_id, index, _BACKGROUND_STREAM])


def paint_background(rng: np.random.Generator, background_class: int, size: int) -> Image.Image:
    """The background of class ``background_class``: its two tints (jittered) as stripes or checks at a random angle,
    period and phase, filling a ``size`` x ``size`` RGB image."""
    if not 0 <= background_class < MAX_BACKGROUND_CLASSES:
        raise ValueError(f"background_class must be from 0 to {MAX_BACKGROUND_CLASSES - 1}, got {background_class!r}")
    r = _py_random(rng)
    first, second = (np.array(_jittered(BACKGROUND_TINTS[i], r), dtype=np.uint8)
                     for i in BACKGROUND_PAIRS[background_class])
    angle = r.uniform(0.0, math.pi)
    period = r.uniform(0.12, 0.25) * size  # one stripe of each tint per period
    checks = r.random() < 0.5
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    along = (xs * math.cos(angle) + ys * math.sin(angle)) / period + r.random()
    phase = np.floor(2.0 * along)
    if checks:
        across = (ys * math.cos(angle) - xs * math.sin(angle)) / period + r.random()
        phase += np.floor(2.0 * across)
    pattern = (phase % 2).astype(bool)
    pixels = np.where(pattern[..., None], second, first).astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB")


__all__ = [
    "BACKGROUND_PAIRS",
    "BACKGROUND_TINTS",
    "MAX_BACKGROUND_CLASSES",
    "SHIFTED_SPLIT",
    "assign_background_classes",
    "assignment_generator",
    "check_background_bias",
    "paint_background",
    "pattern_generator",
]
