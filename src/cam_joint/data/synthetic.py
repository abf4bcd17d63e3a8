"""Procedurally drawn "birds": the built-in, download-free default dataset.

Why it looks the way it does:

* A class is fixed by the colours of two or three parts (its *discriminative parts*), drawn from a saturated
  palette. Every other part is always drawn in a neutral colour (white/grey/black/brown) that never appears in the
  saturated palette, so the set of saturated parts identifies the class without ambiguity, yet classes are
  fine-grained: classes come in families that share a large part's colour and differ only in a small part (the crown
  or the beak).
* Pose (position, scale, mirror, rotation), neutral part colours, beak length, colour jitter and a cluttered
  background change per image, so a model must find the parts rather than memorise pixels. Clutter only uses
  low-saturation colours, so it never carries class evidence.
* A per-pixel part mask (0 = background, ``i`` = ``PART_NAMES[i - 1]``) is kept as ground truth, so a CAM can be scored
  against where the evidence really is.
* Ten template captions per image name parts with their *actual* colours (the captions are predictable from the
  image) and mention the discriminative parts in most captions.
* With ``distractors=n`` (`cam_joint.data.synthetic_distractors`), ``n`` non-discriminative parts per image are
  painted in saturated colours too, so that *which* colours appear no longer names the class: only the colours of
  the right parts do. The default (``n = 0``) draws exactly the images it always did.

* With ``background_bias=P`` (`cam_joint.data.synthetic_backgrounds`), each class has a background of its own (a
  pattern in two dull tints) that a fraction ``P`` of its images show in train/validation/test, and a ``test_shifted``
  split draws backgrounds independently of the class: the shortcut testbed. ``None``, the default, draws exactly the
  images it always did.

Everything is deterministic for a seed: every image has its own generator seeded with ``(seed, split, index)``.
"""

from __future__ import annotations

import io
import math
import random
from functools import lru_cache
from typing import NamedTuple, Sequence

import numpy as np
from PIL import Image, ImageDraw

# The parts, palettes, class definitions and bird attributes live one module below (the distractor and background
# painters build on them too); they stay importable from here.
from cam_joint.data.synthetic_parts import (
    DEFAULT_NUM_CLASSES,
    MAJOR_PARTS,
    MINOR_PARTS,
    NEUTRAL_COLOURS,
    PART_INDEX,
    PART_NAMES,
    SATURATED_COLOURS,
    BirdAttributes,
    ClassSpec,
    _clip255,
    _jittered,
    _py_random,
    class_specs,
)
from cam_joint.data.synthetic_backgrounds import (
    SHIFTED_SPLIT,
    assign_background_classes,
    assignment_generator,
    check_background_bias,
    paint_background,
    pattern_generator,
)
from cam_joint.data.synthetic_distractors import MAX_DISTRACTORS, paint_distractors

# Defaults measured on a 2-core CPU: a randomly initialised, *trainable* timm resnet10t at 64-96 px passes 0.9 test
# top-1 within 2-3 epochs with 200 training images per class, and the whole dataset draws in ~5 s. With 60 per class
# the same CNN overfits (resnet18: 0.44 after 5 epochs). A *frozen* random-weight CNN does not learn it (<= 0.25).
DEFAULT_IMAGE_SIZE = 96
DEFAULT_SPLIT_SIZES = {"train": 200, "validation": 25, "test": 25}  # images per class
CAPTIONS_PER_IMAGE = 10
_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2, SHIFTED_SPLIT: 3}
_DISTRACTOR_STREAM = 1  # 4th seed word of an example's distractor generator (its main generator has 3 words)
# test_shifted's images per class: with 20 classes ~95 of a class's 100 show another class's background, enough for a
# (class, background does not match) group of >= 50 images.
DEFAULT_SHIFTED_PER_CLASS = 100


