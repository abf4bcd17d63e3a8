"""The caption metrics equal pycocoevalcap's, load offline, and fail clearly (not silently, not by hanging).

Each METEOR process spends ~10 CPU-seconds loading its paraphrase table, so the scored runs are made once, by the
module-scoped `runs` fixture through one shared METEOR process, which loads while pycocoevalcap's own METEOR (the
reference) loads too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import evaluate
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from cam_joint.metrics import CAPTION_METRIC_KEYS, caption_metric_path, compute_caption_metrics
from cam_joint.metrics.coco_caption import MeteorProcess, ptb_tokenize

REAL_JAVA = shutil.which("java")
needs_java = pytest.mark.skipif(REAL_JAVA is None, reason="Java is not installed (needed by pycocoevalcap)")

TOL = 1e-9

# Captions in the style of the original CUB descriptions (case, punctuation), with the inputs that go wrong most
# easily: empty and punctuation-only predictions, METEOR's '|||' separator, Windows line ends, double spaces,
# non-ASCII, and an empty reference.
HARD_PREDICTIONS = [
    "",
    "...",
    "This bird has a RED crown, and black wings!",
    "a bird ||| with a yellow belly",
    "a small bird\r\nwith a white throat",
    "a grey bird with a  short, pointed beak.",
    "this caf\u00e9-colored bird's wings are brown",
    "a large bird with a long neck and webbed feet",
]
HARD_REFERENCES = [
    ["This bird is blue with white on its chest.", "A small blue bird with a short beak."],
    ["A brown bird with a speckled breast.", "this bird has a brown crown and white belly"],
    ["This bird has a red crown, black wings and a white belly.", "A bird with a red head.", ""],
    ["A yellow bird with a black cap.", "this bird has a bright yellow belly and grey wings"],
    ["A small bird with a white throat\r\nand grey back.", "the bird has a white throat"],
    ["A grey bird with a short pointed beak.", "This bird is grey, with a short beak."],
    ["This bird's wings are brown; its belly is white.", "a brown bird"],
    ["A large white bird with a long neck.", "this bird has webbed feet and a long neck"],
]
# One image, predicted perfectly: BLEU 1, yet CIDEr-D 0 (every idf is log 1 - log 1).
SINGLE_PREDICTION = "this bird has a red crown and black wings"
SINGLE_REFERENCES = ["this bird has a red crown and black wings", "a bird with a red crown"]


def _java_line_breaks_to_spaces(text: str) -> str:
    return "".join(" " if c in "\r\x0b\x0c\u2028\u2029" else c for c in text)


def pycocoevalcap_scores(meteor: Meteor, predictions: list[str], references: list[list[str]]) -> dict:
    """The reference: COCOEvalCap.evaluate's steps, done directly with pycocoevalcap's classes."""
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(references)})
    res = tokenizer.tokenize({i: [{"caption": p}] for i, p in enumerate(predictions)})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    meteor_score, _ = meteor.compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, cider_per_image = Cider().compute_score(gts, res)
    scores = {f"Bleu_{n}": b for n, b in enumerate(bleu, start=1)}
    scores.update(METEOR=meteor_score, ROUGE_L=rouge, CIDEr=cider, CIDEr_per_image=list(cider_per_image))
    return scores


def assert_same_scores(ours: dict, reference: dict) -> None:
    for key in CAPTION_METRIC_KEYS:
        assert abs(ours[key] - reference[key]) <= TOL, (key, ours[key], reference[key])
    assert len(ours["CIDEr_per_image"]) == len(reference["CIDEr_per_image"])
    for i, (a, b) in enumerate(zip(ours["CIDEr_per_image"], reference["CIDEr_per_image"])):
        assert abs(a - b) <= TOL, (i, a, b)


def java_children() -> set[int]:
    """Pids of this process's children (zombies included), to prove no METEOR/tokenizer process is left over."""
    me, pids = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == me:
                pids.add(int(entry))
    return pids


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to list child processes")


def load_metric() -> evaluate.EvaluationModule:
    return evaluate.load(caption_metric_path(), keep_in_memory=True)


def cub_sample(shared_data: Path) -> tuple[list[str], list[list[str]]]:
    """Every 50th CUB image (sorted paths, 236 images): prediction = caption 0, references = the other nine."""
    files = sorted((shared_data / "cub" / "text_c10").rglob("*.txt"))[::50]
    captions = [f.read_text(encoding="utf-8").splitlines() for f in files]
    assert len(captions) > 200 and all(len(c) == 10 for c in captions)
    return [c[0] for c in captions], [c[1:] for c in captions]


