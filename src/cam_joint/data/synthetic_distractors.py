"""Distractor parts for the synthetic birds: saturated colours on parts that do not decide the class.

Why. Without distractors every non-discriminative part is neutral (white/grey/black/brown), so *which* saturated
colours appear anywhere in the image already names the class: a colour histogram classifies it, and a classifier can
succeed without finding the part its CAM should point at. With ``make_synthetic_dataset(distractors=n)``, ``n`` of
the parts that do not define the bird's class (chosen at random among `DISTRACTOR_CANDIDATES`) are painted in random
saturated colours as well. The colours present then no longer name the class; the colours *of the right parts* do.

The class rule. A bird *satisfies* a class definition (`ClassSpec.colours`) when each part of the definition has its
colour. Definitions nest: a bird of ``{wing: red, crown: yellow, beak: red}`` also satisfies ``{wing: red,
crown: yellow}``, with or without distractors. So the class of a bird is its *most specific* satisfied definition,
the one that contains every other definition it satisfies (`decide_class`); without distractors this is simply the
definition whose parts are the saturated ones. Distractors keep it unique: they never complete a rival, i.e. the
definition of a class that is not nested in the bird's own. Parts are painted one at a time, and a part may not take
a colour that would complete a rival whose other parts already match; if that excludes every saturated colour, the
part stays neutral (and is not listed as a distractor). Discriminative parts are never repainted, so the bird
satisfies its own class, and exactly its own class plus the classes nested in it: every image has one class,
`decide_class` returns its label, for any number of classes.

What a colour histogram still sees. The exclusions depend on the class (a ``{wing: red, crown: yellow}`` bird never
gets a red beak), but they are a few (part, colour) pairs: without them a histogram classifier does about as well.
What it does exploit is that a class's colours are always present, at least as much of them as its parts' sizes: on
20 classes it falls from 92% top-1 (chance 5%) without distractors to 30% with ``distractors=8``, and from 92% to
49% within a family (chance 25%), while the colours of the discriminative parts always decide (`decide_class`).

Distractors are drawn from their own generator: a bird with distractors has the pose, background and noise of the
same example without them, and differs only in the colours of the distractor parts (and of the words naming them).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from cam_joint.data.synthetic_parts import (
    PART_INDEX,
    PART_NAMES,
    SATURATED_COLOURS,
    BirdAttributes,
    ClassSpec,
    _jittered,
    _py_random,
)

# Every part may be a distractor except the eye: a few pixels, and kept black or white to stay visible on the head.
DISTRACTOR_CANDIDATES: tuple[str, ...] = tuple(part for part in PART_NAMES if part != "eye")
MAX_DISTRACTORS = len(DISTRACTOR_CANDIDATES)


def satisfied_classes(part_colours: Mapping[str, str], classes: Sequence[ClassSpec]) -> list[int]:
    """Indices of the classes whose every defining part has its colour in ``part_colours`` (part -> colour name)."""
    return [i for i, spec in enumerate(classes)
            if all(part_colours.get(part) == colour for part, colour in spec.colours.items())]


def decide_class(part_colours: Mapping[str, str], classes: Sequence[ClassSpec]) -> int | None:
    """The class of a bird: its satisfied definition that contains every other one it satisfies, or None if no
    such definition exists (a bird these rules never draw)."""
    satisfied = satisfied_classes(part_colours, classes)
    for i in satisfied:
        if all(classes[j].colours.items() <= classes[i].colours.items() for j in satisfied):
            return i
    return None


def rival_definitions(spec: ClassSpec, classes: Sequence[ClassSpec]) -> list[dict[str, str]]:
    """What distractors on a bird of ``spec`` must never complete: for each class that is not nested in ``spec``
    but agrees with it on the parts they share, its (part -> colour) pairs outside ``spec``'s parts."""
    own = spec.colours
    rivals = []
    for other in classes:
        if other.colours.items() <= own.items():
            continue  # ``spec`` itself or nested in it: satisfied anyway, and decide_class prefers ``spec``
        if any(part in own and own[part] != colour for part, colour in other.colours.items()):
            continue  # disagrees on a discriminative part, which distractors never repaint
        rivals.append({part: colour for part, colour in other.colours.items() if part not in own})
    return rivals


def paint_distractors(
    attrs: BirdAttributes,
    spec: ClassSpec,
    classes: Sequence[ClassSpec],
    count: int,
    rng: np.random.Generator,
) -> BirdAttributes:
    """``attrs`` with ``count`` random non-discriminative parts (at most all of them) recoloured with random
    saturated colours that keep ``spec`` the bird's class among ``classes`` (see the module docstring)."""
    if not 0 <= count <= MAX_DISTRACTORS:
        raise ValueError(f"distractors: count must be from 0 to {MAX_DISTRACTORS}, got {count!r}")
    if spec not in classes:
        raise ValueError(f"class {spec.name!r} is not among the {len(classes)} classes given; pass the dataset's "
                         f"class list (class_specs(num_classes)) so its rivals are known")
    r = _py_random(rng)
    eligible = [part for part in DISTRACTOR_CANDIDATES if part not in spec.colours]
    rivals = rival_definitions(spec, classes)
    colours, rgb = dict(attrs.part_colours), dict(attrs.rgb)
    painted = []
    # r.sample returns the parts in random order, so no part is systematically the last (most constrained) one.
    for part in r.sample(eligible, min(count, len(eligible))):
        # A rival is completed by this part when all its other parts already match (unpainted ones are neutral).
        excluded = {rival[part] for rival in rivals
                    if part in rival and all(colours[q] == c for q, c in rival.items() if q != part)}
        allowed = [colour for colour in SATURATED_COLOURS if colour not in excluded]
        if not allowed:
            continue
        colour = r.choice(allowed)
        colours[part] = colour
        rgb[part] = _jittered(SATURATED_COLOURS[colour], r)
        painted.append(part)
    return dataclasses.replace(attrs, part_colours=colours, rgb=rgb,
                               distractor_parts=tuple(sorted(painted, key=PART_INDEX.__getitem__)))


__all__ = [
    "DISTRACTOR_CANDIDATES",
    "MAX_DISTRACTORS",
    "decide_class",
    "paint_distractors",
    "rival_definitions",
    "satisfied_classes",
]
