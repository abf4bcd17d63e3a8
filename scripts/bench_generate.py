"""Benchmark CamJoint caption decoding: Transformers' `generate` vs a minimal hand-written batched loop.

The same model decodes a batch of images for exactly N new tokens (default 64 images, 20 tokens) with

* `generate` greedy   - `model.generate(do_sample=False, num_beams=1)` (Transformers' generation loop),
* hand loop           - a minimal batched greedy loop straight over `model.captioner` (no generation machinery),
* greedy_captions     - the model's own hand-written greedy loop (eos bookkeeping included),
* `generate` beam N   - `model.generate(num_beams=N)` (default 3),

interleaved (A, B, C, D, A, B, C, D, ...) after warm-up, reporting medians. eos is suppressed (its output bias is set
to -1e9), so every variant and every beam produces exactly N tokens: they all do the same work. By default the images
are encoded once beforehand and every variant decodes from the same `image_embeds`, so the numbers are about decoding;
`--include-encoder` makes every variant start from pixels.

The LAST line is machine-readable:  generate_vs_hand_loop=<x> beam3_vs_greedy=<y>
(x = median generate greedy / median hand loop, target <= 1.3; y = median generate beam / median generate greedy,
target <= 3.5).

    python scripts/bench_generate.py                     # paper sizes: hidden 1024, embedding 512, vocab 5000
    python scripts/bench_generate.py --repeats 9 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time

import torch

from cam_joint import CamJointConfig, CamJointModel


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--batch", type=int, default=64, help="images decoded together")
    parser.add_argument("--tokens", type=int, default=20, help="new tokens per caption (eos suppressed)")
    parser.add_argument("--num-beams", type=int, default=3)
    parser.add_argument("--encoder", default="resnet18", help="timm encoder (random weights)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--include-encoder", action="store_true",
                        help="decode from pixels (each variant runs the encoder) instead of precomputed image_embeds")
    parser.add_argument("--intermediate-size", type=int, default=1024)
    parser.add_argument("--hidden-size", type=int, default=1024)
    parser.add_argument("--word-embedding-size", type=int, default=512)
    parser.add_argument("--vocab-size", type=int, default=5000)
    parser.add_argument("--num-lstm-layers", type=int, default=1)
    parser.add_argument("--conditioning", default="every_step", choices=["every_step", "init_state", "first_step"])
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (each runs every variant once)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true",
                        help="after timing, cProfile one generate greedy and one beam call and print the top entries")
    return parser.parse_args()


def build_model(args: argparse.Namespace) -> CamJointModel:
    torch.manual_seed(args.seed)
    config = CamJointConfig(encoder_name=args.encoder, variant="intermediate", num_labels=200,
                            intermediate_size=args.intermediate_size, hidden_size=args.hidden_size,
                            word_embedding_size=args.word_embedding_size, vocab_size=args.vocab_size,
                            num_lstm_layers=args.num_lstm_layers, conditioning=args.conditioning,
                            max_caption_length=args.tokens + 1)
    model = CamJointModel(config).eval()
    with torch.no_grad():
        # Spread the (otherwise near-uniform) next-token distributions and forbid eos: exactly `tokens` per caption.
        model.captioner.lm_head.weight.normal_(0, 1.0 / args.hidden_size ** 0.5)
        model.captioner.lm_head.bias[config.eos_token_id] = -1e9
    return model


@torch.no_grad()
def hand_loop(model: CamJointModel, image_embeds: torch.Tensor, steps: int) -> torch.Tensor:
    """Minimal batched greedy decoding over the captioner: initial state, then one LSTM step per token."""
    captioner = model.captioner
    cache = captioner.initial_state(image_embeds)
    token = torch.full((image_embeds.shape[0], 1), model.config.bos_token_id, dtype=torch.long)
    tokens = [token]
    for _ in range(steps):
        step = captioner(token, cache=cache)
        logits, cache = step.logits, step.cache
        token = logits[:, -1].argmax(-1, keepdim=True)
        tokens.append(token)
    return torch.cat(tokens, 1)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args)
    steps = args.tokens
    pixels = torch.randn(args.batch, 3, args.image_size, args.image_size,
                         generator=torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        image_embeds = model.get_image_embeds(pixels)

    def inputs() -> dict:
        return {"pixel_values": pixels} if args.include_encoder else {"image_embeds": image_embeds}

    def embeds() -> torch.Tensor:
        if args.include_encoder:
            with torch.no_grad():
                return model.get_image_embeds(pixels)
        return image_embeds

    variants = {
        "generate greedy": lambda: model.generate(**inputs(), do_sample=False, num_beams=1, max_length=steps + 1),
        "hand loop": lambda: hand_loop(model, embeds(), steps),
        "greedy_captions": lambda: model.greedy_captions(embeds(), max_length=steps + 1),
        f"generate beam {args.num_beams}": lambda: model.generate(**inputs(), do_sample=False,
                                                                 num_beams=args.num_beams, max_length=steps + 1),
    }

    # Same work: every variant returns bos + `steps` tokens per image; the greedy ones agree token for token.
    outputs = {name: fn() for name, fn in variants.items()}
    for name, out in outputs.items():
        assert out.shape == (args.batch, steps + 1), (name, tuple(out.shape))
    greedy_agree = (torch.equal(outputs["generate greedy"], outputs["hand loop"])
                    and torch.equal(outputs["hand loop"], outputs["greedy_captions"]))

    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(args.warmup + args.repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            if round_index >= args.warmup:
                times[name].append(elapsed)

    medians = {name: statistics.median(values) for name, values in times.items()}
    hand = medians["hand loop"]
    beam_name = f"generate beam {args.num_beams}"
    # Ratios within each round (the variants ran back to back), robust to load that drifts between rounds.
    paired = {name: statistics.median(t / h for t, h in zip(values, times["hand loop"]))
              for name, values in times.items()}
    paired_beam = statistics.median(b / g for b, g in zip(times[beam_name], times["generate greedy"]))
    print(f"CamJoint decoding: batch {args.batch}, {steps} new tokens, encoder {args.encoder} "
          f"({'included' if args.include_encoder else 'excluded: precomputed image_embeds'}), hidden "
          f"{args.hidden_size}, word embedding {args.word_embedding_size}, vocab {args.vocab_size}, "
          f"{args.num_lstm_layers} LSTM layer(s), conditioning {args.conditioning}, torch threads "
          f"{torch.get_num_threads()}, {args.repeats} interleaved repeats after {args.warmup} warm-up")
    print(f"greedy variants agree token for token: {greedy_agree}")
    print(f"{'variant':<20} {'median ms':>10} {'min ms':>10} {'max ms':>10} {'ms/token':>9} {'vs hand loop':>13} "
          f"{'paired':>7}")
    for name, median in medians.items():
        print(f"{name:<20} {median * 1e3:>10.1f} {min(times[name]) * 1e3:>10.1f} {max(times[name]) * 1e3:>10.1f} "
              f"{median * 1e3 / steps:>9.2f} {median / hand:>12.2f}x {paired[name]:>6.2f}x")
    print(f"(paired = median over rounds of the within-round ratio; beam {args.num_beams} / generate greedy paired: "
          f"{paired_beam:.2f}x)")
    spread = max(max(values) / min(values) for values in times.values())
    if spread > 1.5:
        print(f"WARNING: noisy timings (a variant's slowest run is {spread:.1f}x its fastest): the machine is busy. "
              f"Use more --repeats, or --threads 1 on a shared machine (OpenMP threads stall when a core is taken).")

    if args.profile:
        for name in ("generate greedy", beam_name):
            profiler = cProfile.Profile()
            profiler.enable()
            variants[name]()
            profiler.disable()
            stream = io.StringIO()
            pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(15)
            print(f"\n--- cProfile: {name} (sorted by own time) ---")
            print("\n".join(line for line in stream.getvalue().splitlines()[6:] if line.strip()))

    ratio_generate = medians["generate greedy"] / hand
    ratio_beam = medians[beam_name] / medians["generate greedy"]
    print(f"targets: generate <= 1.3x hand loop: {'met' if ratio_generate <= 1.3 else 'MISSED'}; "
          f"beam {args.num_beams} <= 3.5x greedy: {'met' if ratio_beam <= 3.5 else 'MISSED'}")
    print(f"generate_vs_hand_loop={ratio_generate:.3f} beam3_vs_greedy={ratio_beam:.3f}")


if __name__ == "__main__":
    main()
