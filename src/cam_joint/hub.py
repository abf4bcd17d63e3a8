"""Sharing a trained CamJoint model on the Hugging Face Hub: the model card (README.md) and the upload.

    write_model_card(output_dir, model.config, metrics, training_args=vars(args), dataset_name="cub")
    push_to_hub(output_dir, "your-name/cam-joint-cub")        # -> URL of the commit

A saved CamJoint folder is self-contained remote code (config.json with `auto_map`, the `*.py` files next to the
weights), so the pushed repo loads anywhere with `trust_remote_code=True`, without installing `cam_joint`.
`push_to_hub` checks that before uploading anything.

The Hub endpoint is `HF_ENDPOINT` (read when `push_to_hub` is called, so a mirror or a local test server set after
`huggingface_hub` was imported is respected), the token is `token=` or the usual `HF_TOKEN` / `hf auth login` one.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path

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

# (canonical metrics key, column title, accepted spellings after normalisation, model-index task, metric type)
_CLS, _CAP = ("image-classification", "Image Classification"), ("image-to-text", "Image Captioning")
METRICS = [
    ("top1", "Top-1", ("top1", "top1accuracy", "accuracy", "acc", "acc1"), _CLS, "accuracy"),
    ("top5", "Top-5", ("top5", "top5accuracy", "acc5"), _CLS, "accuracy"),
    ("Bleu_1", "BLEU-1", ("bleu1",), _CAP, "bleu"),
    ("Bleu_2", "BLEU-2", ("bleu2",), _CAP, "bleu"),
    ("Bleu_3", "BLEU-3", ("bleu3",), _CAP, "bleu"),
    ("Bleu_4", "BLEU-4", ("bleu4", "bleu"), _CAP, "bleu"),
    ("METEOR", "METEOR", ("meteor",), _CAP, "meteor"),
    ("ROUGE_L", "ROUGE-L", ("rougel", "rouge"), _CAP, "rouge"),
    ("CIDEr", "CIDEr", ("cider", "ciderd"), _CAP, "cider"),
    ("cam_agreement", "CAM agreement", ("camagreement", "camcosine", "camcosineagreement"), None, None),
    ("pointing_game_classifier", "Pointing game (classifier)", ("pointinggameclassifier",), None, None),
    ("pointing_game_captioner", "Pointing game (captioner)", ("pointinggamecaptioner",), None, None),
]
_METRIC_PREFIXES = ("eval", "test", "validation", "val")

DATASETS = {
    "cub": "CUB-200-2011 (Caltech-UCSD Birds) with the captions of Reed et al. (2016)",
    "cub200": "CUB-200-2011 (Caltech-UCSD Birds) with the captions of Reed et al. (2016)",
    "flowers": "Oxford Flowers 102 with the captions of Reed et al. (2016)",
    "flowers102": "Oxford Flowers 102 with the captions of Reed et al. (2016)",
    "synthetic": "the built-in synthetic birds (`cam_joint.data.synthetic`)",
}

VARIANTS = {
    "cnn": ("CNN classification baseline", "encoder + linear classifier", "L_class"),
    "lrcn": ("LRCN captioning baseline", "encoder + LSTM captioner", "L_caption"),
    "intermediate": ("joint model without the CAM loss",
                     "encoder + shared intermediate layer f_medi + classifier + LSTM captioner",
                     "L_class + L_caption"),
    "cam": ("proposed model (joint training with the CAM disagreement loss)",
            "encoder + shared intermediate layer f_medi + classifier + LSTM captioner",
            "L_class + L_caption + L_cam"),
    "semantic": ("semantically regularised captioner (Liu et al., CVPR 2017)",
                 "encoder + concept layer f_medi (sigmoid concept probabilities) + classifier + LSTM captioner",
                 "L_concept + L_caption (+ L_class)"),
}

DEFAULT_IGNORE_PATTERNS = ("checkpoints/*", "*/checkpoints/*", "__pycache__/*", "*/__pycache__/*", "*.pyc",
                           ".ipynb_checkpoints/*", "*.lock", "*.tmp")
_CONFIG_FILES_WITH_AUTO_MAP = ("config.json", "processor_config.json", "preprocessor_config.json",
                               "tokenizer_config.json", "image_processor_config.json")


# ------------------------------------------------------------------------------------------------ model card
def write_model_card(output_dir, config, metrics: Mapping | None, training_args: Mapping | None = None,
                     dataset_name: str | None = None, *, repo_id: str | None = None) -> Path:
    """Write `output_dir/README.md`: Hub metadata (YAML front matter), what the model is, how to use it, its
    results (percentages, as in Table 2 of the paper) and how it was trained.

    Args:
        output_dir: the saved model folder (the card links the PNG pictures found there).
        config: the model's `CamJointConfig` (or a dict of it).
        metrics: evaluation results, e.g. `{"top1": 0.81, "Bleu_4": 0.23, "CIDEr": 0.71, "cam_agreement": 0.6}`.
            Fractions are shown x100; keys not known here are listed raw under "Other values".
        training_args: the training command's arguments (`vars(args)`), shown as a command and a table.
        dataset_name: `cub`, `flowers`, `synthetic` or a Hub dataset id.
        repo_id: used in the usage snippet (default: `training_args["push_to_hub"]`, else a placeholder).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    cfg = _config_dict(config)
    training_args = dict(training_args or {})
    dataset_name = dataset_name or training_args.get("dataset")
    repo_id = repo_id or training_args.get("push_to_hub") or "path/to/this/model"
    found = _find_metrics(metrics or {})

    sections = [
        _front_matter(cfg, found, dataset_name),
        _description(cfg, dataset_name),
        _usage(cfg, repo_id),
        _results(metrics or {}, found, dataset_name),
        _pictures(output_dir),
        _training(cfg, training_args, dataset_name),
        "## Citation\n\n```bibtex\n" + BIBTEX + "\n```\n",
    ]
    path = output_dir / "README.md"
    path.write_text("\n".join(s for s in sections if s), encoding="utf-8")
    return path


