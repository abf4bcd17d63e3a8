"""Table 2 of the paper, on the synthetic birds: every variant trained with the same budget on several seeds.

    python scripts/compare_variants.py --seeds 0 1 2 --max-steps 150

Each run is `cam-joint train --variant V --seed S --max-steps N` (plus any extra arguments after `--`), into
OUTPUT_DIR/V-seedS; the table shows mean ± standard deviation over seeds of the metrics each run wrote.

The schedules that switch objective mid-run take a share of the budget, whatever N is: S-CNN-RNN's stage 1 the first
--stage1-share of the steps, self-critical training the steps after --scst-start-share (cross-entropy before it).
`cam-joint train` counts those switches in epochs; they are converted with the default synthetic data's epoch
(4,000 training images / batch 32 = 125 steps), so extra arguments that change the data or the batch size change
where the switches fall.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

COLUMNS = [("top1", "Top-1"), ("top5", "Top-5"), ("Bleu_1", "BLEU1"), ("Bleu_2", "BLEU2"), ("Bleu_3", "BLEU3"),
           ("Bleu_4", "BLEU4"), ("METEOR", "METEOR"), ("ROUGE_L", "ROUGE"), ("CIDEr", "CIDEr"),
           ("cam_agreement", "CAM agree"), ("pointing_game_classifier", "Point(cls)"),
           ("pointing_game_captioner", "Point(cap)")]
VARIANTS = {  # name: extra training arguments
    "cnn": ["--variant", "cnn"],
    "lrcn": ["--variant", "lrcn"],
    "intermediate": ["--variant", "intermediate"],
    "cam": ["--variant", "cam"],
    # S-CNN-RNN: concept layer, LSTM state from the concepts, two-stage training (stage 1: CNN on concepts and LSTM on
    # ground-truth concepts, independently; then jointly).
    "semantic": ["--variant", "semantic", "--conditioning", "init_state", "--stage1-epochs", "{stage1_epochs}"],
    "semantic-joint": ["--variant", "semantic", "--conditioning", "init_state"],  # one stage: jointly from step 1
    # Show-and-Tell: the image is the LSTM's step-0 input; encoder fine-tuned jointly (the synthetic default).
    "nic": ["--variant", "intermediate", "--conditioning", "first_step"],
    # SCST on the best captioner of the table (intermediate), and on the paper's model: cross-entropy, then
    # self-critical.
    "intermediate+scst": ["--variant", "intermediate", "--scst-after-epochs", "{scst_epochs}"],
    "cam+scst": ["--variant", "cam", "--scst-after-epochs", "{scst_epochs}"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS),
                        choices=sorted(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, default=150)
    parser.add_argument("--stage1-share", type=float, default=1 / 3, help="semantic: share of steps in stage 1")
    parser.add_argument("--scst-start-share", type=float, default=2 / 3,
                        help="+scst rows: self-critical training after this share of the steps")
    parser.add_argument("--output-dir", default="outputs/compare-variants")
    parser.add_argument("--reuse", action="store_true", help="keep runs whose metrics.json exists")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="-- then extra `cam-joint train` arguments")
    args = parser.parse_args()
    extra = [a for a in args.extra if a != "--"]

    from cam_joint.cli import main as cli_main

    steps_per_epoch = default_synthetic_steps_per_epoch()
    switches = {"stage1_epochs": f"{args.stage1_share * args.max_steps / steps_per_epoch:.4g}",
                "scst_epochs": f"{args.scst_start_share * args.max_steps / steps_per_epoch:.4g}"}
    commands = {variant: [a.format(**switches) for a in VARIANTS[variant]] for variant in args.variants}

    results: dict[str, list[dict]] = {}
    for variant in args.variants:
        for seed in args.seeds:
            out = Path(args.output_dir) / f"{variant}-seed{seed}"
            if not (args.reuse and (out / "metrics.json").exists()):
                cli_main(["train", *commands[variant], "--seed", str(seed), "--max-steps", str(args.max_steps),
                          "--output-dir", str(out), *extra])
            results.setdefault(variant, []).append(json.loads((out / "metrics.json").read_text()))
    print(format_table(results, commands, args))


def default_synthetic_steps_per_epoch() -> int:
    """Optimizer steps per epoch of `cam-joint train` with its default synthetic data and batch size."""
    from cam_joint.training import SYNTHETIC_DEFAULTS, add_arguments

    defaults = argparse.ArgumentParser()
    add_arguments(defaults)
    images = SYNTHETIC_DEFAULTS["num_classes"] * SYNTHETIC_DEFAULTS["train_per_class"]
    return math.ceil(images / defaults.get_default("batch_size"))


def format_table(results: dict[str, list[dict]], commands: dict[str, list[str]], args) -> str:
    header = "| variant | " + " | ".join(title for _, title in COLUMNS) + " |"
    lines = [f"Synthetic birds, {args.max_steps} steps, seeds {args.seeds}: mean ± std, in %", "", header,
             "|" + "---|" * (len(COLUMNS) + 1)]
    for variant, runs in results.items():
        cells = []
        for key, _ in COLUMNS:
            values = [100 * run[key] for run in runs if run.get(key) is not None]
            if not values:
                cells.append("-")
            elif len(values) == 1:
                cells.append(f"{values[0]:.1f}")
            else:
                cells.append(f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines += ["", "Each row: `cam-joint train ARGS --seed S --max-steps N` with ARGS:", ""]
    lines += [f"- {variant}: `{' '.join(commands[variant])}`" for variant in results]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
