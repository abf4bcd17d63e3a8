"""The model card of a saved CamJoint folder: a `huggingface_hub.ModelCard` from a Jinja template, its metadata's
`model-index` (`EvalResult`s) and the Hub's newer evaluation files, `.eval_results/<dataset>.yaml`
(https://huggingface.co/docs/hub/eval-results, `huggingface_hub.EvalResultEntry`). Which numbers exist, their titles
and Hub names come from `cam_joint.metrics.registry.METRICS`.

    write_model_card(output_dir, model.config, metrics, training_args=vars(args), dataset_name="cub")
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, EvalResultEntry, ModelCard, ModelCardData, eval_result_entries_to_yaml
from huggingface_hub.constants import EVAL_RESULTS_FOLDER

from .configuration_cam_joint import VARIANTS, VariantSpec
from .data import find_dataset
from .hub_space import space_metadata, write_space_app
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
{%- if word_table %}
Caption maps weigh each word by how much it tells the class (`cam_caption_target="discriminative"`: positive PMI
of word and class in the training captions, divided by the class's largest; fixed before training, saved in the
weights). Each class's most telling words:

{{ word_table }}
{% endif %}
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
                     space_requirement: str | None = None, word_table: str | None = None) -> Path:
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
        word_table: a Markdown table of the discriminative caption score's top words per class
            (`discriminative_words.word_table`), shown under the architecture.

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
        architecture=_architecture_rows(cfg), word_table=word_table,
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
                                 f"log-probability, Grad-CAM ReLU {'on' if cfg.get('cam_relu', True) else 'off'}"
                                 + _cam_guide_text(cfg)))
    return rows


def _cam_guide_text(cfg: dict) -> str:
    """What L_cam pulls the maps toward, when not eq. 6's two heads toward each other."""
    guide = cfg.get("cam_guide", "mutual")
    if guide == "mutual":
        return ""
    toward = "the captioner's map (a one-way teacher)" if guide == "captioner" else "the deciding parts' mask (oracle)"
    return f"; the classifier's maps pulled toward {toward} by the `{cfg.get('cam_guidance_loss')}` loss"


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


