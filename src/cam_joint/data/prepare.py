"""`cam-joint prepare-data`: build a dataset from its original layout (or the synthetic one) and save it to disk.

    cam-joint prepare-data --dataset cub --data-dir ~/data/CUB_200_2011 --protocol etri2020 --output-dir out/cub
    cam-joint prepare-data --dataset synthetic --distractors 8 --output-dir out/synthetic-distractors

``--dataset`` is any name in the registry (`cam_joint.data.DATASETS`); the other options go to its loader when it
takes them (an option it does not take is an error, not silently ignored).

The saved folder is read back with `datasets.load_from_disk`. `save_to_disk` copies the image bytes into it, so it
stands alone (and takes about as much space as the images of its splits; etri2020 stores CUB images in both its
classification and its captioning splits). Bad items stop the command with the file and line at fault, unless
``--skip-bad`` is given: then they are left out and listed in a report printed after the split sizes.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import datasets

from cam_joint.data.layout_errors import DatasetLayoutError, SkipReport
from cam_joint.data.registry import DATASETS, registered_protocols
from cam_joint.data.synthetic_distractors import MAX_DISTRACTORS

# Options that go to the loader under the same name, when its signature takes them (see `loader_options`).
LOADER_OPTIONS = ("text_dir", "skip_bad", "verify_images", "seed", "distractors")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=list(DATASETS), required=True, help="which dataset to build")
    parser.add_argument("--data-dir", type=Path, help="the dataset's original folder (cub: CUB_200_2011 or its parent)")
    parser.add_argument("--protocol", choices=registered_protocols(), default="official",
                        help="split protocol: the dataset's own splits, or Table 1 of the ETRI 2020 paper")
    parser.add_argument("--output-dir", type=Path, required=True, help="where to save the DatasetDict")
    parser.add_argument("--text-dir", type=Path, help="caption folder (text_c10) if it is not in the usual place")
    parser.add_argument("--skip-bad", action="store_true",
                        help="leave out bad items (missing/corrupt images, bad caption files...) and report them, "
                             "instead of stopping at the first one")
    parser.add_argument("--verify-images", action="store_true",
                        help="decode every image once to catch corrupt files now (slow on full datasets)")
    parser.add_argument("--seed", type=int, help="seed of the synthetic dataset (default 0)")
    parser.add_argument("--distractors", type=int, choices=range(MAX_DISTRACTORS + 1), metavar="N",
                        help=f"synthetic: non-discriminative parts per image painted in saturated colours, "
                             f"0-{MAX_DISTRACTORS} (default 0; {MAX_DISTRACTORS} = all of them)")


def loader_options(args: argparse.Namespace, loader, report: SkipReport) -> dict:
    """The options given on the command line that ``loader`` takes, by name; one it does not take is an error
    (rather than silently ignored), and ``report`` goes to a loader that records skipped items."""
    parameters = inspect.signature(loader).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    options = {}
    for name in LOADER_OPTIONS:
        value = getattr(args, name)
        if value is None or value is False:
            continue  # not given
        if not (takes_any or name in parameters):
            raise SystemExit(f"cam-joint prepare-data: --{name.replace('_', '-')} does not apply to --dataset "
                             f"{args.dataset}")
        options[name] = value
    if takes_any or "report" in parameters:
        options["report"] = report
    return options


def build(args: argparse.Namespace, report: SkipReport) -> datasets.DatasetDict:
    spec = DATASETS[args.dataset]
    if spec.needs_data_dir and args.data_dir is None:
        raise SystemExit(f"cam-joint prepare-data: --data-dir is required for --dataset {args.dataset}")
    if not spec.needs_data_dir and args.data_dir is not None:
        raise SystemExit(f"cam-joint prepare-data: --dataset {args.dataset} reads no folder; leave out --data-dir")
    protocol = args.protocol
    if protocol not in spec.protocols:
        if spec.protocols != ("official",):
            raise SystemExit(f"cam-joint prepare-data: --protocol {protocol} is not one of {args.dataset}'s "
                             f"({', '.join(spec.protocols)})")
        print(f"note: --protocol {protocol} does not apply to the {args.dataset} dataset (it has its own splits)")
        protocol = "official"
    return spec.load(args.data_dir, protocol, **loader_options(args, spec.load_function(), report))


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
