"""The metrics this project reports: one registry, read by the model card, the Hub metadata and the result tables.

    from cam_joint.metrics.registry import METRICS, lookup
    lookup("eval_accuracy")        # -> Metric(key="top1", title="Top-1", ...)
    METRICS["CIDEr"].as_percent(0.72)   # -> 72.0

Each `Metric` says how a value is named in `metrics.json` (`key`), how it is shown (`title`, in percent or not), and
how the Hub files it: the `model-index` task (`task_type`, `task_name`) and metric `type`. A metric without a Hub
task (the Grad-CAM localisation scores) is shown on the card and written to `.eval_results/`, but has no
`model-index` entry, because the Hub's task list has no task for "where the model looks".

A new localisation metric is one line in `METRICS` below: `*localisation("pxap", "PxAP")` registers
`pxap_classifier`, `pxap_captioner` (one score per head's Grad-CAM map) and the map-free baselines `pxap_chance`
(a uniform random map) and `pxap_center` (a centred Gaussian), so that a table can show a score next to what a map
that ignores the image gets.

This module itself imports only the standard library (the metric implementations next to it need torch and Java).
"""

from __future__ import annotations

import re
from typing import NamedTuple


class Metric(NamedTuple):
    """One reported number.

    Attributes:
        key: its key in `metrics.json` / `evaluate_model`'s result, e.g. `"Bleu_4"`.
        title: its column title on the model card, e.g. `"BLEU-4"`.
        task_type, task_name: the Hub task it is reported under in `model-index` (`None`: not in `model-index`).
        metric_type: the `model-index` metric `type` (a Hub metric id such as `"bleu"`), `None` with no task.
        percent: the value is a fraction and is shown x100, as the paper's Table 2 does.
        fraction_max: the largest value a fraction of this metric can take (CIDEr-D reaches 10); a value above it is
            taken as already being a percentage, so results that were scaled before are not scaled twice.
        aliases: other spellings accepted for `key`, written as `normalise_key` leaves them (lower case, no
            separators, no `eval_`/`test_` prefix); the key's own normalised form is always accepted.
    """

    key: str
    title: str
    task_type: str | None = None
    task_name: str | None = None
    metric_type: str | None = None
    percent: bool = True
    fraction_max: float = 1.0
    aliases: tuple[str, ...] = ()

    def as_percent(self, value: float) -> float:
        """The value as shown on the card: x100 for a fraction (unless it is already past the fraction range)."""
        if self.percent and abs(value) <= self.fraction_max:
            return value * 100.0
        return value


CLASSIFICATION = ("image-classification", "Image Classification")
CAPTIONING = ("image-to-text", "Image Captioning")
HEADS = ("classifier", "captioner")  # whose Grad-CAM map a localisation score is about
BASELINES = ("chance", "center")  # maps that ignore the image: uniform random, centred Gaussian

# The split or stage prefixes a trainer puts before a metric name ("eval_top1", "test/CIDEr").
_PREFIXES = ("eval", "test", "validation", "val")


def localisation(key: str, title: str, *, baselines: bool = True) -> tuple[Metric, ...]:
    """A Grad-CAM localisation metric: one score per head (`<key>_classifier`, `<key>_captioner`) and, with
    `baselines`, the scores of maps that ignore the image (`<key>_chance`, `<key>_center`). All are fractions."""
    suffixes = HEADS + (BASELINES if baselines else ())
    return tuple(Metric(f"{key}_{suffix}", f"{title} ({suffix})") for suffix in suffixes)


def _caption(key: str, title: str, metric_type: str, *aliases: str, fraction_max: float = 1.0) -> Metric:
    return Metric(key, title, *CAPTIONING, metric_type, fraction_max=fraction_max, aliases=aliases)


def _classification(key: str, title: str, *aliases: str) -> Metric:
    return Metric(key, title, *CLASSIFICATION, "accuracy", aliases=aliases)


