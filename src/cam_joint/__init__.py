"""cam_joint: joint fine-grained classification and captioning with a Grad-CAM disagreement loss (ETRI 2020).

The names below load on first use (`from cam_joint import CamJointModel` imports torch, timm and transformers then),
so `import cam_joint` and `cam-joint --help` cost next to nothing. The first such use also registers the classes with
Transformers' Auto classes, so that in this process `AutoModel.from_pretrained(folder)` resolves a CamJoint folder
without `trust_remote_code` (`register_auto_classes()` does it explicitly).
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS = {
    "CamJointConfig": "configuration_cam_joint",
    "CamJointModel": "modeling_cam_joint",
    "CamJointForImageClassification": "modeling_cam_joint",
    "CamJointVisionModel": "modeling_cam_joint",
    "CamJointOutput": "modeling_cam_joint",
    "CamJointVisionOutput": "modeling_cam_joint",
    "CamJointLSTMCaptioner": "modeling_lstm_captioner",
    "CamJointImageProcessor": "image_processing_cam_joint",
    "CamJointProcessor": "processing_cam_joint",
    "CamJointCollator": "collator",
    "build_caption_tokenizer": "tokenization",
    "caption_words": "tokenization",
    "cam_from_pooled_gradient": "cam_core",
    "disagreement_loss": "cam_core",
    "map_cosine": "cam_core",
    "map_pearson": "cam_core",
}
_registered = False


def register_auto_classes() -> None:
    """Register CamJoint with AutoConfig, AutoModel, AutoModelForImageClassification, AutoModelForImageTextToText,
    AutoImageProcessor and AutoProcessor (in this process; saved folders carry `auto_map` for everyone else)."""
    global _registered
    if _registered:
        return
    _registered = True
    from transformers import (AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification,
                              AutoModelForImageTextToText, AutoProcessor)

    from .configuration_cam_joint import CamJointConfig
    from .image_processing_cam_joint import CamJointImageProcessor
    from .modeling_cam_joint import CamJointForImageClassification, CamJointModel
    from .processing_cam_joint import CamJointProcessor

    AutoConfig.register("cam_joint", CamJointConfig, exist_ok=True)
    AutoModel.register(CamJointConfig, CamJointModel, exist_ok=True)
    AutoModelForImageClassification.register(CamJointConfig, CamJointForImageClassification, exist_ok=True)
    AutoModelForImageTextToText.register(CamJointConfig, CamJointModel, exist_ok=True)
    AutoImageProcessor.register(CamJointConfig, image_processor_classes={"pil": CamJointImageProcessor,
                                                                  "torchvision": CamJointImageProcessor},
                                exist_ok=True)
    AutoProcessor.register(CamJointConfig, CamJointProcessor, exist_ok=True)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    register_auto_classes()
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [*_EXPORTS, "register_auto_classes"]
