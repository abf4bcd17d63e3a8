"""Run by tests/test_distributed.py under `torchrun --standalone --nproc_per_node 2` (CPU, gloo):

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_cam_step.py OUT_DIR [CASE ...]

For each case (variant, cam_gradient_mode, find_unused_parameters) every rank builds the same tiny model (same
seed), wraps it with `Accelerator(cpu=True).prepare(model, optimizer)` (DistributedDataParallel) and takes STEPS
optimizer steps on its OWN batches (random feature maps, labels and captions that depend on the rank), each step
`loss = model(feature_maps=..., labels=..., input_ids=...).loss; accelerator.backward(loss); optimizer.step()`.
The CAM loss is computed inside `forward` with `torch.autograd.grad`, so this checks that DDP still averages every
gradient (a `.backward()` inside forward or hooks would desynchronise the ranks).

Rank 0 also replays the same steps in ONE process, without DDP, on the two ranks' batches concatenated: with equal
per-rank batch sizes and caption-token counts, DDP's averaged gradient is the gradient of the concatenated batch,
so the parameters must match (allclose). Before the DDP run, a plain backward on one process lists the trainable
parameters that get no gradient (what DDP with find_unused_parameters=False would trip on).

Each rank writes OUT_DIR/rank{r}.json: per case, the sha256 of its trainable parameters after the steps, whether every
trainable parameter changed, the frozen ones did not, the losses, and (rank 0) the distance to the single-process run.
A case that raises records the error instead of stopping the others.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import time
import traceback

import torch

from cam_joint import CamJointConfig, CamJointModel

BATCH, STEPS, VOCAB, LABELS, MAP = 2, 3, 24, 5, 4
CAPTION_LENGTHS = (7, 5)  # tokens incl. bos/eos per row: the same on every rank (equal token counts)
CASES = {
    "cam-first_order": dict(variant="cam", cam_gradient_mode="first_order"),
    "cam-exact": dict(variant="cam", cam_gradient_mode="exact"),
    "cnn": dict(variant="cnn"),
    "lrcn": dict(variant="lrcn"),
    "cam-exact-find_unused": dict(variant="cam", cam_gradient_mode="exact", find_unused_parameters=True),
    # A batch whose captions are all padding, on one rank only: its caption loss is 0 but still built from the
    # captioner, so every parameter stays in the graph and DDP without find_unused_parameters (what `cam-joint
    # train` uses) keeps both ranks in step.
    "cam-no_captions_on_rank1": dict(variant="cam", cam_gradient_mode="first_order",
                                     find_unused_parameters=False, no_captions=(0, 1)),
}


def build_model(settings: dict) -> CamJointModel:
    config = CamJointConfig(encoder_name="resnet18", vocab_size=VOCAB, num_labels=LABELS, intermediate_size=32,
                            hidden_size=32, word_embedding_size=16, max_caption_length=16,
                            variant=settings["variant"],
                            cam_gradient_mode=settings.get("cam_gradient_mode", "first_order"))
    torch.manual_seed(0)
    model = CamJointModel(config)
    with torch.no_grad():  # larger head weights: non-trivial CAMs, predicted classes and greedy captions
        g = torch.Generator().manual_seed(1)
        for name, parameter in model.named_parameters():
            if not name.startswith("encoder.") and parameter.ndim == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=g) * 0.3)
    return model.train()


def batch(step: int, rank: int, channels: int, no_captions: tuple[int, int] | None = None) -> dict:
    g = torch.Generator().manual_seed(1000 * step + rank + 1)
    feature_maps = torch.rand(BATCH, channels, MAP, MAP, generator=g)
    labels = torch.randint(0, LABELS, (BATCH,), generator=g)
    input_ids = torch.zeros(BATCH, max(CAPTION_LENGTHS), dtype=torch.long)  # pad = 0
    for row, length in enumerate(CAPTION_LENGTHS):
        input_ids[row, 0] = 1  # bos
        input_ids[row, 1:length - 1] = torch.randint(4, VOCAB, (length - 2,), generator=g)
        input_ids[row, length - 1] = 2  # eos
    if no_captions == (step, rank):
        input_ids.zero_()
    return {"feature_maps": feature_maps, "labels": labels, "input_ids": input_ids}


def concatenated(step: int, world: int, channels: int) -> dict:
    parts = [batch(step, r, channels) for r in range(world)]
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def digest(params: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(params):
        h.update(name.encode())
        h.update(params[name].contiguous().float().numpy().tobytes())
    return h.hexdigest()


def unused_parameters(model, data) -> list[str]:
    """Trainable parameters with no gradient after one plain backward (DDP's 'unused parameters')."""
    probe = copy.deepcopy(model)
    probe.zero_grad(set_to_none=True)
    probe(**data).loss.backward()
    return sorted(n for n, p in probe.named_parameters() if p.requires_grad and p.grad is None)


def optimizer_for(model):
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)


