"""Hub integration without the network: the model card, its evaluation results, the remote-code check, and a push
to / load from a loopback fake Hub.

`tests/fake_hub.py` answers the Hub's HTTP protocol for `create_repo` + `upload_folder` and for what
`from_pretrained` reads, on 127.0.0.1. The `pushed` fixture saves a tiny model with its processor and model card,
pushes the folder with `cam_joint.hub.push_to_hub` (HF_ENDPOINT + a dummy token), then a fresh Python in which
`cam_joint` is NOT importable loads the repo from that endpoint with `AutoModel/AutoProcessor.from_pretrained(...,
trust_remote_code=True)` and must caption a fixed image with exactly the tokens the original model produces. It also
runs the usage snippet of the pushed README.md.

What is asserted is what a Hub user sees (the repo's files and commits, the card parsed back by huggingface_hub's own
`ModelCard` / `metadata_load` / `parse_eval_result_entries`), never which requests huggingface_hub makes.

conftest.py sets HF_HUB_OFFLINE=1 for this process and huggingface_hub read it at import: the push patches
`huggingface_hub.constants.HF_HUB_OFFLINE` (and HF_HUB_DISABLE_XET) for its duration; the child process gets
HF_HUB_OFFLINE=0 in its environment.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import ModelCard, metadata_load, parse_eval_result_entries
from PIL import Image

import cam_joint
import cam_joint.model_card as card_module
from cam_joint import CamJointConfig, CamJointImageProcessor, CamJointModel, CamJointProcessor, build_caption_tokenizer
from cam_joint.hub import check_remote_code_folder, push_to_hub, write_eval_results, write_model_card
from cam_joint.metrics.registry import METRICS as REGISTRY
from cam_joint.metrics.registry import Metric, MetricRegistry, localisation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_hub import FakeHub, front_matter  # noqa: E402

SRC = Path(cam_joint.__file__).resolve().parent
REPO_ID = "org/cam-joint-test"
TOKEN = "dummy"
UNREACHABLE = "http://127.0.0.1:9"  # a push that gets this far would fail with a connection error, not ours
CAPTIONS = ["this bird has a red crown, black wings and a short beak.",
            "a small bird with a yellow belly and grey wings",
            "this blue bird has white wing bars and a long tail",
            "a brown bird with a spotted breast and a pointed bill"]
METRICS = {"top1": 0.8013, "top5": 0.9502, "Bleu_1": 0.7012, "Bleu_2": 0.5523, "Bleu_3": 0.4102, "Bleu_4": 0.3001,
           "METEOR": 0.2634, "ROUGE_L": 0.5478, "CIDEr": 0.7215, "cam_agreement": 0.4321,
           "pointing_game_classifier": 0.61, "pointing_game_captioner": 0.55, "num_images": 4, "split": "test"}
PERCENT = {"top1": 80.13, "top5": 95.02, "Bleu_1": 70.12, "Bleu_2": 55.23, "Bleu_3": 41.02, "Bleu_4": 30.01,
           "METEOR": 26.34, "ROUGE_L": 54.78, "CIDEr": 72.15, "cam_agreement": 43.21,
           "pointing_game_classifier": 61.0, "pointing_game_captioner": 55.0}
TRAINING_ARGS = {"config": "hub_configs/cub_cam.json", "variant": "cam", "dataset": "cub",
                 "data_dir": "/home/someone/data/CUB_200_2011", "freeze_encoder": True, "epochs": 30,
                 "batch_size": 32, "optimizer": "sgd", "lr": 0.1, "no_caption_metrics": False, "resume": None,
                 "push_to_hub": REPO_ID}
REQUIRED_FILES = {"model.safetensors", "config.json", "modeling_cam_joint.py", "cam_core.py", "tokenizer.json",
                  "README.md", ".eval_results/cub.yaml", "configuration_cam_joint.py", "processing_cam_joint.py",
                  "image_processing_cam_joint.py", "processor_config.json", "generation_config.json", "metrics.json",
                  "cam_example.png"}

CHILD = textwrap.dedent(r'''
    import json, os, sys
    sys.modules["cam_joint"] = None  # `import cam_joint` raises ImportError: only the pushed remote code can load
    SRC = os.path.realpath(sys.argv[3])
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.getcwd()) != SRC]
    repo_id, out_path, image_path = sys.argv[1], sys.argv[2], sys.argv[4]
    results = {}
    try:
        import cam_joint  # noqa: F401
        results["cam_joint_importable"] = True
    except ImportError:
        results["cam_joint_importable"] = False

    import torch
    from PIL import Image
    import huggingface_hub.constants as hub_constants
    from huggingface_hub import hf_hub_download
    from transformers import AutoModel, AutoProcessor

    results["offline"], results["endpoint"] = hub_constants.HF_HUB_OFFLINE, hub_constants.ENDPOINT
    model = AutoModel.from_pretrained(repo_id, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(repo_id, trust_remote_code=True)
    results["classes"] = {name: type(obj).__module__ + "." + type(obj).__name__
                          for name, obj in (("model", model), ("processor", processor),
                                            ("image_processor", processor.image_processor))}
    image = Image.open(image_path).convert("RGB")
    inputs = processor(images=image, text="")
    with torch.no_grad():
        ids = model.generate(**inputs)
    results["tokens"] = ids[0].tolist()
    results["caption"] = processor.decode(ids[0], skip_special_tokens=True)
    results["cam_joint_modules"] = sorted(k for k, v in sys.modules.items()
                                          if (k == "cam_joint" or k.startswith("cam_joint.")) and v is not None)

    # The model card's usage snippet, as a reader would run it (its image path swapped for ours).
    readme = open(hf_hub_download(repo_id, "README.md"), encoding="utf-8").read()
    snippet = readme.split("```python\n", 1)[1].split("```", 1)[0].replace('"bird.jpg"', repr(image_path))
    namespace = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    results["readme_tokens"] = namespace["caption_ids"][0].tolist()
    results["readme_cam_shapes"] = [list(namespace[k].shape) for k in ("cam_class", "cam_caption")]
    with open(out_path, "w") as f:
        json.dump(results, f)
''')


def _tiny_model_and_processor():
    tokenizer = build_caption_tokenizer(CAPTIONS)
    config = CamJointConfig(encoder_name="resnet18", vocab_size=len(tokenizer), num_labels=4, intermediate_size=32,
                            hidden_size=32, word_embedding_size=16, max_caption_length=16,
                            id2label={0: "albatross", 1: "bunting", 2: "cardinal", 3: "sparrow"},
                            label2id={"albatross": 0, "bunting": 1, "cardinal": 2, "sparrow": 3})
    torch.manual_seed(0)
    model = CamJointModel(config)
    with torch.no_grad():  # larger head weights: a caption of several different words, not <eos> at once
        g = torch.Generator().manual_seed(3)
        for name, parameter in model.named_parameters():
            if not name.startswith("encoder.") and parameter.ndim == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=g) * 0.3)
    model.eval()
    image_processor = CamJointImageProcessor.from_data_config(
        {**model.encoder_data_config(), "input_size": (3, 64, 64), "crop_pct": 1.0})
    return model, CamJointProcessor(image_processor, tokenizer)


def _fixed_image(path: Path) -> Path:
    blocks = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    Image.fromarray(np.kron(blocks, np.ones((12, 10, 1), np.uint8))).save(path)
    return path


def _online(monkeypatch, hub: FakeHub) -> None:
    """This process against the fake Hub: env for anything that reads it now, constants for what was read at
    import (conftest's HF_HUB_OFFLINE=1; hf_xet is installed and must not be used)."""
    import huggingface_hub.constants as hub_constants

    for key, value in {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
                       "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "HF_HUB_DISABLE_XET", True)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved tiny model and processor (weights, config with auto_map, the remote-code files), read-only."""
    folder = tmp_path_factory.mktemp("saved") / "model"
    model, processor = _tiny_model_and_processor()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, model, processor


@pytest.fixture
def code_folder(saved, tmp_path):
    """A copy of the saved folder's config and code files (no weights), for the remote-code checks to break."""
    folder = tmp_path / "code"
    folder.mkdir()
    for path in saved[0].iterdir():
        if path.suffix in (".py", ".json"):
            shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def pushed(saved, tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    folder, image_path = root / "cam-joint-test", _fixed_image(root / "bird.png")
    shutil.copytree(saved[0], folder)
    model, processor = saved[1], saved[2]
    (folder / "metrics.json").write_text(json.dumps(METRICS))
    Image.open(image_path).save(folder / "cam_example.png")  # stands in for the Grad-CAM pictures
    (folder / "checkpoints" / "step_1").mkdir(parents=True)
    (folder / "checkpoints" / "step_1" / "optimizer.bin").write_bytes(b"training state, not for the Hub")
    write_model_card(folder, model.config, METRICS, training_args=TRAINING_ARGS, dataset_name="cub", repo_id=REPO_ID)

    inputs = processor(images=Image.open(image_path).convert("RGB"), text="")
    with torch.no_grad():
        tokens = model.generate(**inputs)[0].tolist()

    with FakeHub(token=TOKEN) as hub, pytest.MonkeyPatch.context() as monkeypatch:
        _online(monkeypatch, hub)
        commit_url = push_to_hub(folder, REPO_ID, token=TOKEN)
        commits_after_push = len(hub.repo(REPO_ID).commits)
        again_url = push_to_hub(folder, REPO_ID, token=TOKEN)  # nothing changed: no new commit

        from huggingface_hub import HfApi
        listed = HfApi(endpoint=hub.url, token=TOKEN).list_repo_files(REPO_ID)

        script = root / "child.py"
        script.write_text(CHILD)
        env = {k: v for k, v in os.environ.items() if k not in ("TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")}
        env.update({"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
                    "HF_HOME": str(root / "hf_home"), "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONPATH": "",
                    "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false",
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
                    "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
        out = root / "child.json"
        proc = subprocess.run([sys.executable, str(script), REPO_ID, str(out), str(SRC.parent), str(image_path)],
                              cwd=root, env=env, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, f"child failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        return {"folder": folder, "hub": hub, "commit_url": commit_url, "again_url": again_url, "listed": listed,
                "commits_after_push": commits_after_push, "commits": len(hub.repo(REPO_ID).commits),
                "files": hub.files(REPO_ID), "tokens": tokens, "child": json.loads(out.read_text()),
                "caption": processor.decode(tokens, skip_special_tokens=True)}


# ------------------------------------------------------------------------------------------------ push
def test_push_uploads_the_saved_folder_in_one_commit(pushed):
    files = pushed["files"]
    assert REQUIRED_FILES <= set(pushed["listed"]), sorted(REQUIRED_FILES - set(pushed["listed"]))
    assert not any(name.startswith("checkpoints/") for name in files)  # training state stays local
    folder = pushed["folder"]
    for name, content in files.items():
        if name != ".gitattributes":
            assert content == (folder / name).read_bytes(), name
    assert json.loads(files["config.json"])["auto_map"]["AutoModel"] == "modeling_cam_joint.CamJointModel"
    sha = pushed["commit_url"].rsplit("/", 1)[-1]
    assert pushed["commit_url"] == f"{pushed['hub'].url}/{REPO_ID}/commit/{sha}"
    assert pushed["hub"].repo(REPO_ID).commits[1].sha == sha
    assert pushed["commits_after_push"] == 2  # the repo's first commit (.gitattributes), then the whole folder
    assert pushed["again_url"] == pushed["commit_url"] and pushed["commits"] == 2  # unchanged: no empty commit


def test_fresh_process_loads_the_pushed_repo_and_reproduces_the_caption(pushed):
    child = pushed["child"]
    assert child["cam_joint_importable"] is False and child["cam_joint_modules"] == []
    assert child["offline"] is False and child["endpoint"] == pushed["hub"].url
    for name, qualname in child["classes"].items():
        assert qualname.startswith("transformers_modules."), (name, qualname)
    assert child["classes"]["model"].endswith("modeling_cam_joint.CamJointModel")
    assert child["classes"]["processor"].endswith("processing_cam_joint.CamJointProcessor")
    assert len(set(pushed["caption"].split())) >= 2, f"degenerate caption {pushed['caption']!r}"
    assert child["tokens"] == pushed["tokens"], (child["caption"], pushed["caption"])
    assert child["caption"] == pushed["caption"]
    assert child["readme_tokens"] == pushed["tokens"]  # the model card's usage code runs and agrees
    assert child["readme_cam_shapes"] == [[1, 2, 2], [1, 2, 2]]  # 64x64 input, resnet18 stride 32
    downloads = [p for m, p in pushed["hub"].requests if m == "GET" and "/resolve/" in p]
    assert any(p.endswith("/cam_core.py") for p in downloads)  # a sibling module, fetched as remote code


def test_push_creates_a_private_repo(code_folder, monkeypatch):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    with FakeHub(token=TOKEN) as hub:
        _online(monkeypatch, hub)
        url = push_to_hub(code_folder, "org/private-one", token=TOKEN, private=True, commit_message="code only")
        info = HfApi(endpoint=hub.url, token=TOKEN).model_info("org/private-one")
        assert info.private is True and url.endswith(f"/commit/{info.sha}")
        assert "custom_code" in info.tags  # what the Hub derives from config.json's auto_map
        assert hub.repo("org/private-one").head.title == "code only"
        with pytest.raises(RepositoryNotFoundError):
            HfApi(endpoint=hub.url, token=TOKEN).model_info("org/missing")


# ------------------------------------------------------------------------------------------- model card
def test_model_card_parses_back_with_huggingface_hub(pushed):
    local = pushed["folder"] / "README.md"
    assert pushed["files"]["README.md"] == local.read_bytes()
    card = ModelCard.load(local)
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "image-text-to-text"
    assert {"cam-joint", "image-classification", "image-captioning", "grad-cam", "variant-cam",
            "custom_code"} <= set(card.data.tags)
    assert {"accuracy", "bleu", "meteor", "rouge", "cider"} <= set(card.data.metrics)
    by_name = {r.metric_name: r for r in card.data.eval_results}
    assert {name: r.metric_value for name, r in by_name.items()} == {
        "Top-1": 80.13, "Top-5": 95.02, "BLEU-1": 70.12, "BLEU-2": 55.23, "BLEU-3": 41.02, "BLEU-4": 30.01,
        "METEOR": 26.34, "ROUGE-L": 54.78, "CIDEr": 72.15}  # localisation metrics have no Hub task
    assert by_name["Top-1"].task_type == "image-classification" and by_name["CIDEr"].task_type == "image-to-text"
    assert {(r.dataset_type, r.dataset_split) for r in by_name.values()} == {("cub", "test")}
    assert "CUB-200-2011" in by_name["BLEU-4"].dataset_name and by_name["BLEU-4"].metric_type == "bleu"
    meta = metadata_load(local)  # the raw YAML, as the Hub reads it
    assert meta["model-index"][0]["name"] == card.data.model_name == "CamJoint (cam, resnet18) on cub"
    assert "eval_results" not in meta and "model_name" not in meta


def test_model_card_text_results_and_training(pushed):
    text = pushed["files"]["README.md"].decode()
    assert "ETRI Journal" in text and "Yoon" in text and "`cam`" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| Top-1 |"))
    row = lines[lines.index(header) + 2]
    columns = [c.strip() for c in header.strip("|").split("|")]
    values = dict(zip(columns, (c.strip() for c in row.strip("|").split("|"))))
    assert values == {"Top-1": "80.13", "Top-5": "95.02", "BLEU-1": "70.12", "BLEU-2": "55.23", "BLEU-3": "41.02",
                      "BLEU-4": "30.01", "METEOR": "26.34", "ROUGE-L": "54.78", "CIDEr": "72.15",
                      "CAM agreement": "43.21", "Pointing game (classifier)": "61.00",
                      "Pointing game (captioner)": "55.00"}
    assert "| num_images | 4 |" in text and "`test` split" in text
    assert "cam-joint train --config hub_configs/cub_cam.json --variant cam --dataset cub" in text
    assert "--freeze-encoder" in text and "/home/someone" not in text and "--resume" not in text
    assert "trust_remote_code=True" in text and "![cam_example](cam_example.png)" in text
    assert text.rstrip().endswith("```") and "doi     = {10.4218/etrij.2018-0621}" in text


def test_eval_results_files_hold_the_same_numbers_as_the_model_index(pushed):
    raw = yaml.safe_load(pushed["files"][".eval_results/cub.yaml"])
    assert isinstance(raw, list) and all(set(item) <= {"dataset", "value", "notes"} for item in raw)
    entries = parse_eval_result_entries(raw)  # huggingface_hub's reader of the format
    assert {e.task_id: e.value for e in entries} == PERCENT
    assert {e.dataset_id for e in entries} == {"cub"}
    notes = {e.task_id: e.notes for e in entries}
    assert notes["Bleu_4"] == "BLEU-4 in %, test split"
    card = ModelCard.load(pushed["folder"] / "README.md")
    model_index = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert all(model_index[REGISTRY[e.task_id].title] == e.value for e in entries if REGISTRY[e.task_id].task_type)


def test_eval_results_skip_non_finite_values_and_leave_no_stale_file(tmp_path):
    path = write_eval_results(tmp_path, {"eval_accuracy": 0.5, "CIDEr": float("nan"), "loss": 1.0}, "org/birds")
    assert path == tmp_path / ".eval_results" / "org--birds.yaml"
    entries = parse_eval_result_entries(yaml.safe_load(path.read_text()))
    assert [(e.dataset_id, e.task_id, e.value) for e in entries] == [("org/birds", "top1", 50.0)]
    assert write_eval_results(tmp_path, {"CIDEr": math.inf}, "org/birds") is None and not path.exists()


@pytest.mark.parametrize("variant", ["cnn", "lrcn", "semantic"])
def test_model_card_usage_follows_the_variant(tmp_path, variant):
    config = CamJointConfig(variant=variant, num_concepts=8, vocab_size=20, num_labels=3)
    card = write_model_card(tmp_path, config, {"accuracy": 0.5} if variant != "lrcn" else {"CIDEr": 1.234})
    text = card.read_text()
    meta = front_matter(text.encode())
    assert meta["library_name"] == "transformers" and "model-index" not in meta  # no dataset: no model-index
    assert ModelCard.load(card).data.eval_results is None and not (tmp_path / ".eval_results").exists()
    usage = text.split("```python\n", 1)[1].split("```", 1)[0]
    compile(usage, "usage", "exec")
    assert ("model.generate(" in usage) == (variant != "cnn")
    assert ("id2label" in usage) == (variant != "lrcn")
    if variant == "lrcn":
        assert "| 123.40 |" in text  # raw CIDEr-D 1.234 -> 123.40
    if variant == "semantic":
        assert "num_beams=3" in usage
    assert "The training settings were not recorded" in text


def test_model_card_names_a_bad_variant(tmp_path):
    with pytest.raises(ValueError, match="'nope'.*cnn, lrcn"):
        write_model_card(tmp_path, {"variant": "nope"}, {})


def test_a_new_localisation_metric_is_one_registry_line(tmp_path, monkeypatch):
    registry = MetricRegistry(*REGISTRY.values(), *localisation("deletion_auc", "Deletion AUC"))
    monkeypatch.setattr(card_module, "METRICS", registry)
    metrics = {"top1": 0.5, "deletion_auc_classifier": 0.42, "deletion_auc_chance": 0.1, "split": "val"}
    text = write_model_card(tmp_path, {"variant": "cnn"}, metrics, dataset_name="cub").read_text()
    assert "| Top-1 | Deletion AUC (classifier) | Deletion AUC (chance) |" in text
    assert "| 50.00 | 42.00 | 10.00 |" in text
    entries = parse_eval_result_entries(yaml.safe_load((tmp_path / ".eval_results" / "cub.yaml").read_text()))
    assert {e.task_id: e.value for e in entries} == {"top1": 50.0, "deletion_auc_classifier": 42.0,
                                                     "deletion_auc_chance": 10.0}
    assert [r.metric_name for r in ModelCard.load(tmp_path / "README.md").data.eval_results] == ["Top-1"]


def test_metric_registry_lookup_and_one_name_per_metric():
    assert REGISTRY.lookup("eval_accuracy").key == "top1" and REGISTRY.lookup("test/CIDEr").key == "CIDEr"
    assert REGISTRY.lookup("num_images") is None
    assert REGISTRY["CIDEr"].as_percent(0.72) == pytest.approx(72.0) and REGISTRY["CIDEr"].as_percent(72.0) == 72.0
    assert [m.key for m in localisation("pxap", "PxAP")] == ["pxap_classifier", "pxap_captioner", "pxap_chance",
                                                            "pxap_center"]
    with pytest.raises(ValueError, match="'acc'.*'top1'"):
        MetricRegistry(*REGISTRY.values(), Metric("my_accuracy", "Mine", aliases=("acc",)))


# ------------------------------------------------------------------------------------------- remote code
def test_remote_code_check_lists_what_transformers_loads(code_folder):
    needed = check_remote_code_folder(code_folder)
    assert {"configuration_cam_joint.py", "modeling_cam_joint.py", "cam_core.py", "image_processing_cam_joint.py",
            "processing_cam_joint.py"} <= set(needed)
    # save_pretrained copies exactly the files Transformers will load: the auto_map modules and their imports
    assert sorted(needed) == sorted(p.name for p in code_folder.glob("*.py"))


def test_push_refuses_a_missing_sibling_before_any_request(code_folder):
    (code_folder / "cam_core.py").unlink()  # imported by modeling_cam_joint.py
    with pytest.raises(FileNotFoundError, match=r"lacks cam_core\.py, imported by .*modeling_cam_joint\.py"):
        push_to_hub(code_folder, REPO_ID, token=TOKEN, endpoint=UNREACHABLE)


def test_remote_code_check_follows_relative_imports_recursively(code_folder):
    core = code_folder / "cam_core.py"  # second level: modeling -> cam_core -> helpers
    core.write_text(core.read_text() + "\nfrom .cam_helpers import smooth  # noqa\n")
    with pytest.raises(FileNotFoundError, match=r"lacks cam_helpers\.py, imported by cam_core\.py"):
        check_remote_code_folder(code_folder)
    (code_folder / "cam_helpers.py").write_text("def smooth(x):\n    return x\n")
    assert "cam_helpers.py" in check_remote_code_folder(code_folder)


def test_push_refuses_a_code_file_its_ignore_patterns_would_leave_out(code_folder):
    with pytest.raises(FileNotFoundError, match=r"lacks cam_core\.py"):
        push_to_hub(code_folder, REPO_ID, token=TOKEN, endpoint=UNREACHABLE, ignore_patterns=["cam_*.py"])


@pytest.mark.parametrize("line, package", [("import scipy.ndimage", "scipy"),
                                           ("from cam_joint.metrics import topk_accuracy", "cam_joint")])
def test_remote_code_check_refuses_a_foreign_import(code_folder, line, package):
    core = code_folder / "cam_core.py"
    core.write_text(core.read_text() + f"\n{line}  # noqa\n")
    with pytest.raises(ImportError, match=rf"cam_core\.py imports {package}, which a reader") as error:
        check_remote_code_folder(code_folder)
    assert error.value.name == package


def test_remote_code_check_allows_optional_imports(code_folder):
    core = code_folder / "cam_core.py"  # Transformers' get_imports skips try blocks: an optional dependency
    core.write_text(core.read_text() + "\ntry:\n    import scipy  # noqa\nexcept ImportError:\n    scipy = None\n")
    assert "cam_core.py" in check_remote_code_folder(code_folder)


def test_remote_code_check_needs_config_and_auto_map(code_folder):
    config = json.loads((code_folder / "config.json").read_text())
    config.pop("auto_map")
    (code_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="auto_map"):
        push_to_hub(code_folder, REPO_ID, token=TOKEN, endpoint=UNREACHABLE)
    (code_folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        check_remote_code_folder(code_folder)


# ---------------------------------------------------------------------------------------------- fake Hub
def test_fake_hub_answers_with_the_hub_errors(monkeypatch, tmp_path):
    """The fake answers the way huggingface_hub expects: typed errors for missing repo / file / revision."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError, RevisionNotFoundError

    with FakeHub(token=TOKEN) as hub:
        _online(monkeypatch, hub)
        api = HfApi(endpoint=hub.url, token=TOKEN)
        api.create_repo("org/errors")
        api.create_repo("org/errors", exist_ok=True)  # the Hub's 409 answer, taken as "exists"
        api.upload_file(path_or_fileobj=b"hello", path_in_repo="a/b.txt", repo_id="org/errors")
        assert [f.path for f in api.list_repo_tree("org/errors", "a")] == ["a/b.txt"]
        with pytest.raises(RemoteEntryNotFoundError):
            hf_hub_download("org/errors", "missing.txt", endpoint=hub.url, cache_dir=tmp_path)
        with pytest.raises(RevisionNotFoundError):
            api.model_info("org/errors", revision="no-such-branch")
        assert api.file_exists("org/errors", "a/b.txt") and not api.file_exists("org/errors", "b.txt")
