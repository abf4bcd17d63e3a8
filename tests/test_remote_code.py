"""A saved checkpoint is self-contained remote code.

The files saved next to a checkpoint import only torch / timm / transformers / numpy / PIL / the standard library and
each other through flat `from .x import y`. In a fresh Python where `cam_joint` is NOT importable (blocked in
sys.modules, the repo's src stripped from sys.path, run from a folder outside the repo, HF_HUB_OFFLINE=1),
`AutoModel`, `AutoModelForImageClassification` and `AutoProcessor` load with `trust_remote_code=True` and give exactly
the original model's logits and `generate()` tokens (greedy and beam), the two pipelines work, and saving the loaded
model again writes the code files again.

One subprocess does every check and writes its results to files this test reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cam_joint
from cam_joint import CamJointConfig, CamJointImageProcessor, CamJointModel, CamJointProcessor, build_caption_tokenizer
from cam_joint.modeling_cam_joint import AUTO_MAP

REPO = Path(__file__).resolve().parents[1]
SRC = Path(cam_joint.__file__).resolve().parent
ALLOWED_THIRD_PARTY = {"torch", "timm", "transformers", "numpy", "PIL"}
CAPTIONS = [
    "this bird has a red crown, black wings and a short beak.",
    "a small bird with a yellow belly and grey wings",
    "this blue bird has white wing bars and a long tail",
    "a brown bird with a spotted breast",
]
NUM_IMAGES = 3


# ----------------------------------------------------------------------------------------------- static
def transformers_remote_files() -> set[str]:
    """The .py files Transformers copies next to a checkpoint: each auto_map module and the processors, with the
    sibling files `get_relative_import_files` follows from them."""
    from transformers.dynamic_module_utils import get_relative_import_files

    modules = {f"{entry.split('.')[0]}.py" for entry in AUTO_MAP.values()}
    needed = set()
    for module in modules | {"image_processing_cam_joint.py", "processing_cam_joint.py"}:
        needed |= {Path(f).name for f in get_relative_import_files(str(SRC / module))} | {module}
    return needed


REMOTE_FILES = sorted(transformers_remote_files())


def test_remote_code_imports_only_allowed_modules():
    """`get_imports` is what Transformers' `check_imports` requires installed before loading remote code."""
    from transformers.dynamic_module_utils import get_imports

    assert {"cam_core.py", "losses_cam_joint.py", "modeling_lstm_captioner.py", "outputs_cam_joint.py"} <= set(
        REMOTE_FILES)
    for filename in REMOTE_FILES:
        foreign = set(get_imports(str(SRC / filename))) - ALLOWED_THIRD_PARTY - set(sys.stdlib_module_names)
        assert not foreign, f"{filename} imports {sorted(foreign)}"


def test_the_losses_do_not_import_the_model_that_imports_them():
    """The output type the losses read lives below both (`outputs_cam_joint`): no import circle, not even one
    hidden behind TYPE_CHECKING (Transformers' reader finds those too)."""
    from transformers.dynamic_module_utils import get_relative_imports

    assert "modeling_cam_joint" not in get_relative_imports(str(SRC / "losses_cam_joint.py"))
    assert "losses_cam_joint" in get_relative_imports(str(SRC / "modeling_cam_joint.py"))


# ------------------------------------------------------------------------------------------ round trip
# Prepended to every child script: a Python where `import cam_joint` raises ImportError and the repo's src is not on
# sys.path, so that only the checkpoint's own code files can define the classes.
WITHOUT_CAM_JOINT = textwrap.dedent(r'''
    import os, sys
    sys.modules["cam_joint"] = None  # `import cam_joint` now raises ImportError
    _HIDDEN = os.path.realpath(os.environ["CAM_JOINT_HIDDEN_SRC"])
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.getcwd()) != _HIDDEN]
''')