@pytest.fixture(scope="module")
def pycoco_meteor():
    if REAL_JAVA is None:
        pytest.skip("Java is not installed (needed by pycocoevalcap)")
    meteor = Meteor()  # its JVM starts loading now, in parallel with the runs below
    yield meteor
    meteor.meteor_p.kill()
    meteor.meteor_p.wait()


@pytest.fixture(scope="module")
def runs(request, pycoco_meteor) -> dict:
    """The module's scores for the CUB sample (when the real data is there), the hard inputs and one image.

    All three share one METEOR process passed in by the caller, the way a training loop would reuse it; it loads
    while pycocoevalcap's does. (The default path, a METEOR per call closed on return, runs in the error tests.)
    """
    before = java_children() - {pycoco_meteor.meteor_p.pid}
    out: dict = {"inputs": {"hard": (HARD_PREDICTIONS, HARD_REFERENCES)}}
    try:
        out["inputs"]["cub"] = cub_sample(request.getfixturevalue("shared_data"))
    except pytest.skip.Exception:
        pass
    metric = load_metric()
    with MeteorProcess(REAL_JAVA) as shared_meteor:
        for name, (predictions, references) in out["inputs"].items():
            out[name] = metric.compute(predictions=predictions, references=references, meteor=shared_meteor)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out["single"] = metric.compute(
                predictions=[SINGLE_PREDICTION], references=[SINGLE_REFERENCES], meteor=shared_meteor
            )
        out["shared_meteor_alive_between_calls"] = shared_meteor.pid in java_children()
    out["single_warnings"] = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    out["children_left"] = java_children() - {pycoco_meteor.meteor_p.pid} - before
    return out


def test_real_cub_captions_match_pycocoevalcap(runs, pycoco_meteor, shared_data):
    predictions, references = runs["inputs"]["cub"]
    ours = runs["cub"]
    assert_same_scores(ours, pycocoevalcap_scores(pycoco_meteor, predictions, references))
    # One human caption against nine others: real, non-trivial scores, not zeros from a silent failure.
    assert 0.5 < ours["Bleu_1"] < 1 and 0.1 < ours["Bleu_4"] < ours["Bleu_1"]
    assert 0.1 < ours["METEOR"] < 0.5 and 0.2 < ours["ROUGE_L"] < 0.8 and ours["CIDEr"] > 0.05


def test_hard_inputs_score_as_pycocoevalcap_scores_them(runs, pycoco_meteor):
    # pycocoevalcap gets "\r" already replaced: with it, its tokenizer splits one caption into two lines and pairs
    # every later caption with the wrong image (see test_line_breaks_do_not_shift_captions).
    predictions = [_java_line_breaks_to_spaces(p) for p in HARD_PREDICTIONS]
    references = [[_java_line_breaks_to_spaces(r) for r in refs] for refs in HARD_REFERENCES]
    ours = runs["hard"]
    assert_same_scores(ours, pycocoevalcap_scores(pycoco_meteor, predictions, references))
    # The empty and punctuation-only predictions are scored, as nothing: they match no reference n-gram.
    assert ours["CIDEr_per_image"][0] == 0.0 and ours["CIDEr_per_image"][1] == 0.0
    assert ours["CIDEr_per_image"][2] > 0


def test_single_image_cider_is_degenerate_and_warned(runs, pycoco_meteor):
    ours = runs["single"]
    assert_same_scores(ours, pycocoevalcap_scores(pycoco_meteor, [SINGLE_PREDICTION], [SINGLE_REFERENCES]))
    assert ours["Bleu_1"] == pytest.approx(1.0, abs=1e-6)  # a perfect caption ...
    assert ours["CIDEr"] == 0.0 and ours["CIDEr_per_image"] == [0.0]  # ... that CIDEr-D cannot see with one image
    assert any("single image" in w and "CIDEr" in w for w in runs["single_warnings"]), runs["single_warnings"]


@needs_proc
def test_no_java_process_outlives_a_computation(runs):
    # The caller's METEOR stayed up across computations, and every process was reaped once it was closed.
    assert runs["shared_meteor_alive_between_calls"]
    assert runs["children_left"] == set()


@needs_java
def test_line_breaks_do_not_shift_captions():
    captions = {0: ["A bird.\r\nIt is RED,\u2028with wings."], 1: ["Blue\x0cwings!", ""], 2: ["x"]}
    tokenized = ptb_tokenize(captions, REAL_JAVA)
    assert tokenized == {0: ["a bird it is red with wings"], 1: ["blue wings", ""], 2: ["x"]}


# ---------------------------------------------------------------- input errors (raised before any Java runs)