def _config_dict(config) -> dict:
    if isinstance(config, Mapping):
        values = dict(config)
    elif hasattr(config, "to_dict"):
        values = config.to_dict()
    else:
        values = dict(vars(config))
    variant = values.get("variant", "cam")
    values.setdefault("variant", variant)
    if values.get("use_cam_loss") is None:
        values["use_cam_loss"] = variant == "cam"
    values["has_classifier"] = variant != "lrcn"
    values["has_captioner"] = variant != "cnn"
    id2label = values.get("id2label") or {}
    values["num_labels"] = len(id2label) if id2label else values.get("num_labels")
    return values


def _normalise_key(key: str) -> str:
    key = str(key).split("/")[-1].split(".")[-1]
    parts = re.split(r"[^0-9a-zA-Z]+", key)
    while len(parts) > 1 and parts[0].lower() in _METRIC_PREFIXES:
        parts = parts[1:]
    return "".join(parts).lower()


def _scalar_items(metrics: Mapping, prefix: str = "") -> Iterable[tuple[str, float]]:
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _scalar_items(value, name + ".")
        elif isinstance(value, bool):
            continue
        elif isinstance(value, (int, float)) or (hasattr(value, "item") and getattr(value, "ndim", 1) == 0):
            yield name, float(value)


def _find_metrics(metrics: Mapping) -> dict[str, tuple[str, float]]:
    """Canonical key -> (the key as given, value), for the metrics this card knows."""
    found: dict[str, tuple[str, float]] = {}
    items = list(_scalar_items(metrics))
    for canonical, _, spellings, _, _ in METRICS:
        for key, value in items:  # an exact key first, then any accepted spelling
            if key == canonical:
                found[canonical] = (key, value)
                break
        else:
            for key, value in items:
                if _normalise_key(key) in spellings and key not in {k for k, _ in found.values()}:
                    found[canonical] = (key, value)
                    break
    return found


def _as_percent(canonical: str, value: float) -> float:
    """Metrics are fractions (pycocoevalcap, accuracy, cosine, hit rate); the paper reports them x100. A value
    already above the fraction range (1, or 10 for CIDEr-D, whose maximum is 10) is taken as a percentage."""
    limit = 10.0 if canonical == "CIDEr" else 1.0
    return value * 100.0 if abs(value) <= limit else value


