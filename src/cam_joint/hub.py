"""Sharing a trained CamJoint model on the Hugging Face Hub: the model card, its evaluation results, the upload.

    write_model_card(output_dir, model.config, metrics, training_args=vars(args), dataset_name="cub")
    push_to_hub(output_dir, "your-name/cam-joint-cub")        # -> URL of the commit

    write_model_card(output_dir, model.config, metrics, space=True)   # + app.py, requirements.txt, sdk: gradio
    push_to_hub(output_dir, "your-name/cam-joint-cub-demo", space=True)   # the same folder as a Gradio Space

The card is a `huggingface_hub.ModelCard` rendered from `CARD_TEMPLATE` (Jinja): its metadata is a `ModelCardData`
whose `EvalResult`s become the `model-index`, and the same numbers are written as the Hub's newer evaluation files,
`.eval_results/<dataset>.yaml` (https://huggingface.co/docs/hub/eval-results), with `huggingface_hub.EvalResultEntry`.
Which numbers exist, their titles and Hub names come from `cam_joint.metrics.registry.METRICS`.

A saved CamJoint folder is self-contained remote code (config.json with `auto_map`, the `*.py` files next to the
weights), so the pushed repo loads anywhere with `trust_remote_code=True`, without installing `cam_joint`.
`push_to_hub` checks that with Transformers' own import scan before uploading anything.

The Hub endpoint is `HF_ENDPOINT` (read when `push_to_hub` is called, so a mirror or a local test server set after
`huggingface_hub` was imported is respected), the token is `token=` or the usual `HF_TOKEN` / `hf auth login` one.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, EvalResultEntry, HfApi, ModelCard, ModelCardData, eval_result_entries_to_yaml
from huggingface_hub.constants import EVAL_RESULTS_FOLDER
from huggingface_hub.utils import filter_repo_objects
from transformers.dynamic_module_utils import get_imports, get_relative_import_files, get_relative_imports

from .configuration_cam_joint import VARIANTS, VariantSpec
from .data import find_dataset
from .metrics.registry import METRICS, Metric, normalise_key

PAPER = ('Yoon, Y. C., Park, S. Y., Park, S. M., & Lim, H. (2020). "Image classification and captioning model '
         'considering a CAM-based disagreement loss." *ETRI Journal*, 42(1), 67-77. '
         "https://doi.org/10.4218/etrij.2018-0621")
BIBTEX = """@article{yoon2020camdisagreement,
  title   = {Image classification and captioning model considering a {CAM}-based disagreement loss},
  author  = {Yoon, Yeo Chan and Park, So Young and Park, Soo Myoung and Lim, Heuiseok},
  journal = {ETRI Journal},
  volume  = {42},
  number  = {1},
  pages   = {67--77},
  year    = {2020},
  doi     = {10.4218/etrij.2018-0621}
}"""
TAGS = ["cam-joint", "image-classification", "image-captioning", "grad-cam"]

# Keys are `normalise_key` forms; any other name (a Hub dataset id) is shown as given.

# Training state and caches stay local (huggingface_hub adds `.git/` and `.cache/huggingface/` itself).
DEFAULT_IGNORE_PATTERNS = ("checkpoints/*", "*/checkpoints/*", "__pycache__/*", "*/__pycache__/*", "*.pyc",
                           ".ipynb_checkpoints/*", "*.lock", "*.tmp")
# What the remote code may import besides the standard library: the libraries a reader who loads the repo with
# `trust_remote_code=True` has anyway (Transformers and what its image and tokenizer stack pulls in, plus timm).
REMOTE_CODE_PACKAGES = frozenset({"torch", "timm", "transformers", "tokenizers", "safetensors", "huggingface_hub",
                                  "numpy", "PIL"})
_CONFIG_FILES_WITH_AUTO_MAP = ("config.json", "processor_config.json", "preprocessor_config.json",
                               "tokenizer_config.json", "image_processor_config.json")
_MAX_PICTURES, _MAX_OTHER_VALUES = 8, 40

CARD_TEMPLATE = """\
---
{{ card_data }}
---

# {{ title }}

A fine-grained image **classifier and captioner** in one model, after {{ paper }}.
{%- if dataset_title %}

This model was trained on {{ dataset_title }}.{% endif %}

