"""Synthetic birds: deterministic, labelled by part colours only, masks aligned with pixels, captions truthful."""

import hashlib
import json
import re
import time

import numpy as np
import pytest
from PIL import Image

from cam_joint.data.synthetic import (
    CAPTIONS_PER_IMAGE,
    NEUTRAL_COLOURS,
    PART_INDEX,
    PART_NAMES,
    SATURATED_COLOURS,
    class_specs,
    generate_example,
    make_synthetic_dataset,
    render_bird,
)

_SAT = np.array(list(SATURATED_COLOURS.values()), dtype=float)
_SAT_NAMES = list(SATURATED_COLOURS)


@pytest.fixture(scope="module")
def small():
    return make_synthetic_dataset(num_classes=8, train_per_class=3, validation_per_class=1, test_per_class=1,
                                  image_size=64, seed=0)


def nearest_saturated(rgb, max_dist=45.0):
    """Name of the saturated palette colour within max_dist of rgb, else None."""
    d = np.linalg.norm(_SAT - np.asarray(rgb, dtype=float), axis=1)
    return _SAT_NAMES[int(d.argmin())] if d.min() < max_dist else None


def test_schema_and_ids(small):
    assert set(small) == {"train", "validation", "test"}
    assert [len(small[s]) for s in ("train", "validation", "test")] == [24, 8, 8]
    feats = small["train"].features
    assert feats["label"].names == [s.name for s in class_specs(8)]
    assert feats["label"].names[0].endswith("_wing") or "_" in feats["label"].names[0]
    row = small["train"][5]
    assert row["image"].mode == "RGB" and row["image"].size == (64, 64)
    assert row["part_mask"].mode == "L" and row["part_mask"].size == (64, 64)
    assert len(row["captions"]) == CAPTIONS_PER_IMAGE and all(isinstance(c, str) and c for c in row["captions"])
    assert row["image_id"] == "synthetic/train/00005"
    assert row["discriminative_parts"] == list(class_specs(8)[row["label"]].discriminative_parts)
    ids = [i for s in small.values() for i in s["image_id"]]
    assert len(set(ids)) == len(ids)
    # Every class appears in every split.
    assert all(set(small[s]["label"]) == set(range(8)) for s in small)


def test_same_seed_is_byte_identical_and_seeds_differ(small):
    again = make_synthetic_dataset(num_classes=8, train_per_class=3, validation_per_class=1, test_per_class=1,
                                   image_size=64, seed=0)
    other = make_synthetic_dataset(num_classes=8, train_per_class=3, validation_per_class=1, test_per_class=1,
                                   image_size=64, seed=1)
    raw = lambda d, col: [x["bytes"] for x in d["train"].cast_column(col, d["train"].features[col].__class__(
        decode=False))[col]]
    assert raw(small, "image") == raw(again, "image")
    assert raw(small, "part_mask") == raw(again, "part_mask")
    assert small["train"]["captions"] == again["train"]["captions"]
    assert small["train"]._fingerprint == again["train"]._fingerprint  # same content => feature caches are reused
    assert raw(small, "image") != raw(other, "image")
    assert small["train"]._fingerprint != other["train"]._fingerprint  # ... and never reused across seeds
    assert small["train"]["captions"] != other["train"]["captions"]
    # Splits are different draws, not copies.
    assert np.asarray(small["train"][0]["image"]).tobytes() != np.asarray(small["test"][0]["image"]).tobytes()


def content_digest(dataset_dict):
    """SHA-256 of the decoded pixels, masks, labels, ids, captions and parts of every row: independent of the
    PNG/BMP encoder's version, unlike the stored bytes."""
    digest = hashlib.sha256()
    for split in ("train", "validation", "test"):
        for row in dataset_dict[split]:
            digest.update(np.asarray(row["image"]).tobytes())
            digest.update(np.asarray(row["part_mask"]).tobytes())
            digest.update(json.dumps([row["label"], row["image_id"], row["captions"],
                                      row["discriminative_parts"]]).encode())
    return digest.hexdigest()


# Digest of `small` as drawn before distractors existed (commit ef8d596): the default data must never change, or
# every measured figure, saved model and feature cache built on it silently stops matching.
SMALL_DIGEST = "ffc1daf5f44ea55fb1c3d54cbac6d94352172657c941206bb8a61907de58115f"


def test_default_data_is_what_it_always_was(small):
    assert content_digest(small) == SMALL_DIGEST
    assert small["train"].column_names == ["image", "label", "captions", "image_id", "part_mask",
                                           "discriminative_parts"]
    explicit = make_synthetic_dataset(num_classes=8, train_per_class=3, validation_per_class=1, test_per_class=1,
                                      image_size=64, seed=0, distractors=0)
    assert explicit["train"]._fingerprint == small["train"]._fingerprint


def test_classes_are_distinct_and_fine_grained():
    specs = class_specs(40)
    assert len({s.name for s in specs}) == 40
    assert all(2 <= len(s.discriminative_parts) <= 3 for s in specs)
    assert class_specs(12) == specs[:12]  # prefix-stable: label names do not move when classes are added
    # Fine-grained: many classes have a sibling that differs in the colour of one small part only.
    def one_small_difference(a, b):
        parts = set(a.colours) | set(b.colours)
        diff = [p for p in parts if a.colours.get(p) != b.colours.get(p)]
        return len(diff) == 1 and diff[0] in ("crown", "beak")
    with_sibling = sum(any(one_small_difference(a, b) for b in specs if b is not a) for a in specs)
    assert with_sibling >= len(specs) // 2


