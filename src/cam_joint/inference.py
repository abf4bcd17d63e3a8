"""Captioning, top-5 classes and CAM pictures for single images.

    cam-joint caption --model runs/cam bird1.jpg bird2.jpg          (`inference_cli`)
    cam-joint explain --model runs/cam bird1.jpg --output bird1_cam.png [--label CLASS]

`explain_figure` draws the paper's Figures 3/4: the preprocessed (cropped) image, the classifier's Grad-CAM for its
class and the captioner's Grad-CAM for its generated caption, each upsampled bilinearly to the image and overlaid,
with the class and the caption as titles. Figures are built on matplotlib's Agg canvas directly (no pyplot), so
nothing here touches the caller's matplotlib backend or leaks figures.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .image_processing_cam_joint import exif_upright
from .prediction import image_processor_of, predict_batch

__all__ = ["load_image", "predict", "cam_overlay", "unnormalize", "upsample_map", "explain_figure", "save_cam_pictures",
           "resolve_label"]


# ----------------------------------------------------------------------------------------------- helpers
def load_image(path: str | Path):
    """Open an image file fully (so a damaged file fails here), as RGB-convertible PIL image, upright (its EXIF
    orientation applied, `exif_upright`).

    Raises FileNotFoundError (missing file) or ValueError (not a readable image), each naming the file.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            return exif_upright(image.copy())
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error


def _id2label(model) -> dict[int, str]:
    return {int(k): str(v) for k, v in (model.config.id2label or {}).items()}


def resolve_label(model, label: int | str) -> int:
    """A class id from an id (int or digit string) or a class name (exact, then case/space/underscore-insensitive)."""
    num_labels = model.config.num_labels
    id2label = _id2label(model)
    if isinstance(label, (int, np.integer)) or (isinstance(label, str) and label.strip().isdigit()):
        index = int(label)
        if not 0 <= index < num_labels:
            raise ValueError(f"class id {index} is out of range: the model has {num_labels} classes "
                             f"(0..{num_labels - 1})")
        return index
    names = {name: i for i, name in id2label.items()}
    if label in names:
        return names[label]

    def key(text: str) -> str:
        return re.sub(r"[\s_]+", " ", text).strip().lower()

    matches = [i for name, i in names.items() if key(name) == key(label)]
    if len(matches) == 1:
        return matches[0]
    examples = ", ".join(repr(id2label[i]) for i in sorted(id2label)[:5])
    raise ValueError(f"unknown class {label!r}: give a class id (0..{num_labels - 1}) or a name such as {examples}")


def unnormalize(pixel_values: torch.Tensor, data_config: Mapping[str, Any] | None) -> np.ndarray:
    """(3, H, W) normalised tensor -> (H, W, 3) float image in [0, 1]."""
    image = pixel_values.detach().float().cpu()
    if data_config is not None:
        mean = torch.tensor(data_config["mean"], dtype=torch.float32)[:, None, None]
        std = torch.tensor(data_config["std"], dtype=torch.float32)[:, None, None]
        image = image * std + mean
    return image.clamp(0, 1).permute(1, 2, 0).numpy()


def upsample_map(cam: torch.Tensor, height: int, width: int) -> np.ndarray:
    """(h, w) map -> (H, W) bilinear, min-max scaled to [0, 1] as Grad-CAM pictures are (a constant map -> 0)."""
    up = F.interpolate(cam.detach().float().cpu()[None, None], size=(height, width), mode="bilinear",
                       align_corners=False)[0, 0]
    up = up - up.min()
    span = float(up.max())
    return (up / span).numpy() if span > 0 else up.numpy()


def cam_overlay(pixel_values: torch.Tensor, cam: torch.Tensor, data_config: Mapping[str, Any] | None,
                alpha: float = 0.5) -> np.ndarray:
    """The preprocessed image (3, H, W) with a map (h, w) upsampled and overlaid in the jet colour map, as the
    explain figures draw it: (H, W, 3) uint8."""
    from matplotlib import colormaps

    shown = unnormalize(pixel_values, data_config)
    heat = colormaps["jet"](upsample_map(cam, *shown.shape[:2]))[..., :3]
    return np.round(255 * ((1 - alpha) * shown + alpha * heat)).clip(0, 255).astype(np.uint8)


def predict(model, processor, images: Sequence, generation_kwargs: Mapping[str, Any] | None = None,
            top_k: int = 5) -> list[dict[str, Any]]:
    """Caption and classify PIL images. One dict per image: ``caption`` and ``caption_ids`` (if the model captions)
    and ``top_classes`` (if it classifies): a list of (class id, class name, probability), best first."""
    prediction = predict_batch(model, processor, list(images), generation_kwargs=generation_kwargs)
    results: list[dict[str, Any]] = [{} for _ in range(len(prediction.pixel_values))]
    if prediction.logits is not None:
        for result, top in zip(results, prediction.top_classes(top_k)):
            result["top_classes"] = top
    if prediction.captions is not None:
        for result, text, row in zip(results, prediction.captions, prediction.caption_ids):
            result["caption"] = text
            result["caption_ids"] = row
    return results


