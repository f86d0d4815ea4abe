"""Training logs: JSON lines always, TensorBoard event files when tensorboard is installed."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from vqvae.files import atomic_write_text, writing


class MetricsLog:
    def __init__(self, path: str | Path, tensorboard_dir: str | Path | None = None) -> None:
        self.path = Path(path)
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        self._tb = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                pass
            else:
                self._tb = SummaryWriter(str(tensorboard_dir))

    def write(self, step: int, values: dict[str, Any], prefix: str = "train") -> None:
        record = {"step": step, **{f"{prefix}/{k}": v for k, v in values.items()}}
        with writing(self.path):
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, int | float):
                    self._tb.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # a full disk was reported by the write itself
            self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_log(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
    return rows


def truncate_log(path: str | Path, step: int) -> None:
    """Drop the rows after ``step`` (a resumed run logs those steps again)."""
    path = Path(path)
    if not path.is_file():
        return
    rows = [r for r in read_log(path) if int(r.get("step", 0)) <= step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
