"""`cam-joint demo`: a Gradio page showing what a CamJoint model says about an image, and where it looks.

    cam-joint demo --model runs/cam [--port 7860] [--host 127.0.0.1] [--examples photos/] [--device cuda]

A person uploads an image (or picks an example) and sees the top-5 classes with their probabilities, the caption
(greedy or beam search, chosen on the page), the Grad-CAM overlays of the classifier (for its predicted class) and of
the captioner (for its caption), and the map of each caption word when that word is selected. Everything is computed
by `cam_joint.prediction.predict_batch`, as `cam-joint caption` / `explain` do, so the page shows the same caption and
classes as the command line.

From Python (tests, the Space `app.py` that `cam_joint.hub.write_space_app` writes beside a checkpoint):

    demo = build_demo(model, processor, examples=["bird.jpg"])
    demo.launch(server_name="127.0.0.1")

Gradio is an optional dependency (`pip install "cam-joint[demo]"`): it is imported only when a page is built, so
`import cam_joint.demo` and `cam-joint --help` stay fast without it.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .inference_cli import image_files, load_model_folder

__all__ = ["add_arguments", "main", "build_demo", "analyse_image", "read_upload", "example_files", "DemoInputError",
           "DECODING_CHOICES", "BEAM_WIDTH", "INSTALL_HINT"]

INSTALL_HINT = 'the demo page needs Gradio: pip install "cam-joint[demo]"'
BEAM_WIDTH = 3  # the beam width of the saved generation configs that use beams (semantic variant, Liu et al. 2017)
GREEDY, BEAM = "greedy", f"beam search ({BEAM_WIDTH} beams)"
DECODING_CHOICES = (GREEDY, BEAM)
TOP_K = 5
# Output pictures sit in boxes this high (pixels), so that a 224-pixel input (the usual) clears the box's label.
PICTURE_HEIGHT = 300
# The pictures are sent at least this wide, enlarged by a whole factor with nearest-neighbour sampling: the model's
# 96 px input would otherwise be a thumbnail in a 300 px box, and nearest keeps each map cell's edges visible.
SHOWN_MIN_WIDTH = 384
SYNTHETIC_EXAMPLES = 3  # example images drawn from the synthetic dataset when no examples folder is given
WORD_MAP_LABEL = "Map of the selected word"
END_WORD = "⟨end⟩"  # how the eos token is listed among the caption words (it has a map of its own too)


class DemoInputError(ValueError):
    """An upload the demo cannot use; its message is written for the person at the page."""


# ------------------------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `cam-joint demo`."""
    parser.add_argument("--model", required=True, help="saved model folder (save_pretrained output)")
    parser.add_argument("--port", type=int, default=None,
                        help="port to serve on (default: Gradio's, 7860 or next free)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 shares it on the "
                             "network)")
    parser.add_argument("--examples", default=None,
                        help="folder of example images to offer on the page (default: MODEL/examples if present)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def main(args: argparse.Namespace) -> int:
    """Load the model, build the page and serve it until interrupted."""
    # The paths are checked first: a typo should not wait for Gradio and the model to load.
    model_dir = Path(args.model)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model folder not found: {model_dir}")
    examples_dir = Path(args.examples) if args.examples else model_dir / "examples"
    if args.examples and not examples_dir.is_dir():
        raise FileNotFoundError(f"examples folder not found: {examples_dir}")
    try:
        _import_gradio()
    except ImportError as error:
        # A missing optional dependency is a set-up problem: one line saying what to install, no traceback.
        print(f"error: {error}", file=sys.stderr)
        return 2
    model, processor = load_model_folder(model_dir, args.device)
    demo = build_demo(model, processor, examples=example_files(examples_dir) or None)
    demo.launch(server_name=args.host, server_port=args.port)
    return 0


def example_files(folder: str | Path | None) -> list[str]:
    """The image files of `folder` by name (not recursive); none when it is None or missing."""
    if folder is None or not Path(folder).is_dir():
        return []
    return [str(p) for p in image_files(Path(folder))]


def _import_gradio():
    """The gradio module, or an ImportError that says how to install it."""
    # Gradio's usage statistics would be sent to the internet; a demo of a local model has no reason to.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return gradio


# ------------------------------------------------------------------------------------------- computation
@dataclass
class DemoResult:
    """What the page shows for one image (arrays are (H, W, 3) uint8 at the model's input size)."""

    model_input: Any
    top_classes: dict[str, float] | None
    caption: str | None
    class_overlay: Any | None
    caption_overlay: Any | None
    words: list[str]
    word_maps: Any | None  # (len(words), h, w) tensor
    pixel_values: Any  # (3, H, W) preprocessed image, to draw the word maps on demand
    note: str = ""


def read_upload(path: str | os.PathLike | None, shown_name: str | None = None):
    """The uploaded file as a PIL image; `DemoInputError` with a readable message when it is not one."""
    from PIL import Image

    from .inference import load_image

    name = shown_name or Path(path).name
    try:
        return load_image(path)
    except FileNotFoundError as error:
        raise DemoInputError(f"The upload {name} did not arrive: please upload it again.") from error
    except Image.DecompressionBombError as error:
        raise DemoInputError(f"{name} is too large to decode safely ({error}). Please upload a smaller image.") \
            from error
    except ValueError as error:
        raise DemoInputError(f"{name} is not an image this demo can read. Please upload a picture file "
                             f"(JPEG, PNG, WebP, BMP, GIF or TIFF).") from error


def generation_kwargs_for(decoding: str) -> dict:
    """`model.generate` options of a decoding choice of the page."""
    if decoding not in DECODING_CHOICES:
        raise ValueError(f"unknown decoding {decoding!r}: one of {', '.join(DECODING_CHOICES)}")
    return {"num_beams": 1 if decoding == GREEDY else BEAM_WIDTH, "do_sample": False}


def default_decoding(model) -> str:
    """The page's initial decoding: the model's own generation config (beams if it uses beams)."""
    config = getattr(model, "generation_config", None)
    return BEAM if config is not None and (getattr(config, "num_beams", 1) or 1) > 1 else GREEDY


def analyse_image(model, processor, image, decoding: str = GREEDY, progress=None) -> DemoResult:
    """Classify, caption and explain one PIL image (any mode or size) for the page.

    `progress(fraction, desc=...)` (a `gr.Progress`) is told what is being computed. Raises `DemoInputError` when
    the image processor refuses the image (an empty image, an absurd aspect ratio).
    """
    from .inference import cam_overlay, unnormalize
    from .prediction import image_processor_of, predict_batch

    # `is None`, not `or`: a gr.Progress has a __len__ (for its tqdm wrapper) and is falsy before it runs.
    report = progress if progress is not None else (lambda *args, **kwargs: None)
    report(0.1, desc="Preparing the image")
    image_processor = image_processor_of(processor)
    try:
        pixel_values = image_processor([image], return_tensors="pt")["pixel_values"]
    except ValueError as error:
        raise DemoInputError(f"This image cannot be used: {error}") from error
    report(0.3, desc="Classifying, captioning and computing the Grad-CAM maps")
    prediction = predict_batch(model, processor, pixel_values=pixel_values,
                               generation_kwargs=generation_kwargs_for(decoding), cam=True, per_word=True)
    report(0.8, desc="Drawing the maps")
    data_config = image_processor.data_config() if hasattr(image_processor, "data_config") else None
    shown = prediction.pixel_values[0]
    result = DemoResult(model_input=(unnormalize(shown, data_config) * 255).round().astype("uint8"),
                        top_classes=None, caption=None, class_overlay=None, caption_overlay=None, words=[],
                        word_maps=None, pixel_values=shown)
    if prediction.logits is not None:
        result.top_classes = {name: prob for _, name, prob in prediction.top_classes(TOP_K)[0]}
        result.class_overlay = cam_overlay(shown, prediction.class_maps[0], data_config)
    if prediction.captions is not None:
        result.caption = prediction.captions[0]
        result.caption_overlay = cam_overlay(shown, prediction.caption_maps[0], data_config)
        result.words = caption_tokens(processor, prediction.caption_ids[0], model.config.eos_token_id)
        result.word_maps = prediction.word_maps[0, :len(result.words)]
        if prediction.reached_max_length[0]:
            result.note = f"The caption stopped at the maximum length ({prediction.caption_ids.shape[1]} tokens)."
    return result


def caption_tokens(processor, caption_ids, eos_token_id: int) -> list[str]:
    """The tokens after bos up to and including the first eos (shown as END_WORD): one per word map."""
    ids = caption_ids[1:].tolist()
    if eos_token_id in ids:
        ids = ids[:ids.index(eos_token_id) + 1]
    tokenizer = getattr(processor, "tokenizer", processor)
    return [END_WORD if i == eos_token_id else tokenizer.convert_ids_to_tokens(i) for i in ids]


def word_overlay(result_state: dict | None, index: int | None, data_config):
    """(overlay, label) of caption word `index` from the state the analysis left; (None, label) without one."""
    from .inference import cam_overlay

    if not result_state or index is None or not 0 <= int(index) < len(result_state["words"]):
        return None, WORD_MAP_LABEL
    index = int(index)
    cam = result_state["word_maps"][index]
    label = f"Map of word {index + 1}: “{result_state['words'][index]}”"
    if float(cam.max()) == float(cam.min()):
        label += " (constant map: no evidence)"
    return cam_overlay(result_state["pixel_values"], cam, data_config), label


# ------------------------------------------------------------------------------------------- the page
def build_demo(model, processor, examples: Sequence[str | os.PathLike] | None = None):
    """The demo page (a `gradio.Blocks`, not yet launched) for a CamJoint model and its processor.

    Args:
        model: a `CamJointModel` in eval mode (loaded from `cam_joint` or with `AutoModel(...,
            trust_remote_code=True)`); any variant: the parts a model lacks are hidden.
        processor: its `CamJointProcessor`.
        examples: image files offered as examples under the upload box; None: a few synthetic birds
            (`synthetic_example_files`).
    """
    gr = _import_gradio()
    from .prediction import image_processor_of

    if examples is None:
        examples = synthetic_example_files()

    image_processor = image_processor_of(processor)
    data_config = image_processor.data_config() if hasattr(image_processor, "data_config") else None
    has_classifier = getattr(model, "classifier", None) is not None
    has_captioner = getattr(model, "captioner", None) is not None
    with gr.Blocks(title="CamJoint demo", analytics_enabled=False) as demo:
        ui = _layout(gr, model, has_classifier, has_captioner, examples)
        analyse = _analyse_handler(gr, model, processor, data_config)
        outputs = [ui["status"], ui["model_input"], ui["top5"], ui["caption"], ui["class_cam"], ui["caption_cam"],
                   ui["words"], ui["word_map"], ui["state"]]
        for trigger in (ui["upload"].change, ui["decoding"].change):
            # One shared queue for both triggers (concurrency_id), one computation at a time: the model is shared by
            # every visitor, and a second forward/backward pass in parallel would only slow both down.
            trigger(analyse, inputs=[ui["upload"], ui["decoding"]], outputs=outputs, show_progress="full",
                    concurrency_id="model", concurrency_limit=1)
        ui["words"].change(lambda index, state: _word_update(gr, state, index, data_config),
                           inputs=[ui["words"], ui["state"]], outputs=ui["word_map"], show_progress="hidden")
    return demo


def _layout(gr, model, has_classifier: bool, has_captioner: bool, examples) -> dict:
    """Create the page's components (inside the open Blocks); returns them by name."""
    ui: dict = {}
    gr.Markdown("# CamJoint: classify, caption, and see where the model looks\n"
                "Upload a bird or flower photo (or pick an example). The heat maps are Grad-CAM on the encoder's "
                "last feature map: red is where the evidence for the class / caption / word is.")
    with gr.Row():
        with gr.Column(scale=1):
            # A File (not an Image) input: any upload reaches our code, so a non-image gets our message rather than
            # an error inside Gradio's own image decoding.
            ui["upload"] = gr.File(label="Image (JPEG, PNG, WebP, ...)", file_count="single", type="filepath",
                                   elem_id="upload")
            ui["decoding"] = gr.Radio(list(DECODING_CHOICES), value=default_decoding(model), label="Caption decoding",
                                      elem_id="decoding", visible=has_captioner)
            if examples:
                gr.Examples(examples=[[str(p)] for p in examples], inputs=[ui["upload"]], label="Examples",
                            elem_id="examples")
            ui["status"] = gr.Markdown("", elem_id="status")
        with gr.Column(scale=2):
            ui["top5"] = gr.Label(num_top_classes=TOP_K, label=f"Top-{TOP_K} classes", elem_id="top5",
                                  visible=has_classifier)
            ui["caption"] = gr.Textbox(label="Caption", interactive=False, elem_id="caption", visible=has_captioner)
    with gr.Row():
        ui["model_input"] = _picture(gr, "What the model sees (preprocessed)", "model-input")
        ui["class_cam"] = _picture(gr, "Classifier Grad-CAM: predicted class", "class-cam", visible=has_classifier)
        ui["caption_cam"] = _picture(gr, "Captioner Grad-CAM: the caption", "caption-cam", visible=has_captioner)
    with gr.Row(visible=has_captioner):
        ui["words"] = gr.Radio([], label="Caption words: select one to see its map", elem_id="words", scale=1)
        ui["word_map"] = _picture(gr, WORD_MAP_LABEL, "word-map", scale=1)
    ui["state"] = gr.State(None)
    return ui


def _picture(gr, label: str, elem_id: str, **kwargs):
    """An output image: lossless PNG at the model's input size (the maps are the data; the fullscreen button shows
    it larger), no share button (it would upload the picture to the Hugging Face Hub)."""
    return gr.Image(label=label, type="numpy", format="png", interactive=False, elem_id=elem_id,
                    height=PICTURE_HEIGHT, buttons=["download", "fullscreen"], **kwargs)


def _analyse_handler(gr, model, processor, data_config):
    """The function the page calls on an upload or a decoding change: returns every output's new value."""

    def analyse(path, decoding, progress=gr.Progress()):
        if not path:  # the upload was cleared
            return _outputs(gr, None, "")
        try:
            image = read_upload(path)
            result = analyse_image(model, processor, image, decoding or GREEDY, progress=progress)
        except DemoInputError as error:
            gr.Warning(str(error))
            return _outputs(gr, None, f"**Cannot use this file.** {error}")
        size = f"{image.width}x{image.height} {image.mode}"
        status = f"Done: {Path(path).name} ({size}), {decoding or GREEDY}. {result.note}".strip()
        return _outputs(gr, result, status, data_config)

    return analyse


def enlarged(picture: "np.ndarray | None", min_width: int = SHOWN_MIN_WIDTH) -> "np.ndarray | None":
    """(H, W, 3) picture repeated k x k per pixel, k the smallest whole factor making it `min_width` wide or more."""
    import numpy as np

    if picture is None:
        return None
    factor = max(1, -(-min_width // picture.shape[1]))
    return np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)


def synthetic_example_files(folder: str | Path | None = None, count: int = SYNTHETIC_EXAMPLES) -> list[str]:
    """`count` PNGs of synthetic birds (one per class, `make_synthetic_dataset`), written to `folder` (default a new
    temporary folder): examples for a visitor without a bird photo, made without any download."""
    import tempfile

    from .data.synthetic import make_synthetic_dataset

    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="cam_joint_examples_"))
    folder.mkdir(parents=True, exist_ok=True)
    split = make_synthetic_dataset(num_classes=count, train_per_class=0, validation_per_class=0, test_per_class=1,
                                   image_size=192)["test"]
    names = split.features["label"].names
    paths = []
    for row in split:
        path = folder / f"synthetic_{names[row['label']]}.png"
        row["image"].convert("RGB").save(path)
        paths.append(str(path))
    return paths


def _outputs(gr, result: DemoResult | None, status: str, data_config=None) -> list:
    """Output values in `build_demo`'s order; no result clears them."""
    if result is None:
        return [status, None, None, "", None, None, gr.update(choices=[], value=None),
                gr.update(value=None, label=WORD_MAP_LABEL), None]
    choices = [(word, i) for i, word in enumerate(result.words)]
    state = {"words": result.words, "word_maps": result.word_maps, "pixel_values": result.pixel_values}
    first = 0 if choices else None
    overlay, label = word_overlay(state, first, data_config)
    return [status, enlarged(result.model_input), result.top_classes, result.caption or "",
            enlarged(result.class_overlay), enlarged(result.caption_overlay), gr.update(choices=choices, value=first),
            gr.update(value=enlarged(overlay), label=label), state]


def _word_update(gr, state, index, data_config):
    overlay, label = word_overlay(state, index, data_config)
    return gr.update(value=enlarged(overlay), label=label)
