"""What every synthetic-bird module builds on: the parts, the colour palettes, the class definitions and the
random attributes of one bird (with the small random helpers that draw them).

It sits below `cam_joint.data.synthetic` (drawing, captions, datasets), `cam_joint.data.synthetic_distractors` and
`cam_joint.data.synthetic_backgrounds`, so none of those needs to import another at module level. Every public name
here stays importable from `cam_joint.data.synthetic`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
# Order of the parts; the mask stores ``PART_NAMES.index(name) + 1``.
PART_NAMES: tuple[str, ...] = ("body", "head", "crown", "wing", "tail", "beak", "belly", "eye", "legs")
PART_INDEX: dict[str, int] = {name: i + 1 for i, name in enumerate(PART_NAMES)}

# Saturated colours only ever appear on a class's discriminative parts.
SATURATED_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 35),
    "orange": (245, 135, 20),
    "yellow": (240, 215, 35),
    "green": (40, 165, 60),
    "blue": (35, 85, 220),
    "purple": (140, 50, 180),
}
# Neutral colours for every non-discriminative part (and nothing saturated), chosen far from the palette above.
NEUTRAL_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (235, 235, 228),
    "grey": (128, 128, 128),
    "black": (35, 35, 35),
    "brown": (110, 75, 45),
}
# Parts that can carry class evidence: large "family" parts and small "species" parts (the fine-grained ones).
MAJOR_PARTS: tuple[str, ...] = ("wing", "body", "tail")
MINOR_PARTS: tuple[str, ...] = ("crown", "beak")

# The class count of the default dataset (see `cam_joint.data.synthetic` for why 20).
DEFAULT_NUM_CLASSES = 20


# --------------------------------------------------------------------------------------------------- classes
@dataclass(frozen=True)
class ClassSpec:
    """One synthetic species: the colour of each of its discriminative parts."""

    colours: Mapping[str, str]  # part name -> saturated colour name

    @property
    def discriminative_parts(self) -> tuple[str, ...]:
        return tuple(sorted(self.colours, key=PART_INDEX.__getitem__))

    @property
    def name(self) -> str:
        # e.g. "red_crown_blue_wing": readable, unique because the colour assignment is unique.
        return "_".join(f"{self.colours[p]}_{p}" for p in self.discriminative_parts)


def class_specs(num_classes: int = DEFAULT_NUM_CLASSES) -> list[ClassSpec]:
    """The first ``num_classes`` species, independent of any seed (label names are stable across seeds).

    Species come in families of four that share one large part's colour: ``{crown: a}``, ``{crown: b}``,
    ``{crown: a, beak: c}``, ``{beak: d}``. Within a family the first two differ only in the crown, the first and
    third only in the beak, which makes the task fine-grained. The list is a prefix-stable sequence: the first k
    classes are the same for any ``num_classes >= k``.
    """
    if num_classes < 1:
        raise ValueError("num_classes must be >= 1")
    colours = list(SATURATED_COLOURS)
    rng = np.random.default_rng(20200101)  # fixed: class definitions never depend on the data seed
    specs: list[ClassSpec] = []
    seen: set[tuple] = set()
    family = 0
    max_families = 10 * (num_classes + 4)
    while len(specs) < num_classes and family < max_families:
        major = MAJOR_PARTS[family % len(MAJOR_PARTS)]
        major_colour = colours[(family // len(MAJOR_PARTS) + family) % len(colours)]
        a, b, c, d = rng.choice(len(colours), size=4, replace=False)
        members = [
            {"crown": colours[a]},
            {"crown": colours[b]},
            {"crown": colours[a], "beak": colours[c]},
            {"beak": colours[d]},
        ]
        for extra in members:
            spec_colours = {major: major_colour, **extra}
            key = tuple(sorted(spec_colours.items()))
            if key in seen:
                continue
            seen.add(key)
            specs.append(ClassSpec(spec_colours))
            if len(specs) == num_classes:
                break
        family += 1
    if len(specs) < num_classes:
        raise ValueError(f"cannot define {num_classes} distinct synthetic classes")
    return specs


# --------------------------------------------------------------------------------------------------- one bird
@dataclass
class BirdAttributes:
    """Everything random about one bird; drawn first so the captions can describe exactly what is drawn."""

    part_colours: dict[str, str]  # part -> colour name (saturated for discriminative parts, neutral otherwise)
    rgb: dict[str, tuple[int, int, int]]  # part -> jittered RGB actually drawn
    beak_length: float  # in body lengths; captions call it "short" or "long"
    scale: float  # bird length as a fraction of the image size
    angle: float  # radians
    mirror: bool
    position: tuple[float, float]  # where the bird sits within the free space of the frame, each in [0, 1]
    shape_jitter: np.ndarray = field(repr=False)  # multiplicative jitter of part sizes
    distractor_parts: tuple[str, ...] = ()  # non-discriminative parts painted in saturated colours (PART_NAMES order)

    @property
    def beak_word(self) -> str:
        return "short" if self.beak_length < 0.15 else "long"


def _py_random(rng: np.random.Generator) -> random.Random:
    # Python's Random is ~10x cheaper than numpy's Generator per scalar draw, and we make dozens per image.
    return random.Random(int(rng.integers(2**63)))


def _clip255(v: float) -> int:
    return int(min(255.0, max(0.0, v)))


def _jittered(base: tuple[int, int, int], r: random.Random) -> tuple[int, int, int]:
    # Small jitter: keeps colours inside their category (palette entries are >= ~60 apart).
    return tuple(_clip255(v + r.randint(-14, 14)) for v in base)


__all__ = [
    "PART_NAMES",
    "PART_INDEX",
    "SATURATED_COLOURS",
    "NEUTRAL_COLOURS",
    "MAJOR_PARTS",
    "MINOR_PARTS",
    "DEFAULT_NUM_CLASSES",
    "ClassSpec",
    "BirdAttributes",
    "class_specs",
]
