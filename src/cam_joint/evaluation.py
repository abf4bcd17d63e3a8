"""Evaluate a CamJoint model on a dataset split: accuracy, COCO caption metrics, CAM agreement, pointing game.

    metrics = evaluate_model(model, processor, dataset_dict["test"])
    cam-joint evaluate --model runs/cam --split test --output metrics.json

Metrics (a flat dict; a metric the model or the dataset cannot give is absent, never NaN):

* ``top1``, ``top5``: classification accuracy (models with a classifier; k is clamped to the number of classes).
* ``Bleu_1`` .. ``Bleu_4``, ``METEOR``, ``ROUGE_L``, ``CIDEr``: pycocoevalcap's definitions (Java), over the images
  that have reference captions (``num_captioned`` of them); captions come from ``model.generate`` decoded with
  ``processor.batch_decode(..., skip_special_tokens=True)``. ``mean_caption_words``: length of the generated captions.
* ``cam_agreement``: mean over images of the cosine between the classifier's Grad-CAM for its predicted class and the
  captioner's Grad-CAM for its generated caption (models with both heads). A zero map scores 0.
* ``pointing_game_classifier`` / ``pointing_game_captioner``: how often each map's peak falls on the object's
  discriminative evidence, averaged over the ``num_pointing_game`` images where that evidence is visible in the
  preprocessed (cropped) image:
    - synthetic data (``part_mask`` + ``discriminative_parts``): the peak lies inside the union of the class's
      discriminative parts;
    - CUB (``parts`` keypoints): the peak lies within 10 % of the crop's shorter side of a visible part keypoint
      (`pointing_game_keypoints`); with ``bbox`` also ``pointing_game_bbox_classifier`` / ``_captioner`` (peak inside
      the bird's box, over ``num_pointing_game_bbox`` images).
  Geometry: maps cover the region of the original image that the processor keeps (its resize + center crop, or
  squash, or border padding; see `preprocessed_box`), so masks and keypoints are mapped into that region.
* ``num_images``: images evaluated.

Variants: ``cnn`` (no captioner) gets no caption metrics and no agreement; ``lrcn`` (no classifier) no top-k and no
agreement, and a pointing game for the caption map only.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from cam_joint.metrics import (
    CAPTION_METRIC_KEYS,
    cam_cosine_similarities,
    compute_caption_metrics,
    pointing_game_keypoints,
    pointing_game_mask,
    resize_center_crop_box,
    topk_accuracy,
)

__all__ = ["evaluate_model", "preprocessed_box", "box_mask", "add_arguments", "main", "load_eval_dataset",
           "format_metrics_table"]

# Key order of the printed table and the JSON file (keys a run does not produce are skipped).
METRIC_ORDER = ("num_images", "top1", "top5", "num_captioned", *CAPTION_METRIC_KEYS, "mean_caption_words",
                "cam_agreement", "pointing_game_classifier", "pointing_game_captioner", "num_pointing_game",
                "pointing_game_bbox_classifier", "pointing_game_bbox_captioner", "num_pointing_game_bbox")


# ----------------------------------------------------------------------------------------------- geometry
def preprocessed_box(image_size: tuple[int, int], data_config: Mapping[str, Any]) -> tuple[float, float, float, float]:
    """The region of the original image that the image processor's eval transform turns into its output.

    Follows timm's `transforms_imagenet_eval` for the processor's ``data_config()`` (input_size, crop_pct,
    crop_mode): ``center`` = resize the shorter side to size / crop_pct then center-crop; ``squash`` = resize both
    sides to size / crop_pct then center-crop; ``border`` = resize the longer side, pad, center-crop (the box then
    extends past the image, over the padding).

    Args:
        image_size: original (width, height), as PIL's ``Image.size``.
        data_config: ``image_processor.data_config()``.

    Returns:
        (left, top, right, bottom) in original-image pixels; the output's pixel (row, col) covers
        ``left + (col + [0, 1]) * (right - left) / out_w`` (and likewise for rows).
    """
    width, height = image_size
    _, out_h, out_w = (int(v) for v in data_config["input_size"])
    crop_pct = data_config.get("crop_pct") or 0.875  # timm's DEFAULT_CROP_PCT
    mode = data_config.get("crop_mode") or "center"
    scale_h, scale_w = math.floor(out_h / crop_pct), math.floor(out_w / crop_pct)
    if mode == "squash":
        return resize_center_crop_box(image_size, (scale_h, scale_w), (out_h, out_w))
    if mode == "center" and scale_h == scale_w:
        return resize_center_crop_box(image_size, scale_h, (out_h, out_w))
    if mode not in ("center", "border"):
        raise ValueError(f"unknown crop_mode {mode!r} (timm knows center, squash, border)")
    # timm's ResizeKeepRatio: longest=1.0 for border (fit inside), 0.0 for center (cover).
    longest = 1.0 if mode == "border" else 0.0
    ratio_h, ratio_w = height / scale_h, width / scale_w
    ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1.0 - longest)
    new_h, new_w = round(height / ratio), round(width / ratio)
    pad_left = pad_top = 0
    padded_h, padded_w = new_h, new_w
    if mode == "border" and (out_w > new_w or out_h > new_h):  # timm's center_crop_or_pad pads first
        if out_w > new_w:
            pad_left, padded_w = (out_w - new_w) // 2, out_w
        if out_h > new_h:
            pad_top, padded_h = (out_h - new_h) // 2, out_h
    top = int(round((padded_h - out_h) / 2.0)) - pad_top
    left = int(round((padded_w - out_w) / 2.0)) - pad_left
    sx, sy = width / new_w, height / new_h
    return (left * sx, top * sy, (left + out_w) * sx, (top + out_h) * sy)


def _sample_grid(box: Sequence[float], out_h: int, out_w: int) -> tuple[np.ndarray, np.ndarray]:
    """Original-image x (out_w,) and y (out_h,) coordinates of the output pixels' centres."""
    left, top, right, bottom = (float(v) for v in box)
    xs = left + (np.arange(out_w) + 0.5) * (right - left) / out_w
    ys = top + (np.arange(out_h) + 0.5) * (bottom - top) / out_h
    return xs, ys