# ----------------------------------------------------------------------------------------------- figures
def explain_figure(model, processor, image, label: int | str | None = None, *, true_label: int | str | None = None,
                   generation_kwargs: Mapping[str, Any] | None = None, title: str | None = None):
    """The image and its two Grad-CAMs side by side (a `matplotlib.figure.Figure` on an Agg canvas).

    Panels: the preprocessed image (un-normalised; titled with `true_label` if given), the classifier's map for
    `label` (default: its predicted class; titled with the class and its probability), the captioner's map for its
    generated caption (titled with the caption). A model without one of the heads gets two panels.

    Args:
        model, processor: a `CamJointModel` and its `CamJointProcessor`.
        image: a PIL image (or a path).
        label: class (id or name) whose classifier map to draw instead of the predicted one.
        true_label: the image's known class (id or name), shown over the image.
        generation_kwargs: for ``model.generate``.
        title: figure title (default: none).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if isinstance(image, (str, Path)):
        image = load_image(image)
    image_processor = image_processor_of(processor)
    data_config = image_processor.data_config() if hasattr(image_processor, "data_config") else None
    target = None if label is None else torch.tensor([resolve_label(model, label)])
    was_training = model.training
    model.eval()
    try:
        prediction = predict_batch(model, processor, [image], generation_kwargs=generation_kwargs, cam=True,
                                   cam_labels=target)
    finally:
        model.train(was_training)
    pixel_values = prediction.pixel_values
    id2label = _id2label(model)
    panels = []  # (title, map)
    if prediction.class_maps is not None:
        probs = prediction.probabilities[0]
        predicted, shown_class = int(probs.argmax()), int(prediction.cam_labels[0])
        kind = "predicted class" if label is None else "class"
        name = id2label.get(shown_class, str(shown_class))
        text = f"Classifier CAM, {kind}:\n{name} (p={float(probs[shown_class]):.2f})"
        if label is not None and shown_class != predicted:
            text += f"\n[predicted: {id2label.get(predicted, str(predicted))}]"
        panels.append((text, prediction.class_maps[0]))
    if prediction.caption_maps is not None:
        caption = prediction.captions[0]
        panels.append((f"Captioner CAM:\n\"{caption or '(empty caption)'}\"", prediction.caption_maps[0]))

    shown = unnormalize(pixel_values[0], data_config)
    height, width = shown.shape[:2]
    wrap = 34
    columns = 1 + len(panels)
    figure = Figure(figsize=(3.4 * columns, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, columns, squeeze=False)[0]
    image_title = "Image"
    if true_label is not None:
        try:
            true_name = id2label.get(resolve_label(model, true_label), str(true_label))
        except ValueError:
            true_name = str(true_label)
        image_title = f"Image, class:\n{true_name}"
    axes[0].imshow(shown)
    axes[0].set_title(image_title, fontsize=9)
    heat = None
    for axis, (text, cam) in zip(axes[1:], panels):
        up = upsample_map(cam, height, width)
        axis.imshow(shown)
        heat = axis.imshow(up, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0, interpolation="bilinear")
        if float(cam.max()) == float(cam.min()):
            text += "\n(map is constant: no evidence)"
        axis.set_title("\n".join(textwrap.fill(line, wrap, max_lines=6, placeholder=" ...")
                                 for line in text.split("\n")), fontsize=9)
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    if heat is not None:
        figure.colorbar(heat, ax=list(axes[1:]), shrink=0.7, label="Grad-CAM (min-max scaled)")
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60] or "image"


def save_cam_pictures(model, processor, dataset, output_dir: str | Path, count: int = 4,
                      generation_kwargs: Mapping[str, Any] | None = None, dpi: int = 120) -> list[Path]:
    """Write `count` explain figures (PNG) for images spread evenly over a dataset split; returns their paths.

    `dataset`: a `datasets.Dataset` with ``image`` (and ``label``, ``image_id``), a DatasetDict (its test, else
    validation, else first split is used), or a sequence of PIL images / paths.
    """
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        split = next((s for s in ("test", "validation") if s in dataset), next(iter(dataset)))
        dataset = dataset[split]
    total = len(dataset)
    if count < 1 or total == 0:
        return []
    indices = sorted({int(round(x)) for x in np.linspace(0, total - 1, min(count, total))})
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, index in enumerate(indices):
        row = dataset[index]
        if isinstance(row, Mapping):
            image, true_label = row["image"], row.get("label")
            image_id = str(row.get("image_id", index))
            if not hasattr(image, "size"):  # an undecoded {"path", "bytes"} value
                from cam_joint.data.layout_files import decode_image

                image = decode_image(image, image_id)
        else:
            image, true_label, image_id = row, None, str(index)
            if isinstance(image, (str, Path)):
                image_id = Path(image).stem
        if true_label is not None and (true_label < 0 or true_label >= model.config.num_labels):
            true_label = None
        figure = explain_figure(model, processor, image, true_label=true_label, generation_kwargs=generation_kwargs,
                                title=image_id)
        path = output_dir / f"cam_{k:02d}_{_safe_name(image_id)}.png"
        figure.savefig(path, dpi=dpi)
        paths.append(path)
    return paths