An image encoder (a timm CNN) gives a feature map A; its global average p feeds a shared intermediate layer
z = f_medi(p), read by both a linear classifier and an LSTM caption generator. The paper's **CAM disagreement loss**
(eq. 6) compares Grad-CAM maps (eqs. 4-5) computed on A for the two heads: the map of the classifier's answer class
with the map of the captioner's predicted caption, and the map of the reference caption with the map of the
predicted class (1 - cosine similarity, eq. 7), so that both tasks learn to look at the same parts of the object.
Following Algorithm 1, the classifier learns from L_class, the captioner from L_caption, and f_medi from all losses.

| | |
| --- | --- |
{% for name, value in architecture %}| {{ name }} | {{ value }} |
{% endfor %}
## Usage

The model code ships with the weights (`trust_remote_code=True`); it needs `torch`, `timm` and `transformers`, not
the `cam_joint` package.

```python
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{{ repo_id }}", trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained("{{ repo_id }}", trust_remote_code=True)

image = Image.open("bird.jpg")
inputs = processor(images=image, text="")  # text="" : the caption starts at <bos>
{%- if has_captioner %}

caption_ids = model.generate(**inputs{{ generate_options }})  # {{ generate_comment }}
print(processor.batch_decode(caption_ids, skip_special_tokens=True)[0])
{%- endif %}
{%- if has_classifier %}

with torch.no_grad():
    probs = model(pixel_values=inputs["pixel_values"]).logits.softmax(-1)
top5 = probs[0].topk(min(5, probs.shape[-1]))
print([(model.config.id2label[i], round(p, 3)) for p, i in zip(top5.values.tolist(), top5.indices.tolist())])
{%- endif %}

# Grad-CAM maps over the encoder's last feature map, (batch, h, w)
{%- if has_classifier %}
cam_class = model.grad_cam(pixel_values=inputs["pixel_values"], labels=top5.indices[:1])
{%- endif %}
{%- if has_captioner %}
cam_caption = model.grad_cam(pixel_values=inputs["pixel_values"], caption_ids=caption_ids)
{%- endif %}
```
{%- if has_classifier %}

The same weights also load as an image classifier:
`AutoModelForImageClassification.from_pretrained(..., trust_remote_code=True)` (and
`pipeline("image-classification", ...)`).
{%- endif %}
{%- if space %}

## Demo page

This folder is also a Gradio Space (`sdk: gradio`, `app_file: app.py`): a page where you upload an image and see its
top-5 classes, its caption (greedy or beam search) and the Grad-CAM maps of both heads and of each caption word.
To run it on your machine: `pip install -r requirements.txt && python app.py`.
{%- endif %}

## Results
{% if not results and not others %}
No evaluation results were recorded for this model.
{% endif %}
{%- if results %}
Evaluation{{ where }}.
Fractions are shown as percentages (x100), as in Table 2 of the paper: accuracy, COCO caption metrics (BLEU-1..4,
METEOR, ROUGE-L, CIDEr-D), the mean cosine agreement of the classifier's and the captioner's Grad-CAM maps, and
pointing-game hit rates.
{%- if dataset_title %} The same numbers are in the metadata (`model-index`) and in `.eval_results/`.{% endif %}

| {{ results | map(attribute=0) | join(" | ") }} |
|{{ " ---: |" * results | length }}
| {{ results | map(attribute=1) | join(" | ") }} |
{% endif %}
{%- if others %}
{{ "Other values (as recorded):" if results else "Evaluation" ~ where ~ " (values as recorded):" }}

| key | value |
| --- | ---: |
{% for key, value in others %}| {{ key }} | {{ value }} |
{% endfor %}
{%- if more_others %}
({{ more_others }} more in metrics.json.)
{% endif %}
{%- endif %}
{%- if pictures %}
## Grad-CAM pictures