def _mask_in_box(mask: np.ndarray, box: Sequence[float], out_h: int, out_w: int) -> np.ndarray:
    """Nearest-neighbour resample of an original-resolution mask (H, W) to the output grid; outside = False."""
    xs, ys = _sample_grid(box, out_h, out_w)
    cols, rows = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    valid_c = (cols >= 0) & (cols < mask.shape[1])
    valid_r = (rows >= 0) & (rows < mask.shape[0])
    out = np.zeros((out_h, out_w), dtype=bool)
    sub = mask[np.clip(rows, 0, mask.shape[0] - 1)][:, np.clip(cols, 0, mask.shape[1] - 1)] != 0
    out[np.ix_(valid_r, valid_c)] = sub[np.ix_(valid_r, valid_c)]
    return out


def box_mask(bbox_xywh: Sequence[float], box: Sequence[float], out_h: int, out_w: int) -> np.ndarray:
    """(out_h, out_w) mask of the output pixels whose centre lies in an (x, y, width, height) box of the original."""
    x, y, w, h = (float(v) for v in bbox_xywh)
    xs, ys = _sample_grid(box, out_h, out_w)
    return ((ys >= y) & (ys <= y + h))[:, None] & ((xs >= x) & (xs <= x + w))[None, :]


# ----------------------------------------------------------------------------------------------- evaluation
def image_processor_of(processor):
    """The image processor of a CamJointProcessor (or the image processor itself)."""
    return getattr(processor, "image_processor", processor)


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
                          f"the class ids mean the same classes", UserWarning, stacklevel=3)


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