class MetricRegistry(dict):
    """`key -> Metric`, in the order the card's results table shows them, with `lookup` by any accepted spelling."""

    def __init__(self, *metrics: Metric):
        super().__init__()
        for metric in metrics:
            self.add(metric)

    def add(self, metric: Metric) -> Metric:
        """Register `metric`; raises ValueError if its key or an alias is already taken (two metrics, one name)."""
        for name in (metric.key, *metric.aliases):
            owner = self.lookup(name)
            if owner is not None:
                raise ValueError(f"metric name {name!r} of {metric.key!r} is already registered for {owner.key!r}")
        self[metric.key] = metric
        return metric

    def lookup(self, name: str) -> Metric | None:
        """The metric `name` refers to: its exact key first, then a normalised key or alias; None if unknown."""
        if name in self:
            return self[name]
        wanted = normalise_key(name)
        for metric in self.values():
            if wanted == normalise_key(metric.key) or wanted in metric.aliases:
                return metric
        return None


def normalise_key(name: str) -> str:
    """`"eval/Top-1 accuracy"` -> `"top1accuracy"`: the last path part, without a split prefix or separators."""
    name = str(name).split("/")[-1].split(".")[-1]
    parts = [p for p in re.split(r"[^0-9a-zA-Z]+", name) if p]
    while len(parts) > 1 and parts[0].lower() in _PREFIXES:
        parts = parts[1:]
    return "".join(parts).lower()


METRICS = MetricRegistry(
    _classification("top1", "Top-1", "top1accuracy", "accuracy", "acc", "acc1"),
    _classification("top5", "Top-5", "top5accuracy", "acc5"),
    # The synthetic shortcut testbed (`data.synthetic_backgrounds`): top-1 on test_shifted, whose backgrounds ignore
    # the class, and its worst group's (`metrics.group_accuracy`).
    _classification("top1_shifted", "Top-1, shifted backgrounds", "top1shiftedaccuracy"),
    _classification("worst_group_top1", "Worst-group top-1", "worstgroupaccuracy"),
    _caption("Bleu_1", "BLEU-1", "bleu"),
    _caption("Bleu_2", "BLEU-2", "bleu"),
    _caption("Bleu_3", "BLEU-3", "bleu"),
    _caption("Bleu_4", "BLEU-4", "bleu", "bleu"),
    _caption("METEOR", "METEOR", "meteor"),
    _caption("ROUGE_L", "ROUGE-L", "rouge", "rouge"),
    _caption("CIDEr", "CIDEr", "cider", "ciderd", fraction_max=10.0),  # CIDEr-D lies in [0, 10]
    Metric("cam_agreement", "CAM agreement", aliases=("camcosine", "camcosineagreement")),
    *localisation("pointing_game", "Pointing game"),
    *localisation("pointing_game_bbox", "Pointing game, box"),
    # Peak on the distractor parts (the synthetic birds' parts the class does not depend on): lower is better.
    *localisation("pointing_game_distractor", "Pointing game, distractor parts"),
    # Peak on the background (part mask 0): lower is better; on the evaluated split and on test_shifted.
    *localisation("pointing_game_background", "Pointing game, background"),
    # The same pointing games on test_shifted (the shortcut testbed's backgrounds-ignore-the-class split).
    *localisation("shifted_pointing_game", "Pointing game (shifted)"),
    *localisation("shifted_pointing_game_distractor", "Pointing game, distractor parts (shifted)"),
    *localisation("shifted_pointing_game_background", "Pointing game, background (shifted)"),
    *localisation("energy_pointing", "Energy pointing"),
    *localisation("energy_pointing_bbox", "Energy pointing, box"),
    *localisation("pxap", "PxAP"),
    *localisation("max_box_acc_v2", "MaxBoxAccV2"),
    *localisation("max_box_acc_iou30", "MaxBoxAcc IoU 0.3"),
    *localisation("max_box_acc_iou50", "MaxBoxAcc IoU 0.5"),
    *localisation("max_box_acc_iou70", "MaxBoxAcc IoU 0.7"),
)


def lookup(name: str) -> Metric | None:
    """`METRICS.lookup(name)`: the registered metric `name` (a key or an accepted spelling) refers to, or None."""
    return METRICS.lookup(name)


__all__ = ["METRICS", "Metric", "MetricRegistry", "localisation", "lookup", "normalise_key",
           "CLASSIFICATION", "CAPTIONING"]
