"""Does the CAM disagreement loss help? A paired, multi-seed study against weight 0, on the synthetic birds.

    python scripts/cam_study.py --seeds 0 1 2 --weights 0.1 0.3 1 3 --jobs 2
    python scripts/cam_study.py --seeds 0 1 2 --weights 1 --row "gradcam++ w=1" "--cam-method gradcam++" \\
        --output-dir outputs/cam-study
    python scripts/cam_study.py --seeds 0 1 2 --weights 1 --distractors 8 --output-dir outputs/cam-study-distractors
    python scripts/cam_study.py --seeds 0 1 2 --weights 1 --background-bias 0.95 --distractors 2 \
        --output-dir outputs/cam-study-shortcut

Every row is `cam-joint train` with the same data, encoder, sizes and budget; the baseline row `w=0` is the
`intermediate` variant (the joint model without L_cam, which is what weight 0 trains: the same initialisation and
data order for a seed, since L_cam draws no random numbers). Rows `w=X` are `--variant cam --cam-loss-weight X`;
`--row LABEL ARGS` adds a row trained as `--variant cam --cam-loss-weight W ARGS` with W the first weight.

Printed: mean ± standard deviation over seeds of each metric, the same seed's difference to `w=0` with its 95%
t-interval (same seed = same data, initialisation and batch order), the image-blind baselines (`*_chance`,
`*_center`) each localisation metric is to be read against, and, from each run's TensorBoard log, L_cam over training
(mean of the first, the highest and the last 50 steps).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# With --background-bias (the shortcut testbed) the runs also report top1_shifted, worst_group_top1 and where the maps
# peak on the background (lower is better), on test and on test_shifted; a column no run has is left out.
HEAD_METRICS = ("pointing_game", "energy_pointing", "pxap", "max_box_acc_v2", "pointing_game_distractor",
                "pointing_game_background", "shifted_pointing_game_background")
COLUMNS = ("top1", "top1_shifted", "worst_group_top1", "CIDEr", "Bleu_4", "cam_agreement",
           *(f"{m}_{head}" for m in HEAD_METRICS for head in ("classifier", "captioner")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--weights", nargs="+", type=float, default=[0.1, 0.3, 1.0, 3.0])
    parser.add_argument("--row", nargs=2, action="append", default=[], metavar=("LABEL", "ARGS"),
                        help="an extra row: cam variant at the first weight with these training arguments")
    parser.add_argument("--max-steps", type=int, default=None, help="default: `cam-joint train`'s own (4 epochs)")
    parser.add_argument("--distractors", type=int, default=0, help="--synthetic-distractors for every run")
    parser.add_argument("--background-bias", type=float, default=None, metavar="P",
                        help="--synthetic-background-bias for every run: the shortcut testbed")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each gets cores / jobs threads)")
    parser.add_argument("--output-dir", default="outputs/cam-study")
    parser.add_argument("--reuse", action="store_true", help="keep runs whose metrics.json exists")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: report the runs already finished (each row says its seeds)")
    parser.add_argument("--columns", nargs="+", default=None, metavar="METRIC",
                        help=f"the tables' columns (default: every one of {', '.join(COLUMNS)} the runs hold)")
    rows_asked, argv = _take_rows(sys.argv[1:], parser)
    args = parser.parse_args(argv)
    args.row = rows_asked

    rows = {"w=0": ["--variant", "intermediate"]}
    rows.update({f"w={w:g}": ["--variant", "cam", "--cam-loss-weight", f"{w:g}"] for w in sorted(args.weights)})
    for label, extra in args.row:
        rows[label] = ["--variant", "cam", "--cam-loss-weight", f"{args.weights[0]:g}", *shlex.split(extra)]
    common = ["--report-to", "tensorboard"]
    if args.max_steps:
        common += ["--max-steps", str(args.max_steps)]
    if args.distractors:
        common += ["--synthetic-distractors", str(args.distractors)]
    if args.background_bias is not None:
        common += ["--synthetic-background-bias", f"{args.background_bias:g}"]
    # Seed-major: a study stopped early still has every row for its first seeds.
    runs = {(label, seed): Path(args.output_dir) / f"{_slug(label)}-seed{seed}"
            for seed in args.seeds for label in rows}
    threads = max(1, (os.cpu_count() or 1) // args.jobs)

    def run(key):
        label, seed = key
        out = runs[key]
        if args.reuse and (out / "metrics.json").exists():
            return
        command = ["cam-joint", "train", *rows[label], *common, "--seed", str(seed), "--output-dir", str(out)]
        out.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
        with open(out / "train.log", "w") as log:
            subprocess.run(command, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)

    if args.report_only:
        runs = {key: path for key, path in runs.items() if (path / "metrics.json").exists()}
    else:
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(run, runs))
    metrics = {key: json.loads((path / "metrics.json").read_text()) for key, path in runs.items()}
    curves = {key: cam_loss_curve(path) for key, path in runs.items()}
    class_curves = {key: training_curve(path, "train/class_loss") for key, path in runs.items()}
    print(format_report(rows, args.seeds, metrics, curves, common, class_curves, args.columns))


def _take_rows(argv: list[str], parser: argparse.ArgumentParser) -> tuple[list[tuple[str, str]], list[str]]:
    """Every `--row LABEL ARGS` pair, taken out of `argv` before argparse sees it: argparse would read an ARGS such as
    "--cam-mask-guidance" (no space) as an option of ours and refuse it."""
    rows, rest = [], []
    tokens = iter(argv)
    for token in tokens:
        if token != "--row":
            rest.append(token)
            continue
        pair = [next(tokens, None), next(tokens, None)]
        if None in pair:
            parser.error("--row needs two values: LABEL and ARGS (the training arguments of that row)")
        rows.append(tuple(pair))
    return rows, rest


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in label)


def training_curve(run_dir: Path, tag: str = "train/cam_loss") -> list[float]:
    """A logged value per step from the run's TensorBoard events (empty where the run did not log it)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for path in sorted(run_dir.rglob("events.out.tfevents*"), reverse=True):  # the newest file that has the tag
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})  # 0: keep every step
        events.Reload()
        if tag in events.Tags()["scalars"]:
            return [e.value for e in events.Scalars(tag)]
    return []