def _mean(values: list[float] | np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


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
    import datasets

    generation_kwargs = dict(generation_kwargs or {})
    has_classifier = model.classifier is not None
    has_captioner = model.captioner is not None
    if max_samples is not None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be positive, got {max_samples}")
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    if len(dataset) == 0:
        raise ValueError("the dataset split is empty: nothing to evaluate")
    columns = set(dataset.column_names)
    for required in ("image", "label"):
        if required not in columns:
            raise ValueError(f"the dataset has no {required!r} column (columns: {sorted(columns)})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if has_classifier:
        _check_labels_match(model, dataset)
    caption_metrics = caption_metrics and has_captioner and "captions" in columns
    if caption_metrics:
        from cam_joint.metrics.coco_caption import find_java

        find_java()  # an hour of generation must not end in "Java not found"
    if has_captioner and cam_metrics:
        _check_generation_length(model, generation_kwargs)
    synthetic_masks = "part_mask" in columns and "discriminative_parts" in columns
    cub_keypoints = "parts" in columns
    cub_boxes = "bbox" in columns
    pointing = cam_metrics and (synthetic_masks or cub_keypoints)
    if synthetic_masks:
        from cam_joint.data.synthetic import PART_INDEX
    # Decode images ourselves, so a damaged file is named in the error (datasets' lazy decoding names none).
    if isinstance(dataset.features.get("image"), datasets.Image) and dataset.features["image"].decode:
        dataset = dataset.cast_column("image", datasets.Image(decode=False))

    image_processor = image_processor_of(processor)
    data_config = image_processor.data_config() if hasattr(image_processor, "data_config") else None
    device = model.device
    was_training = model.training
    model.eval()

    logits_all, labels_all, predicted_labels = [], [], []
    captions, references, word_counts = [], [], []
    agreements: list[np.ndarray] = []
    pg = {"classifier": [], "captioner": [], "bbox_classifier": [], "bbox_captioner": []}
    pg_evaluable, bbox_evaluable = [], []
    image_ids: list[str] = []

    starts = range(0, len(dataset), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="evaluate", unit="batch", total=math.ceil(len(dataset) / batch_size))
    try:
        for start in starts:
            rows = dataset[start:start + batch_size]
            count = len(rows["image"])
            ids = rows.get("image_id") or [f"row {start + i}" for i in range(count)]
            image_ids.extend(ids)
            images = [_to_pil(value, image_id) for value, image_id in zip(rows["image"], ids)]
            pixel_values = image_processor(images, return_tensors="pt")["pixel_values"].to(device)
            feature_maps = model.get_feature_maps(pixel_values)  # encoded once, shared by every head
            labels = torch.as_tensor(rows["label"], dtype=torch.long)
            labels_all.append(labels)

            predicted = None
            if has_classifier:
                logits = model(feature_maps=feature_maps).logits.float()
                predicted = logits.argmax(-1)
                logits_all.append(logits.cpu())
                predicted_labels.extend(predicted.tolist())
            caption_ids = None
            if has_captioner:
                caption_ids = model.generate(feature_maps=feature_maps, **generation_kwargs)
                texts = processor.batch_decode(caption_ids, skip_special_tokens=True)
                texts = [" ".join(text.split()) for text in texts]
                captions.extend(texts)
                word_counts.extend(len(text.split()) for text in texts)
                references.extend(rows["captions"] if "captions" in rows else [[] for _ in range(count)])

            if not cam_metrics:
                continue
            class_maps = caption_maps = None
            if has_classifier:
                class_maps = model.grad_cam(feature_maps=feature_maps, labels=predicted).float().cpu()
            if has_captioner:
                caption_maps = model.grad_cam(feature_maps=feature_maps, caption_ids=caption_ids).float().cpu()
            if class_maps is not None and caption_maps is not None:
                agreements.append(cam_cosine_similarities(class_maps, caption_maps))
            if not pointing:
                continue
            maps = {"classifier": class_maps, "captioner": caption_maps}
            out_h, out_w = pixel_values.shape[-2:]
            boxes = [preprocessed_box(image.size, data_config) if data_config else
                     (0.0, 0.0, float(image.size[0]), float(image.size[1])) for image in images]
            if synthetic_masks:
                masks = []
                for mask_image, parts, box in zip(rows["part_mask"], rows["discriminative_parts"], boxes):
                    part_mask = np.asarray(_to_pil(mask_image, None))
                    wanted = np.isin(part_mask, [PART_INDEX[p] for p in parts])
                    masks.append(_mask_in_box(wanted, box, out_h, out_w))
                evaluable = np.array([m.any() for m in masks])
                pg_evaluable.append(evaluable)
                for name, head_maps in maps.items():
                    if head_maps is not None:
                        pg[name].append(pointing_game_mask(head_maps, masks))
            elif cub_keypoints:
                sizes = [image.size for image in images]
                evaluable = None
                for name, head_maps in maps.items():
                    if head_maps is not None:
                        hits, evaluable = pointing_game_keypoints(head_maps, np.asarray(rows["parts"], np.float64),
                                                                  sizes, crop_boxes=boxes, return_evaluable=True)
                        pg[name].append(hits)
                pg_evaluable.append(evaluable)
            if cub_boxes:
                masks = [box_mask(bbox, box, out_h, out_w) for bbox, box in zip(rows["bbox"], boxes)]
                bbox_evaluable.append(np.array([m.any() for m in masks]))
                for name, head_maps in maps.items():
                    if head_maps is not None:
                        pg[f"bbox_{name}"].append(pointing_game_mask(head_maps, masks))
    finally:
        model.train(was_training)

    metrics: dict[str, Any] = {"num_images": len(image_ids)}
    labels_all = torch.cat(labels_all)
    if has_classifier:
        logits_all = torch.cat(logits_all)
        labeled = labels_all >= 0  # -1 = unlabeled (some Hub test splits)
        if bool(labeled.any()):
            metrics.update(topk_accuracy(logits_all[labeled], labels_all[labeled], ks=(1, 5)))
    if has_captioner:
        metrics["mean_caption_words"] = _mean(word_counts)
    if caption_metrics:
        scored = [i for i, refs in enumerate(references) if any(r.strip() for r in refs)]
        metrics["num_captioned"] = len(scored)
        if scored:
            scores = compute_caption_metrics([captions[i] for i in scored],
                                             [[r for r in references[i] if r.strip()] for i in scored], meteor=meteor)
            metrics.update({key: float(scores[key]) for key in CAPTION_METRIC_KEYS})
    if agreements:
        metrics["cam_agreement"] = _mean(np.concatenate(agreements))
    if pg_evaluable:
        evaluable = np.concatenate(pg_evaluable)
        metrics["num_pointing_game"] = int(evaluable.sum())
        for name in ("classifier", "captioner"):
            if pg[name] and evaluable.any():
                metrics[f"pointing_game_{name}"] = _mean(np.concatenate(pg[name])[evaluable])
    if bbox_evaluable:
        evaluable = np.concatenate(bbox_evaluable)
        metrics["num_pointing_game_bbox"] = int(evaluable.sum())
        for name in ("classifier", "captioner"):
            if pg[f"bbox_{name}"] and evaluable.any():
                metrics[f"pointing_game_bbox_{name}"] = _mean(np.concatenate(pg[f"bbox_{name}"])[evaluable])
    metrics = {key: metrics[key] for key in METRIC_ORDER if key in metrics}
    if return_predictions:
        id2label = {int(k): v for k, v in (model.config.id2label or {}).items()}
        metrics["predictions"] = [
            {"image_id": image_id, "label": int(labels_all[i]),
             **({"predicted_label": predicted_labels[i], "predicted_name": id2label.get(predicted_labels[i])}
                if has_classifier else {}),
             **({"caption": captions[i]} if has_captioner else {})}
            for i, image_id in enumerate(image_ids)
        ]
    return metrics


# ----------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="saved model folder (save_pretrained output)")
    parser.add_argument("--dataset", default=None,
                        help="synthetic, cub, flowers or a Hub dataset id; default: the dataset the model was trained "
                             "on (from MODEL/training_args.json)")
    parser.add_argument("--data-dir", default=None, help="the dataset's folder (cub, flowers); overrides the training "
                                                         "run's")
    parser.add_argument("--protocol", default=None, choices=("official", "etri2020"),
                        help="split protocol (cub, flowers); default: the training run's, else official")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-samples", type=int, default=None, help="evaluate the first N images only")
    parser.add_argument("--num-beams", type=int, default=None,
                        help="beam width for captions (default: the model's generation config)")
    parser.add_argument("--output", default=None,
                        help="metrics JSON file (default: MODEL/eval_results_<split>.json)")
    parser.add_argument("--predictions", default=None,
                        help="also write one JSON line per image (image id, label, prediction, caption) here")
    parser.add_argument("--no-caption-metrics", action="store_true",
                        help="skip BLEU/METEOR/ROUGE-L/CIDEr (no Java needed)")
    parser.add_argument("--no-cam-metrics", action="store_true", help="skip CAM agreement and the pointing game")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def load_eval_dataset(model_dir: str | Path, dataset: str | None = None, data_dir: str | None = None,
                      protocol: str | None = None):
    """The `datasets.DatasetDict` to evaluate on; without `dataset`, the one MODEL/training_args.json names.

    Returns (dataset_dict, description) where description is a dict of what was loaded (name, data_dir, protocol).
    """
    from cam_joint.data import load_image_text_dataset

    training_args: dict[str, Any] = {}
    args_file = Path(model_dir) / "training_args.json"
    if args_file.is_file():
        try:
            training_args = json.loads(args_file.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{args_file}: not valid JSON ({error})") from error
    if dataset is None:
        if "dataset" not in training_args:
            raise ValueError(f"no --dataset given and {args_file} does not say which dataset the model was trained "
                             f"on; pass --dataset synthetic|cub|flowers|HUB_ID")
        dataset = training_args["dataset"]
    if dataset == training_args.get("dataset"):  # the training data: its folder and protocol unless overridden
        data_dir = data_dir or training_args.get("data_dir")
        protocol = protocol or training_args.get("protocol")
    protocol = protocol or "official"
    description = {"dataset": dataset, "data_dir": None if data_dir is None else str(data_dir), "protocol": protocol}
    if dataset == "synthetic":
        from cam_joint.data.synthetic import make_synthetic_dataset

        # Rebuild exactly the training run's synthetic data (same seed, classes and sizes) when it was synthetic.
        kwargs = dict(training_args.get("synthetic") or {}) if training_args.get("dataset") == "synthetic" else {}
        description["synthetic"] = kwargs
        return make_synthetic_dataset(**kwargs), description
    return load_image_text_dataset(dataset, data_dir=data_dir, protocol=protocol), description


def format_metrics_table(metrics: Mapping[str, Any]) -> str:
    rows = [(key, value) for key, value in metrics.items() if isinstance(value, (int, float))]
    width = max((len(key) for key, _ in rows), default=6)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 8}"]
    for key, value in rows:
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else f"{value:.4f}"
        lines.append(f"{key:<{width}}  {text}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from cam_joint import CamJointModel, CamJointProcessor

    model_dir = Path(args.model)
    if not model_dir.is_dir():
        print(f"error: model folder not found: {model_dir}", file=sys.stderr)
        return 2
    try:
        dataset_dict, description = load_eval_dataset(model_dir, args.dataset, args.data_dir, args.protocol)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.split not in dataset_dict:
        print(f"error: split {args.split!r} not in the dataset (splits: {', '.join(dataset_dict)})", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = CamJointModel.from_pretrained(model_dir).to(device).eval()
    processor = CamJointProcessor.from_pretrained(model_dir)
    generation_kwargs = {} if args.num_beams is None else {"num_beams": args.num_beams}
    metrics = evaluate_model(model, processor, dataset_dict[args.split], batch_size=args.batch_size,
                             generation_kwargs=generation_kwargs, max_samples=args.max_samples,
                             caption_metrics=not args.no_caption_metrics, cam_metrics=not args.no_cam_metrics,
                             progress=not args.no_progress, return_predictions=args.predictions is not None)
    predictions = metrics.pop("predictions", None)
    print(f"{model_dir} on {description['dataset']} ({description['protocol']}) split {args.split}:")
    print(format_metrics_table(metrics))
    output = Path(args.output) if args.output else model_dir / f"eval_results_{args.split}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    record = {**metrics, "eval_info": {**description, "model": str(model_dir), "split": args.split,
                                       "max_samples": args.max_samples, "generation_kwargs": generation_kwargs,
                                       "variant": model.config.variant}}
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"metrics written to {output}")
    if predictions is not None:
        path = Path(args.predictions)
        path.parent.mkdir(parents=True, exist_ok=True)
        with io.open(path, "w", encoding="utf-8") as handle:
            for row in predictions:
                handle.write(json.dumps(row) + "\n")
        print(f"predictions written to {path}")
    return 0
