"""Where the default `cam-joint train` spends its time: wall-clock shares of each part of a run, plain timers.

Builds the default run (synthetic birds, resnet10t at output stride 8, variant cam, batch 32, AdamW) with the
training module's own functions, trains `--steps` steps and runs the end-of-run evaluation and CAM pictures, timing:

* setup: building the synthetic data; the model and processor;
* per step: waiting for the batch (data loading + preprocessing), encoder forward, captioner (teacher-forced)
  forward, L_cam (the four maps of eq. 6, of which the greedy decoding), the rest of the forward (heads, losses),
  backward (of which the encoder's, from A's gradient on), optimizer + schedule;
* the end: evaluation (of which caption generation and the CAM metrics' maps), the CAM pictures.

Timers wrap the model's own methods (inclusive, synchronous on CPU), so the parts add up to the step. One line per
part: `part seconds share`. `--nchw` measures the encoder on NCHW pixels (as before channels_last).

    OMP_NUM_THREADS=1 python scripts/profile_train.py --steps 100 --threads 1
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import time
from collections import defaultdict
from pathlib import Path
from tempfile import TemporaryDirectory

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402


class Timers:
    """Seconds per named part, accumulated."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.wrapped: list[tuple[object, str]] = []
        self.active: list[str] = []

    def wrap(self, owner, name: str, label: str) -> None:
        method = getattr(owner, name)

        @functools.wraps(method)
        def timed(*args, **kwargs):
            if self.active:  # inside another timed part (the decoder calls the captioner): counted there
                return method(*args, **kwargs)
            self.active.append(label)
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
                self.active.pop()

        setattr(owner, name, timed)
        self.wrapped.append((owner, name))

    def unwrap(self) -> None:
        for owner, name in self.wrapped:
            delattr(owner, name)  # the instance attribute: the class's method shows through again
        self.wrapped = []

    def add(self, label: str, start: float) -> float:
        now = time.perf_counter()
        self.seconds[label] += now - start
        return now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--nchw", action="store_true", help="the encoder on NCHW pixels (before channels_last)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    timers = Timers()
    with TemporaryDirectory() as tmp:
        run = time.perf_counter()
        model, processor, train_data, eval_split, train_args = build(args, Path(tmp), timers)
        train(model, train_data, train_args, args, timers)
        timers.unwrap()
        evaluate(model, processor, eval_split, train_args, Path(tmp), timers)
        total = time.perf_counter() - run
    report(timers.seconds, total, args)


def build(args, output_dir: Path, timers: Timers):
    from accelerate.utils import set_seed

    from cam_joint import training

    parser = argparse.ArgumentParser()
    training.add_arguments(parser)
    train_args = parser.parse_args(["--output-dir", str(output_dir), "--seed", str(args.seed),
                                    "--num-workers", str(args.num_workers)])
    set_seed(args.seed)
    start = time.perf_counter()
    dataset, _ = training.load_training_data(train_args)
    start = timers.add("setup: synthetic data", start)
    model, processor = training.build_model_and_processor(train_args, dataset["train"],
                                                          dataset["train"].features["label"].names)
    timers.add("setup: model and processor", start)
    if args.nchw:
        model.encoder_memory_format = torch.contiguous_format
    train_data = training.CaptionedImages(dataset["train"], processor, model.config.max_caption_length, args.seed)
    # Inclusive timers on the model's own parts (the greedy decoding runs inside L_cam, the encoder inside
    # get_feature_maps).
    timers.wrap(model, "get_feature_maps", "step: encoder forward")
    timers.wrap(model.captioner, "forward", "step: captioner forward (teacher-forced)")
    timers.wrap(model, "disagreement_maps", "step: L_cam maps")
    decode = model.captioner.decode

    def timed_decode(*args, **kwargs):  # inside L_cam maps: timed on its own, not as a top-level part
        start = time.perf_counter()
        try:
            return decode(*args, **kwargs)
        finally:
            timers.seconds["step: L_cam greedy decoding (inside L_cam maps)"] += time.perf_counter() - start

    model.captioner.decode = timed_decode
    timers.wrapped.append((model.captioner, "decode"))
    return model, processor, train_data, dataset["test"], train_args


def train(model, train_data, train_args, args, timers: Timers) -> None:
    from transformers import get_scheduler

    from cam_joint import training

    loader = DataLoader(train_data, batch_size=train_args.batch_size, shuffle=True, collate_fn=train_data.collate,
                        num_workers=args.num_workers)
    optimizer = training.make_optimizer(train_args, model)
    scheduler = get_scheduler(train_args.lr_scheduler_type, optimizer, num_warmup_steps=train_args.warmup_steps,
                              num_training_steps=args.steps)
    model.train()
    step, encoder_grad_at = 0, []
    for _ in range(math.ceil(args.steps / len(loader))):
        batches = iter(loader)
        start = time.perf_counter()
        for batch in batches:
            start = timers.add("step: data loading + preprocessing", start)
            batch.pop("image_index")
            out = model(**batch)
            start = timers.add("step: forward (all)", start)
            encoder_grad_at.clear()
            out.feature_maps.register_hook(lambda grad: encoder_grad_at.append(time.perf_counter()))
            out.loss.backward()
            now = time.perf_counter()
            timers.seconds["step: backward (all)"] += now - start
            if encoder_grad_at:
                timers.seconds["step: encoder backward (inside backward)"] += now - encoder_grad_at[0]
            start = now
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            start = timers.add("step: optimizer + schedule", start)
            step += 1
            if step >= args.steps:
                return


def evaluate(model, processor, eval_split, train_args, output_dir: Path, timers: Timers) -> None:
    from cam_joint import evaluation, inference

    model.eval()
    timers.wrap(model, "generate", "end: caption generation (inside evaluation)")
    timers.wrap(model, "grad_cam", "end: CAM maps (inside evaluation and pictures)")
    start = time.perf_counter()
    evaluation.evaluate_model(model, processor, eval_split, batch_size=train_args.eval_batch_size)
    start = timers.add("end: evaluation", start)
    inference.save_cam_pictures(model, processor, eval_split, output_dir, count=4)
    timers.add("end: CAM pictures", start)


def report(seconds: dict[str, float], total: float, args) -> None:
    forward = seconds["step: forward (all)"]
    inside = sum(v for k, v in seconds.items() if k.startswith("step: ") and k not in (
        "step: forward (all)", "step: backward (all)", "step: data loading + preprocessing",
        "step: optimizer + schedule", "step: L_cam greedy decoding (inside L_cam maps)",
        "step: encoder backward (inside backward)"))
    seconds = dict(seconds)
    seconds["step: rest of the forward (heads, losses)"] = forward - inside
    print(f"threads={torch.get_num_threads()} steps={args.steps} num_workers={args.num_workers} "
          f"encoder={'NCHW' if args.nchw else 'channels_last'} total={total:.1f}s")
    for name, value in sorted(seconds.items()):
        print(f"{name:<62} {value:7.1f}s {100 * value / total:5.1f}%")


if __name__ == "__main__":
    main()