def cam_loss_curve(run_dir: Path) -> list[float]:
    return training_curve(run_dir, "train/cam_loss")


def relative_movement(values: list[float], share: float = 0.2) -> tuple[float, float]:
    """How much a training curve still moves over its last `share` of steps: the least-squares line's change across
    that window relative to the window's mean (0.02 = it still falls or rises by 2 %), and the half-width of that
    change's 95 % interval. A line, not the two ends, and an interval, because a per-step loss is noisy: on the
    shortcut testbed a batch's loss is mostly how many of its images break the shortcut."""
    import numpy as np
    from scipy.stats import t

    window = np.asarray(values[-max(3, round(share * len(values))):], dtype=np.float64)
    steps = np.arange(len(window), dtype=np.float64)
    slope, intercept = np.polyfit(steps, window, 1)
    residual = window - (slope * steps + intercept)
    slope_se = math.sqrt(residual.var(ddof=2) / ((steps - steps.mean()) ** 2).sum())
    scale = (len(window) - 1) / window.mean()
    return float(slope * scale), float(t.ppf(0.975, len(window) - 2) * slope_se * scale)


def paired_interval(differences: list[float]) -> tuple[float, float]:
    """Mean of the paired differences and the half-width of its 95% t-interval (nan for one seed)."""
    from scipy.stats import t

    n = len(differences)
    mean = statistics.mean(differences)
    if n < 2:
        return mean, float("nan")
    return mean, t.ppf(0.975, n - 1) * statistics.stdev(differences) / math.sqrt(n)


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def format_report(rows, seeds, metrics, curves, common, class_curves=None, columns=None) -> str:
    columns = [c for c in (columns or COLUMNS) if any(c in m for m in metrics.values())]
    header = "| row | seeds | " + " | ".join(columns) + " |"
    rule = "|" + "---|" * (len(columns) + 2)

    def seeds_of(*labels):  # the seeds every one of these rows has finished
        return [s for s in seeds if all((label, s) in metrics for label in labels)]

    lines = [f"Synthetic birds, seeds {seeds}, `cam-joint train ROW {' '.join(common)} --seed S`; in %", "",
             "Mean ± std over seeds:", "", header, rule]
    for label in rows:
        done = seeds_of(label)
        values = {c: [100 * metrics[(label, s)][c] for s in done if c in metrics[(label, s)]] for c in columns}
        lines.append(f"| {label} | {len(done)} | " + " | ".join(_cell(values[c]) for c in columns) + " |")
    lines += ["", "Paired difference to w=0 (same seed), mean [95% t-interval]:", "", header, rule]
    for label in list(rows)[1:]:
        cells, paired = [], seeds_of(label, "w=0")
        for c in columns:
            diffs = [100 * (metrics[(label, s)][c] - metrics[("w=0", s)][c]) for s in paired
                     if c in metrics[(label, s)] and c in metrics[("w=0", s)]]
            if not diffs:
                cells.append("-")
                continue
            mean, half = paired_interval(diffs)
            cells.append(f"{mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}]" if half == half else f"{mean:+.1f}")
        lines.append(f"| {label} | {len(paired)} | " + " | ".join(cells) + " |")
    lines += ["", "What a map that ignores the image scores (mean over all runs):", ""]
    for metric in HEAD_METRICS:
        for kind in ("chance", "center"):
            values = [100 * m[f"{metric}_{kind}"] for m in metrics.values() if f"{metric}_{kind}" in m]
            if values:
                lines.append(f"- {metric}_{kind}: {statistics.mean(values):.1f}")
    lines += ["", "L_cam during training (mean over seeds of the first / highest / last 50-step means):", ""]
    for label in rows:
        summaries = [_curve_summary(curves[(label, s)]) for s in seeds_of(label) if curves[(label, s)]]
        if summaries:
            first, peak, last = (statistics.mean(part) for part in zip(*summaries))
            lines.append(f"- {label}: {first:.3f} / {peak:.3f} / {last:.3f}")
    if class_curves:
        lines += ["", "Converged? The class loss's relative movement over the last 20 % of steps (least-squares line, "
                      "± its 95 % interval; per seed):", ""]
        for label in rows:
            moves = [relative_movement(class_curves[(label, s)]) for s in seeds_of(label) if class_curves[(label, s)]]
            if moves:
                lines.append(f"- {label}: " + ", ".join(f"{100 * m:+.1f} % ± {100 * h:.1f}" for m, h in moves))
    lines += ["", "Rows:", ""] + [f"- {label}: `{' '.join(args)}`" for label, args in rows.items()]
    return "\n".join(lines)


def _curve_summary(values: list[float], window: int = 50) -> tuple[float, float, float]:
    means = [statistics.mean(values[i:i + window]) for i in range(0, len(values), window)]
    return means[0], max(means), means[-1]


if __name__ == "__main__":
    sys.exit(main())
