"""A saved CamJoint folder as a Hugging Face Space: `app.py` (the demo page of `cam_joint.demo`), `requirements.txt`,
and the README metadata a Gradio Space needs.

    write_space_app(output_dir)          # or write_model_card(..., space=True)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from huggingface_hub import ModelCard

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