@pytest.mark.parametrize("compute", [lambda **kw: load_metric().compute(**kw), compute_caption_metrics])
def test_empty_predictions_raise(compute):
    with pytest.raises(ValueError, match="no predictions"):
        compute(predictions=[], references=[])


@pytest.mark.parametrize("compute", [lambda **kw: load_metric().compute(**kw), compute_caption_metrics])
def test_mismatched_lengths_name_both(compute):
    with pytest.raises(ValueError, match=r"(?s)\b3\b.*\b2\b"):
        compute(predictions=["a bird", "a bird", "a bird"], references=[["a bird"], ["a bird"]])


def test_references_given_as_plain_strings_are_rejected():
    # Not one reference per character: a list of strings instead of a list of lists is a mistake, said so.
    with pytest.raises(TypeError, match=r"references\[1\] is a str"):
        compute_caption_metrics(["a bird", "a red bird"], [["a bird"], "a red bird"])


def test_image_without_references_is_named():
    with pytest.raises(ValueError, match="image 1 has no reference"):
        load_metric().compute(predictions=["a bird", "a bird"], references=[["a bird"], []])


@needs_java
def test_all_references_empty_after_tokenization_raise():
    with pytest.raises(ValueError, match="every reference caption is empty"):
        compute_caption_metrics(["a bird", "a cat"], [["..."], [""]])


# ---------------------------------------------------------------- Java missing or failing


@needs_proc
def test_java_missing_is_reported_before_spawning(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no java
    before = java_children()
    with pytest.raises(RuntimeError, match="Java is required") as err:
        compute_caption_metrics(["a bird"] * 2, [["a bird"], ["a red bird"]])
    assert type(err.value).__name__ == "JavaNotFoundError"
    assert "apt-get install" in str(err.value) and "PATH" in str(err.value)
    assert java_children() == before


FAKE_METEOR = {
    "cannot_start": 'echo "Error occurred during initialization of VM" >&2\n'
    'echo "Could not reserve enough space for 2097152KB object heap" >&2\nexit 1',
    "dies": 'read line\necho \'Exception in thread "main" java.lang.OutOfMemoryError: Java heap space\' >&2\nexit 3',
    "hangs": "exec sleep 300",
}


def fake_java(directory: Path, meteor_behaviour: str) -> None:
    """A `java` that is the real one for the PTB tokenizer (`java -cp ...`) but misbehaves for METEOR (`java -jar`)."""
    script = directory / "java"
    script.write_text(
        f'#!/bin/sh\nif [ "$1" = "-jar" ]; then\n{textwrap.indent(FAKE_METEOR[meteor_behaviour], "  ")}\nfi\n'
        f'exec "{REAL_JAVA}" "$@"\n'
    )
    script.chmod(0o755)


@needs_java
@needs_proc
@pytest.mark.parametrize(
    "behaviour, expected",
    [
        ("cannot_start", r"(?s)exit status 1\b.*Could not reserve enough space"),
        ("dies", r"(?s)exited before answering.*exit status 3\b.*OutOfMemoryError"),
        ("hangs", r"no answer within 2 s"),
    ],
)
def test_meteor_failure_is_a_clear_error_and_leaves_no_process(tmp_path, monkeypatch, behaviour, expected):
    fake_java(tmp_path, behaviour)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    before = java_children()
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="METEOR failed") as err:
        compute_caption_metrics(["a bird", "a red bird"], [["a bird"], ["a red bird"]], java_timeout=2)
    assert time.monotonic() - start < 30
    assert err.match(expected)
    assert java_children() == before


# ---------------------------------------------------------------- offline loading


def test_module_loads_offline_into_a_fresh_cache(tmp_path):
    """evaluate copies the file alone into its modules cache; the copy must import and run there, offline."""
    script = textwrap.dedent(
        f"""
        import json, sys, evaluate
        metric = evaluate.load({caption_metric_path()!r})
        try:
            metric.compute(predictions=[], references=[])
            error = None
        except ValueError as e:
            error = str(e)
        module_file = sys.modules[type(metric).__module__].__file__
        print(json.dumps({{"file": module_file, "name": metric.name, "features": str(metric.features),
                          "error": error}}))
        """
    )
    dead_proxy = "http://127.0.0.1:9"  # any network attempt fails at once instead of succeeding
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_EVALUATE_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HOME=str(tmp_path / "hf"),
               HTTP_PROXY=dead_proxy, HTTPS_PROXY=dead_proxy, http_proxy=dead_proxy, https_proxy=dead_proxy)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(info["file"]).is_relative_to(tmp_path / "modules")  # the cached copy ran, not the source file
    assert info["name"] == "coco_caption"
    assert "predictions" in info["features"] and "references" in info["features"]
    assert info["error"] is not None and "no predictions" in info["error"]
