"""Worst-group accuracy on hand-made groups whose accuracies are known."""

import pytest

from cam_joint.metrics.group_accuracy import worst_group_accuracy


def test_worst_group_over_the_overall_and_the_large_per_class_groups():
    # Class 0: 4 images on its own background (all right), 4 on another (1 right).
    # Class 1: 4 on its own (3 right), 2 on another (both right) -- below min_group_size 3: not a per-class group.
    labels = [0] * 8 + [1] * 6
    matches = [True] * 4 + [False] * 4 + [True] * 4 + [False] * 2
    predicted = [0, 0, 0, 0] + [0, 1, 1, 1] + [1, 1, 1, 0] + [1, 1]
    result = worst_group_accuracy(predicted, labels, matches, class_names=["red_crown", "blue_beak"],
                                  min_group_size=3)
    table = {row["group"]: (row["size"], row["top1"]) for row in result["groups"]}
    assert table == {
        "all classes, background its own": (8, 7 / 8),
        "all classes, background not its own": (6, 3 / 6),
        "class 0 (red_crown), background its own": (4, 1.0),
        "class 0 (red_crown), background not its own": (4, 0.25),
        "class 1 (blue_beak), background its own": (4, 0.75),
    }
    assert result["worst_group_top1"] == 0.25 and result["num_groups"] == 5
    assert result["worst_group"] == "class 0 (red_crown), background not its own" and result["worst_group_size"] == 4


def test_small_groups_leave_the_overall_ones_and_empty_ones_are_skipped():
    labels, matches = [0, 1, 0, 1], [False] * 4  # no image on its own background
    result = worst_group_accuracy([0, 0, 0, 0], labels, matches)  # default min_group_size 50
    assert result["groups"] == [{"group": "all classes, background not its own", "size": 4, "top1": 0.5}]
    assert result["worst_group_top1"] == 0.5 and result["num_groups"] == 1
    assert worst_group_accuracy([], [], []) == {}


def test_mismatched_lengths_are_named():
    with pytest.raises(ValueError, match="one entry per image, got 2, 2 and 1"):
        worst_group_accuracy([0, 1], [0, 1], [True])
