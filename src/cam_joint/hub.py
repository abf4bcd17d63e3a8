"""Sharing a trained CamJoint model on the Hugging Face Hub: the upload and its remote-code check (the card is
`model_card.py`, the Space files `hub_space.py`; their functions are importable from here too).

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
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.utils import filter_repo_objects
from transformers.dynamic_module_utils import get_imports, get_relative_import_files, get_relative_imports

from .hub_space import check_space_folder, space_metadata, write_space_app  # noqa: F401  (public here too)
from .model_card import find_metrics, write_eval_results, write_model_card  # noqa: F401  (public here too)

DEFAULT_IGNORE_PATTERNS = ("checkpoints/*", "*/checkpoints/*", "__pycache__/*", "*/__pycache__/*", "*.pyc",
                           ".ipynb_checkpoints/*", "*.lock", "*.tmp")
# What the remote code may import besides the standard library: the libraries a reader who loads the repo with
# `trust_remote_code=True` has anyway (Transformers and what its image and tokenizer stack pulls in, plus timm).
REMOTE_CODE_PACKAGES = frozenset({"torch", "timm", "transformers", "tokenizers", "safetensors", "huggingface_hub",
                                  "numpy", "PIL"})
_CONFIG_FILES_WITH_AUTO_MAP = ("config.json", "processor_config.json", "preprocessor_config.json",
                               "tokenizer_config.json", "image_processor_config.json")


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
           "write_space_app", "check_space_folder", "space_metadata",
           "DEFAULT_IGNORE_PATTERNS", "REMOTE_CODE_PACKAGES"]