What the classifier and the captioner look at (Grad-CAM on the encoder's last feature map):

{% for stem, path in pictures %}![{{ stem }}]({{ path }})
{% endfor %}
{%- if more_pictures %}
({{ more_pictures }} more PNG files in the repository.)
{% endif %}
{%- endif %}
## Training
{% if command %}
Trained with this package's Accelerate training loop (`cam_joint.training`), which runs the same on one CPU, one
GPU or many processes (`torchrun` / `accelerate launch`):

```bash
{{ command }}
```

| setting | value |
| --- | --- |
{% for key, value in settings %}| {{ key }} | `{{ value }}` |
{% endfor %}
{%- else %}
The training settings were not recorded. The model settings are in `config.json`.
{% endif %}
## Citation

```bibtex
{{ bibtex }}
```
"""


# ------------------------------------------------------------------------------------------------ model card
def write_model_card(output_dir, config, metrics: Mapping | None, training_args: Mapping | None = None,
                     dataset_name: str | None = None, *, repo_id: str | None = None, space: bool = False,
                     space_requirement: str | None = None) -> Path:
    """Write `output_dir/README.md` (Hub metadata with a `model-index`, what the model is, how to use it, its results
    in percent as in Table 2 of the paper, how it was trained) and `output_dir/.eval_results/<dataset>.yaml`.

    Args:
        output_dir: the saved model folder (the card links the PNG pictures found there).
        config: the model's `CamJointConfig` (or a dict of it).
        metrics: evaluation results, e.g. `{"top1": 0.81, "Bleu_4": 0.23, "CIDEr": 0.71, "cam_agreement": 0.6}`,
            optionally with `"split"`. Registered metrics (`cam_joint.metrics.registry`) are shown in their table,
            fractions x100; other numbers are listed raw under "Other values".
        training_args: the training command's arguments (`vars(args)`), shown as a command and a table.
        dataset_name: `cub`, `flowers`, `synthetic` or a Hub dataset id. Without it the card has no `model-index`
            and no `.eval_results/` file (both need a dataset to file the results under).
        repo_id: used in the usage snippet (default: `training_args["push_to_hub"]`, else a placeholder).
        space: also make the folder a Gradio Space: the card's metadata gets `sdk: gradio`, `app_file: app.py` (and
            `sdk_version`, the installed Gradio's), and `write_space_app` writes `app.py` and `requirements.txt`.
            Push it with `push_to_hub(..., space=True)`.
        space_requirement: with `space`, how the Space installs `cam_joint` (see `write_space_app`).

    Returns the path of README.md.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    cfg = _config_dict(config)
    metrics = dict(metrics or {})
    training_args = dict(training_args or {})
    dataset_name = dataset_name or training_args.get("dataset")
    split = metrics.get("split") if isinstance(metrics.get("split"), str) else None
    found = find_metrics(metrics)

    if space:
        write_space_app(output_dir, requirement=space_requirement)
    card = ModelCard.from_template(
        _card_data(cfg, found, dataset_name, split, space=space), template_str=CARD_TEMPLATE, bibtex=BIBTEX,
        paper=PAPER, space=space,
        title=_title(cfg, dataset_name), dataset_title=dataset_name and _dataset_title(dataset_name),
        architecture=_architecture_rows(cfg),
        **_usage_values(cfg, repo_id or training_args.get("push_to_hub") or "path/to/this/model"),
        **_results_values(metrics, found, dataset_name, split), **_picture_values(output_dir),
        **_training_values(training_args),
    )
    path = output_dir / "README.md"
    card.save(path)
    if dataset_name:
        write_eval_results(output_dir, metrics, dataset_name, split=split)
    return path


def find_metrics(metrics: Mapping) -> dict[str, tuple[Metric, str, float]]:
    """The registered metrics in `metrics`, in registry order: key -> (metric, the name as given, value).

    Names are matched by `METRICS.lookup` (`eval_accuracy` is `top1`); when two names mean one metric, the exact key
    wins, else the first given.
    """
    found: dict[str, tuple[Metric, str, float]] = {}
    for name, value in _scalar_items(metrics):
        metric = METRICS.lookup(name)
        if metric is None:
            continue
        if metric.key not in found or (name == metric.key and found[metric.key][1] != metric.key):
            found[metric.key] = (metric, name, value)
    return {key: found[key] for key in METRICS if key in found}


def _scalar_items(metrics: Mapping, prefix: str = "") -> Iterable[tuple[str, float]]:
    """(dotted name, float) for every number in a nested mapping; booleans, strings and lists are skipped."""
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _scalar_items(value, name + ".")
        elif isinstance(value, bool):
            continue
        elif isinstance(value, (int, float)) or (hasattr(value, "item") and getattr(value, "ndim", 1) == 0):
            yield name, float(value)


def _config_dict(config) -> dict:
    """The config as a dict, with its `VariantSpec` under "spec" and the number of classes resolved."""
    if isinstance(config, Mapping):
        values = dict(config)
    elif hasattr(config, "to_dict"):
        values = config.to_dict()
    else:
        values = dict(vars(config))
    variant = values.setdefault("variant", "cam")
    if variant not in VARIANTS:
        raise ValueError(f"config variant {variant!r} is not one of {', '.join(VARIANTS)}")
    values["spec"] = VARIANTS[variant]
    if values.get("use_cam_loss") is None:
        values["use_cam_loss"] = variant == "cam"
    id2label = values.get("id2label") or {}
    values["num_labels"] = len(id2label) if id2label else values.get("num_labels")
    return values


def _dataset_title(dataset_name: str) -> str:
    spec = find_dataset(normalise_key(dataset_name)) or find_dataset(dataset_name)
    return spec.title if spec is not None else dataset_name


def _title(cfg: dict, dataset_name: str | None) -> str:
    on = f" on {dataset_name}" if dataset_name else ""
    return f"CamJoint ({cfg['variant']}, {cfg.get('encoder_name', 'timm encoder')}){on}"


def _architecture_rows(cfg: dict) -> list[tuple[str, str]]:
    """The "what is in this model" table: variant, parts, losses, and the settings of the parts it has."""
    spec: VariantSpec = cfg["spec"]
    losses = spec.loss + (" + L_cam" if cfg["variant"] == "semantic" and cfg.get("use_cam_loss") else "")
    encoder_mode = "frozen" if cfg.get("freeze_encoder", True) else "fine-tuned"
    rows = [
        ("variant", f"`{cfg['variant']}`: {spec.title}"), ("parts", spec.parts), ("training loss", losses),
        ("encoder", f"timm `{cfg.get('encoder_name')}` ({encoder_mode}, last feature map of "
                    f"{cfg.get('encoder_channels') or '?'} channels = the Grad-CAM layer)"),
    ]
    if spec.has_intermediate:
        rows.append(("f_medi", f"{cfg.get('intermediate_size')} units, {cfg.get('intermediate_activation')}"))
    if spec.has_classifier:
        rows.append(("classes", str(cfg.get("num_labels"))))
    if spec.has_captioner:
        rows.append(("captioner", f"LSTM, {cfg.get('num_lstm_layers', 1)} layer(s) of {cfg.get('hidden_size')} units, "
                                  f"word embeddings {cfg.get('word_embedding_size')}, image conditioning "
                                  f"`{cfg.get('conditioning')}`, vocabulary {cfg.get('vocab_size')} words, "
                                  f"captions up to {cfg.get('max_caption_length')} tokens"))
    if cfg.get("use_cam_loss"):
        rows.append(("CAM loss", f"weight {cfg.get('cam_loss_weight')}, gradient `{cfg.get('cam_gradient_mode')}`, "
                                 f"trains `{cfg.get('cam_trains')}`, caption score `{cfg.get('cam_caption_target')}` "
                                 f"log-probability, Grad-CAM ReLU {'on' if cfg.get('cam_relu', True) else 'off'}"))
    return rows


def _usage_values(cfg: dict, repo_id: str) -> dict:
    """Template values of the usage snippet: which heads it calls, and how it generates."""
    semantic = cfg["variant"] == "semantic"  # its generation config decodes with beam width 3 (Liu et al. 2017)
    return {"repo_id": repo_id, "has_classifier": cfg["spec"].has_classifier,
            "has_captioner": cfg["spec"].has_captioner, "generate_options": ", num_beams=3" if semantic else "",
            "generate_comment": ("beam search; do_sample=... works too" if semantic
                                 else "greedy; num_beams=..., do_sample=... work too")}


# ---------------------------------------------------------------------------------- metadata and results
def _card_data(cfg: dict, found: dict, dataset_name: str | None, split: str | None,
               space: bool = False) -> ModelCardData:
    """The card's YAML metadata; huggingface_hub turns the `EvalResult`s into the `model-index`. With `space`, also
    the keys that make the repo run as a Gradio Space (`space_metadata`)."""
    eval_results = [
        EvalResult(task_type=metric.task_type, task_name=metric.task_name, dataset_type=dataset_name,
                   dataset_name=_dataset_title(dataset_name), dataset_split=split, metric_type=metric.metric_type,
                   metric_name=metric.title, metric_value=round(metric.as_percent(value), 2))
        for metric, _, value in found.values() if metric.task_type and math.isfinite(value)
    ] if dataset_name else []
    metric_ids = list(dict.fromkeys(m.metric_type for m, _, _ in found.values() if m.metric_type))
    return ModelCardData(
        library_name="transformers", pipeline_tag="image-text-to-text",
        tags=TAGS + [f"variant-{cfg['variant']}", "custom_code"],
        datasets=[dataset_name] if dataset_name and "/" in dataset_name else None,  # only Hub ids link anywhere
        metrics=metric_ids or None,
        # the model-index needs a name; without results there is no model-index and no name to give
        model_name=_title(cfg, dataset_name) if eval_results else None, eval_results=eval_results or None,
        **(space_metadata() if space else {}),
    )


def write_eval_results(output_dir, metrics: Mapping, dataset_name: str, *, split: str | None = None) -> Path | None:
    """Write the registered metrics of `metrics` as `output_dir/.eval_results/<dataset>.yaml`; returns its path.

    The Hub's evaluation-results format (https://huggingface.co/docs/hub/eval-results, spec `eval_results.yaml` in
    huggingface/hub-docs) is a YAML list of entries `{dataset: {id, task_id}, value, notes, ...}`, one value each.
    It has no metric-name field, so each metric is its own `task_id` (its registry key, e.g. `Bleu_4`) and `notes`
    carries its title, unit and split. Values are percentages, as on the card. `dataset.id` is `dataset_name`: only a
    Hub dataset registered as a Benchmark gets a leaderboard, the others are still shown on the model page.

    With no finite registered metric the file is removed rather than left stale; returns None then.
    """
    path = Path(output_dir) / EVAL_RESULTS_FOLDER / (re.sub(r"[^0-9A-Za-z._-]+", "--", dataset_name) + ".yaml")
    on = f", {split} split" if split else ""
    entries = [
        EvalResultEntry(dataset_id=dataset_name, task_id=metric.key, value=round(metric.as_percent(value), 2),
                        notes=f"{metric.title}{' in %' if metric.percent else ''}{on}")
        for metric, _, value in find_metrics(metrics).values() if math.isfinite(value)
    ]
    if not entries:
        path.unlink(missing_ok=True)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(eval_result_entries_to_yaml(entries), sort_keys=False), encoding="utf-8")
    return path


