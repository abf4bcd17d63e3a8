"""What a classifier that sees only a cue scores: logistic regression on a colour histogram of the border pixels.

    python scripts/cue_only_classifier.py --background-bias 0.95 --distractors 2
    python scripts/cue_only_classifier.py --region all --distractors 8     # the whole image's colours

The shortcut testbed (`make_synthetic_dataset(background_bias=P)`) is only a testbed if its cue is there: a
classifier that cannot see the bird must score about P in distribution (the share of images whose background is
their class's) and about chance on `test_shifted` (backgrounds drawn independently of the class). The border band
(`--border` pixels wide, 8 of the 96 by default) almost never holds the bird, so a histogram of its colours sees the
background and nothing else; `--region all` histograms the whole image instead, the "which colours appear" baseline
the distractors were built against.

Printed: top-1 on each split, chance, and on `test_shifted` the top-1 of the images whose background matches their
class and of those whose background does not.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

BINS_PER_CHANNEL = 8  # 512 colour cells: fine enough to tell dull tints apart, coarse enough to be a histogram
WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def colour_histogram(image: np.ndarray, border: int | None) -> np.ndarray:
    """Normalised RGB histogram (BINS_PER_CHANNEL^3 cells) of an H x W x 3 uint8 image: of the pixels within
    `border` pixels of the edge, or of every pixel with `border=None`."""
    if border is not None:
        keep = np.zeros(image.shape[:2], dtype=bool)
        keep[:border], keep[-border:], keep[:, :border], keep[:, -border:] = True, True, True, True
        pixels = image[keep]
    else:
        pixels = image.reshape(-1, 3)
    cells = (pixels.astype(np.int64) * BINS_PER_CHANNEL) // 256
    index = (cells[:, 0] * BINS_PER_CHANNEL + cells[:, 1]) * BINS_PER_CHANNEL + cells[:, 2]
    counts = np.bincount(index, minlength=BINS_PER_CHANNEL ** 3).astype(np.float64)
    return counts / counts.sum()


def histograms(split, border: int | None) -> tuple[np.ndarray, np.ndarray]:
    features = np.stack([colour_histogram(np.asarray(row["image"].convert("RGB")), border) for row in split])
    return features, np.asarray(split["label"])


def fit_logistic_regression(features: np.ndarray, labels: np.ndarray, num_classes: int,
                            weight_decay: float = 1e-4, steps: int = 200) -> torch.nn.Linear:
    """Multinomial logistic regression, L2-regularised, fitted to convergence with L-BFGS on standardised
    features (deterministic: no sampling)."""
    x = torch.as_tensor(features, dtype=torch.float64)
    y = torch.as_tensor(labels)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
    model = torch.nn.Linear(x.shape[1], num_classes).double()
    torch.nn.init.zeros_(model.weight), torch.nn.init.zeros_(model.bias)
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model((x - mean) / std), y) + weight_decay * model.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():  # fold the standardisation into the layer
        model.weight /= std
        model.bias -= model.weight @ mean
    return model


def predict(model: torch.nn.Linear, features: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(features, dtype=torch.float64)).argmax(-1).numpy()


def main() -> None:
    from cam_joint.data.synthetic import make_synthetic_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--background-bias", type=float, default=None)
    parser.add_argument("--distractors", type=int, default=0)
    parser.add_argument("--num-classes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="the dataset's seed")
    parser.add_argument("--region", choices=["border", "all"], default="border")
    parser.add_argument("--border", type=int, default=8, help="width of the border band, pixels")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args()

    data_options = dict(num_classes=args.num_classes, seed=args.seed, distractors=args.distractors)
    if args.background_bias is not None:
        data_options["background_bias"] = args.background_bias
    data = make_synthetic_dataset(**data_options)
    border = args.border if args.region == "border" else None
    train_x, train_y = histograms(data["train"], border)
    val_x, val_y = histograms(data["validation"], border)
    # The regularisation is chosen on the validation split, as any baseline's would be.
    fits = {wd: fit_logistic_regression(train_x, train_y, args.num_classes, wd) for wd in WEIGHT_DECAYS}
    weight_decay = max(fits, key=lambda wd: (predict(fits[wd], val_x) == val_y).mean())
    model = fits[weight_decay]
    results = {"chance": 1.0 / args.num_classes, "weight_decay": weight_decay,
               "options": {**data_options, "region": args.region, "border": border}}
    for name, split in data.items():
        x, y = {"train": (train_x, train_y), "validation": (val_x, val_y)}.get(name) or histograms(split, border)
        correct = predict(model, x) == y
        results[f"top1_{name}"] = float(correct.mean())
        if "background_matches" in split.column_names:
            matches = np.asarray(split["background_matches"], dtype=bool)
            for group, chosen in (("matching", matches), ("mismatching", ~matches)):
                if chosen.any():
                    results[f"top1_{name}_{group}"] = float(correct[chosen].mean())
                    results[f"count_{name}_{group}"] = int(chosen.sum())
    if args.json:
        print(json.dumps(results))
        return
    print(f"colour histogram of the {args.region} pixels -> logistic regression; {data_options}")
    for key, value in results.items():
        if key not in ("options", "weight_decay"):
            print(f"  {key}: {value if key.startswith('count') else f'{100 * value:.1f} %'}")
    print(f"  (L2 weight {weight_decay:g}, chosen on the validation split)")


if __name__ == "__main__":
    main()
