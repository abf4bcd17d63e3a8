"""The study scripts: cam_study.py (paired interval, a report over partly finished runs), cam_map_spread.py."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cam_study():
    spec = importlib.util.spec_from_file_location("cam_study", REPO / "scripts" / "cam_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_interval_is_the_paired_t_interval(cam_study):
    treated, baseline = [0.91, 0.95, 0.88, 0.97], [0.90, 0.91, 0.89, 0.93]
    mean, half = cam_study.paired_interval([a - b for a, b in zip(treated, baseline)])
    reference = stats.ttest_rel(treated, baseline).confidence_interval(0.95)
    assert mean - half == pytest.approx(reference.low)
    assert mean + half == pytest.approx(reference.high)


def test_report_pairs_only_the_seeds_both_rows_finished(cam_study):
    rows = {"w=0": [], "w=1": []}
    metrics = {("w=0", 0): {"top1": 0.90}, ("w=0", 1): {"top1": 0.80}, ("w=0", 2): {"top1": 0.70},
               ("w=1", 0): {"top1": 0.95}, ("w=1", 1): {"top1": 0.86}}  # seed 2 of w=1 not finished
    curves = {key: [] for key in metrics}
    report = cam_study.format_report(rows, [0, 1, 2], metrics, curves, [])
    assert "| w=0 | 3 | 80.0 ± 10.0 |" in report
    assert "| w=1 | 2 | 90.5 ± 6.4 |" in report
    # differences +5 and +6 over seeds 0 and 1: mean +5.5, t(1) half-width 12.706 * 0.7071 / sqrt(2) = 6.35
    assert "| w=1 | 2 | +5.5 [-0.9, +11.9] |" in report


def test_the_shortcut_testbed_columns_and_flag(cam_study, tmp_path):
    rows = {"w=0": [], "w=1": []}
    shortcut = {"top1": 0.9, "top1_shifted": 0.4, "worst_group_top1": 0.2, "pointing_game_background_classifier": 0.7,
                "pointing_game_background_chance": 0.8}
    metrics = {("w=0", 0): shortcut, ("w=1", 0): {**shortcut, "top1_shifted": 0.5}}
    report = cam_study.format_report(rows, [0], metrics, {key: [] for key in metrics}, [])
    assert "| row | seeds | top1 | top1_shifted | worst_group_top1 | pointing_game_background_classifier |" in report
    assert "| w=1 | 1 | +0.0 | +10.0 | +0.0 | +0.0 |" in report
    assert "- pointing_game_background_chance: 80.0" in report
    # Without the testbed's metrics the table keeps its columns.
    plain = cam_study.format_report(rows, [0], {k: {"top1": 0.9} for k in metrics}, {k: [] for k in metrics}, [])
    assert "| row | seeds | top1 |" in plain and "shifted" not in plain
    # --columns: the columns asked for, in the order asked.
    chosen = cam_study.format_report(rows, [0], metrics, {k: [] for k in metrics}, [], None,
                                     ["top1_shifted", "top1", "CIDEr"])
    assert "| row | seeds | top1_shifted | top1 |" in chosen and "worst_group" not in chosen
    printed = subprocess.run([sys.executable, str(REPO / "scripts" / "cam_study.py"), "--report-only",
                              "--background-bias", "0.95", "--output-dir", str(tmp_path)],
                             capture_output=True, text=True, check=True).stdout
    assert "--synthetic-background-bias 0.95" in printed


def test_a_row_whose_args_are_one_option_needs_no_leading_space(tmp_path):
    for slug, top1 in (("w_0", 0.5), ("oracle", 0.75)):
        (tmp_path / f"{slug}-seed0").mkdir()
        (tmp_path / f"{slug}-seed0" / "metrics.json").write_text(json.dumps({"top1": top1}))
    study = [sys.executable, str(REPO / "scripts" / "cam_study.py"), "--report-only", "--seeds", "0", "--weights", "1",
             "--output-dir", str(tmp_path)]
    printed = subprocess.run([*study, "--row", "oracle", "--cam-mask-guidance"], capture_output=True, text=True)
    assert printed.returncode == 0, printed.stderr
    assert "| oracle | 1 | 75.0 |" in printed.stdout and "| oracle | 1 | +25.0 |" in printed.stdout
    assert "- oracle: `--variant cam --cam-loss-weight 1 --cam-mask-guidance`" in printed.stdout
    incomplete = subprocess.run([*study, "--row", "oracle"], capture_output=True, text=True)
    assert incomplete.returncode == 2 and "--row needs two values" in incomplete.stderr


def test_map_spread_statistics_on_hand_computed_maps():
    spec = importlib.util.spec_from_file_location("cam_map_spread", REPO / "scripts" / "cam_map_spread.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import numpy as np

    bird = np.zeros((10, 10), dtype=bool)
    bird[2:4] = True  # 20 pixels
    parts = np.zeros((10, 10), dtype=bool)
    parts[2, 5] = True
    uniform = module.spread_statistics(np.ones((10, 10)), bird, parts)
    assert uniform == pytest.approx({"bird": 0.2, "parts": 0.01, "top10": 0.1, "flat": 1.0})
    spot = np.full((10, 10), -1.0)  # negative cells are clipped away
    spot[2, 5] = 3.0
    assert module.spread_statistics(spot, bird, parts) == pytest.approx(
        {"bird": 1.0, "parts": 1.0, "top10": 1.0, "flat": 0.1})


def _script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cue_only_histogram_counts_the_border_band_only():
    import numpy as np

    module = _script("cue_only_classifier")
    image = np.zeros((10, 10, 3), dtype=np.uint8)  # black border band of width 2 (64 pixels) ...
    image[2:8, 2:8] = (255, 0, 0)  # ... around a red centre (36 pixels)
    bins = module.BINS_PER_CHANNEL
    red_cell = (bins - 1) * bins * bins
    border = module.colour_histogram(image, border=2)
    assert border[0] == 1.0 and border.sum() == pytest.approx(1.0)
    whole = module.colour_histogram(image, border=None)
    assert whole[0] == pytest.approx(0.64) and whole[red_cell] == pytest.approx(0.36)


def test_cue_only_regression_learns_a_cue_that_is_there_and_not_one_that_is_not():
    import numpy as np

    module = _script("cue_only_classifier")
    rng = np.random.default_rng(0)
    labels = np.arange(300) % 3
    informative = np.eye(3)[labels] + 0.1 * rng.standard_normal((300, 3))  # the class, plus noise
    noise = rng.standard_normal((300, 3))  # nothing
    model = module.fit_logistic_regression(np.concatenate([informative, noise], 1), labels, 3)
    assert (module.predict(model, np.concatenate([informative, noise], 1)) == labels).mean() == 1.0
    blind = module.fit_logistic_regression(noise[:150], labels[:150], 3, weight_decay=1.0)
    assert (module.predict(blind, noise[150:]) == labels[150:]).mean() < 0.5


def test_relative_movement_reads_the_trend_of_the_last_fifth(cam_study):
    flat_end = [10.0 - i for i in range(80)] + [1.0, 1.1, 0.9, 1.0] * 5  # falls, then noise around 1
    move, half = cam_study.relative_movement(flat_end)
    assert abs(move) < 0.05 and move - half < 0 < move + half  # no trend: the interval holds 0
    falling = [2.0 - 0.01 * i for i in range(100)]  # last 20 steps: 1.20 -> 1.01, line change -0.19 over mean 1.105
    move, half = cam_study.relative_movement(falling)
    assert move == pytest.approx(-0.19 / 1.105) and half == pytest.approx(0, abs=1e-9)  # a line: no noise


def test_shortcut_reliance_counts_the_mismatched_images_as_evaluation_does(tmp_path):
    """shortcut_reliance.py: on test_shifted's images whose background is another class's, the share named by the
    bird is the evaluation's top-1 of that group (metrics.json), and bird + background + neither = 1."""
    import json
    import os

    from cam_joint.cli import main as cli_main

    os.environ["HF_HUB_OFFLINE"] = "1"
    out = tmp_path / "run"
    assert cli_main(["train", "--synthetic-classes", "3", "--synthetic-per-class", "4", "--image-size", "48",
                     "--batch-size", "4", "--intermediate-size", "16", "--hidden-size", "16",
                     "--word-embedding-size", "8", "--no-caption-metrics", "--eval-split", "validation",
                     "--synthetic-background-bias", "0.9", "--synthetic-shifted-per-class", "6", "--max-steps", "4",
                     "--output-dir", str(out)]) == 0
    result = _script("shortcut_reliance").shortcut_reliance(out)
    groups = {g["group"]: g for g in json.loads((out / "metrics.json").read_text())["groups"]}
    mismatched = groups["all classes, background not its own"]
    assert result["mismatched_images"] == mismatched["size"] > 0
    assert result["names_the_bird"] == pytest.approx(mismatched["top1"])
    assert result["names_the_bird"] + result["names_the_background"] + result["names_neither"] == pytest.approx(1)
    assert 0 <= result["names_the_background"] <= 1 and result["chance"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="not a shortcut-testbed run"):
        plain = tmp_path / "plain"
        plain.mkdir()
        (plain / "training_args.json").write_text(json.dumps({"synthetic": {"num_classes": 3}}))
        _script("shortcut_reliance").shortcut_reliance(plain)