def run_without_cam_joint(script: str, args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run `script` (Python source) in a fresh process where cam_joint is not importable, offline, from `cwd`."""
    path = cwd / "child.py"
    path.write_text(WITHOUT_CAM_JOINT + script)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", "TRANSFORMERS_VERBOSITY": "error",
           "TOKENIZERS_PARALLELISM": "false", "CAM_JOINT_HIDDEN_SRC": str(SRC.parent), **env}
    return subprocess.run([sys.executable, str(path), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


CHILD = textwrap.dedent(r'''
    import json, os, sys
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoModelForImageClassification, AutoProcessor, pipeline

    ckpt, out_dir = sys.argv[1], sys.argv[2]
    results, tensors = {}, {}
    try:
        import cam_joint  # noqa: F401
        results["cam_joint_importable"] = True
    except ImportError:
        results["cam_joint_importable"] = False
    images = [Image.open(os.path.join(ckpt, "..", f"image_{i}.png")).convert("RGB") for i in range(int(sys.argv[4]))]

    processor = AutoProcessor.from_pretrained(ckpt, trust_remote_code=True)
    model = AutoModel.from_pretrained(ckpt, trust_remote_code=True)
    classifier = AutoModelForImageClassification.from_pretrained(ckpt, trust_remote_code=True)
    results["classes"] = {name: type(obj).__module__ + "." + type(obj).__name__ for name, obj in
                          (("processor", processor), ("image_processor", processor.image_processor),
                           ("model", model), ("classifier", classifier))}
    inputs = processor(images=images, text=[""] * len(images))
    tensors["pixel_values"], tensors["input_ids"] = inputs["pixel_values"], inputs["input_ids"]
    tensors["encoded_captions"] = processor.encode_captions(json.loads(sys.argv[3]))
    with torch.no_grad():
        tensors["logits"] = model(pixel_values=inputs["pixel_values"]).logits
        tensors["classifier_logits"] = classifier(pixel_values=inputs["pixel_values"]).logits
        tensors["greedy"] = model.generate(**inputs)
        tensors["beam"] = model.generate(**inputs, num_beams=3)
    results["greedy_text"] = processor.batch_decode(tensors["greedy"], skip_special_tokens=True)

    classify = pipeline("image-classification", model=ckpt, trust_remote_code=True)
    results["classification"] = classify(images[0], top_k=5)
    caption = pipeline("image-text-to-text", model=ckpt, trust_remote_code=True)
    results["caption"] = caption(images=images[0], text="")

    # saving a loaded model again writes the code files again, and that copy loads too
    resaved = os.path.join(out_dir, "resaved")
    model.save_pretrained(resaved)
    processor.save_pretrained(resaved)
    results["resaved_files"] = sorted(os.listdir(resaved))
    with open(os.path.join(resaved, "config.json")) as f:
        results["resaved_auto_map"] = json.load(f).get("auto_map", {})
    reloaded = AutoModelForImageClassification.from_pretrained(resaved, trust_remote_code=True)
    reprocessor = AutoProcessor.from_pretrained(resaved, trust_remote_code=True)
    with torch.no_grad():
        tensors["resaved_logits"] = reloaded(**reprocessor(images=images)).logits
    results["cam_joint_modules_loaded"] = sorted(k for k, v in sys.modules.items()
                                                 if (k == "cam_joint" or k.startswith("cam_joint.")) and v is not None)
    torch.save(tensors, os.path.join(out_dir, "tensors.pt"))
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f)
''')


def _tiny_cub_cam_config() -> CamJointConfig:
    values = CamJointConfig.from_json_file(REPO / "hub_configs" / "cub_cam.json").to_dict()
    # output_stride does not change any weight's shape: only the saved encoder_kwargs make the fresh process rebuild
    # the same (dilated) encoder, and the logits below would differ without them.
    values.update(encoder_name="resnet18", encoder_channels=None, intermediate_size=32, hidden_size=32,
                  word_embedding_size=16, max_caption_length=12, encoder_kwargs={"output_stride": 16})
    for key in ("model_type", "transformers_version", "architectures"):
        values.pop(key, None)
    return CamJointConfig(**values)


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote_code")
    ckpt, out_dir = root / "ckpt", root / "out"
    out_dir.mkdir()

    tokenizer = build_caption_tokenizer(CAPTIONS)
    config = _tiny_cub_cam_config()
    config.vocab_size = len(tokenizer)
    torch.manual_seed(0)
    model = CamJointModel(config)
    with torch.no_grad():  # larger head weights: captions that differ per image and between greedy and beam search
        g = torch.Generator().manual_seed(1)
        for name, parameter in model.named_parameters():
            if not name.startswith("encoder.") and parameter.ndim == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=g) * 2.0 / parameter.shape[1] ** 0.5)
    model.eval()
    processor = CamJointProcessor(CamJointImageProcessor.from_data_config(model.encoder_data_config()), tokenizer)
    model.save_pretrained(ckpt)
    processor.save_pretrained(ckpt)

    rng = np.random.default_rng(0)
    images = []
    for i in range(NUM_IMAGES):  # blocky colour patterns, one size per image
        blocks = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        image = Image.fromarray(np.kron(blocks, np.ones((14 + 2 * i, 16, 1), np.uint8)))
        image.save(root / f"image_{i}.png")
        images.append(Image.open(root / f"image_{i}.png").convert("RGB"))

    inputs = processor(images=images, text=[""] * NUM_IMAGES)
    with torch.no_grad():
        expected = {
            "pixel_values": inputs["pixel_values"],
            "input_ids": inputs["input_ids"],
            "encoded_captions": processor.encode_captions(CAPTIONS),
            "logits": model(pixel_values=inputs["pixel_values"]).logits,
            "greedy": model.generate(**inputs),
            "beam": model.generate(**inputs, num_beams=3),
        }
    expected["greedy_text"] = processor.batch_decode(expected["greedy"], skip_special_tokens=True)
    single = processor(images=images[0], text="")
    expected["caption_0"] = processor.decode(model.generate(**single)[0], skip_special_tokens=True)

    proc = run_without_cam_joint(CHILD, [str(ckpt), str(out_dir), json.dumps(CAPTIONS), str(NUM_IMAGES)], root,
                                 HF_HOME=str(root / "hf_home"))
    assert proc.returncode == 0, f"child failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    results = json.loads((out_dir / "results.json").read_text())
    tensors = torch.load(out_dir / "tensors.pt")
    return {"config": config, "ckpt": ckpt, "expected": expected, "results": results, "tensors": tensors}


def test_saved_folder_holds_the_code_files(round_trip):
    files = {p.name for p in round_trip["ckpt"].iterdir()}
    assert {name for name in files if name.endswith(".py")} == set(REMOTE_FILES)
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= files
    auto_map = json.loads((round_trip["ckpt"] / "config.json").read_text())["auto_map"]
    assert auto_map["AutoConfig"] == "configuration_cam_joint.CamJointConfig"
    assert auto_map["AutoModel"] == "modeling_cam_joint.CamJointModel"
    assert auto_map["AutoModelForImageClassification"] == "modeling_cam_joint.CamJointForImageClassification"
    processor_auto_map = json.loads((round_trip["ckpt"] / "processor_config.json").read_text())
    assert "processing_cam_joint.CamJointProcessor" in json.dumps(processor_auto_map)


def test_child_could_not_import_cam_joint(round_trip):
    results = round_trip["results"]
    assert results["cam_joint_importable"] is False
    assert results["cam_joint_modules_loaded"] == []
    for name, qualified in results["classes"].items():
        assert qualified.startswith("transformers_modules."), (name, qualified)
    assert results["classes"]["model"].endswith("modeling_cam_joint.CamJointModel")
    assert results["classes"]["classifier"].endswith("modeling_cam_joint.CamJointForImageClassification")
    assert results["classes"]["processor"].endswith("processing_cam_joint.CamJointProcessor")


def test_remote_processor_gives_identical_inputs(round_trip):
    expected, got = round_trip["expected"], round_trip["tensors"]
    for name in ("pixel_values", "input_ids", "encoded_captions"):
        assert torch.equal(got[name], expected[name]), name


def test_remote_models_give_identical_logits(round_trip):
    expected, got = round_trip["expected"], round_trip["tensors"]
    assert expected["logits"].shape == (NUM_IMAGES, 200)
    assert torch.equal(got["logits"], expected["logits"])
    assert torch.equal(got["classifier_logits"], expected["logits"])
    assert torch.equal(got["resaved_logits"], expected["logits"])


def test_remote_generate_gives_identical_tokens(round_trip):
    expected, got = round_trip["expected"], round_trip["tensors"]
    for name in ("greedy", "beam"):
        assert got[name].tolist() == expected[name].tolist(), name
        assert (expected[name][:, 0] == round_trip["config"].bos_token_id).all()
    assert round_trip["results"]["greedy_text"] == expected["greedy_text"]
    assert all(text.strip() for text in expected["greedy_text"])
    # the check means something: captions differ per image, and beam search differs from greedy
    assert len({tuple(row) for row in expected["greedy"].tolist()}) > 1
    assert expected["beam"].tolist() != expected["greedy"].tolist()


def test_image_classification_pipeline_returns_label_names(round_trip):
    config, expected = round_trip["config"], round_trip["expected"]
    predictions = round_trip["results"]["classification"]
    probabilities = expected["logits"][0].softmax(-1)
    top = probabilities.topk(5)
    assert [p["label"] for p in predictions] == [config.id2label[i] for i in top.indices.tolist()]
    assert predictions[0]["label"] in {"Black_footed_Albatross", *config.id2label.values()}
    assert not any(p["label"].startswith("LABEL_") for p in predictions)
    for prediction, score in zip(predictions, top.values.tolist()):
        assert prediction["score"] == pytest.approx(score, rel=1e-4, abs=1e-6)


def test_image_text_to_text_pipeline_returns_a_caption(round_trip):
    caption = round_trip["results"]["caption"]
    caption = caption[0] if isinstance(caption, list) else caption
    assert caption["generated_text"] == round_trip["expected"]["caption_0"]
    assert caption["generated_text"].strip()


def test_resaving_a_loaded_model_writes_the_code_files_again(round_trip):
    results = round_trip["results"]
    assert set(REMOTE_FILES) <= set(results["resaved_files"])
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(results["resaved_files"])
    auto_map = results["resaved_auto_map"]
    assert {"AutoConfig", "AutoModel", "AutoModelForImageClassification"} <= set(auto_map)


GRAD_CAM_CHILD = textwrap.dedent(r'''
    import json
    import numpy as np, torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()

    class Logits(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(pixel_values=x).logits

    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    cam = GradCAM(model=Logits(model), target_layers=[model.feature_map])
    targets = [ClassifierOutputTarget(1), ClassifierOutputTarget(2)]
    cam(input_tensor=pixels, targets=targets)
    raw = cam.get_cam_image(pixels, model.feature_map, targets, cam.activations_and_grads.activations[0].numpy(),
                            cam.activations_and_grads.gradients[0].numpy(), False)
    ours = model.grad_cam(pixels, labels=torch.tensor([1, 2])).detach().numpy()
    print(json.dumps({"frozen": bool(model.config.freeze_encoder),
                      "max_abs_diff": float(np.abs(np.maximum(raw, 0) - ours).max()),
                      "reference_max": float(np.maximum(raw, 0).max())}))
''')


def test_grad_cam_libraries_hook_feature_map_of_a_frozen_encoder_in_a_fresh_process(tmp_path):
    """`model.feature_map` is the layer to hook whatever freeze_encoder says: pytorch-grad-cam on a frozen-encoder
    checkpoint loaded with trust_remote_code (cam_joint not importable) gives our Grad-CAM maps."""
    torch.manual_seed(0)
    config = CamJointConfig(encoder_name="resnet18", freeze_encoder=True, vocab_size=12, num_labels=4,
                            intermediate_size=16, hidden_size=8, word_embedding_size=8)
    model = CamJointModel(config)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "ckpt")
    done = run_without_cam_joint(GRAD_CAM_CHILD, [str(tmp_path / "ckpt")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["frozen"] and result["reference_max"] > 0
    assert result["max_abs_diff"] <= 1e-5 * result["reference_max"]
