"""Packaging: `python -m build` makes a wheel and an sdist without warnings, and the wheel works on its own.

The wheel is installed into a fresh virtual environment that sees this environment's dependencies (a .pth line
naming its site-packages: the .pth files there, such as an editable install of cam_joint, are not processed, so
`cam_joint` comes from the wheel), then runs `cam-joint --help` and a 2-step training run, and the saved checkpoint's
remote code (what `check_remote_code_folder` says it needs) is all in the wheel. Offline: `--no-isolation` builds
with this environment's setuptools, and pip installs the wheel alone (`--no-deps --no-index`).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from cam_joint.hub import check_remote_code_folder

REPO = Path(__file__).resolve().parents[1]
TINY_TRAIN = ["--synthetic-classes", "3", "--synthetic-per-class", "4", "--image-size", "48", "--batch-size", "4",
              "--intermediate-size", "16", "--hidden-size", "16", "--word-embedding-size", "8", "--encoder",
              "resnet10t", "--no-caption-metrics", "--eval-split", "validation", "--max-steps", "2"]
pytestmark = pytest.mark.slow


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **kwargs.pop("env", {})}
    # With it set, setuptools says "warning: byte-compiling is disabled", which is not the package's doing.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, **kwargs)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("build", reason="the dev extra's `build` is needed to build the distributions")
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"  # a copy: building writes build/ and *.egg-info next to the sources
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                                                 "__pycache__", ".pytest_cache", "runs", "outputs"))
    result = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(root / "dist"), str(source)])
    output = result.stdout + result.stderr
    for word in ("warning", "deprecat"):
        assert word not in output.lower(), f"`python -m build` printed {word!r}:\n{output}"
    wheels, sdists = list((root / "dist").glob("*.whl")), list((root / "dist").glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in (root / "dist").iterdir())
    return {"root": root, "wheel": wheels[0], "sdist": sdists[0]}


def test_the_distributions_carry_the_license(built):
    wheel_files = zipfile.ZipFile(built["wheel"]).namelist()
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in wheel_files)
    metadata = zipfile.ZipFile(built["wheel"]).read(
        next(n for n in wheel_files if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata
    sdist_files = tarfile.open(built["sdist"]).getnames()
    assert any(name.endswith("/LICENSE") for name in sdist_files)
    assert "Apache License" in (REPO / "LICENSE").read_text() and "Version 2.0" in (REPO / "LICENSE").read_text()


def test_the_wheel_alone_trains_and_holds_the_remote_code(built):
    venv = built["root"] / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    inner_site = Path(_run([str(python), "-c", "import site; print(site.getsitepackages()[0])"]).stdout.strip())
    (inner_site / "shared_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(built["wheel"])])
    where = _run([str(python), "-c", "import cam_joint; print(cam_joint.__file__)"]).stdout.strip()
    assert Path(where).is_relative_to(inner_site), f"cam_joint imported from {where}, not from the wheel"

    cam_joint = venv / "bin" / "cam-joint"
    assert "train" in _run([str(cam_joint), "--help"]).stdout
    output_dir = built["root"] / "run"
    _run([str(cam_joint), "train", *TINY_TRAIN, "--output-dir", str(output_dir)], cwd=built["root"])
    needed = check_remote_code_folder(output_dir)
    assert needed, "the saved checkpoint names no remote code"
    wheel_files = set(zipfile.ZipFile(built["wheel"]).namelist())
    missing = [name for name in needed if f"cam_joint/{name}" not in wheel_files]
    assert not missing, f"the checkpoint's remote code files {missing} are not in the wheel"
