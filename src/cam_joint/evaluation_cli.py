"""`cam-joint evaluate`: evaluate a saved model on the dataset it was trained on (or another), write metrics JSON.

    cam-joint evaluate --model runs/cam --split test --output metrics.json
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any, Mapping

__all__ = ["add_arguments", "main", "load_eval_dataset", "format_metrics_table"]


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
    from cam_joint.data import load_dataset_by_name

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
    kwargs = {}
    if dataset == "synthetic":
        # Rebuild exactly the training run's synthetic data (same seed, classes, sizes, distractors) when it was
        # synthetic; it reads no folder (a run may have recorded a --data-dir it ignored).
        kwargs = dict(training_args.get("synthetic") or {}) if training_args.get("dataset") == "synthetic" else {}
        description["synthetic"] = kwargs
        data_dir = description["data_dir"] = None
    return load_dataset_by_name(dataset, data_dir=data_dir, protocol=protocol, **kwargs), description


def format_metrics_table(metrics: Mapping[str, Any]) -> str:
    rows = [(key, value) for key, value in metrics.items() if isinstance(value, (int, float))]
    width = max((len(key) for key, _ in rows), default=6)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 8}"]
    for key, value in rows:
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else f"{value:.4f}"
        lines.append(f"{key:<{width}}  {text}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    import torch

    from cam_joint import CamJointModel, CamJointProcessor
    from cam_joint.evaluation import evaluate_model

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
