"""Errors for dataset folders that say something a loader cannot use, and the report of what `skip_bad` skipped.

Policy (one for every loader): a bad item, e.g. a missing or corrupt image, a caption file that is missing or has the
wrong number of lines, a metadata line that does not parse, an image without a label, a label naming an unknown
class, raises `DatasetLayoutError`, whose message names the file and the line (or, for MATLAB files, the entry).
Only when the caller asks for it explicitly (`skip_bad=True`, `cam-joint prepare-data --skip-bad`) is such an item
left out instead, and then it is recorded in a `SkipReport` that is printed: nothing is ever dropped silently.

Problems that leave nothing to load (no `images.txt`, an unreadable `.mat` file) always raise.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SKIP_HINT = " (pass skip_bad=True, or --skip-bad on the command line, to skip such items and report them)"


class DatasetLayoutError(ValueError):
    """A dataset file is missing or malformed; the message starts with ``path:line:`` (or ``path [entry]:``)."""

    def __init__(self, path: str | Path, problem: str, *, line: int | None = None, entry: str | None = None):
        self.path = Path(path)
        self.line = line
        self.entry = entry
        self.problem = problem
        super().__init__(f"{format_location(self.path, line, entry)}: {problem}")


def format_location(path: Path, line: int | None = None, entry: str | None = None) -> str:
    if line is not None:
        return f"{path}:{line}"
    if entry is not None:
        return f"{path} [{entry}]"
    return str(path)


@dataclass(frozen=True)
class SkippedItem:
    """One item left out under `skip_bad`: where the problem is, what it is, and which image it cost (if any)."""

    kind: str  # short category used to group the report, e.g. "missing image file"
    path: Path
    problem: str
    line: int | None = None
    entry: str | None = None
    image_id: str | None = None

    def describe(self) -> str:
        image = f" (image {self.image_id})" if self.image_id else ""
        return f"{format_location(self.path, self.line, self.entry)}: {self.problem}{image}"


@dataclass
class SkipReport:
    """Everything skipped while building one dataset; `format()` is what gets printed."""

    items: list[SkippedItem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def counts(self) -> Counter[str]:
        return Counter(item.kind for item in self.items)

    def format(self, examples_per_kind: int = 3) -> str:
        if not self.items:
            return "Skipped items: none."
        lines = [f"Skipped {len(self.items)} bad item(s) (skip_bad):"]
        for kind, count in sorted(self.counts().items()):
            lines.append(f"  {count} x {kind}, e.g.")
            examples = [item for item in self.items if item.kind == kind][:examples_per_kind]
            lines.extend(f"      {item.describe()}" for item in examples)
        return "\n".join(lines)


@dataclass
class BadItemPolicy:
    """Raise on a bad item, or (only with ``skip_bad``) record it in ``report`` and let the caller skip it."""

    skip_bad: bool = False
    report: SkipReport = field(default_factory=SkipReport)
    owns_report: bool = False

    @classmethod
    def for_load(cls, skip_bad: bool, report: SkipReport | None) -> "BadItemPolicy":
        """The policy of one loader call: records into the caller's ``report``, or into its own, which
        `log_if_owned` then logs (nothing is dropped silently)."""
        return cls(skip_bad=skip_bad, report=report if report is not None else SkipReport(), owns_report=report is None)

    def log_if_owned(self, logger) -> None:
        if self.owns_report and len(self.report):
            logger.warning("%s", self.report.format())

    def reject(
        self,
        kind: str,
        path: str | Path,
        problem: str,
        *,
        line: int | None = None,
        entry: str | None = None,
        image_id: str | None = None,
    ) -> None:
        """Raise `DatasetLayoutError`, or record the item as skipped; a caller skips the item when this returns."""
        if not self.skip_bad:
            raise DatasetLayoutError(path, problem + SKIP_HINT, line=line, entry=entry)
        self.report.items.append(
            SkippedItem(kind=kind, path=Path(path), problem=problem, line=line, entry=entry, image_id=image_id)
        )