def _fmt(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "n/a"


def _results_values(metrics: Mapping, found: dict, dataset_name: str | None, split: str | None) -> dict:
    """Template values of the Results section: the registered metrics as one row, the other numbers as key/value."""
    where = (f" on {_dataset_title(dataset_name)}" if dataset_name else "") + (f", `{split}` split" if split else "")
    used = {name for _, name, _ in found.values()}
    others = [(key, f"{value:.6g}") for key, value in _scalar_items(metrics) if key not in used]
    return {"where": where, "results": [(m.title, _fmt(m.as_percent(v))) for m, _, v in found.values()],
            "others": others[:_MAX_OTHER_VALUES], "more_others": max(0, len(others) - _MAX_OTHER_VALUES)}


def _picture_values(output_dir: Path) -> dict:
    """The PNG files at the top of the folder or one level down (not in checkpoints/), for the card to show."""
    pictures = sorted(p.relative_to(output_dir).as_posix() for p in output_dir.rglob("*.png")
                      if "checkpoints" not in (parts := p.relative_to(output_dir).parts) and len(parts) <= 2)
    return {"pictures": [(Path(p).stem, p) for p in pictures[:_MAX_PICTURES]],
            "more_pictures": max(0, len(pictures) - _MAX_PICTURES)}


# ---------------------------------------------------------------------------------------------- training
def _training_values(training_args: dict) -> dict:
    """The training command (shell-quoted, wrapped) and the settings table; local paths shown without the user's."""
    if not training_args:
        return {"command": None, "settings": []}
    settings = []
    for key, value in training_args.items():
        if key.startswith("_") or value is None:
            continue
        shown = (", ".join(_public_value(v) for v in value) if isinstance(value, (list, tuple))
                 else _public_value(value))
        settings.append((key, shown))
    return {"command": _command(training_args), "settings": settings}


def _command(training_args: dict) -> str:
    skip = {"resume", "func", "command"}
    words = ["cam-joint", "train"]
    for key, value in training_args.items():
        if key.startswith("_") or key in skip or value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if key == "freeze_encoder":
            words.append("--freeze-encoder" if value else "--train-encoder")
        elif isinstance(value, bool):
            if value:
                words.append(flag)
        elif isinstance(value, (list, tuple)):
            words += [flag] + [shlex.quote(_public_value(v)) for v in value]
        else:
            words += [flag, shlex.quote(_public_value(value))]
    lines, line = [], ""
    for word in words:  # wrap with shell continuations, flags kept with their values
        if word.startswith("--") and len(line) + len(word) > 80:
            lines.append(line)
            line = "    "
        line += ("" if line.strip() == "" else " ") + word
    lines.append(line)
    return " \\\n".join(lines)


def _public_value(value) -> str:
    """Local absolute paths are shown without the user's directories."""
    text = str(value)
    if os.path.isabs(text) or text.startswith("~"):
        return "/path/to/" + (Path(text).name or "folder")
    return text


# ---------------------------------------------------------------------------------------------------- Space
# The Space's app.py loads the model with the folder's own remote code (the code saved with the weights is the code
# that runs) and takes the page from `cam_joint.demo`, so there is one demo page, tested in a browser, not a copy per
# checkpoint; requirements.txt installs `cam_joint` for it.
SPACE_APP = '''"""Demo page of the CamJoint model in this folder: a Hugging Face Space (`sdk: gradio`, `app_file: app.py`).

    pip install -r requirements.txt && python app.py         # serves the page (on a Space: what the Space runs)
    python app.py --check                                     # builds the page without serving it, then exits

The model and processor load from this folder with `trust_remote_code=True` (its `*.py` files); the page is
`cam_joint.demo.build_demo` (requirements.txt installs `cam-joint[demo]`). Images in `examples/` are offered as
examples.
"""

import sys
from pathlib import Path

import torch
from transformers import AutoModel, AutoProcessor

from cam_joint.demo import build_demo, example_files

HERE = Path(__file__).resolve().parent
device = "cuda" if torch.cuda.is_available() else "cpu"
model = AutoModel.from_pretrained(HERE, trust_remote_code=True).to(device).eval()
processor = AutoProcessor.from_pretrained(HERE, trust_remote_code=True)
demo = build_demo(model, processor, examples=example_files(HERE / "examples"))

if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        print(f"demo page built for {type(model).__name__} ({model.config.variant}); not served (--check)")
    else:
        demo.launch()  # on a Space, Gradio reads the address and port from the Space's environment
'''
SPACE_FILES = ("app.py", "requirements.txt")


def space_metadata() -> dict:
    """The README metadata a Gradio Space needs: `sdk`, `app_file`, and `sdk_version` (the installed Gradio's; left
    out when Gradio is not installed here, and the Space then uses its default version)."""
    from importlib.metadata import PackageNotFoundError, version

    metadata = {"sdk": "gradio", "app_file": "app.py"}
    try:
        metadata["sdk_version"] = version("gradio")
    except PackageNotFoundError:
        pass
    return metadata


def default_space_requirement() -> str:
    """`cam-joint[demo]==<this version>`: the requirements.txt line by which a Space installs the demo page."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"cam-joint[demo]=={version('cam-joint')}"
    except PackageNotFoundError:  # a source tree that is not installed
        return "cam-joint[demo]"


def write_space_app(output_dir, *, requirement: str | None = None, examples: Iterable | None = None) -> list[Path]:
    """Make a saved model folder runnable as a Gradio Space: write `app.py` and `requirements.txt` (and copy
    `examples` into `examples/`); returns the paths written.

    The README metadata (`sdk: gradio`, `app_file: app.py`) comes from `write_model_card(..., space=True)`, which
    calls this function.

    Args:
        output_dir: the saved model folder (`save_pretrained` output).
        requirement: the requirements.txt line that installs `cam_joint` with its demo extra. Default
            `cam-joint[demo]==<installed version>`; where the package is not on PyPI, give its source instead, e.g.
            `"cam-joint[demo] @ git+https://github.com/ORG/cam_joint@v0.1.0"`.
        examples: image files for the page to offer as examples.
    """
    import shutil

    folder = Path(output_dir)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: save the model there (save_pretrained) before making "
                                "it a Space")
    requirement = (requirement or default_space_requirement()).strip()
    if not requirement or "\n" in requirement:
        raise ValueError(f"requirement must be one requirements.txt line, got {requirement!r}")
    examples = [Path(source) for source in examples or []]
    for source in examples:  # all checked before anything is written
        if not source.is_file():
            raise FileNotFoundError(f"example image not found: {source}")
    written = [folder / "app.py", folder / "requirements.txt"]
    written[0].write_text(SPACE_APP, encoding="utf-8")
    written[1].write_text("# The Space installs Gradio itself (sdk_version in README.md); the model code is in this "
                          f"folder.\n{requirement}\n", encoding="utf-8")
    for source in examples:
        (folder / "examples").mkdir(exist_ok=True)
        written.append(Path(shutil.copy(source, folder / "examples" / source.name)))
    return written


def check_space_folder(folder) -> None:
    """Raise unless `folder` runs as a Gradio Space: `app.py` and `requirements.txt` present, and README.md's
    metadata saying `sdk: gradio` and `app_file: app.py`."""
    folder = Path(folder)
    missing = [name for name in SPACE_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}: write them with write_model_card(..., "
                                "space=True) or write_space_app() before pushing it as a Space")
    readme = folder / "README.md"
    metadata = ModelCard.load(readme).data.to_dict() if readme.is_file() else {}
    if metadata.get("sdk") != "gradio" or metadata.get("app_file") != "app.py":
        raise ValueError(f"{readme} does not declare `sdk: gradio` and `app_file: app.py` in its metadata: write "
                         "the card with write_model_card(..., space=True) before pushing the folder as a Space")


# --------------------------------------------------------------------------------------------------- upload
def push_to_hub(output_dir, repo_id: str, token: str | None = None, private: bool = False,
                commit_message: str = "Upload CamJoint model (joint classification and captioning, CAM loss)",
                *, endpoint: str | None = None, revision: str | None = None,
                ignore_patterns: Iterable[str] | None = DEFAULT_IGNORE_PATTERNS, space: bool = False) -> str:
    """Create `repo_id` (if needed) and upload the saved model folder in one commit; returns the commit URL.

    Uploads every file of `output_dir` (weights, config with `auto_map`, remote-code `.py` files, processor and
    tokenizer files, generation config, README.md, `.eval_results/`, metrics.json, pictures) except `ignore_patterns`
    (by default the training `checkpoints/` folder and Python caches), with `huggingface_hub.upload_folder`. An
    unchanged folder makes no new commit (the URL of the current one is returned). Raises before any network call
    if the uploaded files could not load with `trust_remote_code=True` (see `check_remote_code_folder`).

    Args:
        endpoint: the Hub URL; default `HF_ENDPOINT` as set now, else huggingface_hub's default.
        token: default the `HF_TOKEN` environment variable or the saved login.
        revision: the branch to commit to (default `main`).
        space: push to a Gradio Space `repo_id` instead of a model repo (the folder must have been made one with
            `write_model_card(..., space=True)`; checked before any network call).
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"push_to_hub: {folder} is not a folder (save the model there first)")
    ignore = list(ignore_patterns or [])
    # The check sees the files as the Hub will have them: an ignored .py file would be missing there.
    check_remote_code_folder(folder, filter_repo_objects(_files_in(folder), ignore_patterns=ignore))
    if space:
        check_space_folder(folder)
    repo_type = "space" if space else "model"

    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None
    api = HfApi(endpoint=endpoint, token=token)
    repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type,
                           space_sdk="gradio" if space else None)
    info = api.upload_folder(repo_id=repo.repo_id, folder_path=folder, repo_type=repo_type, revision=revision,
                             commit_message=commit_message, ignore_patterns=ignore)
    return str(info.commit_url)