def sample_bird(rng: np.random.Generator, spec: ClassSpec) -> BirdAttributes:
    r = _py_random(rng)
    neutral = list(NEUTRAL_COLOURS)
    part_colours: dict[str, str] = {}
    for part in PART_NAMES:
        if part in spec.colours:
            part_colours[part] = spec.colours[part]
        elif part == "eye":
            part_colours[part] = "black" if r.random() < 0.8 else "white"
        else:
            part_colours[part] = r.choice(neutral)
    # Keep the eye visible against the head.
    if part_colours["eye"] == part_colours["head"]:
        part_colours["eye"] = "white" if part_colours["head"] == "black" else "black"
    rgb = {}
    for part, colour in part_colours.items():
        rgb[part] = _jittered(SATURATED_COLOURS.get(colour) or NEUTRAL_COLOURS[colour], r)
    return BirdAttributes(
        part_colours=part_colours,
        rgb=rgb,
        beak_length=r.uniform(0.09, 0.21),
        scale=r.uniform(0.55, 0.8),
        angle=math.radians(r.uniform(-20, 20)),
        mirror=r.random() < 0.5,
        position=(r.random(), r.random()),
        shape_jitter=np.array([r.uniform(0.9, 1.1) for _ in range(4)]),
    )


_CIRCLE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 24, endpoint=False)),
                    np.sin(np.linspace(0, 2 * np.pi, 24, endpoint=False))], axis=1)


def _ellipse(cx: float, cy: float, rx: float, ry: float, tilt: float = 0.0) -> np.ndarray:
    pts = _CIRCLE * (rx, ry)
    if tilt:
        c, s = math.cos(tilt), math.sin(tilt)
        pts = pts @ np.array([[c, s], [-s, c]])
    return pts + (cx, cy)


def _bird_polygons(attrs: BirdAttributes) -> list[tuple[str, np.ndarray]]:
    """Part polygons in a canonical frame (unit = bird length, facing +x, y down), in painting order."""
    jb, jh, jw, jt = attrs.shape_jitter
    beak_len = attrs.beak_length
    head = (0.3, -0.17)
    head_r = 0.13 * jh
    polys = [
        ("legs", np.array([[-0.02, 0.15], [0.01, 0.15], [0.01, 0.33], [-0.02, 0.33]])),
        ("legs", np.array([[0.07, 0.15], [0.10, 0.15], [0.10, 0.33], [0.07, 0.33]])),
        ("tail", np.array([[-0.22, -0.06], [-0.22, 0.06], [-0.5 * jt, 0.15], [-0.55 * jt, 0.0]])),
        ("body", _ellipse(0.0, 0.0, 0.32 * jb, 0.19 * jb)),
        ("belly", _ellipse(0.04, 0.08 * jb, 0.22 * jb, 0.09 * jb)),
        ("wing", _ellipse(-0.06, -0.02, 0.25 * jw, 0.11 * jw, tilt=0.2)),
        ("head", _ellipse(head[0], head[1], head_r, head_r)),
        # The crown is the cap of the head: a flat ellipse on its top.
        ("crown", _ellipse(head[0] - 0.01, head[1] - 0.7 * head_r, 0.8 * head_r, 0.42 * head_r)),
        ("eye", _ellipse(head[0] + 0.45 * head_r, head[1] - 0.1 * head_r, 0.025, 0.025)),
        ("beak", np.array([[head[0] + 0.85 * head_r, head[1] - 0.32 * head_r],
                           [head[0] + 0.85 * head_r, head[1] + 0.38 * head_r],
                           [head[0] + 0.85 * head_r + beak_len, head[1] + 0.05 * head_r]])),
    ]
    return polys


@lru_cache(maxsize=8)
def _gradient(size: int) -> Image.Image:
    return Image.linear_gradient("L").resize((size, size))


