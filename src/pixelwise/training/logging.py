"""What a run tells the world: a progress bar (or plain lines), metrics.jsonl/.csv, TensorBoard.

Only the main process writes (`enabled=False` on other ranks). The CSV is rewritten from
all rows each epoch so a metric that first appears later still gets its own column.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from pixelwise import atomic


def _plain(value: Any) -> Any:
    """JSON-friendly scalar: NaN/inf become None (JSON null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Progress:
    """Per-step progress: a tqdm bar on a terminal, a plain line every `every` steps otherwise."""

    def __init__(self, total: int, desc: str, *, enabled: bool = True, every: int = 10,
                 stream: TextIO | None = None):
        self.total, self.desc, self.enabled, self.every = total, desc, enabled, every
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.step = 0
        self.bar = None
        if enabled and self.stream.isatty():
            self.bar = tqdm(total=total, desc=desc, file=self.stream, dynamic_ncols=True, leave=False)

    def update(self, loss: float, images: int) -> None:
        """One optimizer step done; `images` is the running count of images this epoch."""
        self.step += 1
        if not self.enabled:
            return
        elapsed = max(1e-9, time.perf_counter() - self.start)
        rate = images / elapsed
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.1f}", refresh=False)
            self.bar.update(1)
        elif self.step % self.every == 0 or self.step == self.total:
            eta = elapsed / self.step * (self.total - self.step)
            print(f"{self.desc} step {self.step}/{self.total} loss {loss:.4f} "
                  f"{rate:.1f} img/s eta {eta:.0f}s", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class RunLogger:
    """Epoch metrics to RUN_DIR/metrics.jsonl, metrics.csv and RUN_DIR/tensorboard/."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, resume: bool = False):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.rows: list[dict[str, Any]] = []
        self.writer = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.run_dir / "metrics.jsonl"
        self.csv = self.run_dir / "metrics.csv"
        if resume and self.jsonl.exists():
            self.rows = [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]
        else:
            atomic.write_text(self.jsonl, "")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def truncate_after(self, epoch: int) -> None:
        """On resume, drop rows of epochs that will be trained again."""
        if not self.enabled:
            return
        self.rows = [r for r in self.rows if r.get("epoch", 0) <= epoch]
        self._write_jsonl()

    def log_epoch(self, row: dict[str, Any]) -> None:
        """Append one epoch row (scalars only) everywhere."""
        if not self.enabled:
            return
        row = {k: _plain(v) for k, v in row.items()}
        self.rows.append(row)
        self._write_jsonl()
        self._write_csv()
        epoch = int(row.get("epoch", len(self.rows)))
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, epoch)
        self.writer.flush()

    def _write_jsonl(self) -> None:
        # Rewritten whole and atomically (a few KB): a kill mid-append would leave a torn
        # last line that the resumed run could not parse.
        atomic.write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.rows))

    def _write_csv(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic.write_text(self.csv, buffer.getvalue())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