def _files_in(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------- remote code
def check_remote_code_folder(folder, files: Iterable[str] | None = None) -> list[str]:
    """The `.py` files a saved folder needs to load with `trust_remote_code=True`; raises if it could not load.

    What is checked is what Transformers' `dynamic_module_utils` will do with the repo: every `module.Class` named by
    an `auto_map` (config.json, processor/tokenizer/preprocessor configs) needs `module.py`, whose relative imports
    (`get_relative_import_files`, recursively) must be files of the folder too; and no file may import a library
    outside the standard library and `REMOTE_CODE_PACKAGES`. Imports are read with Transformers' `get_imports`, so an
    import inside `try:` or `if is_..._available():` counts as optional, as it does for Transformers. (Transformers'
    `check_imports` only asks whether a package is importable *here*, where `cam_joint` itself is installed.)

    Args:
        folder: the saved model folder.
        files: the folder's files as they will be uploaded (relative paths); default every file in it.

    Raises:
        FileNotFoundError: no config.json, or a needed `.py` file is missing (names it and who needs it).
        ValueError: config.json has no `auto_map`, so the model would not load as remote code.
        ImportError: a file imports a package a reader need not have (names the file and the package).
    """
    folder = Path(folder)
    present = set(files) if files is not None else set(_files_in(folder))
    if "config.json" not in present:
        raise FileNotFoundError(f"{folder} has no config.json: save the model with save_pretrained() first")
    if not list(_auto_map_references(json.loads((folder / "config.json").read_text(encoding="utf-8")))):
        raise ValueError(f"{folder}/config.json has no auto_map: the pushed model could not load with "
                         "trust_remote_code=True (save it with CamJointModel.save_pretrained)")
    modules = _auto_map_modules(folder, present)
    needed = _needed_code_files(folder, modules, present)
    for name in needed:
        foreign = [m for m in get_imports(folder / name)
                   if m not in REMOTE_CODE_PACKAGES and m not in sys.stdlib_module_names]
        if foreign:
            raise ImportError(f"{folder / name} imports {', '.join(foreign)}, which a reader loading the repo with "
                              f"trust_remote_code=True need not have: remote code may import only the standard "
                              f"library, {', '.join(sorted(REMOTE_CODE_PACKAGES))} and its sibling files",
                              name=foreign[0], path=str(folder / name))
    return needed


def _needed_code_files(folder: Path, modules: list[str], present: set[str]) -> list[str]:
    """`modules` and everything they import relatively, as Transformers' `get_relative_import_files` finds them."""
    needed = list(modules)
    for module in modules:
        if module not in present:
            raise FileNotFoundError(f"{folder} lacks {module}, which an auto_map of the model names")
        try:
            imported = [Path(p).name for p in get_relative_import_files(folder / module)]
        except FileNotFoundError as error:  # it opens every file it finds: a missing one raises here
            imported = [Path(error.filename).name]
        for name in imported:
            if name not in present:
                raise FileNotFoundError(f"{folder} lacks {name}, imported by {', '.join(_importers(folder, name))}: "
                                        "the remote code would not load")
            if name not in needed:
                needed.append(name)
    return needed


def _importers(folder: Path, name: str) -> list[str]:
    """The `.py` files of `folder` whose relative imports include module file `name`."""
    stem = name.removesuffix(".py")
    return sorted(p.name for p in folder.glob("*.py") if stem in get_relative_imports(p)) or ["the remote code"]


def _auto_map_modules(folder: Path, present: set[str]) -> list[str]:
    """The module files (`module.py`) that the `auto_map`s of the folder's config files name, in order."""
    modules: list[str] = []
    for name in _CONFIG_FILES_WITH_AUTO_MAP:
        if name not in present:
            continue
        for reference in _auto_map_references(json.loads((folder / name).read_text(encoding="utf-8"))):
            if "--" in reference:  # code that lives in another repo ("repo--module.Class")
                continue
            module = reference.rsplit(".", 1)[0] + ".py"
            if module not in modules:
                modules.append(module)
    return modules


def _auto_map_references(data) -> Iterable[str]:
    """Every class reference under an `auto_map` key of a (nested) config dict; lists are [slow, fast] pairs."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            if key == "auto_map" and isinstance(value, Mapping):
                for reference in value.values():
                    for item in (reference if isinstance(reference, (list, tuple)) else [reference]):
                        if isinstance(item, str):
                            yield item
            elif isinstance(value, Mapping):
                yield from _auto_map_references(value)


__all__ = ["write_model_card", "write_eval_results", "find_metrics", "push_to_hub", "check_remote_code_folder",
           "write_space_app", "check_space_folder", "space_metadata", "CARD_TEMPLATE", "SPACE_APP",
           "DEFAULT_IGNORE_PATTERNS", "REMOTE_CODE_PACKAGES"]
