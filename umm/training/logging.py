"""Run logging: CSV metric streams (TensorBoard too when it is installed) and a progress display."""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Any


class CSVStream:
    """A wide CSV file (one row per step); a new metric later in the run extends the header in place."""

    def __init__(self, path: Path):
        self.path = path
        self.fields: list[str] = []
        if path.is_file():
            with path.open() as f:
                self.fields = next(csv.reader(f), [])

    def write(self, row: dict[str, Any]) -> None:
        new = [k for k in row if k not in self.fields]
        if new:
            rows = list(csv.DictReader(self.path.open())) if self.path.is_file() else []
            self.fields += new
            with self.path.open("w", newline="") as f:
                writer = csv.DictWriter(f, self.fields)
                writer.writeheader()
                writer.writerows(rows)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow(row)

    def truncate_after(self, step: int) -> None:
        """Drop rows past ``step`` (a resumed run rewrites the steps after its checkpoint)."""
        if not self.path.is_file():
            return
        rows = [r for r in csv.DictReader(self.path.open()) if int(r["step"]) <= step]
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, self.fields)
            writer.writeheader()
            writer.writerows(rows)


class MetricsLogger:
    """``train.csv`` and ``eval.csv`` under the run directory, mirrored to TensorBoard if available."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.enabled = enabled
        self.streams = {"train": CSVStream(run_dir / "train.csv"), "eval": CSVStream(run_dir / "eval.csv")}
        self.tensorboard = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # TensorBoard is optional; the CSV files always exist
                SummaryWriter = None
            if SummaryWriter is not None:
                self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, stream: str, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.streams[stream].write({"step": step, **metrics})
        if self.tensorboard is not None:
            for k, v in metrics.items():
                self.tensorboard.add_scalar(f"{stream}/{k}", v, step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


class Progress:
    """A rich progress bar on a terminal; plain log lines (every ``log_every`` steps) otherwise."""

    def __init__(self, total: int, description: str, enabled: bool = True, start: int = 0):
        self.enabled = enabled
        self.total = total
        self.description = description
        self.bar = None
        self.started = time.perf_counter()
        if enabled and sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
            )
            self.task = self.bar.add_task(description, total=total, completed=start, status="")
            self.bar.start()

    def update(self, step: int, status: str, force_line: bool = False) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=step, status=status)
        elif force_line:
            print(f"{self.description} {step}/{self.total} {status}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
