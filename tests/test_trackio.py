"""`cam-joint train --report-to trackio` logs to a LOCAL trackio project (TRACKIO_DIR, no Space, offline): every
step's train/* losses and the final eval/* metrics, read back through trackio's own storage API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from test_training import TINY

pytest.importorskip("trackio")

READ_BACK = textwrap.dedent(r'''
    import json, sys
    from trackio.sqlite_storage import SQLiteStorage
    runs = SQLiteStorage.get_runs("cam-joint")
    print(json.dumps({"runs": runs, "logs": SQLiteStorage.get_logs("cam-joint", runs[0]) if runs else []},
                     default=str))
''')


def test_report_to_trackio_logs_train_and_eval_values_locally(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRACKIO_DIR": str(tmp_path / "trackio"),
           "HF_HOME": str(tmp_path / "hf_home"), "TRANSFORMERS_VERBOSITY": "error"}
    env.pop("TRACKIO_SPACE_ID", None)
    out = tmp_path / "run"
    train = subprocess.run([sys.executable, "-m", "cam_joint.cli", "train", *TINY, "--max-steps", "2",
                            "--report-to", "trackio", "--output-dir", str(out)],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (tmp_path / "trackio" / "cam-joint.db").is_file()
    read = subprocess.run([sys.executable, "-c", READ_BACK], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert read.returncode == 0, read.stderr[-3000:]
    logged = json.loads(read.stdout.strip().splitlines()[-1])
    assert len(logged["runs"]) == 1
    steps = [entry for entry in logged["logs"] if "train/loss" in entry]
    assert [entry["step"] for entry in steps] == [1, 2]
    for entry in steps:
        assert {"train/class_loss", "train/caption_loss", "train/cam_loss", "lr"} <= set(entry)
    evaluation = next(entry for entry in logged["logs"] if "eval/top1" in entry)
    metrics = json.loads((out / "metrics.json").read_text())
    assert evaluation["eval/top1"] == pytest.approx(metrics["top1"])
    assert evaluation["eval/cam_agreement"] == pytest.approx(metrics["cam_agreement"])
