"""Whose class does a shortcut-testbed model name on `test_shifted`: the bird's or the background's?

On `test_shifted` the background is drawn independently of the class, so for the images whose background is another
class's the two readings disagree. This script rebuilds each run's `test_shifted` from its `training_args.json`,
classifies it with the saved model and prints, over those mismatched images: the share named by the bird (top-1 on
them), the share named by the background, and the rest; chance is 1/classes for each. A model at the background's
class ~100 % decides by the shortcut whatever its Grad-CAM looks like.

    python scripts/shortcut_reliance.py studies/shortcut/w_0-seed0 studies/shortcut/oracle_cosine_all-seed0 [--json]

Each folder needs the run's weights (`model.safetensors`: kept locally, never committed).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@torch.no_grad()
def shortcut_reliance(run_dir: Path, batch_size: int = 100) -> dict:
    from cam_joint import CamJointModel, CamJointProcessor

    recorded = json.loads((run_dir / "training_args.json").read_text())
    spec = recorded.get("synthetic")
    if not spec or "background_bias" not in spec:
        raise ValueError(f"{run_dir / 'training_args.json'}: not a shortcut-testbed run (no synthetic background_bias)")
    split = _shifted_split(json.dumps(spec, sort_keys=True))
    model = CamJointModel.from_pretrained(run_dir).eval()
    processor = CamJointProcessor.from_pretrained(run_dir)
    predicted = []
    for start in range(0, len(split), batch_size):
        rows = split[start:start + batch_size]
        pixels = processor.image_processor(rows["image"], return_tensors="pt")["pixel_values"]
        maps = model.get_feature_maps(pixels)
        predicted.append(model.classifier(model.image_vector(maps.mean((2, 3)))).argmax(-1))
    predicted = torch.cat(predicted)
    labels = torch.tensor(split["label"])
    backgrounds = torch.tensor(split["background_class"])
    off = backgrounds != labels
    bird = (predicted[off] == labels[off]).float().mean().item()
    background = (predicted[off] == backgrounds[off]).float().mean().item()
    return {"run": str(run_dir), "mismatched_images": int(off.sum()), "names_the_bird": bird,
            "names_the_background": background, "names_neither": 1 - bird - background,
            "chance": 1 / model.config.num_labels}


@functools.lru_cache(maxsize=4)
def _shifted_split(spec: str):
    """test_shifted of a recorded synthetic spec, built once for every run of the same seed."""
    from cam_joint.data import load_dataset_by_name

    return load_dataset_by_name("synthetic", **json.loads(spec))["test_shifted"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of the shortcut testbed")
    parser.add_argument("--json", action="store_true", help="one JSON object per run instead of a table")
    args = parser.parse_args()
    if not args.json:
        print("| run | mismatched images | names the bird | names the background | neither | chance |")
        print("|---|---|---|---|---|---|")
    for run in args.runs:
        r = shortcut_reliance(run)
        if args.json:
            print(json.dumps(r))
        else:
            print(f"| {run.name} | {r['mismatched_images']} | {100 * r['names_the_bird']:.1f} | "
                  f"{100 * r['names_the_background']:.1f} | {100 * r['names_neither']:.1f} | {100 * r['chance']:.1f} |")


if __name__ == "__main__":
    main()
