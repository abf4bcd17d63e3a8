"""`cam-joint caption` and `cam-joint explain`: classify, caption and explain image files or folders of them.

    cam-joint caption --model runs/cam bird1.jpg bird2.jpg photos/ [--skip-bad]
    cam-joint explain --model runs/cam bird1.jpg --output bird1_cam.png [--label CLASS]
    cam-joint explain --model runs/cam photos/ --output cams/          (one PNG per image)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .progress import progress_bar

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

__all__ = ["add_caption_main_arguments", "caption_main", "add_explain_main_arguments", "explain_main",
           "collect_image_paths", "image_files", "load_model_folder", "IMAGE_SUFFIXES"]


def collect_image_paths(paths: list[str]) -> list[Path]:
    """Image files in the given order; a folder gives its image files (by name, not recursive)."""
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            images = image_files(path)
            if not images:
                raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
            found.extend(images)
        elif path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(f"image file not found: {path}")
    return found


def image_files(folder: Path) -> list[Path]:
    """A folder's image files by name (not recursive)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_images(paths: list[Path], skip_bad: bool) -> tuple[list[Path], list, list[str]]:
    """(paths, images, problems): every file is opened before the model loads; with `skip_bad` a file that cannot
    be read is left out and reported instead of stopping the run."""
    from .inference import load_image

    kept, images, problems = [], [], []
    for path in paths:
        try:
            images.append(load_image(path))
            kept.append(path)
        except (FileNotFoundError, ValueError) as error:
            if not skip_bad:
                raise ValueError(f"{error} (pass --skip-bad to skip such files)") from error
            problems.append(str(error))
    if not images:
        raise ValueError("no readable image among the inputs: " + "; ".join(problems))
    return kept, images, problems


def load_model_folder(model_dir: str | Path, device: str | None = None):
    """(model in eval mode on `device`, processor) from a saved CamJoint folder."""
    import torch

    from cam_joint import CamJointModel, CamJointProcessor

    if not Path(model_dir).is_dir():
        raise FileNotFoundError(f"model folder not found: {model_dir}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = CamJointModel.from_pretrained(model_dir).to(device).eval()
    return model, CamJointProcessor.from_pretrained(model_dir)


def _generation_kwargs(args) -> dict:
    return {} if getattr(args, "num_beams", None) is None else {"num_beams": args.num_beams}


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="saved model folder")
    parser.add_argument("--num-beams", type=int, default=None, help="beam width (default: the model's config)")
    parser.add_argument("--skip-bad", action="store_true", help="skip (and report) files that are not readable images")
    parser.add_argument("--device", default=None)


def add_caption_main_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of them")
    parser.add_argument("--top-k", type=int, default=5, help="classes to list per image (default 5)")
    parser.add_argument("--batch-size", type=int, default=16)
    _add_common(parser)


def caption_main(args: argparse.Namespace) -> int:
    from .prediction import predict_batch

    paths, images, problems = load_images(collect_image_paths(args.images), args.skip_bad)
    model, processor = load_model_folder(args.model, args.device)
    starts = range(0, len(images), args.batch_size)
    for start in progress_bar(starts, desc="caption", unit="batch", disable=len(starts) < 2, file=sys.stderr):
        prediction = predict_batch(model, processor, images[start:start + args.batch_size],
                                   generation_kwargs=_generation_kwargs(args))
        for i, path in enumerate(paths[start:start + args.batch_size]):
            print(path)
            if prediction.captions is not None:
                note = ""
                if prediction.reached_max_length[i]:
                    note = f"  [stopped at the maximum length, {prediction.caption_ids.shape[1]} tokens, no eos]"
                print(f"  caption: {prediction.captions[i]}{note}")
            top = prediction.top_classes(args.top_k)[i]
            if top:
                print(f"  top-{len(top)} classes:")
                for rank, (index, name, prob) in enumerate(top, start=1):
                    print(f"    {rank}. {name:<40} {prob:.4f}  (id {index})")
    _report_skipped(problems)
    return 0


def add_explain_main_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE", help="an image file, or a folder of them")
    parser.add_argument("--output", required=True, help="PNG file to write (a folder when IMAGE is a folder)")
    parser.add_argument("--label", default=None,
                        help="class (id or name) whose classifier CAM to draw (default: the predicted class)")
    parser.add_argument("--dpi", type=int, default=150)
    _add_common(parser)


def explain_main(args: argparse.Namespace) -> int:
    from .inference import explain_figure, resolve_label

    folder = Path(args.image).is_dir()
    paths, images, problems = load_images(collect_image_paths([args.image]), args.skip_bad)
    model, processor = load_model_folder(args.model, args.device)
    if args.label is not None:
        if model.classifier is None:
            raise ValueError(f"--label: variant {model.config.variant!r} has no classifier")
        resolve_label(model, args.label)
    output = Path(args.output)
    if folder and output.suffix.lower() == ".png":
        raise ValueError(f"--output {output}: IMAGE is a folder, so --output must be a folder for its PNGs")
    for path, image in progress_bar(list(zip(paths, images)), desc="explain", disable=len(paths) < 2, file=sys.stderr):
        figure = explain_figure(model, processor, image, label=args.label, generation_kwargs=_generation_kwargs(args),
                                title=path.name)
        target = output / f"{path.stem}_cam.png" if folder else output
        target.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(target, dpi=args.dpi)
        print(f"wrote {target}")
    _report_skipped(problems)
    return 0


def _report_skipped(problems: list[str]) -> None:
    if problems:
        print(f"skipped {len(problems)} unreadable file(s):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
