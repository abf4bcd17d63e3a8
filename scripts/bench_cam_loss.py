"""What the CAM disagreement loss costs: a training step without it vs with it, in each gradient mode.

Paper-sized heads on cached feature maps (512 x 7 x 7, batch 32), 1024-d intermediate layer, 1024 LSTM units,
vocabulary ~5,000, 20-token captions. The three steps run interleaved on the SAME model (the loss is toggled on its
config), repeats are medianed, and the ratios on the last line are measured side by side in one run:

    cam_step_ratio first_order=<x> exact=<y>

Targets: first_order <= 2.0, exact <= 4.0 (a naive autograd.grad(create_graph=True) through nn.LSTM measured ~16x).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from cam_joint import CamJointConfig, CamJointModel  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--spatial", type=int, default=7)
    parser.add_argument("--intermediate-size", type=int, default=1024)
    parser.add_argument("--hidden-size", type=int, default=1024)
    parser.add_argument("--vocab-size", type=int, default=5000)
    parser.add_argument("--caption-length", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cam-methods", nargs="+", default=["gradcam", "hirescam", "gradcam++"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    config = CamJointConfig(encoder_name="resnet18", variant="cam", num_labels=200, vocab_size=args.vocab_size,
                            intermediate_size=args.intermediate_size, hidden_size=args.hidden_size,
                            word_embedding_size=512, max_caption_length=args.caption_length + 1)
    model = CamJointModel(config).train()
    # lr 0: the optimizer step costs what it always does, but the weights stay put, so every method and repeat is
    # timed on the same model (a learning model's greedy captions shorten, which made later methods look cheaper).
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    batch = {
        "feature_maps": torch.rand(args.batch_size, config.encoder_channels, args.spatial, args.spatial),
        "labels": torch.randint(0, 200, (args.batch_size,)),
        "input_ids": torch.randint(4, args.vocab_size, (args.batch_size, args.caption_length + 1)),
    }
    batch["input_ids"][:, 0] = config.bos_token_id
    batch["input_ids"][:, -1] = config.eos_token_id
    # The predicted caption (greedy decoding) of an untrained model rarely stops early: it runs the full length,
    # the worst case, like the answer caption.

    settings = {"plain": (False, "first_order"), "first_order": (True, "first_order"), "exact": (True, "exact")}
    for method in args.cam_methods:
        config.cam_method = method
        medians = measure(model, optimizer, batch, config, settings, args.repeats)
        print(f"[{method}] threads={torch.get_num_threads()} batch={args.batch_size} map={config.encoder_channels}x"
              f"{args.spatial}x{args.spatial} D={args.intermediate_size} H={args.hidden_size} V={args.vocab_size} "
              f"T={args.caption_length}: " + ", ".join(f"{n} {v * 1000:.0f} ms" for n, v in medians.items()))
        print(f"cam_step_ratio[{method}] first_order={medians['first_order'] / medians['plain']:.2f} "
              f"exact={medians['exact'] / medians['plain']:.2f}")


def measure(model, optimizer, batch, config, settings, repeats: int) -> dict[str, float]:
    """Median seconds of a training step per setting, the settings interleaved (a noisy machine slows them alike)."""

    def step(name: str) -> float:
        config.use_cam_loss, config.cam_gradient_mode = settings[name]
        start = time.perf_counter()
        out = model(**batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    for name in settings:  # warm-up
        step(name)
    times = {name: [] for name in settings}
    for _ in range(repeats):
        for name in settings:
            times[name].append(step(name))
    return {name: statistics.median(values) for name, values in times.items()}

if __name__ == "__main__":
    main()
