"""Hub integration without the network: the model card, and a push to / load from a loopback fake Hub.

`tests/fake_hub.py` serves the Hub protocol huggingface_hub 2.x and Transformers use (create repo, preupload,
NDJSON commit, resolve with ETag / X-Repo-Commit, repo info, tree) on 127.0.0.1. The test saves a tiny model with
its processor and model card, pushes the folder with `cam_joint.hub.push_to_hub` (HF_ENDPOINT + a dummy token), then a
fresh Python in which `cam_joint` is NOT importable loads the repo from that endpoint with
`AutoModel/AutoProcessor.from_pretrained(..., trust_remote_code=True)` and must caption a fixed image with exactly the
tokens the original model produces. It also runs the usage snippet of the pushed README.md.

conftest.py sets HF_HUB_OFFLINE=1 for this process and huggingface_hub read it at import: the push patches
`huggingface_hub.constants.HF_HUB_OFFLINE` (and HF_HUB_DISABLE_XET) for its duration; the child process gets
HF_HUB_OFFLINE=0 in its environment.
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
import yaml
from PIL import Image

import cam_joint
from cam_joint import CamJointConfig, CamJointImageProcessor, CamJointModel, CamJointProcessor, build_caption_tokenizer
from cam_joint.hub import check_remote_code_folder, push_to_hub, write_model_card

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_hub import FakeHub, git_blob_sha1  # noqa: E402

SRC = Path(cam_joint.__file__).resolve().parent
REPO_ID = "org/cam-joint-test"
TOKEN = "dummy"
CAPTIONS = ["this bird has a red crown, black wings and a short beak.",
            "a small bird with a yellow belly and grey wings",
            "this blue bird has white wing bars and a long tail",
            "a brown bird with a spotted breast and a pointed bill"]
METRICS = {"top1": 0.8013, "top5": 0.9502, "Bleu_1": 0.7012, "Bleu_2": 0.5523, "Bleu_3": 0.4102, "Bleu_4": 0.3001,
           "METEOR": 0.2634, "ROUGE_L": 0.5478, "CIDEr": 0.7215, "cam_agreement": 0.4321,
           "pointing_game_classifier": 0.61, "pointing_game_captioner": 0.55, "num_images": 4}
TRAINING_ARGS = {"config": "hub_configs/cub_cam.json", "variant": "cam", "dataset": "cub",
                 "data_dir": "/home/someone/data/CUB_200_2011", "freeze_encoder": True, "epochs": 30,
                 "batch_size": 32, "optimizer": "sgd", "lr": 0.1, "no_caption_metrics": False, "resume": None,
                 "push_to_hub": REPO_ID}
REQUIRED_FILES = {"model.safetensors", "config.json", "modeling_cam_joint.py", "cam_core.py", "tokenizer.json",
                  "README.md", "configuration_cam_joint.py", "processing_cam_joint.py",
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
def pushed(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    folder, image_path = root / "cam-joint-test", _fixed_image(root / "bird.png")
    model, processor = _tiny_model_and_processor()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
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
        push_requests, push_unhandled = list(hub.requests), list(hub.unhandled)
        again_url = push_to_hub(folder, REPO_ID, token=TOKEN)  # nothing changed: no new commit

        from huggingface_hub import HfApi
        listed = HfApi(endpoint=hub.url, token=TOKEN).list_repo_files(REPO_ID)

        script = root / "child.py"
        script.write_text(CHILD)
        env = {k: v for k, v in os.environ.items() if k not in ("TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")}
        env.update({"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
                    "HF_HOME": str(root / "hf_home"), "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONPATH": "",
                    "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
                    "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
        out = root / "child.json"
        proc = subprocess.run([sys.executable, str(script), REPO_ID, str(out), str(SRC.parent), str(image_path)],
                              cwd=root, env=env, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, f"child failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        return {"folder": folder, "hub": hub, "commit_url": commit_url, "again_url": again_url, "listed": listed,
                "push_requests": push_requests, "push_unhandled": push_unhandled, "files": hub.files(REPO_ID),
                "tokens": tokens, "child": json.loads(out.read_text()),
                "caption": processor.decode(tokens, skip_special_tokens=True)}


# ------------------------------------------------------------------------------------------------ push
def test_push_uploads_the_saved_folder(pushed):
    files = pushed["files"]
    assert REQUIRED_FILES <= set(pushed["listed"]), sorted(REQUIRED_FILES - set(pushed["listed"]))
    assert not any(name.startswith("checkpoints/") for name in files)  # training state stays local
    folder = pushed["folder"]
    for name, content in files.items():
        if name != ".gitattributes":
            assert content == (folder / name).read_bytes(), name
    assert json.loads(files["config.json"])["auto_map"]["AutoModel"] == "modeling_cam_joint.CamJointModel"
    assert set(check_remote_code_folder(folder)) == {"configuration_cam_joint.py", "modeling_cam_joint.py",
                                                     "cam_core.py", "image_processing_cam_joint.py",
                                                     "processing_cam_joint.py"}
    sha = pushed["commit_url"].rsplit("/", 1)[-1]
    assert pushed["commit_url"] == f"{pushed['hub'].url}/{REPO_ID}/commit/{sha}"
    assert pushed["again_url"] == pushed["commit_url"]  # an unchanged folder makes no empty commit
    # the protocol used: one create + preupload + one commit with every file inline; no LFS, no Xet
    paths = [path for _, path in pushed["push_requests"]]
    assert paths.count(f"/api/models/{REPO_ID}/commit/main") == 1
    assert not any("lfs" in p or "xet" in p for p in paths), paths
    assert pushed["push_unhandled"] == []


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
    assert any(p.endswith("/model.safetensors") for p in downloads)
    assert any(p.endswith("/cam_core.py") for p in downloads)  # sibling module fetched as remote code


# ------------------------------------------------------------------------------------------- model card
def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text[4:text.index("\n---", 4)])


def test_model_card_metadata_results_and_training(pushed):
    text = pushed["files"]["README.md"].decode()
    meta = _front_matter(text)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-text-to-text"
    assert {"cam-joint", "image-classification", "image-captioning", "grad-cam"} <= set(meta["tags"])
    assert {"accuracy", "bleu", "meteor", "rouge", "cider"} <= set(meta["metrics"])
    results = {m["name"]: m["value"] for r in meta["model-index"][0]["results"] for m in r["metrics"]}
    assert results["Top-1"] == 80.13 and results["BLEU-4"] == 30.01 and results["CIDEr"] == 72.15
    assert "ETRI Journal" in text and "Yoon" in text and "`cam`" in text
    header = next(line for line in text.splitlines() if line.startswith("| Top-1 |"))
    row = text.splitlines()[text.splitlines().index(header) + 2]
    columns = [c.strip() for c in header.strip("|").split("|")]
    values = dict(zip(columns, (c.strip() for c in row.strip("|").split("|"))))
    assert values == {"Top-1": "80.13", "Top-5": "95.02", "BLEU-1": "70.12", "BLEU-2": "55.23", "BLEU-3": "41.02",
                      "BLEU-4": "30.01", "METEOR": "26.34", "ROUGE-L": "54.78", "CIDEr": "72.15",
                      "CAM agreement": "43.21", "Pointing game (classifier)": "61.00",
                      "Pointing game (captioner)": "55.00"}
    assert "| num_images | 4 |" in text
    assert "cam-joint train --config hub_configs/cub_cam.json --variant cam --dataset cub" in text
    assert "--freeze-encoder" in text and "/home/someone" not in text and "--resume" not in text
    assert "trust_remote_code=True" in text and "![cam_example](cam_example.png)" in text


@pytest.mark.parametrize("variant", ["cnn", "lrcn", "semantic"])
def test_model_card_usage_follows_the_variant(tmp_path, variant):
    config = CamJointConfig(variant=variant, num_concepts=8, vocab_size=20, num_labels=3)
    card = write_model_card(tmp_path, config, {"accuracy": 0.5} if variant != "lrcn" else {"CIDEr": 1.234})
    text = card.read_text()
    meta = _front_matter(text)
    assert meta["library_name"] == "transformers" and "model-index" not in meta  # no dataset: no model-index
    usage = text.split("```python\n", 1)[1].split("```", 1)[0]
    compile(usage, "usage", "exec")
    assert ("model.generate(" in usage) == (variant != "cnn")
    assert ("id2label" in usage) == (variant != "lrcn")
    if variant == "lrcn":
        assert "| 123.40 |" in text  # raw CIDEr-D 1.234 -> 123.40
    if variant == "semantic":
        assert "num_beams=3" in usage
    assert "The training settings were not recorded" in text


def test_push_refuses_a_folder_that_cannot_load_as_remote_code(tmp_path):
    model, processor = _tiny_model_and_processor()
    model.save_pretrained(tmp_path)
    (tmp_path / "cam_core.py").unlink()  # imported by modeling_cam_joint.py
    with pytest.raises(FileNotFoundError, match="cam_core.py"):
        push_to_hub(tmp_path, REPO_ID, token=TOKEN, endpoint="http://127.0.0.1:9")  # raises before any request
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("auto_map")
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="auto_map"):
        push_to_hub(tmp_path, REPO_ID, token=TOKEN, endpoint="http://127.0.0.1:9")


def test_fake_hub_speaks_hub_errors(monkeypatch, tmp_path):
    """The fake answers the way huggingface_hub expects: typed errors for missing repo / file / revision."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    with FakeHub(token=TOKEN) as hub:
        _online(monkeypatch, hub)
        api = HfApi(endpoint=hub.url, token=TOKEN)
        with pytest.raises(RepositoryNotFoundError):
            api.model_info("org/missing")
        api.create_repo("org/errors", exist_ok=True)
        api.upload_file(path_or_fileobj=b"hello", path_in_repo="a/b.txt", repo_id="org/errors")
        assert git_blob_sha1(b"hello") == next(f for f in api.list_repo_tree("org/errors", "a")).blob_id
        with pytest.raises(RemoteEntryNotFoundError):
            hf_hub_download("org/errors", "missing.txt", endpoint=hub.url, cache_dir=tmp_path)
        with pytest.raises(RevisionNotFoundError):
            api.model_info("org/errors", revision="no-such-branch")
        assert api.file_exists("org/errors", "a/b.txt") and not api.file_exists("org/errors", "b.txt")

