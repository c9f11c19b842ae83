"""Progress bars (on a terminal, unless --quiet) and the per-run log file."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from benchmark.core.io import main_process

T = TypeVar("T")


class _NoBar:
    def update(self, n: int = 1, **postfix: Any) -> None:
        pass

    def close(self) -> None:
        pass


class _Bar:
    def __init__(self, bar: tqdm) -> None:
        self._bar = bar

    def update(self, n: int = 1, **postfix: Any) -> None:
        self._bar.update(n)
        if postfix:
            self._bar.set_postfix({k: f"{v:.3f}" if isinstance(v, float) else v for k, v in postfix.items()},
                                  refresh=False)

    def close(self) -> None:
        self._bar.close()


class Progress:
    """Bars go to stderr only when it is a terminal and not quiet; log lines always go to the log file."""

    def __init__(self, quiet: bool = False, log_file: Path | None = None, label: str = "") -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self.quiet = quiet
        self.log_file = log_file
        self.label = label

    def bar(self, total: int, desc: str, initial: int = 0) -> _Bar | _NoBar:
        if not self.enabled:
            return _NoBar()
        prefix = f"{self.label} {desc}".strip()
        return _Bar(tqdm(total=total, initial=initial, desc=prefix, leave=False, dynamic_ncols=True))

    def track(self, items: Iterable[T], total: int, desc: str) -> Iterator[T]:
        """Yield from items while a bar counts them."""
        bar = self.bar(total=total, desc=desc)
        for item in items:
            yield item
            bar.update(1)
        bar.close()

    def log(self, line: str) -> None:
        if self.log_file is not None and main_process():  # under --ddp every rank would log the same line
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            with self.log_file.open("a") as f:
                f.write(line + "\n")

    def for_run(self, log_file: Path, label: str) -> Progress:
        return Progress(self.quiet, log_file, label)

    def say(self, line: str) -> None:
        """A status line for the user (stdout), unless quiet."""
        if not self.quiet:
            (tqdm.write if self.enabled else print)(line)