def _fmt(value: float, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _front_matter(cfg: dict, found: dict, dataset_name: str | None) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    metric_ids = []
    for canonical, *_, metric_type in METRICS:
        if canonical in found and metric_type and metric_type not in metric_ids:
            metric_ids.append(metric_type)
    tags = list(TAGS) + [f"variant-{cfg['variant']}", "custom_code"]
    hub_dataset = dataset_name if dataset_name and "/" in dataset_name else None
    eval_results = None
    if dataset_name and found:
        pretty = _dataset_title(dataset_name)
        eval_results = []
        for canonical, title, _, task, metric_type in METRICS:
            if canonical in found and task is not None and math.isfinite(found[canonical][1]):
                eval_results.append(EvalResult(
                    task_type=task[0], task_name=task[1], dataset_type=dataset_name, dataset_name=pretty,
                    metric_type=metric_type, metric_name=title,
                    metric_value=round(_as_percent(canonical, found[canonical][1]), 2)))
        eval_results = eval_results or None
    data = ModelCardData(
        library_name="transformers", pipeline_tag="image-text-to-text", tags=tags,
        datasets=[hub_dataset] if hub_dataset else None, metrics=metric_ids or None,
        model_name=_title(cfg, dataset_name), eval_results=eval_results,
    )
    return f"---\n{data.to_yaml()}\n---\n"


def _dataset_title(dataset_name: str | None) -> str:
    if not dataset_name:
        return "an unspecified dataset"
    return DATASETS.get(_normalise_key(dataset_name), dataset_name)


def _title(cfg: dict, dataset_name: str | None) -> str:
    on = f" on {dataset_name}" if dataset_name else ""
    return f"CamJoint ({cfg['variant']}, {cfg.get('encoder_name', 'timm encoder')}){on}"


def _description(cfg: dict, dataset_name: str | None) -> str:
    variant = cfg["variant"]
    name, parts, losses = VARIANTS.get(variant, (variant, "?", "?"))
    if variant == "semantic" and cfg.get("use_cam_loss"):
        losses += " + L_cam"
    rows = [
        ("variant", f"`{variant}`: {name}"), ("parts", parts), ("training loss", losses),
        ("encoder", f"timm `{cfg.get('encoder_name')}` ({'frozen' if cfg.get('freeze_encoder', True) else 'fine-tuned'}"
                    f", last feature map of {cfg.get('encoder_channels') or '?'} channels = the Grad-CAM layer)"),
    ]
    if variant in ("intermediate", "cam", "semantic"):
        rows.append(("f_medi", f"{cfg.get('intermediate_size')} units, {cfg.get('intermediate_activation')}"))
    if cfg["has_classifier"]:
        rows.append(("classes", str(cfg.get("num_labels"))))
    if cfg["has_captioner"]:
        rows.append(("captioner", f"LSTM, {cfg.get('num_lstm_layers', 1)} layer(s) of {cfg.get('hidden_size')} units, "
                                  f"word embeddings {cfg.get('word_embedding_size')}, image conditioning "
                                  f"`{cfg.get('conditioning')}`, vocabulary {cfg.get('vocab_size')} words, "
                                  f"captions up to {cfg.get('max_caption_length')} tokens"))
    if cfg.get("use_cam_loss"):
        rows.append(("CAM loss", f"weight {cfg.get('cam_loss_weight')}, gradient `{cfg.get('cam_gradient_mode')}`, "
                                 f"trains `{cfg.get('cam_trains')}`, caption score `{cfg.get('cam_caption_target')}` "
                                 f"log-probability, Grad-CAM ReLU {'on' if cfg.get('cam_relu', True) else 'off'}"))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    trained_on = f"\n\nThis model was trained on {_dataset_title(dataset_name)}." if dataset_name else ""
    return f"""# {_title(cfg, dataset_name)}

A fine-grained image **classifier and captioner** in one model, after {PAPER}.{trained_on}

An image encoder (a timm CNN) gives a feature map A; its global average p feeds a shared intermediate layer
z = f_medi(p), read by both a linear classifier and an LSTM caption generator. The paper's **CAM disagreement loss**
(eq. 6) compares Grad-CAM maps (eqs. 4-5) computed on A for the two heads: the map of the classifier's answer class
with the map of the captioner's predicted caption, and the map of the reference caption with the map of the
predicted class (1 - cosine similarity, eq. 7), so that both tasks learn to look at the same parts of the object.
Following Algorithm 1, the classifier learns from L_class, the captioner from L_caption, and f_medi from all losses.

| | |
| --- | --- |
{table}
"""


def _usage(cfg: dict, repo_id: str) -> str:
    lines = [
        "import torch",
        "from PIL import Image",
        "from transformers import AutoModel, AutoProcessor",
        "",
        f'model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True).eval()',
        f'processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)',
        "",
        'image = Image.open("bird.jpg")',
        'inputs = processor(images=image, text="")  # text="" : the caption starts at <bos>',
    ]
    if cfg["has_captioner"]:
        beams = ", num_beams=3" if cfg["variant"] == "semantic" else ""
        lines += ["", f"caption_ids = model.generate(**inputs{beams})  # greedy; num_beams=..., do_sample=... work too",
                  "print(processor.batch_decode(caption_ids, skip_special_tokens=True)[0])"]
    if cfg["has_classifier"]:
        lines += ["", "with torch.no_grad():",
                  '    probs = model(pixel_values=inputs["pixel_values"]).logits.softmax(-1)',
                  "top5 = probs[0].topk(min(5, probs.shape[-1]))",
                  "print([(model.config.id2label[i], round(p, 3)) for p, i in zip(top5.values.tolist(), "
                  "top5.indices.tolist())])"]
    cam = []
    if cfg["has_classifier"]:
        cam.append('cam_class = model.grad_cam(pixel_values=inputs["pixel_values"], labels=top5.indices[:1])')
    if cfg["has_captioner"]:
        cam.append('cam_caption = model.grad_cam(pixel_values=inputs["pixel_values"], caption_ids=caption_ids)')
    lines += ["", "# Grad-CAM maps over the encoder's last feature map, (batch, h, w)"] + cam
    extra = ""
    if cfg["has_classifier"]:
        extra = ("\nThe same weights also load as an image classifier: "
                 "`AutoModelForImageClassification.from_pretrained(..., trust_remote_code=True)` "
                 "(and `pipeline(\"image-classification\", ...)`).\n")
    return ("## Usage\n\nThe model code ships with the weights (`trust_remote_code=True`); it needs `torch`, `timm` "
            "and `transformers`, not the `cam_joint` package.\n\n```python\n" + "\n".join(lines) + "\n```\n" + extra)


def _results(metrics: Mapping, found: dict, dataset_name: str | None) -> str:
    if not metrics:
        return "## Results\n\nNo evaluation results were recorded for this model.\n"
    out = ["## Results", ""]
    where = f" on {_dataset_title(dataset_name)}" if dataset_name else ""
    split = metrics.get("split") if isinstance(metrics.get("split"), str) else None
    if split:
        where += f", `{split}` split"
    if found:
        columns = [(title, _as_percent(c, found[c][1])) for c, title, *_ in METRICS if c in found]
        out += [f"Evaluation{where}. All numbers are percentages (x100), as in Table 2 of the paper: accuracy, "
                "COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D), the mean cosine agreement of the "
                "classifier's and the captioner's Grad-CAM maps, and pointing-game hit rates.", "",
                "| " + " | ".join(t for t, _ in columns) + " |",
                "| " + " | ".join("---:" for _ in columns) + " |",
                "| " + " | ".join(_fmt(v) for _, v in columns) + " |", ""]
    used = {key for key, _ in found.values()}
    others = [(k, v) for k, v in _scalar_items(metrics) if k not in used]
    if others:
        out += ["Other values (as recorded):" if found else f"Evaluation{where} (values as recorded):", "",
                "| key | value |", "| --- | ---: |"]
        out += [f"| {k} | {v:.6g} |" for k, v in others[:40]]
        if len(others) > 40:
            out.append(f"\n({len(others) - 40} more in metrics.json.)")
        out.append("")
    return "\n".join(out)


def _pictures(output_dir: Path) -> str:
    pictures = sorted(p for p in output_dir.rglob("*.png")
                      if "checkpoints" not in (parts := p.relative_to(output_dir).parts) and len(parts) <= 2)
    if not pictures:
        return ""
    out = ["## Grad-CAM pictures", "",
           "What the classifier and the captioner look at (Grad-CAM on the encoder's last feature map):", ""]
    for picture in pictures[:8]:
        rel = picture.relative_to(output_dir).as_posix()
        out.append(f"![{picture.stem}]({rel})")
    if len(pictures) > 8:
        out.append(f"\n({len(pictures) - 8} more PNG files in the repository.)")
    return "\n".join(out) + "\n"


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


def _training(cfg: dict, training_args: dict, dataset_name: str | None) -> str:
    out = ["## Training", ""]
    if not training_args:
        out += ["The training settings were not recorded. The model settings are in `config.json`.", ""]
        return "\n".join(out)
    out += ["Trained with this package's Accelerate training loop (`cam_joint.training`), which runs the same on one "
            "CPU, one GPU or many processes (`torchrun` / `accelerate launch`):", "",
            "```bash", _command(training_args), "```", "",
            "| setting | value |", "| --- | --- |"]
    for key, value in training_args.items():
        if key.startswith("_") or value is None:
            continue
        shown = ", ".join(_public_value(v) for v in value) if isinstance(value, (list, tuple)) else _public_value(value)
        out.append(f"| {key} | `{shown}` |")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------------- upload
def push_to_hub(output_dir, repo_id: str, token: str | None = None, private: bool = False,
                commit_message: str = "Upload CamJoint model (joint classification and captioning, CAM loss)",
                *, endpoint: str | None = None, revision: str | None = None,
                ignore_patterns: Iterable[str] | None = DEFAULT_IGNORE_PATTERNS) -> str:
    """Create `repo_id` (if needed) and upload the saved model folder in one commit; returns the commit URL.

    Uploads every file of `output_dir` (weights, config with `auto_map`, remote-code `.py` files, processor and
    tokenizer files, generation config, README.md, metrics.json, pictures) except `ignore_patterns` (by default the
    training `checkpoints/` folder and Python caches). Raises before any network call if the folder cannot load with
    `trust_remote_code=True` (no config.json, or a code file named by `auto_map` or imported by another is missing).

    Args:
        endpoint: the Hub URL; default `HF_ENDPOINT` as set now, else huggingface_hub's default.
        token: default the `HF_TOKEN` environment variable or the saved login.
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.utils import filter_repo_objects

    folder = Path(output_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"push_to_hub: {folder} is not a folder (save the model there first)")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    files = list(filter_repo_objects(files, ignore_patterns=list(ignore_patterns or [])))
    files = [f for f in files if not (f.startswith(".git/") or f.startswith(".cache/huggingface/"))]
    check_remote_code_folder(folder, files)

    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None
    api = HfApi(endpoint=endpoint, token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in files]
    info = api.create_commit(repo_url.repo_id, operations, commit_message=commit_message, repo_type="model",
                             revision=revision)
    return str(info.commit_url)


def check_remote_code_folder(folder, files: Iterable[str] | None = None) -> list[str]:
    """The `.py` files a saved folder needs to load with `trust_remote_code=True`; raises if one is missing.

    Every `module.Class` named by an `auto_map` (config.json, processor/tokenizer/preprocessor configs) needs
    `module.py`, and every `from .sibling import ...` in those files needs `sibling.py`.
    """
    folder = Path(folder)
    present = set(files) if files is not None else {p.name for p in folder.iterdir() if p.is_file()}
    if "config.json" not in present:
        raise FileNotFoundError(f"{folder} has no config.json: save the model with save_pretrained() first")
    needed: list[str] = []
    for name in _CONFIG_FILES_WITH_AUTO_MAP:
        if name in present:
            for reference in _auto_map_references(json.loads((folder / name).read_text(encoding="utf-8"))):
                if "--" in reference:  # code that lives in another repo ("repo--module.Class")
                    continue
                module = reference.rsplit(".", 1)[0] + ".py"
                if module not in needed:
                    needed.append(module)
    if not needed:
        raise ValueError(f"{folder}/config.json has no auto_map: the pushed model could not load with "
                         "trust_remote_code=True (save it with CamJointModel.save_pretrained)")
    queue = list(needed)
    while queue:
        module = queue.pop()
        if module not in present:
            raise FileNotFoundError(f"{folder} lacks {module}, which the model's remote code needs "
                                    f"(needed: {', '.join(sorted(needed))})")
        tree = ast.parse((folder / module).read_text(encoding="utf-8"), filename=module)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                sibling = node.module.replace(".", "/") + ".py"
                if sibling not in needed:
                    needed.append(sibling)
                    queue.append(sibling)
    return needed


def _auto_map_references(data) -> Iterable[str]:
    if isinstance(data, Mapping):
        for key, value in data.items():
            if key == "auto_map" and isinstance(value, Mapping):
                for reference in value.values():
                    for item in (reference if isinstance(reference, (list, tuple)) else [reference]):
                        if isinstance(item, str):
                            yield item
            elif isinstance(value, Mapping):
                yield from _auto_map_references(value)


__all__ = ["write_model_card", "push_to_hub", "check_remote_code_folder"]
