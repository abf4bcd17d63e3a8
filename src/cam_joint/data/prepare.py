"""`cam-joint prepare-data`: build a dataset from its original layout (or the synthetic one) and save it to disk.

    cam-joint prepare-data --dataset cub --data-dir ~/data/CUB_200_2011 --protocol etri2020 --output-dir out/cub

The saved folder is read back with `datasets.load_from_disk`. `save_to_disk` copies the image bytes into it, so it
stands alone (and takes about as much space as the images of its splits; etri2020 stores CUB images in both its
classification and its captioning splits). Bad items stop the command with the file and line at fault, unless
``--skip-bad`` is given: then they are left out and listed in a report printed after the split sizes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import datasets

from cam_joint.data.layout_errors import DatasetLayoutError, SkipReport
from cam_joint.data.splits import PROTOCOLS

DATASETS = ("cub", "flowers", "synthetic")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=DATASETS, required=True, help="which dataset to build")
    parser.add_argument("--data-dir", type=Path, help="the dataset's original folder (cub: CUB_200_2011 or its parent)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="official",
                        help="split protocol: the dataset's own splits, or Table 1 of the ETRI 2020 paper")
    parser.add_argument("--output-dir", type=Path, required=True, help="where to save the DatasetDict")
    parser.add_argument("--text-dir", type=Path, help="caption folder (text_c10) if it is not in the usual place")
    parser.add_argument("--skip-bad", action="store_true",
                        help="leave out bad items (missing/corrupt images, bad caption files...) and report them, "
                             "instead of stopping at the first one")
    parser.add_argument("--verify-images", action="store_true",
                        help="decode every image once to catch corrupt files now (slow on full datasets)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic dataset")


def build(args: argparse.Namespace, report: SkipReport) -> datasets.DatasetDict:
    if args.dataset == "synthetic":
        from cam_joint.data.synthetic import make_synthetic_dataset  # imported here: only this branch needs it

        if args.protocol != "official":
            print(f"note: --protocol {args.protocol} does not apply to the synthetic dataset (it has its own splits)")
        return make_synthetic_dataset(seed=args.seed)
    if args.data_dir is None:
        raise SystemExit(f"cam-joint prepare-data: --data-dir is required for --dataset {args.dataset}")
    if args.dataset == "cub":
        from cam_joint.data.cub import load_cub as load
    else:
        from cam_joint.data.flowers import load_flowers as load
    return load(args.data_dir, args.protocol, text_dir=args.text_dir, skip_bad=args.skip_bad,
                verify_images=args.verify_images, report=report)


def describe(dataset_dict: datasets.DatasetDict) -> list[str]:
    """One line per split: its size and how many classes it holds (the two numbers of Table 1)."""
    return [
        f"{split}: {len(split_dataset)} images, {len(set(split_dataset['label']))} classes"
        for split, split_dataset in dataset_dict.items()
    ]


def main(args: argparse.Namespace) -> int:
    report = SkipReport()
    try:
        dataset_dict = build(args, report)
    except DatasetLayoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    args.output_dir.mkdir(parents=True, exist_ok=True)
    dataset_dict.save_to_disk(str(args.output_dir))
    for line in describe(dataset_dict):
        print(line)
    if args.skip_bad:
        print(report.format())
    print(f"saved to {args.output_dir}")
    return 0