def _random_background(rng: np.random.Generator, size: int, base: Image.Image | None = None) -> Image.Image:
    """Low-saturation vertical gradient, and clutter shapes (blobs, boxes, twigs) in low-saturation colours.

    ``base`` (a class background) replaces the gradient; the same random draws are made, so the clutter is the same.
    """
    r = _py_random(rng)

    def dull_colour(max_sat: float = 0.25) -> tuple[int, int, int]:
        value = r.uniform(0.35, 0.95)
        return tuple(_clip255((value + r.uniform(-1, 1) * max_sat * value) * 255) for _ in range(3))

    # Gradient between two dull colours, composited in C (a numpy blend cost ~0.1 ms per image).
    top, bottom = dull_colour(), dull_colour()
    if base is not None:
        img = base.copy()
    else:
        img = Image.composite(Image.new("RGB", (size, size), top), Image.new("RGB", (size, size), bottom),
                              _gradient(size))
    draw = ImageDraw.Draw(img)
    for _ in range(r.randint(3, 8)):
        kind = r.randrange(3)
        x0, y0 = r.uniform(-0.1, 1.0) * size, r.uniform(-0.1, 1.0) * size
        w, h = r.uniform(0.05, 0.35) * size, r.uniform(0.05, 0.35) * size
        colour = dull_colour(0.22)
        if kind == 0:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        elif kind == 1:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
        else:  # branches / twigs
            x1, y1 = r.random() * size, r.random() * size
            draw.line([x0, y0, x1, y1], fill=colour, width=r.randint(1, max(1, size // 24 - 1)))
    return img


@lru_cache(maxsize=8)
def _noise_bank(image_size: int, noise_std: float) -> np.ndarray:
    # (image_size + 1)**2 distinct crops of a 2x-sized bank: plenty, and never a visible repeating pattern.
    side = 2 * image_size
    bank = np.random.default_rng(12345).normal(0.0, noise_std, size=(side, side, 3))
    return np.round(bank).astype(np.int16)


def render_bird(
    rng: np.random.Generator,
    spec: ClassSpec,
    image_size: int = DEFAULT_IMAGE_SIZE,
    attributes: BirdAttributes | None = None,
    noise_std: float = 6.0,
    background: Image.Image | None = None,
) -> tuple[Image.Image, np.ndarray]:
    """Draw one bird of class ``spec`` on a cluttered background.

    Returns the RGB image and a ``(image_size, image_size)`` uint8 mask with ``PART_INDEX[part]`` per pixel
    (0 = background). Pass ``attributes`` (from ``sample_bird``) to draw a specific bird; otherwise one is sampled
    from ``rng``. ``background`` (`synthetic_backgrounds.paint_background`) replaces the gradient under the clutter.
    """
    attrs = attributes if attributes is not None else sample_bird(rng, spec)
    img = _random_background(rng, image_size, base=background)
    mask = Image.new("L", (image_size, image_size), 0)
    draw, mdraw = ImageDraw.Draw(img), ImageDraw.Draw(mask)

    # canonical -> pixel: mirror, rotate, scale, translate (points are row vectors).
    length = attrs.scale * image_size
    c, s = math.cos(attrs.angle), math.sin(attrs.angle)
    linear = np.array([[c, s], [-s, c]]) * length
    if attrs.mirror:
        linear = np.array([[-1.0, 0.0], [0.0, 1.0]]) @ linear
    polygons = [(part, poly @ linear) for part, poly in _bird_polygons(attrs)]
    # Place the posed bird's bounding box anywhere inside the frame (1 px margin): never cut off.
    allpts = np.concatenate([pts for _, pts in polygons])
    low, high = allpts.min(axis=0), allpts.max(axis=0)
    free = np.maximum(image_size - 2 - (high - low), 0.0)
    offset = 1 - low + free * np.asarray(attrs.position)
    for part, poly in polygons:
        pts = [tuple(p) for p in (poly + offset).tolist()]
        draw.polygon(pts, fill=attrs.rgb[part])
        mdraw.polygon(pts, fill=PART_INDEX[part])

    if noise_std > 0:
        # A random crop of a fixed Gaussian noise bank: drawing fresh noise per pixel was a third of the render time.
        bank = _noise_bank(image_size, float(noise_std))
        y, x = rng.integers(0, bank.shape[0] - image_size + 1, size=2)
        arr = np.asarray(img, dtype=np.int16) + bank[y:y + image_size, x:x + image_size]
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img, np.asarray(mask, dtype=np.uint8)


# --------------------------------------------------------------------------------------------------- captions
_PART_WORDS = {
    "body": ["body"],
    "head": ["head"],
    "crown": ["crown", "crown", "cap"],
    "wing": ["wings", "wings", "wing feathers"],
    "tail": ["tail", "tail feathers"],
    "beak": ["beak", "beak", "bill"],
    "belly": ["belly", "breast", "underside"],
    "legs": ["legs", "feet"],
    "eye": ["eyes", "eye"],
}
_PLURAL = {"wings", "wing feathers", "tail feathers", "legs", "feet", "eyes"}
_COLOUR_WORDS = {"grey": ["grey", "gray"]}
_SIZE_WORDS = ["", "", "small ", "little "]
# Parts a caption may mention besides the discriminative ones (the eye is nearly always black: little information).
_EXTRA_PARTS = ("body", "head", "crown", "wing", "tail", "beak", "belly", "legs")


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _noun_phrase(r: random.Random, part: str, colour: str, attrs: BirdAttributes) -> tuple[str, str, str]:
    """("a red crown", "red", "crown") with synonyms; the beak sometimes gets its length."""
    word = r.choice(_PART_WORDS[part])
    colour_word = r.choice(_COLOUR_WORDS.get(colour, [colour]))
    adjective = colour_word
    if part == "beak" and r.random() < 0.5:
        adjective = f"{attrs.beak_word} {colour_word}"
    phrase = f"{adjective} {word}" if word in _PLURAL else _a(f"{adjective} {word}")
    return phrase, colour_word, word


def _join(r: random.Random, phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    comma = "," if len(phrases) > 2 and r.random() < 0.5 else ""  # Oxford comma sometimes
    return ", ".join(phrases[:-1]) + f"{comma} and {phrases[-1]}"


def _is_are(word: str) -> str:
    return "are" if word in _PLURAL else "is"


def make_captions(
    rng: np.random.Generator, spec: ClassSpec, attrs: BirdAttributes, n: int = CAPTIONS_PER_IMAGE
) -> list[str]:
    """``n`` lower-case captions naming parts with their drawn colours, discriminative parts in most of them."""
    r = _py_random(rng)
    key_parts = list(spec.discriminative_parts)
    others = [p for p in _EXTRA_PARTS if p not in spec.colours]
    captions = []
    for _ in range(n):
        parts = [p for p in key_parts if r.random() < 0.85] or [r.choice(key_parts)]
        parts += r.sample(others, min(r.randrange(3), len(others)))
        r.shuffle(parts)
        nps = [_noun_phrase(r, p, attrs.part_colours[p], attrs) for p in parts]
        phrases = [np_[0] for np_ in nps]
        bird = r.choice(_SIZE_WORDS) + "bird"
        template = r.randrange(9)
        if template == 0:
            text = f"this {bird} has {_join(r, phrases)}"
        elif template == 1:
            text = f"{_a(bird)} with {_join(r, phrases)}"
        elif template == 2:
            text = f"this is {_a(bird)} with {_join(r, phrases)}"
        elif template == 3:
            text = f"the {bird} has {_join(r, phrases)}"
        elif template == 4 and "body" in parts:
            # "a small blue bird with a red crown": the body colour becomes the bird's colour.
            i = parts.index("body")
            rest = phrases[:i] + phrases[i + 1:]
            text = _a(f"{r.choice(_SIZE_WORDS)}{nps[i][1]} bird") + (f" with {_join(r, rest)}" if rest else "")
        elif template == 5 and len(parts) >= 2:
            _, c0, w0 = nps[0]
            text = f"the {w0} of this bird {_is_are(w0)} {c0}, and it has {_join(r, phrases[1:])}"
        elif template == 6:
            clauses = [f"its {w} {_is_are(w)} {c}" for _, c, w in nps]
            clauses[0] = "this bird's" + clauses[0][3:]
            text = _join(r, clauses)
        elif template == 7:
            text = f"{_join(r, [f'{c} {w}' for _, c, w in nps])} on this {bird}"
        else:
            text = f"{bird} with {_join(r, phrases)}"
        captions.append(text + r.choice([".", ".", "", " ."]))
    return captions


# --------------------------------------------------------------------------------------------------- dataset
class SyntheticExample(NamedTuple):
    image: Image.Image
    mask: np.ndarray
    captions: list[str]
    attributes: BirdAttributes


def generate_example(
    seed: int,
    split: str,
    index: int,
    spec: ClassSpec,
    image_size: int = DEFAULT_IMAGE_SIZE,
    *,
    distractors: int = 0,
    classes: Sequence[ClassSpec] | None = None,
    background_class: int | None = None,
) -> SyntheticExample:
    """One example with its own generator, so any example can be regenerated alone and in any order.

    ``distractors`` > 0 paints that many non-discriminative parts in saturated colours that keep the class unique
    among ``classes`` (default: the first `DEFAULT_NUM_CLASSES`; pass the dataset's own list): see
    `cam_joint.data.synthetic_distractors`. ``background_class`` paints that class's background under the clutter
    (`cam_joint.data.synthetic_backgrounds`); None keeps the plain gradient.
    """
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    attrs = sample_bird(rng, spec)
    if distractors:
        # Its own generator leaves `rng` untouched, so the bird keeps the pose, background and noise of the same
        # example without distractors (only the recoloured parts differ).
        distractor_rng = np.random.default_rng([seed, _SPLIT_IDS[split], index, _DISTRACTOR_STREAM])
        attrs = paint_distractors(attrs, spec, class_specs() if classes is None else classes, distractors,
                                  distractor_rng)
    background = None
    if background_class is not None:  # its own generator too: same bird, clutter and noise as without
        background = paint_background(pattern_generator(seed, _SPLIT_IDS[split], index), background_class, image_size)
    image, mask = render_bird(rng, spec, image_size, attributes=attrs, background=background)
    captions = make_captions(rng, spec, attrs)
    return SyntheticExample(image, mask, captions, attrs)


def _encode(image: Image.Image, fmt: str) -> dict:
    # Noisy RGB images do not compress, and PNG encoding them took longer than drawing them: store those as BMP
    # (lossless, ~25x faster to encode). Masks compress ~20x as PNG, cheaply.
    buf = io.BytesIO()
    image.save(buf, format=fmt, **({"compress_level": 1} if fmt == "PNG" else {}))
    return {"bytes": buf.getvalue(), "path": None}


def synthetic_features(num_classes: int = DEFAULT_NUM_CLASSES, with_distractors: bool = False,
                       with_backgrounds: bool = False):
    """The dataset's features; ``distractor_parts`` exists only with distractors and ``background_class`` /
    ``background_matches`` only with a background bias, so the default dataset keeps its schema and fingerprint
    (feature caches built on it stay valid)."""
    import datasets

    features = {
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=[s.name for s in class_specs(num_classes)]),
        "captions": datasets.Sequence(datasets.Value("string")),
        "image_id": datasets.Value("string"),
        "part_mask": datasets.Image(),
        "discriminative_parts": datasets.Sequence(datasets.Value("string")),
    }
    if with_distractors:
        features["distractor_parts"] = datasets.Sequence(datasets.Value("string"))
    if with_backgrounds:
        features["background_class"] = datasets.Value("int64")  # whose background the image shows (a label index)
        features["background_matches"] = datasets.Value("bool")  # background_class == label
    return datasets.Features(features)


def _check_distractors(distractors: int) -> None:
    if isinstance(distractors, bool) or not isinstance(distractors, int) or not 0 <= distractors <= MAX_DISTRACTORS:
        raise ValueError(f"distractors must be an integer from 0 to {MAX_DISTRACTORS} (the parts a bird has besides "
                         f"its eye), got {distractors!r}")


def make_synthetic_split(
    split: str,
    per_class: int,
    num_classes: int = DEFAULT_NUM_CLASSES,
    image_size: int = DEFAULT_IMAGE_SIZE,
    seed: int = 0,
    distractors: int = 0,
    background_bias: float | None = None,
):
    """One split as a ``datasets.Dataset``; classes are interleaved (example i has label i % num_classes).

    ``split`` is "train", "validation", "test" or (with a ``background_bias``) "test_shifted"; see
    `make_synthetic_dataset`.
    """
    import datasets

    if split not in _SPLIT_IDS:
        raise ValueError(f"split must be one of {', '.join(_SPLIT_IDS)}, got {split!r}")
    _check_distractors(distractors)
    check_background_bias(background_bias, num_classes)
    if split == SHIFTED_SPLIT and background_bias is None:
        raise ValueError("the test_shifted split exists only with a background_bias (its backgrounds are the point)")
    specs = class_specs(num_classes)
    features = synthetic_features(num_classes, with_distractors=distractors > 0,
                                  with_backgrounds=background_bias is not None)
    columns: dict[str, list] = {name: [] for name in features}
    labels = [index % num_classes for index in range(per_class * num_classes)]
    backgrounds = [None] * len(labels)
    if background_bias is not None:
        backgrounds = assign_background_classes(labels, num_classes, background_bias,
                                                assignment_generator(seed, _SPLIT_IDS[split]),
                                                shifted=split == SHIFTED_SPLIT)
    for index, label in enumerate(labels):
        ex = generate_example(seed, split, index, specs[label], image_size, distractors=distractors, classes=specs,
                              background_class=backgrounds[index])
        columns["image"].append(_encode(ex.image, "BMP"))
        columns["label"].append(label)
        columns["captions"].append(ex.captions)
        columns["image_id"].append(f"synthetic/{split}/{index:05d}")
        columns["part_mask"].append(_encode(Image.fromarray(ex.mask, mode="L"), "PNG"))
        columns["discriminative_parts"].append(list(specs[label].discriminative_parts))
        if distractors:
            columns["distractor_parts"].append(list(ex.attributes.distractor_parts))
        if background_bias is not None:
            columns["background_class"].append(backgrounds[index])
            columns["background_matches"].append(backgrounds[index] == label)
    return datasets.Dataset.from_dict(columns, features=features, split=split)


def make_synthetic_dataset(
    num_classes: int = DEFAULT_NUM_CLASSES,
    train_per_class: int = DEFAULT_SPLIT_SIZES["train"],
    validation_per_class: int = DEFAULT_SPLIT_SIZES["validation"],
    test_per_class: int = DEFAULT_SPLIT_SIZES["test"],
    image_size: int = DEFAULT_IMAGE_SIZE,
    seed: int = 0,
    distractors: int = 0,
    background_bias: float | None = None,
    shifted_per_class: int = DEFAULT_SHIFTED_PER_CLASS,
):
    """The synthetic bird dataset as a ``datasets.DatasetDict`` with ``train``/``validation``/``test`` splits.

    Columns: ``image`` (RGB), ``label`` (ClassLabel, e.g. "red_crown_blue_wing"), ``captions`` (10 strings),
    ``image_id`` ("synthetic/train/00042"), ``part_mask`` (mode "L", ``PART_INDEX`` per pixel, 0 = background),
    ``discriminative_parts`` (part names that define the class).

    ``distractors`` (0 to `synthetic_distractors.MAX_DISTRACTORS` = 8): how many non-discriminative parts per
    image are painted in random saturated colours (at most all of them: a class with three discriminative parts has
    five others). Then a ``distractor_parts`` column lists them, and the label is the most specific class definition
    the bird satisfies (`cam_joint.data.synthetic_distractors.decide_class`). 0, the default, is the dataset without
    distractors.

    ``background_bias`` (P from 0 to 1, or None): the shortcut testbed (`cam_joint.data.synthetic_backgrounds`). Each
    class gets a background of its own; in train, validation and test exactly ``floor(P * n + 0.5)`` of each
    class's ``n`` images show it and the others another class's; a fourth split ``test_shifted``
    (``shifted_per_class`` images per class) draws the background class independently of the label. Then
    ``background_class`` (int) and ``background_matches`` (bool) columns say which background each image shows.
    None, the default, is the dataset without class backgrounds (and without test_shifted).
    """
    import datasets

    _check_distractors(distractors)
    check_background_bias(background_bias, num_classes)
    sizes = {"train": train_per_class, "validation": validation_per_class, "test": test_per_class}
    if background_bias is not None:
        if isinstance(shifted_per_class, bool) or not isinstance(shifted_per_class, int) or shifted_per_class < 1:
            raise ValueError(f"shifted_per_class must be a positive integer, got {shifted_per_class!r}")
        sizes[SHIFTED_SPLIT] = shifted_per_class
    return datasets.DatasetDict(
        {
            split: make_synthetic_split(split, n, num_classes=num_classes, image_size=image_size, seed=seed,
                                        distractors=distractors, background_bias=background_bias)
            for split, n in sizes.items()
        }
    )


__all__ = [
    "PART_NAMES",
    "PART_INDEX",
    "SATURATED_COLOURS",
    "NEUTRAL_COLOURS",
    "ClassSpec",
    "BirdAttributes",
    "SyntheticExample",
    "class_specs",
    "sample_bird",
    "render_bird",
    "make_captions",
    "generate_example",
    "make_synthetic_split",
    "make_synthetic_dataset",
    "synthetic_features",
    "DEFAULT_NUM_CLASSES",
    "DEFAULT_SHIFTED_PER_CLASS",
    "MAJOR_PARTS",
    "MINOR_PARTS",
]
