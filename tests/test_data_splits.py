"""Split protocols: the hard-coded etri2020 class lists follow their documented rule, and the rules hold on any data."""

from __future__ import annotations

from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from data_layouts import write_small_cub
from scipy.io import loadmat

from cam_joint.data import DatasetLayoutError, load_cub
from cam_joint.data.layout_files import ImageRecord
from cam_joint.data.splits import (
    CUB_ETRI2020_CAPTION_VALIDATION_CLASSES,
    CUB_STACKGAN_TEST_CLASSES,
    FLOWERS_ETRI2020_CAPTION_TEST_CLASSES,
    FLOWERS_ETRI2020_CAPTION_VALIDATION_CLASSES,
    etri2020_split_indices,
    seeded_order,
    select_classes_with_exact_total,
    stratified_60_20_20,
)


# ----------------------------------------------------------------- the hard-coded lists are the rule's output
def test_cub_caption_validation_classes_follow_the_documented_rule(shared_data):
    folder_of = dict(line.split() for line in (shared_data / "cub" / "classes.txt").read_text().splitlines())
    labels = Counter(folder_of[line.split()[1]] for line in (shared_data / "cub" / "image_class_labels.txt")
                     .read_text().splitlines())
    classification = {key: n for key, n in labels.items() if key not in CUB_STACKGAN_TEST_CLASSES}
    assert (len(classification), sum(classification.values())) == (150, 8855)
    chosen = select_classes_with_exact_total(classification, n_classes=50, n_images=2961, seed=0)
    assert tuple(chosen) == CUB_ETRI2020_CAPTION_VALIDATION_CLASSES
    assert sum(classification[key] for key in chosen) == 2961
    assert sum(n for key, n in classification.items() if key not in chosen) == 5894


def test_flowers_caption_classes_follow_the_documented_rule(shared_data):
    labels = loadmat(shared_data / "flowers" / "imagelabels.mat")["labels"].ravel()
    sizes = Counter(f"class_{int(label):05d}" for label in labels)
    test = select_classes_with_exact_total(sizes, n_classes=20, n_images=1155, seed=0)
    assert tuple(test) == FLOWERS_ETRI2020_CAPTION_TEST_CLASSES
    rest = {key: n for key, n in sizes.items() if key not in test}
    validation = select_classes_with_exact_total(rest, n_classes=20, n_images=1156, seed=0)
    assert tuple(validation) == FLOWERS_ETRI2020_CAPTION_VALIDATION_CLASSES
    assert sum(n for key, n in rest.items() if key not in validation) == 5878


# ------------------------------------------------------------------------------------------ the rules themselves
def test_class_selection_hits_exact_totals_or_says_it_cannot():
    sizes = {f"c{i:02d}": n for i, n in enumerate([40, 41, 45, 50, 58, 60, 60, 60, 60, 75, 82, 90, 102, 130])}
    for n_classes, n_images in [(3, 131), (5, 300), (7, 500)]:
        chosen = select_classes_with_exact_total(sizes, n_classes, n_images)
        assert len(chosen) == n_classes and sum(sizes[key] for key in chosen) == n_images
        # The documented rule, by brute force: the first such combination in the seeded order.
        first = next(c for c in combinations(seeded_order(sizes), n_classes) if sum(sizes[k] for k in c) == n_images)
        assert chosen == sorted(first)
        assert chosen == select_classes_with_exact_total(dict(reversed(sizes.items())), n_classes, n_images)
    with pytest.raises(ValueError, match="no 3 of these 14 classes hold exactly 100 images"):
        select_classes_with_exact_total(sizes, 3, 100)


@pytest.mark.parametrize("class_sizes", [[60] * 144 + [59] * 6, [41, 44, 58, 60, 71, 258], [1, 2, 3, 4, 6, 7], [5]])
def test_stratified_split_has_exact_totals_and_keeps_classes_whole(class_sizes):
    class_of = [f"class_{c}" for c, n in enumerate(class_sizes) for _ in range(n)]
    image_ids = [f"image_{i}" for i in range(len(class_of))]
    splits = stratified_60_20_20(class_of, image_ids)
    total = len(class_of)
    assert sorted(sum(splits.values(), [])) == list(range(total))  # a partition: nothing lost, nothing twice
    assert len(splits["validation"]) == len(splits["test"]) == total // 5
    for c, n in enumerate(class_sizes):
        if n >= 5:  # every class big enough shows up in every split, ~60/20/20
            counts = {name: sum(class_of[p] == f"class_{c}" for p in positions) for name, positions in splits.items()}
            assert counts["validation"] == counts["test"] in (n // 5, n // 5 + 1)


def records(keys_and_counts: list[tuple[str, int]]) -> list[ImageRecord]:
    return [
        ImageRecord(image_id=f"{key}/{i:03d}", path=Path(f"/nowhere/{key}/{i:03d}.jpg"), label=c, class_key=key,
                    captions=())
        for c, (key, n) in enumerate(keys_and_counts) for i in range(n)
    ]  # fmt: skip


def test_etri2020_works_on_a_partial_dataset_and_keeps_class_assignments():
    validation, test = CUB_ETRI2020_CAPTION_VALIDATION_CLASSES[:2], CUB_STACKGAN_TEST_CLASSES[:2]
    present = ["099.Some_Bird", "098.Other_Bird", *validation, *test]  # images of 6 classes only
    all_keys = {*present, *CUB_STACKGAN_TEST_CLASSES, *CUB_ETRI2020_CAPTION_VALIDATION_CLASSES}
    full = records([(key, 20) for key in present])
    partial = [record for i, record in enumerate(full) if i % 3]
    for items in (full, partial):
        splits = etri2020_split_indices(items, all_class_keys=all_keys, caption_test_classes=CUB_STACKGAN_TEST_CLASSES,
                                        caption_validation_classes=CUB_ETRI2020_CAPTION_VALIDATION_CLASSES,
                                        classes_file=Path("classes.txt"))
        classes = {name: {items[p].class_key for p in positions} for name, positions in splits.items()}
        assert classes["caption_test"] == set(test)
        assert classes["caption_validation"] == set(validation)
        assert classes["caption_train"] == {"099.Some_Bird", "098.Other_Bird"}
        classified = sorted(splits["train"] + splits["validation"] + splits["test"])
        assert classified == sorted(splits["caption_train"] + splits["caption_validation"])
        assert len(splits["validation"]) == len(classified) // 5


def test_same_input_same_splits_whatever_the_order_of_records():
    items = records([("a", 17), ("b", 23), ("c", 9)])
    shuffled = [items[i] for i in np.random.default_rng(0).permutation(len(items))]

    def split_ids(recs):
        result = stratified_60_20_20([r.class_key for r in recs], [r.image_id for r in recs])
        return {name: sorted(recs[p].image_id for p in positions) for name, positions in result.items()}

    assert split_ids(items) == split_ids(shuffled)


def test_etri2020_on_a_dataset_missing_a_protocol_class_names_classes_txt(tmp_path):
    root = write_small_cub(tmp_path)  # 3 classes: most StackGAN test classes are absent
    with pytest.raises(DatasetLayoutError, match=r"classes\.txt: no class '004\.Groove_billed_Ani'"):
        load_cub(root, "etri2020")
