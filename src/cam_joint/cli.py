"""`cam-joint` command line: one sub-command per module, each module owns its own arguments.

Each entry maps a sub-command to `module:function`; the module must define `add_arguments(parser)` and the function
takes the parsed `argparse.Namespace`. Modules are imported only when their command runs, so `cam-joint --help`
stays fast and a missing optional dependency only breaks the command that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# What a user's input (a path, a file, an option, a config) can be wrong with; anything else is a bug and keeps its
# traceback.
USER_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError, OSError)

COMMANDS = {
    "prepare-data": ("cam_joint.data.prepare", "main", "Build a dataset from its original layout and save it."),
    "train": ("cam_joint.training", "main", "Train a model (Accelerate loop; synthetic data by default)."),
    "evaluate": ("cam_joint.evaluation_cli", "main",
                 "Evaluate a saved model: accuracy, caption metrics, CAM agreement."),
    "caption": ("cam_joint.inference_cli", "caption_main", "Caption images and print their top-5 classes."),
    "explain": ("cam_joint.inference_cli", "explain_main", "Draw the classifier's and captioner's CAMs for an image."),
    "demo": ("cam_joint.demo", "main", "Start a demo page (Gradio): classes, caption and CAMs of an uploaded image."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cam-joint", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, _, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module_name)
        # Arguments are added lazily in main() for the chosen command only.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints help / error and exits
        return 2
    module_name, func_name, help_text = COMMANDS[argv[0]]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=f"cam-joint {argv[0]}", description=help_text)
    module.add_arguments(sub) if func_name == "main" else getattr(module, f"add_{func_name}_arguments")(sub)
    args = sub.parse_args(argv[1:])
    try:
        result = getattr(module, func_name)(args)
    except USER_ERRORS as error:
        # A missing file, a config that does not fit its weights, a bad image or option: one line naming it, not a
        # traceback (CAM_JOINT_DEBUG=1 shows the traceback).
        if os.environ.get("CAM_JOINT_DEBUG"):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
