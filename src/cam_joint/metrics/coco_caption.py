"""COCO caption evaluation (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D) as an `evaluate` metric module.

Load it from its file path; nothing is downloaded, so it works with HF_HUB_OFFLINE=1 / HF_EVALUATE_OFFLINE=1:

    metric = evaluate.load("/abs/path/to/coco_caption.py")
    metric.compute(predictions=["a bird with a red crown"], references=[["this bird has a red crown", ...]])

The numbers are those of the COCO caption evaluation (pycocoevalcap 1.2, `COCOEvalCap.evaluate` without SPICE):
predictions and references are each run through Stanford's PTB tokenizer (Java, lower-cased, punctuation tokens
dropped), then scored with pycocoevalcap's own `Bleu(4)` (corpus-level BLEU with the "closest" reference length),
METEOR 1.5 (Java, `-l en -norm`), `Rouge` (ROUGE-L, beta 1.2, mean over images) and `Cider` (CIDEr-D, whose document
frequencies come from the references being evaluated, so the score depends on the whole evaluated set).

The two Java steps are driven here rather than through pycocoevalcap's `PTBTokenizer` / `Meteor` classes, with the
same jars, command lines and stdin protocol (so the same numbers), because those classes fail badly: a missing `java`
gives a bare FileNotFoundError, a failed tokenizer run silently misaligns captions, the tokenizer writes its temporary
file into site-packages, and a METEOR process that dies or stalls leaves `Meteor` raising an unrelated ValueError or
blocking forever on a pipe. Here Java is looked up before anything is spawned, every failure is a RuntimeError that
says what failed and shows Java's stderr, a watchdog kills a stalled process, and the METEOR process is always
killed and reaped when scoring ends (unless the caller passes
its own `MeteorProcess` to reuse across calls; see that class).

Behaviour at the edges (all tested):
- no predictions: ValueError. Different numbers of predictions and references: ValueError naming both lengths.
  An image with no reference: ValueError naming the image index.
- an empty prediction (or one that is only punctuation) is scored, as COCO scores it: it matches nothing and its
  length 0 counts in BLEU's brevity penalty, so a model that outputs nothing is penalised rather than crashing the run.
- one image: CIDEr-D is degenerate. Its idf is log(number of images) - log(document frequency) = log 1 - log 1 = 0
  for every n-gram, so CIDEr is 0.0 whatever the caption; this is what pycocoevalcap returns and what is returned
  here, with a UserWarning. (Small sets in general give noisy CIDEr; report it on the full test split.)
- line breaks inside a caption: pycocoevalcap replaces "\\n" by a space but not "\\r", "\\v", "\\f", U+2028 or U+2029,
  which the Java tokenizer also treats as line ends, so one caption becomes two lines and every later caption is
  paired with the wrong image. All of these are replaced by spaces here (tokens are unchanged: the tokenizer splits
  on them anyway), and the tokenizer's line count is checked.
- Java missing from PATH: JavaNotFoundError (a RuntimeError) saying how to install it, raised before any process.
- METEOR failing (Java cannot start, process dies, answers garbage) or stalling past `java_timeout` seconds:
  RuntimeError starting "METEOR failed", with the exit status and the end of Java's stderr.

Keep this file self-contained: `evaluate` copies it alone into its modules cache, so it may import only installed
libraries (pycocoevalcap, evaluate, datasets, numpy), never sibling modules.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import warnings
from typing import Hashable

import datasets
import evaluate
import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor import meteor as _pycoco_meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer import ptbtokenizer as _pycoco_ptb

_CITATION = """\
@article{chen2015microsoft,
  title={Microsoft COCO Captions: Data Collection and Evaluation Server},
  author={Chen, Xinlei and Fang, Hao and Lin, Tsung-Yi and Vedantam, Ramakrishna and Gupta, Saurabh and
          Doll{\\'a}r, Piotr and Zitnick, C. Lawrence},
  journal={arXiv preprint arXiv:1504.00325},
  year={2015}
}
"""

_DESCRIPTION = """\
BLEU-1..4, METEOR, ROUGE-L and CIDEr(-D) exactly as the COCO caption evaluation (pycocoevalcap) computes them:
PTB tokenization and METEOR 1.5 run on Java, CIDEr-D takes its document frequencies from the evaluated references.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): one generated caption per image.
    references (list of list of str): the reference captions of each image (at least one per image).
    java_timeout (float, optional): seconds each Java step (a PTB tokenizer run, METEOR's scoring including its
        start-up) may take before it is killed and a RuntimeError raised; guards against a stalled METEOR. Default 600.
    meteor (MeteorProcess, optional): an open METEOR process to reuse across calls, saving its ~10 s start-up;
        the caller closes it. By default each call starts one and closes it before returning.
Returns:
    Bleu_1, Bleu_2, Bleu_3, Bleu_4, METEOR, ROUGE_L, CIDEr (float): corpus scores as COCOEvalCap reports them
        (BLEU corpus-level, METEOR from pooled statistics, ROUGE_L and CIDEr the mean over images).
    CIDEr_per_image (list of float): each image's CIDEr-D, in input order (mean of these is CIDEr).
Examples:
    >>> metric = evaluate.load("/abs/path/to/coco_caption.py")
    >>> metric.compute(predictions=["a small bird"], references=[["a small bird", "a tiny bird"]])["Bleu_1"]
"""

DEFAULT_JAVA_TIMEOUT = 600.0

# Characters the Java PTB tokenizer treats as line ends (checked against stanford-corenlp 3.4.1); pycocoevalcap only
# replaces "\n", so any of the others inside a caption would shift every later caption onto the wrong image.
_JAVA_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\u2028\u2029]")

# How much of Java's stderr goes into an error message.
_STDERR_TAIL_CHARS = 2000


class JavaNotFoundError(RuntimeError):
    """No `java` executable on PATH: the PTB tokenizer and METEOR cannot run."""


def find_java() -> str:
    """Absolute path of `java` on PATH, or JavaNotFoundError explaining how to get one (nothing is spawned)."""
    java = shutil.which("java")
    if java is None:
        raise JavaNotFoundError(
            "Java is required for the COCO caption metrics: pycocoevalcap's PTB tokenizer (Stanford CoreNLP) and "
            "METEOR 1.5 are Java programs, and no `java` executable was found on PATH. Install a Java runtime "
            "(8 or newer), e.g. `sudo apt-get install default-jre-headless` (Debian/Ubuntu), `brew install openjdk` "
            "(macOS) or `conda install -c conda-forge openjdk`, then check that `java -version` works in the same "
            "environment."
        )
    return java


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _STDERR_TAIL_CHARS else "..." + text[-_STDERR_TAIL_CHARS:]


def ptb_tokenize(
    captions_for_image: dict[Hashable, list[str]], java: str, timeout: float = DEFAULT_JAVA_TIMEOUT
) -> dict[Hashable, list[str]]:
    """pycocoevalcap's `PTBTokenizer.tokenize`, same jar, flags and post-processing, on {image: [caption, ...]}.

    Differences, none of which changes a token: the input file goes to a private temporary directory (not into
    site-packages), Java's line-end characters are replaced like "\\n", and a failed or misaligned run raises.
    """
    jar_dir = os.path.dirname(os.path.abspath(_pycoco_ptb.__file__))
    image_ids = [k for k, caps in captions_for_image.items() for _ in caps]
    if not image_ids:
        return {}
    sentences = "\n".join(_JAVA_LINE_BREAKS.sub(" ", c) for caps in captions_for_image.values() for c in caps)
    cmd = [java, "-cp", _pycoco_ptb.STANFORD_CORENLP_3_4_1_JAR, "edu.stanford.nlp.process.PTBTokenizer"]
    cmd += ["-preserveLines", "-lowerCase"]
    with tempfile.TemporaryDirectory(prefix="cam_joint_ptb_") as tmp:
        path = os.path.join(tmp, "captions.txt")
        with open(path, "wb") as f:
            f.write(sentences.encode())
        try:
            proc = subprocess.run(
                cmd + [path], cwd=jar_dir, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as e:  # subprocess.run has already killed and reaped it
            raise RuntimeError(f"PTB tokenizer (Java) timed out after {timeout:g} s: {' '.join(cmd)}") from e
    if proc.returncode != 0:
        raise RuntimeError(
            f"PTB tokenizer (Java) failed with exit status {proc.returncode}: {' '.join(cmd)}\n"
            f"stderr: {_tail(proc.stderr.decode(errors='replace'))}"
        )
    lines = proc.stdout.decode().split("\n")
    if len(lines) != len(image_ids):
        raise RuntimeError(
            f"PTB tokenizer returned {len(lines)} lines for {len(image_ids)} captions; captions would be paired with "
            f"the wrong images. stderr: {_tail(proc.stderr.decode(errors='replace'))}"
        )
    tokenized: dict[Hashable, list[str]] = {}
    for k, line in zip(image_ids, lines):
        words = [w for w in line.rstrip().split(" ") if w not in _pycoco_ptb.PUNCTUATIONS]
        tokenized.setdefault(k, []).append(" ".join(words))
    return tokenized


class MeteorProcess:
    """METEOR 1.5 driven exactly like pycocoevalcap's `Meteor` (same command, same SCORE/EVAL protocol), safely.

    Use it as a context manager: `close()` kills and reaps the JVM, so no java process outlives it. By default
    `coco_caption_scores` opens one per call; to skip METEOR's start-up (~10 CPU-seconds loading its paraphrase
    table) when scoring repeatedly, e.g. every validation epoch, open one yourself and pass it as `meteor=`:

        with MeteorProcess(find_java()) as meteor:
            for epoch in ...: metric.compute(predictions=..., references=..., meteor=meteor)

    Each `compute_score` call is guarded by a watchdog that kills the process after `timeout` seconds (start-up
    included on the first call), which turns a blocked read into EOF and so into a RuntimeError, not a hang; after
    any failure the process is gone and later calls raise. A lock serialises calls from several threads, as in
    pycocoevalcap. stderr goes to a file, not a pipe, so a chatty JVM cannot fill a pipe nobody reads and deadlock.
    """

    def __init__(self, java: str, timeout: float = DEFAULT_JAVA_TIMEOUT) -> None:
        # The command of pycocoevalcap/meteor/meteor.py, with `java` resolved to an absolute path.
        self.cmd = [java, "-jar", "-Xmx2G", _pycoco_meteor.METEOR_JAR, "-", "-", "-stdio", "-l", "en", "-norm"]
        self.timeout = timeout
        self._timed_out = False
        self._failed: str | None = None
        self._lock = threading.Lock()
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(
                self.cmd,
                cwd=os.path.dirname(os.path.abspath(_pycoco_meteor.__file__)),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
            )
        except OSError as e:
            self._stderr.close()
            raise RuntimeError(f"METEOR failed: could not start {' '.join(self.cmd)}: {e}") from e

    def __enter__(self) -> MeteorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def close(self) -> None:
        """Kill the JVM and reap it (idempotent)."""
        for stream in (self._proc.stdin, self._proc.stdout):
            try:
                stream.close()
            except OSError:  # broken pipe while flushing to a dead process
                pass
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        if not self._stderr.closed:
            self._stderr.close()
        self._failed = self._failed or "the METEOR process was closed"

    def _kill_on_timeout(self) -> None:
        self._timed_out = True
        self._proc.kill()

    def _failure(self, what: str) -> RuntimeError:
        """Kill the process and build the error, with exit status and stderr, for `what` went wrong."""
        if self._proc.poll() is None:
            self._proc.kill()
        status = self._proc.wait()
        stderr = ""
        if not self._stderr.closed:
            self._stderr.seek(0)
            stderr = _tail(self._stderr.read().decode(errors="replace"))
        if self._timed_out:
            what = f"no answer within {self.timeout:g} s (java_timeout); the process was killed"
        message = (
            f"METEOR failed: {what} (java exit status {status}). Command: {' '.join(self.cmd)}\n"
            f"stderr: {stderr or '(empty)'}"
        )
        self._failed = message
        return RuntimeError(message)

    def _write(self, line: str) -> None:
        try:
            self._proc.stdin.write(f"{line}\n".encode())
            self._proc.stdin.flush()
        except (OSError, ValueError) as e:  # BrokenPipeError is an OSError; ValueError: closed pipe
            raise self._failure(f"could not write to the process ({e!r})") from e

    def _readline(self) -> str:
        try:
            line = self._proc.stdout.readline()
        except (OSError, ValueError) as e:
            raise self._failure(f"could not read from the process ({e!r})") from e
        if not line:
            raise self._failure("the process exited before answering")
        return line.decode().strip()

    def _read_float(self) -> float:
        line = self._readline()
        try:
            return float(line)
        except ValueError:
            raise self._failure(f"expected a score, got {line[:200]!r}") from None

    def compute_score(
        self, gts: dict[Hashable, list[str]], res: dict[Hashable, list[str]]
    ) -> tuple[float, list[float]]:
        """Corpus METEOR and per-image scores, as `Meteor.compute_score` (one SCORE line per image, then EVAL)."""
        assert gts.keys() == res.keys()
        with self._lock:
            if self._failed is not None:
                raise RuntimeError(f"METEOR failed: this METEOR process is no longer usable ({self._failed})")
            watchdog = threading.Timer(self.timeout, self._kill_on_timeout)
            watchdog.daemon = True
            watchdog.start()
            try:
                eval_line = "EVAL"
                for i in gts:
                    assert len(res[i]) == 1
                    # Meteor._stat: '|||' is METEOR's field separator, so it is removed from the hypothesis only.
                    hypothesis = res[i][0].replace("|||", "").replace("  ", " ")
                    self._write(" ||| ".join(("SCORE", " ||| ".join(gts[i]), hypothesis)))
                    eval_line += f" ||| {self._readline()}"
                self._write(eval_line)
                scores = [self._read_float() for _ in gts]
                return self._read_float(), scores
            finally:
                watchdog.cancel()


def coco_caption_scores(
    predictions: list[str],
    references: list[list[str]],
    java_timeout: float = DEFAULT_JAVA_TIMEOUT,
    meteor: MeteorProcess | None = None,
) -> dict[str, float | list[float]]:
    """The metric's computation, usable without `evaluate` (see the module docstring for edge cases).

    `meteor`: an open `MeteorProcess` to reuse (the caller closes it; its own timeout applies to it); None starts one
    with `java_timeout` and closes it before returning.
    """
    predictions, references = list(predictions), list(references)
    for i, refs in enumerate(references):
        if isinstance(refs, str):  # list("a bird") would silently become one reference per character
            raise TypeError(f"coco_caption: references[{i}] is a str; each image needs a list of reference strings.")
    references = [list(r) for r in references]
    if not predictions:
        raise ValueError("coco_caption: no predictions to score (empty list); need at least one image.")
    if len(predictions) != len(references):
        raise ValueError(
            f"coco_caption: {len(predictions)} predictions but {len(references)} reference lists; "
            "need one prediction and one list of references per image."
        )
    for i, (pred, refs) in enumerate(zip(predictions, references)):
        if not isinstance(pred, str):
            raise TypeError(f"coco_caption: prediction {i} is {type(pred).__name__}, not str.")
        if not refs:
            raise ValueError(f"coco_caption: image {i} has no reference caption; every image needs at least one.")
        if not all(isinstance(r, str) for r in refs):
            raise TypeError(f"coco_caption: references of image {i} must all be str.")
    if len(predictions) == 1:
        warnings.warn(
            "coco_caption: scoring a single image. CIDEr-D takes its document frequencies from the evaluated "
            "references, so with one image every idf weight is log(1) - log(1) = 0 and CIDEr is 0.0 whatever the "
            "caption (pycocoevalcap returns the same). Evaluate a full split for a meaningful CIDEr.",
            UserWarning,
            stacklevel=2,
        )

    java = find_java()  # before any process is spawned
    # Same structure and order as COCOEvalCap.evaluate: image id -> captions, references and predictions tokenized
    # in separate Java runs.
    gts_raw = {i: refs for i, refs in enumerate(references)}
    res_raw = {i: [pred] for i, pred in enumerate(predictions)}
    # A new METEOR JVM loads its paraphrase table (seconds) while the tokenizer runs.
    own_meteor = meteor is None
    if own_meteor:
        meteor = MeteorProcess(java, timeout=java_timeout)
    try:
        gts = ptb_tokenize(gts_raw, java, timeout=java_timeout)
        res = ptb_tokenize(res_raw, java, timeout=java_timeout)
        if not any(ref for refs in gts.values() for ref in refs):
            # pycocoevalcap's CIDEr would fail with "max() arg is an empty sequence".
            raise ValueError("coco_caption: every reference caption is empty after PTB tokenization.")
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        meteor_score, _ = meteor.compute_score(gts, res)
    finally:
        if own_meteor:
            meteor.close()
    rouge, _ = Rouge().compute_score(gts, res)
    cider, cider_per_image = Cider().compute_score(gts, res)

    out: dict[str, float | list[float]] = {f"Bleu_{n}": float(b) for n, b in enumerate(bleu, start=1)}
    out["METEOR"] = float(meteor_score)
    out["ROUGE_L"] = float(rouge)
    out["CIDEr"] = float(cider)
    out["CIDEr_per_image"] = [float(s) for s in np.asarray(cider_per_image)]
    return out


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CocoCaption(evaluate.Metric):
    """`evaluate` wrapper around `coco_caption_scores`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
            codebase_urls=["https://github.com/salaniz/pycocoevalcap"],
            reference_urls=["https://arxiv.org/abs/1504.00325"],
        )

    def _compute(
        self,
        predictions: list[str],
        references: list[list[str]],
        java_timeout: float = DEFAULT_JAVA_TIMEOUT,
        meteor: MeteorProcess | None = None,
    ) -> dict[str, float | list[float]]:
        return coco_caption_scores(predictions, references, java_timeout=java_timeout, meteor=meteor)
