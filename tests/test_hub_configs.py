"""hub_configs/*.json: the paper's models as CamJointConfig files.

Each file loads with `CamJointConfig.from_json_file`, holds the paper's settings, has no misspelt keys, and builds
a model (with a small timm CNN and tiny sizes, to keep it fast); one real `inception_v4` model checks that the paper's
encoder works end to end.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from cam_joint import CamJointConfig, CamJointModel

HUB_CONFIGS = Path(__file__).resolve().parents[1] / "hub_configs"
DATASETS = {"cub": 200, "flowers": 102}
PAPER_VARIANTS = ("cnn", "lrcn", "intermediate", "cam")
EXPECTED_FILES = sorted(f"{dataset}_{kind}.json" for dataset in DATASETS
                        for kind in (*PAPER_VARIANTS, "semantic", "nic"))


def test_exactly_the_expected_files_exist():
    assert sorted(p.name for p in HUB_CONFIGS.glob("*.json")) == EXPECTED_FILES
    readme = (HUB_CONFIGS / "README.md").read_text()
    assert "cam-joint train --config hub_configs/cub_cam.json" in readme
    for name in EXPECTED_FILES:
        assert name.split("_", 1)[1].removesuffix(".json") in readme


@pytest.mark.parametrize("name", EXPECTED_FILES)
def test_config_holds_the_papers_settings(name):
    dataset, kind = name.removesuffix(".json").split("_", 1)
    raw = json.loads((HUB_CONFIGS / name).read_text())
    config = CamJointConfig.from_json_file(HUB_CONFIGS / name)
    assert config.model_type == "cam_joint" and raw.get("model_type") == "cam_joint"

    # no misspelt key silently becomes an unused attribute
    known = set(CamJointConfig().to_dict()) | {"model_type", "id2label", "label2id"}
    assert set(raw) <= known, f"unknown keys in {name}: {sorted(set(raw) - known)}"

    assert config.encoder_name == "inception_v4"
    assert config.hidden_size == 1024
    assert config.num_labels == DATASETS[dataset]
    assert sorted(config.id2label) == list(range(DATASETS[dataset]))
    names = [config.id2label[i] for i in range(config.num_labels)]
    assert len(set(names)) == len(names) and all(isinstance(n, str) and n for n in names)
    assert config.label2id == {n: i for i, n in enumerate(names)}

    if kind in PAPER_VARIANTS:
        assert config.variant == kind
        assert config.intermediate_size == 1024
        assert config.freeze_encoder is True
        assert config.conditioning == "every_step"
        assert config.uses_cam_loss == (kind == "cam")
    elif kind == "semantic":
        assert config.variant == "semantic"
        assert config.num_concepts == 1000 and config.intermediate_size == 1000
        assert config.intermediate_activation == "sigmoid"
        assert config.conditioning == "init_state"
    else:  # nic
        assert config.variant == "intermediate"
        assert config.intermediate_size == 1024
        assert config.conditioning == "first_step"
        assert config.freeze_encoder is False

    # fields that depend on the data or on the built encoder are not frozen into the files
    assert "vocab_size" not in raw and "encoder_channels" not in raw
    assert config.max_caption_length >= 68  # the longest CUB caption (66 words) plus bos and eos


def test_cub_labels_are_the_datasets_classes(shared_data):
    from cam_joint.data.cub import class_label_name

    lines = [line.split() for line in (shared_data / "cub" / "classes.txt").read_text().splitlines() if line.strip()]
    expected = [class_label_name(folder) for _, folder in sorted(lines, key=lambda parts: int(parts[0]))]
    for kind in (*PAPER_VARIANTS, "semantic", "nic"):
        config = CamJointConfig.from_json_file(HUB_CONFIGS / f"cub_{kind}.json")
        assert [config.id2label[i] for i in range(200)] == expected
    assert expected[0] == "Black_footed_Albatross" and expected[-1] == "Common_Yellowthroat"


def test_flowers_labels_are_the_loaders_names():
    from cam_joint.data.flowers import FLOWERS102_CLASS_NAMES

    for kind in (*PAPER_VARIANTS, "semantic", "nic"):
        config = CamJointConfig.from_json_file(HUB_CONFIGS / f"flowers_{kind}.json")
        assert tuple(config.id2label[i] for i in range(102)) == FLOWERS102_CLASS_NAMES


def _tiny(name: str) -> CamJointConfig:
    """The file's config with a small encoder and tiny sizes: rebuilt through __init__ so that derived fields
    (semantic: intermediate_size = num_concepts) and validation follow."""
    values = CamJointConfig.from_json_file(HUB_CONFIGS / name).to_dict()
    values.update(encoder_name="resnet18", encoder_channels=None, intermediate_size=16, num_concepts=12,
                  hidden_size=16, word_embedding_size=8, vocab_size=30, max_caption_length=12)
    for key in ("model_type", "transformers_version", "architectures"):
        values.pop(key, None)
    return CamJointConfig(**values)


@pytest.mark.parametrize("name", EXPECTED_FILES)
def test_each_config_builds_a_working_model(name):
    dataset, kind = name.removesuffix(".json").split("_", 1)
    config = _tiny(name)
    torch.manual_seed(0)
    model = CamJointModel(config).eval()
    assert config.encoder_channels == 512
    pixel_values = torch.randn(2, 3, 64, 64)
    input_ids = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0]])
    labels = torch.tensor([0, config.num_labels - 1])
    kwargs = {"concept_labels": torch.zeros(2, 12)} if kind == "semantic" else {}
    out = model(pixel_values=pixel_values, input_ids=input_ids, labels=labels, **kwargs)
    num_labels = DATASETS[dataset]
    if kind == "lrcn":
        assert out.logits is None
    else:
        assert out.logits.shape == (2, num_labels)
    if kind == "cnn":
        assert out.caption_logits is None
        with pytest.raises(ValueError, match="no captioner"):
            model.generate(pixel_values=pixel_values)
    else:
        assert out.caption_logits.shape == (2, 4, 30)
        generated = model.generate(pixel_values=pixel_values, max_length=5)
        assert generated.shape[0] == 2
    assert (out.cam_loss is not None) == (kind == "cam")
    assert (out.concept_loss is not None) == (kind == "semantic")
    assert torch.isfinite(out.loss)
    if kind == "semantic":
        assert model.generation_config.num_beams == 3
    if kind == "nic":
        model.train()
        assert model.encoder.training and all(p.requires_grad for p in model.encoder.parameters())
    elif kind in PAPER_VARIANTS:
        model.train()
        assert not model.encoder.training and not any(p.requires_grad for p in model.encoder.parameters())


@pytest.mark.slow
def test_real_inception_v4_from_cub_cam_json():
    """The paper's encoder, at full size, random weights (pretrained=False): forward_features gives the 1536-channel
    map Grad-CAM uses, at timm's 299 px evaluation size, and the whole model runs on it."""
    from cam_joint import CamJointImageProcessor

    start = time.perf_counter()
    config = CamJointConfig.from_json_file(HUB_CONFIGS / "cub_cam.json")
    torch.manual_seed(0)
    model = CamJointModel(config).eval()
    assert config.encoder_channels == 1536
    data_config = model.encoder_data_config()
    assert data_config["input_size"] == (3, 299, 299)
    image_processor = CamJointImageProcessor.from_data_config(data_config)
    from PIL import Image

    pixel_values = image_processor(Image.new("RGB", (320, 300), (120, 80, 40)))["pixel_values"]
    assert pixel_values.shape == (1, 3, 299, 299)
    with torch.no_grad():
        feature_maps = model.get_feature_maps(pixel_values)
        assert feature_maps.shape == (1, 1536, 8, 8)
        out = model(feature_maps=feature_maps, input_ids=torch.tensor([[1, 5, 6, 2]]))
    assert out.logits.shape == (1, 200)
    assert out.image_embeds.shape == (1, 1024)
    assert out.caption_logits.shape == (1, 4, config.vocab_size)
    elapsed = time.perf_counter() - start
    assert elapsed < 60, f"inception_v4 check took {elapsed:.1f} s"
