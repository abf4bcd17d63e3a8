"""Worst-group accuracy (Sagawa et al., ICLR 2020), for the synthetic shortcut testbed's backgrounds.

    worst_group_accuracy(predicted, labels, background_matches, class_names=names)
    # -> {"worst_group_top1": 0.31, "worst_group": "class 3 (red_crown_blue_wing), background not its own",
    #     "worst_group_size": 96, "num_groups": 22, "groups": [{"group": ..., "size": ..., "top1": ...}, ...]}

Groups: the images whose background is their class's and those whose background is another class's (over all
classes; each counted when not empty), and per class each (class, background matches or not) group of at least
``min_group_size`` images (smaller ones give too noisy an accuracy to be a "worst"). A classifier that reads the
background scores well on the matching groups and badly on the others; its worst group shows it even where the
average hides it. ``groups`` lists every counted group with its size and top-1, so a reader can check the worst.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

DEFAULT_MIN_GROUP_SIZE = 50


def _group_name(matches: bool, label: int | None = None, class_names: Sequence[str] | None = None) -> str:
    background = "background its own" if matches else "background not its own"
    if label is None:
        return f"all classes, {background}"
    name = f" ({class_names[label]})" if class_names is not None and label < len(class_names) else ""
    return f"class {label}{name}, {background}"


def worst_group_accuracy(
    predicted: Sequence[int],
    labels: Sequence[int],
    background_matches: Sequence[bool],
    class_names: Sequence[str] | None = None,
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE,
) -> dict[str, Any]:
    """The worst group's top-1 and the groups it was taken over (see the module docstring); ``{}`` if no group."""
    predicted, labels = np.asarray(predicted, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    matches = np.asarray(background_matches, dtype=bool)
    if not len(predicted) == len(labels) == len(matches):
        raise ValueError(f"predicted, labels and background_matches must have one entry per image, got "
                         f"{len(predicted)}, {len(labels)} and {len(matches)}")
    if min_group_size < 1:
        raise ValueError(f"min_group_size must be positive, got {min_group_size}")
    correct = predicted == labels
    groups = []
    for value in (True, False):
        members = matches == value
        if members.any():
            groups.append((_group_name(value), members))
    for label in np.unique(labels).tolist():
        for value in (True, False):
            members = (labels == label) & (matches == value)
            if members.sum() >= min_group_size:
                groups.append((_group_name(value, label, class_names), members))
    if not groups:
        return {}
    table = [{"group": name, "size": int(members.sum()), "top1": float(correct[members].mean())}
             for name, members in groups]
    worst = min(table, key=lambda row: row["top1"])  # the first of equals: the overall groups come first
    return {"worst_group_top1": worst["top1"], "worst_group": worst["group"], "worst_group_size": worst["size"],
            "num_groups": len(table), "groups": table}


__all__ = ["DEFAULT_MIN_GROUP_SIZE", "worst_group_accuracy"]