def run_case(name: str, settings: dict, rank: int, world: int) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    find_unused = settings.get("find_unused_parameters", False)
    accelerator = Accelerator(cpu=True, kwargs_handlers=[
        DistributedDataParallelKwargs(find_unused_parameters=find_unused)])
    model = build_model(settings)
    channels = model.config.encoder_channels
    no_captions = settings.get("no_captions")
    reference = copy.deepcopy(model) if rank == 0 and no_captions is None else None
    initial = trainable(model)
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    result = {"settings": settings, "num_trainable": len(initial), "num_frozen": len(frozen_before),
              "unused_parameters": unused_parameters(model, batch(0, rank, channels, no_captions))}

    optimizer = optimizer_for(model)
    ddp_model, optimizer = accelerator.prepare(model, optimizer)
    result["wrapped"] = type(ddp_model).__name__
    losses = []
    for step in range(STEPS):
        data = batch(step, rank, channels, no_captions)
        out = ddp_model(**data)
        accelerator.backward(out.loss)
        optimizer.step()
        optimizer.zero_grad()
        losses.append({k: float(getattr(out, k).detach()) for k in ("loss", "class_loss", "caption_loss", "cam_loss")
                       if getattr(out, k) is not None})
    final = trainable(accelerator.unwrap_model(ddp_model))
    result["losses"] = losses
    result["hash"] = digest(final)
    result["unchanged_trainable"] = sorted(n for n in final if torch.equal(final[n], initial[n]))
    result["changed_frozen"] = sorted(n for n, p in accelerator.unwrap_model(ddp_model).named_parameters()
                                      if not p.requires_grad and not torch.equal(p, frozen_before[n]))

    if reference is not None:  # the same steps, one process, both ranks' data in one batch
        ref_optimizer = optimizer_for(reference)
        for step in range(STEPS):
            loss = reference(**concatenated(step, world, channels)).loss
            loss.backward()
            ref_optimizer.step()
            ref_optimizer.zero_grad()
        expected = trainable(reference)
        result["max_abs_diff_vs_single_process"] = max(float((final[n] - expected[n]).abs().max()) for n in final)
        result["allclose_single_process"] = all(torch.allclose(final[n], expected[n], rtol=1e-4, atol=1e-5)
                                                for n in final)
        # and it is not trivially close: the update itself is much larger than the tolerance
        result["max_abs_update"] = max(float((final[n] - initial[n]).abs().max()) for n in final)
    accelerator.wait_for_everyone()
    return result


def main() -> int:
    out_dir = sys.argv[1]
    names = sys.argv[2:] or list(CASES)
    torch.set_num_threads(1)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    report = {"rank": rank, "world_size": world, "cases": {}}
    for name in names:
        start = time.perf_counter()
        try:
            report["cases"][name] = run_case(name, CASES[name], rank, world)
        except Exception as error:  # record it; the other cases still run
            report["cases"][name] = {"error": f"{type(error).__name__}: {error}",
                                     "traceback": traceback.format_exc()[-4000:]}
        report["cases"][name]["seconds"] = round(time.perf_counter() - start, 2)
    from accelerate import PartialState

    state = PartialState()
    report["distributed_type"] = str(state.distributed_type)
    report["backend"] = state.backend
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(report, f, indent=1)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
