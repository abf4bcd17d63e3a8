"""Progress bars: live on a terminal, throttled in a log file or a pipe."""

import io
import time

from cam_joint.progress import LOG_INTERVAL_SECONDS, progress_bar


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def _redraws(stream, seconds=0.6, updates=60):
    bar = progress_bar(total=updates, file=stream, desc="train")
    for _ in range(updates):
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
