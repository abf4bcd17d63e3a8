"""Progress bars that suit where they are written: live on a terminal, a few lines a minute in a log file or pipe.

tqdm redraws a bar up to ten times a second; on a terminal that is one line, in a file every redraw is kept, and a
training run's log grows by thousands of lines. Off a terminal, a bar here redraws at most every 20 seconds.
"""

from __future__ import annotations

import sys

LOG_INTERVAL_SECONDS = 20.0


def progress_bar(iterable=None, **kwargs):
    """`tqdm.auto.tqdm(iterable, **kwargs)`, throttled to one redraw per `LOG_INTERVAL_SECONDS` off a terminal."""
    from tqdm.auto import tqdm

    stream = kwargs.get("file") or sys.stderr
    if not _is_terminal(stream):
        kwargs.setdefault("mininterval", LOG_INTERVAL_SECONDS)
        kwargs.setdefault("maxinterval", max(LOG_INTERVAL_SECONDS, 10.0))
    return tqdm(iterable, **kwargs)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


__all__ = ["progress_bar", "LOG_INTERVAL_SECONDS"]
