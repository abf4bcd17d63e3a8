"""Two processes on CPU: DistributedDataParallel (through Accelerate) with the CAM loss computed inside `forward`.

The CAM loss takes gradients inside `forward` with `torch.autograd.grad`; hooks plus an extra `.backward()` there
would silently desynchronise DDP ranks. `tests/ddp_cam_step.py` runs under
`python -m torch.distributed.run --standalone --nproc_per_node 2` (gloo; NOT `accelerate launch --cpu
--num_processes 2`, which starts one process) with `Accelerator(cpu=True)`, a few SGD steps on rank-dependent
batches, for the `cam` variant in both `cam_gradient_mode`s and for `cnn` / `lrcn` (other parameter sets). Per case:

- the trainable parameters are bitwise identical on both ranks after the steps,
- every trainable parameter moved and the frozen encoder did not,
- they equal (allclose) the same steps taken by ONE process on the two ranks' batches concatenated, which is what
  averaged gradients give (equal per-rank batch sizes and caption-token counts),
- with find_unused_parameters=False (DDP's strict default) no case complains: no variant leaves a trainable
  parameter without a gradient on a normal batch.

One more case: a rank whose batch has no caption tokens (its captioner gets no gradient that step) stays in sync with
`find_unused_parameters=True`, the setting `cam-joint train` uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
STRICT_CASES = ["cam-first_order", "cam-exact", "cnn", "lrcn", "cam-exact-find_unused"]
EXPECTED_TRAINABLE = {"cam-first_order": 11, "cam-exact": 11, "cnn": 2, "lrcn": 7, "cam-exact-find_unused": 11,
                      "cam-no_captions_on_rank1": 11}
CAPTIONER = ["captioner.embed_tokens.weight", "captioner.image_to_gates.weight", "captioner.layers.0.bias",
             "captioner.layers.0.weight_hh", "captioner.layers.0.weight_ih", "captioner.lm_head.bias",
             "captioner.lm_head.weight"]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore", "ACCELERATE_USE_CPU": "true",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)  # a fresh rendezvous, even when pytest itself runs under a launcher
    env["CUDA_VISIBLE_DEVICES"] = ""  # CPU and gloo even on a machine with a GPU
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(HERE / "ddp_cam_step.py"), str(out)]
    proc = subprocess.run(command, cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    for report in reports:
        for name, case in report["cases"].items():
            assert "error" not in case, f"rank {report['rank']} case {name}: {case['error']}\n{case['traceback']}"
    return reports


def test_two_processes_really_ran_ddp(ranks):
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    assert all(r["distributed_type"] == "DistributedType.MULTI_CPU" and r["backend"] == "gloo" for r in ranks)
    for report in ranks:
        for case in report["cases"].values():
            assert case["wrapped"] == "DistributedDataParallel"
    # the ranks saw different data: their losses differ
    assert ranks[0]["cases"]["cam-exact"]["losses"][0] != ranks[1]["cases"]["cam-exact"]["losses"][0]


@pytest.mark.parametrize("case", STRICT_CASES + ["cam-no_captions_on_rank1"])
def test_parameters_identical_on_both_ranks_and_updated(ranks, case):
    first, second = (r["cases"][case] for r in ranks)
    assert first["hash"] == second["hash"], f"{case}: ranks diverged"
    assert first["num_trainable"] == EXPECTED_TRAINABLE[case]
    assert first["unchanged_trainable"] == [] and second["unchanged_trainable"] == []  # every one was trained
    assert first["changed_frozen"] == [] and first["num_frozen"] > 0  # the frozen encoder stayed put
    if case.startswith("cam"):
        assert all(step["cam_loss"] > 0 for r in ranks for step in r["cases"][case]["losses"])


@pytest.mark.parametrize("case", STRICT_CASES)
def test_ddp_equals_one_process_on_the_concatenated_batches(ranks, case):
    result = ranks[0]["cases"][case]
    assert result["allclose_single_process"], f"{case}: max |ddp - single| = {result['max_abs_diff_vs_single_process']}"
    assert result["max_abs_update"] > 1e3 * max(result["max_abs_diff_vs_single_process"], 1e-7)


@pytest.mark.parametrize("case", STRICT_CASES)
def test_no_unused_parameters_on_normal_batches(ranks, case):
    """find_unused_parameters=False works for every variant: each builds only the heads it trains."""
    for report in ranks:
        assert report["cases"][case]["unused_parameters"] == []


def test_a_batch_without_captions_keeps_ranks_in_step(ranks):
    """`cam-joint train` runs DDP without find_unused_parameters: a batch whose captions are all padding (on one rank
    only) must still use every parameter, or the next step would hang or fail."""
    case = "cam-no_captions_on_rank1"
    assert ranks[0]["cases"][case]["unused_parameters"] == []
    assert ranks[1]["cases"][case]["unused_parameters"] == []
    assert ranks[0]["cases"][case]["hash"] == ranks[1]["cases"][case]["hash"]
