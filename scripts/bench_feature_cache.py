"""Benchmark: one training epoch of a small head fed from the feature cache vs re-encoding every image.

Both loops train the same head (global-average-pool + linear classifier, Adam) on the same images; the re-encoding
loop decodes and preprocesses each image and runs the frozen encoder (what an epoch costs without the cache), the
cached loop reads the float16 feature maps from disk. Repeats are interleaved so drifting machine load hits both
sides alike; medians are reported. The last line is ``feature_cache_speedup=<x>``.

    python scripts/bench_feature_cache.py --num-images 256 --image-size 224 --encoder resnet18
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import timm
import torch

from cam_joint.data.feature_cache import FeatureCache, feature_key
from cam_joint.data.synthetic import make_synthetic_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-dir", default=None, help="default: a temporary directory")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads; on a busy machine small multi-threaded ops stall on descheduled threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    num_classes = 10
    t0 = time.perf_counter()
    per_class = -(-args.num_images // num_classes)
    data = make_synthetic_split("train", per_class, num_classes=num_classes, image_size=args.image_size)
    data = data.select(range(args.num_images))
    print(f"data: {len(data)} synthetic images at {args.image_size} px in {time.perf_counter() - t0:.1f}s")

    encoder = timm.create_model(args.encoder, pretrained=False, num_classes=0, global_pool="").eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    cfg = timm.data.resolve_data_config({}, model=encoder)
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    preprocessing = {"size": args.image_size, "mean": cfg["mean"], "std": cfg["std"], "resize": "bilinear"}

    def encode(batch) -> torch.Tensor:
        # Decode + preprocess + frozen forward: exactly what an epoch costs without the cache.
        arrays = [np.asarray(im.convert("RGB").resize((args.image_size, args.image_size))) for im in batch["image"]]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255).sub_(mean).div_(std)
        with torch.no_grad():
            return encoder.forward_features(x)

    labels = torch.tensor(data["label"])
    num_features = encoder.num_features
    head = torch.nn.Linear(num_features, num_classes)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)

    def step(feats: torch.Tensor, y: torch.Tensor) -> None:
        loss = torch.nn.functional.cross_entropy(head(feats.float().mean(dim=(2, 3))), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def epoch_reencode() -> float:
        start = time.perf_counter()
        for i in range(0, len(data), args.batch_size):
            step(encode(data[i:i + args.batch_size]), labels[i:i + args.batch_size])
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(args.cache_dir or tmp)
        key = feature_key(args.encoder, encoder, preprocessing, dataset=data, split="train")
        t0 = time.perf_counter()
        cache.get_or_compute(key, data, encode, batch_size=args.batch_size)
        print(f"cache build (one-off, includes the encoder pass): {time.perf_counter() - t0:.2f}s")

        def epoch_cached() -> float:
            start = time.perf_counter()
            feats = cache.load(key)  # a new run starts from the file, never from the encoder
            for i in range(0, len(feats), args.batch_size):
                step(feats[i:i + args.batch_size], labels[i:i + args.batch_size])
            return time.perf_counter() - start

        reencode, cached = [], []
        for r in range(args.repeats):
            reencode.append(epoch_reencode())
            cached.append(epoch_cached())
            print(f"repeat {r + 1}: re-encode {reencode[-1]:.3f}s, cached {cached[-1]:.4f}s")

    med_re, med_ca = statistics.median(reencode), statistics.median(cached)
    print(f"median epoch over {len(data)} images: re-encode {med_re:.3f}s ({len(data) / med_re:.0f} img/s), "
          f"cached {med_ca:.4f}s ({len(data) / med_ca:.0f} img/s)")
    print(f"feature_cache_speedup={med_re / med_ca:.1f}")


if __name__ == "__main__":
    main()
