"""Evaluate a CamJoint model on a dataset split: accuracy, COCO caption metrics, CAM agreement, where the CAMs look.

    metrics = evaluate_model(model, processor, dataset_dict["test"])
    cam-joint evaluate --model runs/cam --split test --output metrics.json        (`evaluation_cli`)

Metrics (a flat dict; a metric the model or the dataset cannot give is absent, never NaN):

* ``top1``, ``top5``: classification accuracy (models with a classifier; k is clamped to the number of classes).
* ``Bleu_1`` .. ``Bleu_4``, ``METEOR``, ``ROUGE_L``, ``CIDEr``: pycocoevalcap's definitions (Java), over the images
  that have reference captions (``num_captioned`` of them); captions come from `prediction.predict_batch` (generated,
  cut at the first eos, decoded without special tokens). ``mean_caption_words``: length of the generated captions.
* ``cam_agreement``: mean over images of the cosine between the classifier's CAM for its predicted class and the
  captioner's CAM for its generated caption (models with both heads). A zero map scores 0. ``cam_map_size``: the
  maps' (h, w).
* Where the CAMs look (`metrics.localization`; maps cover the region of the original image that the processor keeps,
  `metrics.geometry`), each as ``<metric>_classifier`` / ``<metric>_captioner`` and beside two maps that know
  nothing about the image at the CAMs' resolution, ``<metric>_chance`` (uniform random cells) and
  ``<metric>_center`` (a centred Gaussian):
    - synthetic data (``part_mask`` + ``discriminative_parts``): ``pointing_game`` (the map's peak inside the union
      of the class's discriminative parts), ``energy_pointing`` (the share of the map's energy there), ``pxap``
      (pixel average precision against that mask), ``max_box_acc_v2`` and ``max_box_acc_iou30/50/70`` (against the
      whole bird's box); with ``distractor_parts``, ``pointing_game_distractor`` (peak on a distractor: lower is
      better); with ``background_matches`` (the shortcut testbed), ``pointing_game_background`` (peak on the
      background, part mask 0: lower is better);
    - CUB: ``pointing_game`` against the 15 part keypoints (within 10 % of the crop's shorter side of a visible
      one), and with ``bbox`` ``pointing_game_bbox``, ``energy_pointing_bbox``, ``max_box_acc_v2``.
  ``num_pointing_game`` / ``num_pointing_game_bbox``: images whose evidence is visible in the crop (the pointing
  games and energy pointing average over them).
* With a ``background_matches`` column (the synthetic shortcut testbed, `data.synthetic_backgrounds`):
  ``worst_group_top1``, the worst group's top-1 (`metrics.group_accuracy`: background its own / not, overall and per
  class where a group has >= 50 images), with ``worst_group`` (its name), ``worst_group_size``, ``num_groups`` and
  ``groups`` (every group's size and top-1). Training reports them for ``test_shifted``.
* ``num_images``: images evaluated.

Variants: ``cnn`` (no captioner) gets no caption metrics and no agreement; ``lrcn`` (no classifier) no top-k and no
agreement, and a pointing game for the caption map only.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping

import numpy as np
import torch

from cam_joint.data.synthetic_backgrounds import SHIFTED_SPLIT
from cam_joint.metrics import CAPTION_METRIC_KEYS, cam_cosine_similarities, compute_caption_metrics, topk_accuracy
from cam_joint.metrics.geometry import box_mask, mask_in_box, preprocessed_box
from cam_joint.metrics.group_accuracy import worst_group_accuracy
from cam_joint.metrics.localization import baseline_scores, mask_to_box, score_maps
from cam_joint.metrics.registry import METRICS
from cam_joint.prediction import image_processor_of, predict_batch

__all__ = ["evaluate_model", "evaluate_shifted", "METRIC_ORDER", "SHIFTED_SPLIT", "image_processor_of"]

# Key order of the printed table and the JSON file: the registered metrics in the registry's order, then the
# counts; a key a run does not produce is skipped, one not listed here comes last.
METRIC_ORDER = ("num_images", *METRICS, "num_captioned", "mean_caption_words", "cam_map_size", "num_pointing_game",
                "num_pointing_game_bbox", "worst_group", "worst_group_size", "num_groups", "groups")
HEADS = ("classifier", "captioner")
WORST_GROUP_KEYS = ("worst_group_top1", "worst_group", "worst_group_size", "num_groups", "groups")


@torch.no_grad()
def evaluate_model(
    model,
    processor,
    dataset,
    batch_size: int = 32,
    generation_kwargs: Mapping[str, Any] | None = None,
    max_samples: int | None = None,
    caption_metrics: bool = True,
    cam_metrics: bool = True,
    meteor=None,
    progress: bool = True,
    return_predictions: bool = False,
) -> dict[str, Any]:
    """Evaluate `model` on one split (`datasets.Dataset`); returns the flat metrics dict of the module docstring.

    Args:
        model: a `CamJointModel` (any variant), on any device; left in the train/eval mode it came in.
        processor: its `CamJointProcessor` (or just the image processor for a model without captioner).
        dataset: rows with ``image``, ``label``, ``captions`` and optionally ``part_mask`` + ``discriminative_parts``
            (synthetic) or ``parts`` (+ ``bbox``) (CUB).
        batch_size: images per forward pass.
        generation_kwargs: passed to ``model.generate`` (e.g. ``{"num_beams": 3}``); default: the model's
            generation config.
        max_samples: evaluate the first `max_samples` rows only.
        caption_metrics: compute BLEU/METEOR/ROUGE-L/CIDEr (needs Java; checked before anything runs).
        cam_metrics: compute CAM agreement and the pointing game (two Grad-CAM backward passes per batch).
        meteor: an open `coco_caption.MeteorProcess` to reuse (the caller closes it).
        progress: show a tqdm bar.
        return_predictions: also return ``predictions``: one dict per image (``image_id``, ``label``,
            ``predicted_label``, ``caption``) under that key (not a metric: pop it before treating values as numbers).
    """
    generation_kwargs = dict(generation_kwargs or {})
    dataset = _checked_dataset(model, dataset, batch_size, max_samples)
    columns = set(dataset.column_names)
    caption_metrics = caption_metrics and model.captioner is not None and "captions" in columns
    if caption_metrics:
        from cam_joint.metrics.coco_caption import find_java

        find_java()  # an hour of generation must not end in "Java not found"
    if model.captioner is not None and cam_metrics:
        _check_generation_length(model, generation_kwargs)
    image_processor = image_processor_of(processor)
    results = _Results(model, columns, cam_metrics, getattr(image_processor, "data_config", lambda: None)())

    was_training = model.training
    model.eval()
    try:
        for start in _progress(range(0, len(dataset), batch_size), progress, math.ceil(len(dataset) / batch_size)):
            rows = dataset[start:start + batch_size]
            ids = rows.get("image_id") or [f"row {start + i}" for i in range(len(rows["image"]))]
            images = [_to_pil(value, image_id) for value, image_id in zip(rows["image"], ids)]
            prediction = predict_batch(model, processor, images, generation_kwargs=generation_kwargs, cam=cam_metrics)
            results.add(rows, ids, images, prediction)
    finally:
        model.train(was_training)
    metrics = results.metrics(caption_metrics, meteor)
    if return_predictions:
        metrics["predictions"] = results.predictions()
    return metrics


def evaluate_shifted(model, processor, dataset, **kwargs) -> dict[str, Any]:
    """The shortcut testbed's out-of-distribution numbers: `evaluate_model` on ``test_shifted`` (no caption metrics:
    the captions do not depend on the background), as ``top1_shifted``, the worst-group keys (``worst_group_top1``,
    ...) and every pointing game prefixed ``shifted_`` (e.g. ``shifted_pointing_game_background_classifier``)."""
    metrics = evaluate_model(model, processor, dataset, caption_metrics=False, **kwargs)
    out: dict[str, Any] = {"num_images_shifted": metrics["num_images"]}
    if "top1" in metrics:
        out["top1_shifted"] = metrics["top1"]
    out.update({key: metrics[key] for key in WORST_GROUP_KEYS if key in metrics})
    out.update({f"shifted_{key}": value for key, value in metrics.items() if key.startswith("pointing_game_")})
    return out


class _Results:
    """What evaluation accumulates over the batches, and the metrics computed from it at the end."""

    def __init__(self, model, columns: set[str], cam_metrics: bool, data_config: Mapping[str, Any] | None):
        self.model, self.data_config = model, data_config
        self.has_classifier, self.has_captioner = model.classifier is not None, model.captioner is not None
        self.image_ids: list[str] = []
        self.labels: list[int] = []
        self.background_matches: list[bool] | None = [] if "background_matches" in columns else None
        self.logits: list[torch.Tensor] = []
        self.captions: list[str] = []
        self.references: list[list[str]] = []
        self.agreements: list[np.ndarray] = []
        self.map_size: tuple[int, int] | None = None
        self.localisation = _Localisation(columns) if cam_metrics else None

    def add(self, rows: Mapping[str, list], ids: list[str], images: list, prediction) -> None:
        count = len(images)
        self.image_ids.extend(ids)
        self.labels.extend(int(label) for label in rows["label"])
        if self.background_matches is not None:
            self.background_matches.extend(bool(value) for value in rows["background_matches"])
        if prediction.logits is not None:
            self.logits.append(prediction.logits)
        if prediction.captions is not None:
            self.captions.extend(prediction.captions)
            self.references.extend(rows["captions"] if "captions" in rows else [[] for _ in range(count)])
        maps = {"classifier": prediction.class_maps, "captioner": prediction.caption_maps}
        present = [m for m in maps.values() if m is not None]
        if present:
            self.map_size = tuple(present[0].shape[-2:])
        if prediction.class_maps is not None and prediction.caption_maps is not None:
            self.agreements.append(cam_cosine_similarities(prediction.class_maps, prediction.caption_maps))
        if self.localisation is not None and present:
            boxes = [preprocessed_box(image.size, self.data_config) if self.data_config else
                     (0.0, 0.0, float(image.size[0]), float(image.size[1])) for image in images]
            self.localisation.add(rows, images, boxes, tuple(prediction.pixel_values.shape[-2:]), maps)

    def metrics(self, caption_metrics: bool, meteor) -> dict[str, Any]:
        metrics: dict[str, Any] = {"num_images": len(self.image_ids)}
        labels = torch.tensor(self.labels, dtype=torch.long)
        labeled = labels >= 0  # -1 = unlabeled (some Hub test splits)
        if self.has_classifier and bool(labeled.any()):
            metrics.update(topk_accuracy(torch.cat(self.logits)[labeled], labels[labeled], ks=(1, 5)))
            if self.background_matches is not None:
                metrics.update(self._worst_group(labeled))
        if self.has_captioner:
            metrics["mean_caption_words"] = _mean([len(text.split()) for text in self.captions])
        if caption_metrics:
            metrics.update(self._caption_scores(meteor))
        if self.agreements:
            metrics["cam_agreement"] = _mean(np.concatenate(self.agreements))
        if self.map_size is not None:
            metrics["cam_map_size"] = list(self.map_size)
        if self.localisation is not None:
            metrics.update(self.localisation.metrics())
        return {**{key: metrics[key] for key in METRIC_ORDER if key in metrics},
                **{key: value for key, value in metrics.items() if key not in METRIC_ORDER}}

    def _worst_group(self, labeled: torch.Tensor) -> dict[str, Any]:
        keep = labeled.numpy()
        names = [name for _, name in sorted((int(k), v) for k, v in (self.model.config.id2label or {}).items())]
        return worst_group_accuracy(torch.cat(self.logits).argmax(-1).numpy()[keep], np.asarray(self.labels)[keep],
                                    np.asarray(self.background_matches)[keep], class_names=names or None)

    def _caption_scores(self, meteor) -> dict[str, Any]:
        scored = [i for i, refs in enumerate(self.references) if any(r.strip() for r in refs)]
        out: dict[str, Any] = {"num_captioned": len(scored)}
        if scored:
            scores = compute_caption_metrics([self.captions[i] for i in scored],
                                             [[r for r in self.references[i] if r.strip()] for i in scored],
                                             meteor=meteor)
            out.update({key: float(scores[key]) for key in CAPTION_METRIC_KEYS})
        return out

    def predictions(self) -> list[dict[str, Any]]:
        id2label = {int(k): v for k, v in (self.model.config.id2label or {}).items()}
        predicted = torch.cat(self.logits).argmax(-1).tolist() if self.logits else []
        rows = []
        for i, image_id in enumerate(self.image_ids):
            row: dict[str, Any] = {"image_id": image_id, "label": self.labels[i]}
            if self.has_classifier:
                row.update(predicted_label=predicted[i], predicted_name=id2label.get(predicted[i]))
            if self.has_captioner:
                row["caption"] = self.captions[i]
            rows.append(row)
        return rows


class _Localisation:
    """Where each head's CAM looks, on whatever ground truth the dataset has, beside maps that ignore the image.

    * synthetic birds: the discriminative parts' mask (pointing game, energy pointing, PxAP), the whole bird's box
      (MaxBoxAccV2), with distractors the distractor parts' mask (`pointing_game_distractor`: lower is better), and
      with class backgrounds the background (part mask 0: `pointing_game_background`, lower is better);
    * CUB: the 15 part keypoints (pointing game), the bird's box (pointing game, energy pointing and MaxBoxAccV2, as
      ``*_bbox`` and ``max_box_acc_*``).

    Each score comes per head (``<metric>_classifier``, ``<metric>_captioner``) and for two image-blind maps at the
    CAMs' resolution: uniform random cells (``<metric>_chance``) and a centred Gaussian (``<metric>_center``);
    `metrics.localization` defines them all.
    """

    def __init__(self, columns: set[str]):
        self.synthetic = "part_mask" in columns and "discriminative_parts" in columns
        self.distractors = self.synthetic and "distractor_parts" in columns
        self.backgrounds = self.synthetic and "background_matches" in columns
        self.keypoints = "parts" in columns
        self.boxes = "bbox" in columns
        self.maps: dict[str, list[torch.Tensor]] = {head: [] for head in HEADS}
        self.truth: dict[str, list] = {}  # ground-truth kind -> one entry per image
        self.grid: tuple[int, int] | None = None

    def add(self, rows, images, boxes, image_shape: tuple[int, int], maps: dict[str, torch.Tensor | None]) -> None:
        out_h, out_w = self.grid = image_shape
        for head, head_maps in maps.items():
            if head_maps is not None:
                self.maps[head].extend(head_maps)
        if self.synthetic:
            from cam_joint.data.synthetic import PART_INDEX

            part_masks = [np.asarray(_to_pil(m, None)) for m in rows["part_mask"]]
            kinds = {"parts": rows["discriminative_parts"], "bird": None}
            if self.distractors:
                kinds["distractors"] = rows["distractor_parts"]
            if self.backgrounds:
                kinds["background"] = None
            for kind, parts in kinds.items():
                for part_mask, wanted, box in zip(part_masks, parts or [None] * len(part_masks), boxes):
                    if kind == "background":
                        inside = part_mask == 0
                    elif wanted is None:  # the whole bird
                        inside = part_mask > 0
                    else:
                        inside = np.isin(part_mask, [PART_INDEX[p] for p in wanted])
                    self.truth.setdefault(kind, []).append(mask_in_box(inside, box, out_h, out_w))
        elif self.keypoints:
            for keypoints, image, box in zip(rows["parts"], images, boxes):
                self.truth.setdefault("keypoints", []).append((np.asarray(keypoints, np.float64), image.size, box))
        if self.boxes:
            self.truth.setdefault("bbox", []).extend(box_mask(bbox, box, out_h, out_w)
                                                     for bbox, box in zip(rows["bbox"], boxes))

    def metrics(self) -> dict[str, Any]:
        heads = {head: torch.stack(maps) for head, maps in self.maps.items() if maps}
        if not heads:
            return {}
        out: dict[str, Any] = {}
        for name, metric, truth, keep in self._tasks():
            if not keep.any():
                continue
            for head, maps in heads.items():
                scores = score_maps(metric, maps[torch.from_numpy(keep)], truth)
                out.update({f"{_renamed(key, metric, name)}_{head}": value for key, value in scores.items()})
            map_size = tuple(next(iter(heads.values())).shape[-2:])
            for kind in ("chance", "center"):
                key = name if metric != "max_box_acc_v2" else None
                out.update(baseline_scores(metric, truth, map_size, kind=kind, key=key))
        if "parts" in self.truth or "keypoints" in self.truth:
            out["num_pointing_game"] = int(self._evaluable("parts" if self.synthetic else "keypoints").sum())
        if "bbox" in self.truth:
            out["num_pointing_game_bbox"] = int(self._evaluable("bbox").sum())
        return out

    def _evaluable(self, kind: str) -> np.ndarray:
        if kind == "keypoints":
            return np.array([_has_keypoint(*entry) for entry in self.truth[kind]])
        return np.array([bool(mask.any()) for mask in self.truth[kind]])

    def _tasks(self):
        """(metric name in metrics.json, `metrics.localization` metric, its ground truth, images it covers)."""
        everyone = np.ones(len(next(iter(self.truth.values()), [])), dtype=bool)
        tasks = []
        if self.synthetic:
            parts = {"masks": self.truth["parts"]}
            tasks += [("pointing_game", "pointing_game", parts, everyone),
                      ("energy_pointing", "energy_pointing", parts, everyone),
                      ("pxap", "pxap", parts, everyone)]
            tasks.append(self._box_task("bird"))
            if self.distractors:
                tasks.append(("pointing_game_distractor", "pointing_game", {"masks": self.truth["distractors"]},
                              everyone))
            if self.backgrounds:
                tasks.append(("pointing_game_background", "pointing_game", {"masks": self.truth["background"]},
                              everyone))
        elif self.keypoints:
            entries = self.truth["keypoints"]
            tasks.append(("pointing_game", "pointing_game_keypoints",
                          {"keypoints": np.stack([e[0] for e in entries]), "image_sizes": [e[1] for e in entries],
                           "crop_boxes": [e[2] for e in entries]}, everyone))
        if self.boxes:
            bbox = {"masks": self.truth["bbox"]}
            tasks += [("pointing_game_bbox", "pointing_game", bbox, everyone),
                      ("energy_pointing_bbox", "energy_pointing", bbox, everyone)]
            tasks.append(self._box_task("bbox"))
        return tasks

    def _box_task(self, kind: str):
        keep = self._evaluable(kind)
        boxes = [[mask_to_box(mask)] for mask, kept in zip(self.truth[kind], keep) if kept]
        return "max_box_acc_v2", "max_box_acc_v2", {"boxes": boxes, "grid_size": self.grid}, keep


def _renamed(key: str, metric: str, name: str) -> str:
    """`score_maps` files a single score under the metric's own name; evaluation files it under `name`."""
    return key if metric == "max_box_acc_v2" else name


