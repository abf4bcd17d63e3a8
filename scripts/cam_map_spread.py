"""Where does each head's map put its energy? On the bird, on the deciding parts, or spread out (synthetic birds).

    python scripts/cam_map_spread.py outputs/cam-study/w_0-seed0 outputs/cam-study/w_1-seed0

For every test image and both heads' maps (the classifier's for its predicted class, the captioner's for its
generated caption), bilinearly upsampled to the input as the localisation metrics do, then clipped at 0 (Grad-CAM maps
already are):

* ``bird``: share of the map's energy inside the whole bird's silhouette (a uniform map scores the bird's area);
* ``parts``: the same inside the discriminative parts (the energy pointing game);
* ``top10``: share of the energy in the map's brightest 10 % of pixels (uniform: 0.10; one bright spot: 1.0);
* ``flat``: cosine of the map with a uniform map, mean / rms (uniform: 1.0): what a flat map gains in eq. 6's cosine.

Printed: the mean of each over the test split, per run, and the silhouette's and parts' mean areas.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402


def spread_statistics(cam: np.ndarray, bird: np.ndarray, parts: np.ndarray) -> dict[str, float]:
    """The four statistics of one (H, W) map (negative values clipped) against boolean masks of the same shape."""
    cam = np.clip(np.asarray(cam, dtype=np.float64), 0, None)
    energy = cam.sum()
    if energy <= 0:
        return {"bird": 0.0, "parts": 0.0, "top10": 0.0, "flat": 0.0}
    brightest = np.sort(cam.ravel())[::-1][: max(1, cam.size // 10)]
    return {"bird": cam[bird].sum() / energy, "parts": cam[parts].sum() / energy, "top10": brightest.sum() / energy,
            "flat": cam.mean() / np.sqrt(np.square(cam).mean())}


def run_statistics(run_dir: str, batch_size: int = 50) -> dict[str, float]:
    import torch

    from cam_joint import CamJointModel, CamJointProcessor
    from cam_joint.data.synthetic import PART_INDEX
    from cam_joint.evaluation_cli import load_eval_dataset
    from cam_joint.metrics.geometry import mask_in_box, preprocessed_box
    from cam_joint.metrics.map_inputs import _upsample
    from cam_joint.prediction import predict_batch

    model = CamJointModel.from_pretrained(run_dir).eval()
    processor = CamJointProcessor.from_pretrained(run_dir)
    test = load_eval_dataset(run_dir)[0]["test"]
    if "part_mask" not in test.column_names:
        raise SystemExit(f"{run_dir}: trained on a dataset without part masks (this script reads synthetic birds)")
    data_config = processor.image_processor.data_config()
    values: dict[str, list[float]] = {}
    for start in range(0, len(test), batch_size):
        rows = test[start:start + batch_size]
        images = [image.convert("RGB") for image in rows["image"]]
        with torch.no_grad():
            prediction = predict_batch(model, processor, images, cam=True)
        height, width = prediction.pixel_values.shape[-2:]
        for i, image in enumerate(images):
            box = preprocessed_box(image.size, data_config)
            part_mask = np.asarray(rows["part_mask"][i])
            wanted = [PART_INDEX[p] for p in rows["discriminative_parts"][i]]
            bird = mask_in_box(part_mask > 0, box, height, width)
            parts = mask_in_box(np.isin(part_mask, wanted), box, height, width)
            values.setdefault("bird_area", []).append(bird.mean())
            values.setdefault("parts_area", []).append(parts.mean())
            for head, maps in (("classifier", prediction.class_maps), ("captioner", prediction.caption_maps)):
                cam = _upsample(maps[i].double(), (height, width))
                for name, value in spread_statistics(cam, bird, parts).items():
                    values.setdefault(f"{name}_{head}", []).append(value)
    return {name: float(np.mean(v)) for name, v in values.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="saved model folders (cam-joint train output)")
    args = parser.parse_args()
    columns = [f"{s}_{h}" for s in ("bird", "parts", "top10", "flat") for h in ("classifier", "captioner")]
    print("| run | " + " | ".join(columns) + " | bird_area | parts_area |")
    print("|" + "---|" * (len(columns) + 3))
    for run in args.runs:
        stats = run_statistics(run)
        print(f"| {run} | " + " | ".join(f"{stats[c]:.3f}" for c in columns + ["bird_area", "parts_area"]) + " |",
              flush=True)


if __name__ == "__main__":
    main()