@pytest.mark.parametrize("seed", range(4))
def test_mask_marks_where_the_class_colours_are(seed):
    """The label is carried exactly by the saturated parts, and the mask says where they are."""
    specs = class_specs(20)
    for index in range(20):
        spec = specs[index]
        ex = generate_example(seed, "train", index, spec, image_size=96)
        img = np.asarray(ex.image, dtype=float)
        assert ex.mask.dtype == np.uint8 and ex.mask.shape == (96, 96)
        assert set(np.unique(ex.mask)) <= set(range(len(PART_NAMES) + 1))
        saturated_parts = {}
        for part in PART_NAMES:
            pixels = img[ex.mask == PART_INDEX[part]]
            if part in spec.colours:
                assert len(pixels) >= 4, f"discriminative {part} of {spec.name} is (nearly) invisible"
            if len(pixels):
                colour = nearest_saturated(np.median(pixels, axis=0))
                if colour is not None:
                    saturated_parts[part] = colour
        assert saturated_parts == dict(spec.colours), spec.name
        # Background clutter never carries a palette colour.
        background = img[ex.mask == 0]
        near = np.linalg.norm(background[:, None, :] - _SAT[None], axis=2).min(axis=1) < 30
        assert near.mean() < 0.01


def test_pose_varies_and_bird_stays_in_frame():
    spec = class_specs(1)[0]
    boxes, flips = set(), set()
    for i in range(40):
        rng = np.random.default_rng(i)
        image, mask = render_bird(rng, spec, 64)
        assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (64, 64)
        assert mask.shape == (64, 64) and mask.dtype == np.uint8
        assert not mask[[0, -1], :].any() and not mask[:, [0, -1]].any(), "bird cut off by the frame"
        ys, xs = np.nonzero(mask)
        boxes.add((xs.min() // 4, ys.min() // 4, xs.max() // 4))
        head_x = np.nonzero(mask == PART_INDEX["head"])[1].mean()
        flips.add(head_x > xs.mean())  # facing right or left
    assert len(boxes) > 20 and flips == {True, False}


def _caption_claims(caption):
    """(colour, part-word) pairs a caption asserts, from its "red crown" and "crown is red" phrasings."""
    colours = "|".join(list(SATURATED_COLOURS) + list(NEUTRAL_COLOURS) + ["gray"])
    words = "wing feathers|tail feathers|wings|crown|cap|beak|bill|body|head|tail|belly|breast|underside|legs|feet"
    claims = re.findall(rf"\b({colours}) (?:short |long )?({words})\b", caption)
    claims += [(c, w) for w, c in re.findall(rf"\b({words}) (?:of this bird )?(?:is|are) ({colours})\b", caption)]
    bird = re.match(rf"an? (?:small |little )?({colours}) bird", caption)  # "a blue bird" = blue body
    if bird:
        claims.append((bird.group(1), "body"))
    return claims


_WORD_PART = {"wing feathers": "wing", "wings": "wing", "tail feathers": "tail", "cap": "crown", "bill": "beak",
              "breast": "belly", "underside": "belly", "feet": "legs"}


def test_captions_describe_the_drawn_colours_and_the_discriminative_parts():
    specs = class_specs(20)
    mentioned = total = 0
    for index in range(60):
        spec = specs[index % 20]
        ex = generate_example(3, "train", index, spec, image_size=64)
        assert len(ex.captions) == CAPTIONS_PER_IMAGE and len(set(ex.captions)) >= 6  # varied, not one template
        for caption in ex.captions:
            claims = _caption_claims(caption)
            assert claims, caption
            for colour, word in claims:
                part = _WORD_PART.get(word, word)
                colour = "grey" if colour == "gray" else colour
                assert ex.attributes.part_colours[part] == colour, f"{caption!r} is wrong about the {part}"
            parts = {_WORD_PART.get(w, w) for _, w in claims}
            mentioned += sum(p in parts for p in spec.discriminative_parts)
            total += len(spec.discriminative_parts)
    assert mentioned / total > 0.8, "captions must usually name the parts that define the class"


def test_render_speed():
    specs = class_specs(20)
    generate_example(0, "train", 0, specs[0], 96)  # warm-up (noise bank)
    n, wall, cpu = 200, time.perf_counter(), time.process_time()
    for i in range(n):
        generate_example(0, "train", i, specs[i % 20], 96)
    # CPU time of this (single-threaded) process: wall time on a shared machine measures the neighbours instead.
    rate, wall_rate = n / (time.process_time() - cpu), n / (time.perf_counter() - wall)
    print(f"synthetic birds at 96 px: {rate:.0f} images/s per CPU-second, {wall_rate:.0f}/s wall "
          "(image + mask + 10 captions, one core)")
    assert rate >= 250  # target 500+/s; generous bound for slow or busy machines