def _has_keypoint(keypoints: np.ndarray, image_size, box) -> bool:
    left, top, right, bottom = box
    inside = ((keypoints[:, 0] >= left) & (keypoints[:, 0] <= right) & (keypoints[:, 1] >= top)
              & (keypoints[:, 1] <= bottom))
    return bool(((keypoints[:, 2] > 0) & inside).any())


# ----------------------------------------------------------------------------------------------- checks and helpers
def _checked_dataset(model, dataset, batch_size: int, max_samples: int | None):
    """The rows to evaluate, with images left undecoded (decoded here, so a damaged file is named in the error)."""
    import datasets

    if max_samples is not None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be positive, got {max_samples}")
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    if len(dataset) == 0:
        raise ValueError("the dataset split is empty: nothing to evaluate")
    for required in ("image", "label"):
        if required not in dataset.column_names:
            raise ValueError(f"the dataset has no {required!r} column (columns: {sorted(dataset.column_names)})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if model.classifier is not None:
        _check_labels_match(model, dataset)
    if isinstance(dataset.features.get("image"), datasets.Image) and dataset.features["image"].decode:
        dataset = dataset.cast_column("image", datasets.Image(decode=False))
    return dataset


def _to_pil(value: Any, image_id: str | None):
    """A dataset's image value (PIL image, or ``{"path", "bytes"}`` of an undecoded column) as a PIL image."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return value
    from cam_joint.data.layout_files import decode_image

    return decode_image(value, image_id)


def _check_labels_match(model, dataset) -> None:
    import datasets

    feature = dataset.features.get("label")
    if not isinstance(feature, datasets.ClassLabel):
        return
    num_labels = model.config.num_labels
    if feature.num_classes != num_labels:
        raise ValueError(f"the dataset has {feature.num_classes} classes but the model has {num_labels}: it was "
                         f"trained on another dataset (or another protocol / class subset)")
    id2label = {int(k): v for k, v in (model.config.id2label or {}).items()}
    defaults = {i: f"LABEL_{i}" for i in range(num_labels)}
    if id2label and id2label != defaults:
        differing = [i for i in range(num_labels) if id2label.get(i) != feature.names[i]]
        if differing:
            i = differing[0]
            warnings.warn(f"{len(differing)} of {num_labels} class names differ between the model and the dataset "
                          f"(class {i}: model {id2label.get(i)!r}, dataset {feature.names[i]!r}); accuracy assumes "
                          f"the class ids mean the same classes", UserWarning, stacklevel=4)


def _check_generation_length(model, generation_kwargs: Mapping[str, Any]) -> None:
    """The captioner's Grad-CAM accepts captions of at most max_caption_length tokens: fail before generating."""
    limit = model.config.max_caption_length
    defaults = getattr(model, "generation_config", None)
    max_new_tokens = generation_kwargs.get("max_new_tokens", getattr(defaults, "max_new_tokens", None))
    if max_new_tokens is not None:
        longest = max_new_tokens + 1  # + bos
    else:
        longest = generation_kwargs.get("max_length", getattr(defaults, "max_length", None))
    if longest is not None and longest > limit:
        raise ValueError(f"generation may produce {longest} tokens but the model's captions (and its caption "
                         f"Grad-CAM) are at most max_caption_length={limit} tokens; lower max_length/max_new_tokens "
                         f"or pass cam_metrics=False")
    if generation_kwargs.get("num_return_sequences", 1) != 1:
        raise ValueError("evaluation scores one caption per image: num_return_sequences must be 1")


def _progress(iterable, enabled: bool, total: int):
    if not enabled:
        return iterable
    from cam_joint.progress import progress_bar

    return progress_bar(iterable, desc="evaluate", unit="batch", total=total)


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")
