"""Progress bars: live on a terminal, throttled in a log file or a pipe."""

import io
import time

from cam_joint.progress import LOG_INTERVAL_SECONDS, progress_bar


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def _redraws(stream, seconds=0.6, updates=60):
    bar = progress_bar(total=updates, file=stream, desc="train")
    for step in range(updates):
        bar.set_postfix({"loss": f"{1 / (step + 1):.3f}"}, refresh=False)  # as the training loop sets it
        bar.update(1)
        time.sleep(seconds / updates)
    bar.close()
    return stream.getvalue().count("\r")


def test_a_log_file_gets_a_few_lines_a_minute_and_a_terminal_stays_live():
    assert LOG_INTERVAL_SECONDS >= 15  # at most four redraws a minute in a log
    to_file = _redraws(io.StringIO())
    to_terminal = _redraws(FakeTerminal())
    assert to_file <= 3  # the first draw, the last, and the close: nothing per update
    assert to_terminal > to_file


def test_a_training_run_logged_to_a_file_has_few_progress_lines(tmp_path):
    """The training loop's bar, written to a file, redraws a handful of times for a short run (not once a step)."""
    import subprocess
    import sys

    log = tmp_path / "train.log"
    command = [sys.executable, "-m", "cam_joint.cli", "train", "--synthetic-classes", "3", "--synthetic-per-class",
               "4", "--image-size", "48", "--batch-size", "2", "--intermediate-size", "8", "--hidden-size", "8",
               "--word-embedding-size", "8", "--encoder", "resnet10t", "--no-caption-metrics", "--max-steps", "6",
               "--eval-split", "validation", "--output-dir", str(tmp_path / "out")]
    with open(log, "w") as handle:
        subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=True, timeout=600)
    train_draws = [part for part in log.read_text().replace("\r", "\n").splitlines() if part.startswith("train:")]
    assert 1 <= len(train_draws) <= 4, train_draws
