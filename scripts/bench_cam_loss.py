"""What the CAM disagreement loss costs: a training step without it vs with it, in each gradient mode, in two regimes.

* heads: the heads dominate (frozen encoder, cached feature maps): paper-sized heads on 512 x 7 x 7 maps, batch 32,
  1024-d intermediate layer, 1024 LSTM units, vocabulary ~5,000, 20-token captions;
* encoder: the encoder dominates (the default `cam-joint train`): resnet10t at output stride 8 read from layer3,
  trained, on 96 px pixels, batch 32, 256-d heads, the synthetic birds' vocabulary size, their caption length.

The steps of a regime run interleaved on the SAME model (the loss is toggled on its config), repeats are medianed,
and the ratios are measured side by side in one run, one line per regime and CAM method:

    cam_step_ratio[<regime>][<method>] first_order=<x> exact=<y>

`exact_two_pass` is the exact step as it was before its caption targets were batched (same values).
`--compare-baseline` adds the default run's training steps per second before (NCHW encoder inputs) and after
(channels_last), measured interleaved in this process:

    default_run_steps_per_s before=<a> after=<b> speedup=<b/a>

Targets, one thread: heads first_order <= 1.5, exact <= 3.0.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from cam_joint import CamJointConfig, CamJointModel  # noqa: E402

SYNTHETIC_VOCAB, SYNTHETIC_CAPTION_TOKENS = 49, 16  # the default run's vocabulary, its captions' length about


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--spatial", type=int, default=7)
    parser.add_argument("--intermediate-size", type=int, default=1024)
    parser.add_argument("--hidden-size", type=int, default=1024)
    parser.add_argument("--vocab-size", type=int, default=5000)
    parser.add_argument("--caption-length", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cam-methods", nargs="+", default=["gradcam", "hirescam", "gradcam++"])
    parser.add_argument("--regimes", nargs="+", default=["heads", "encoder"], choices=["heads", "encoder"])
    parser.add_argument("--compare-baseline", action="store_true",
                        help="also the default run's steps per second before/after channels_last")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    settings = {"plain": (False, "first_order", True), "first_order": (True, "first_order", True),
                "exact": (True, "exact", True), "exact_two_pass": (True, "exact", False)}
    for regime in args.regimes:
        model, batch, description = (heads_regime if regime == "heads" else encoder_regime)(args)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
        for method in args.cam_methods:
            model.config.cam_method = method
            medians = measure(model, optimizer, batch, settings, args.repeats)
            print(f"[{regime}][{method}] threads={torch.get_num_threads()} {description}: "
                  + ", ".join(f"{n} {v * 1000:.0f} ms" for n, v in medians.items()))
            print(f"cam_step_ratio[{regime}][{method}] first_order={medians['first_order'] / medians['plain']:.2f} "
                  f"exact={medians['exact'] / medians['plain']:.2f} "
                  f"exact_two_pass={medians['exact_two_pass'] / medians['plain']:.2f}", flush=True)
    if args.compare_baseline:
        compare_baseline(args)


def heads_regime(args):
    """Paper-sized heads on cached feature maps (frozen encoder)."""
    torch.manual_seed(0)
    config = CamJointConfig(encoder_name="resnet18", variant="cam", num_labels=200, vocab_size=args.vocab_size,
                            intermediate_size=args.intermediate_size, hidden_size=args.hidden_size,
                            word_embedding_size=512, max_caption_length=args.caption_length + 1)
    # lr 0 (below): the optimizer step costs what it always does, but the weights stay put, so every method and
    # repeat is timed on the same model (a learning model's greedy captions shorten, which made later methods look
    # cheaper). The greedy caption of an untrained model rarely stops early: it runs the full length, the worst
    # case, like the answer caption.
    model = CamJointModel(config).train()
    batch = {"feature_maps": torch.rand(args.batch_size, config.encoder_channels, args.spatial, args.spatial),
             **caption_batch(config, args.batch_size, args.caption_length, 200)}
    return model, batch, (f"batch={args.batch_size} map={config.encoder_channels}x{args.spatial}x{args.spatial} "
                          f"D={args.intermediate_size} H={args.hidden_size} V={args.vocab_size} "
                          f"T={args.caption_length}")


def encoder_regime(args, pixels: int = 96):
    """The default run's model (trained encoder) on pixels."""
    from cam_joint.training import SYNTHETIC_ENCODER

    torch.manual_seed(0)
    config = CamJointConfig(**SYNTHETIC_ENCODER, variant="cam", num_labels=20, vocab_size=SYNTHETIC_VOCAB,
                            intermediate_size=256, hidden_size=256, word_embedding_size=128, freeze_encoder=False,
                            max_caption_length=40)
    model = CamJointModel(config).train()
    batch = {"pixel_values": torch.randn(args.batch_size, 3, pixels, pixels),
             **caption_batch(config, args.batch_size, SYNTHETIC_CAPTION_TOKENS, 20)}
    return model, batch, (f"batch={args.batch_size} resnet10t os8 layer3 {pixels}px D=256 H=256 "
                          f"V={SYNTHETIC_VOCAB} T={SYNTHETIC_CAPTION_TOKENS}")


def caption_batch(config, batch_size: int, length: int, num_labels: int) -> dict:
    ids = torch.randint(4, config.vocab_size, (batch_size, length + 1))
    ids[:, 0], ids[:, -1] = config.bos_token_id, config.eos_token_id
    return {"labels": torch.randint(0, num_labels, (batch_size,)), "input_ids": ids}


def compare_baseline(args) -> None:
    """The default run's step (first_order L_cam, AdamW) per second: NCHW pixels (before) vs channels_last."""
    model, batch, _ = encoder_regime(args)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)
    settings = {"before": torch.contiguous_format, "after": torch.channels_last}

    def step(name: str) -> float:
        model.encoder_memory_format = settings[name]
        return timed_step(model, optimizer, batch)

    medians = interleaved(step, list(settings), args.repeats)
    before, after = 1 / medians["before"], 1 / medians["after"]
    print(f"default_run_steps_per_s before={before:.2f} after={after:.2f} speedup={after / before:.2f}")


def timed_step(model, optimizer, batch) -> float:
    start = time.perf_counter()
    out = model(**batch)
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def interleaved(step, names: list[str], repeats: int) -> dict[str, float]:
    """Median seconds per name, the names interleaved (a noisy machine slows them alike), after one warm-up each."""
    for name in names:
        step(name)
    times = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            times[name].append(step(name))
    return {name: statistics.median(values) for name, values in times.items()}


def measure(model, optimizer, batch, settings, repeats: int) -> dict[str, float]:
    """Median seconds of a training step per setting (L_cam on/off, gradient mode, batched caption targets)."""
    config = model.config

    def step(name: str) -> float:
        config.use_cam_loss, config.cam_gradient_mode, model.batched_caption_targets = settings[name]
        return timed_step(model, optimizer, batch)

    return interleaved(step, list(settings), repeats)


if __name__ == "__main__":
    main()
