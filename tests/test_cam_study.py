"""The study scripts: cam_study.py (paired interval, a report over partly finished runs), cam_map_spread.py."""

import importlib.util
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
    printed = subprocess.run([sys.executable, str(REPO / "scripts" / "cam_study.py"), "--report-only",
                              "--background-bias", "0.95", "--output-dir", str(tmp_path)],
                             capture_output=True, text=True, check=True).stdout
    assert "--synthetic-background-bias 0.95" in printed


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
