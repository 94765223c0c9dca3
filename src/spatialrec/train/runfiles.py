"""The files of a run in ``out_dir``: ``metrics.csv``, ``last.pt`` / ``best.pt``, ``metrics.json``.

Only the main process writes; :class:`RunFiles` with ``out_dir=None`` (no output folder, or a
process other than rank 0) writes nothing. Every file is replaced atomically through
:mod:`spatialrec.io` (temporary file in the same folder, fsync, rename), the checkpoints
(:mod:`spatialrec.train.checkpoint`) included: ``metrics.csv`` is rewritten whole after each epoch
rather than appended to, so that a kill mid-write never leaves a torn last row.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Optional, Sequence

from ..summary import json_safe
from ..io import atomic_write_text as atomic_write_text  # re-exported: it lived here before spatialrec.io
from ..io import write_error
from .checkpoint import BEST_CHECKPOINT, LAST_CHECKPOINT, save_checkpoint

CSV_COLUMNS = ("epoch", "train_loss", "train_dice", "val_loss", "val_dice", "lr", "epoch_time", "train_time")
"""The columns of ``metrics.csv`` and the keys of each row of ``FitResult.history``."""

METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"

RUN_FILES = (LAST_CHECKPOINT, BEST_CHECKPOINT, METRICS_CSV, METRICS_JSON)
"""The files of a run; each is written through a temporary ``.<name>.tmp-<pid>`` beside it."""

_TEMP = re.compile(r"^\.(" + "|".join(re.escape(n) for n in RUN_FILES) + r")\.tmp-(\d+)$")

logger = logging.getLogger("spatialrec.train")


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` may be running on this machine; ``True`` whenever that cannot be ruled out."""
    if pid <= 0 or pid == os.getpid():
        return True
    if os.name != "posix":
        return True  # no harmless probe (os.kill would end the process on Windows): keep the file
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, only existence and permission are checked
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Remove the temporary files (``.last.pt.tmp-<pid>`` ...) that dead processes left in ``folder``.

    A save interrupted by a kill leaves its temporary file behind. Only files named like the
    temporaries of :data:`RUN_FILES` are considered, and only those whose process no longer
    exists on this machine are removed: a live process's file (another run writing here, or
    this process) is never touched. (On a folder shared between machines a pid names a process
    of this machine only; only rank 0 of a run writes, so run one job per folder.)

    Returns:
        The removed files.
    """
    removed = []
    for path in sorted(folder.glob(".*.tmp-*")):
        match = _TEMP.match(path.name)
        if match is None or not path.is_file() or _pid_alive(int(match.group(2))):
            continue
        try:
            path.unlink()
        except FileNotFoundError:  # removed meanwhile by someone else
            continue
        removed.append(path)
    if removed:
        logger.info("removed %d temporary file(s) left by interrupted saves: %s", len(removed), [p.name for p in removed])
    return removed


def csv_text(rows: Sequence[dict[str, float]], header: bool = True) -> str:
    """``rows`` as CSV text with the columns :data:`CSV_COLUMNS`."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), extrasaction="ignore", lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


class RunFiles:
    """Writes a run's files to ``out_dir``, or nothing when ``out_dir`` is ``None``."""

    def __init__(self, out_dir: Optional[Path]) -> None:
        self.out_dir = out_dir
        self._rows: list[dict[str, float]] = []  # what metrics.csv holds

    def start(self, history: Sequence[dict[str, float]]) -> None:
        """Create the folder, :func:`remove_stale_temp_files`, write ``metrics.csv`` from ``history``.

        The checkpoint's history is the truth: a row written after the last checkpoint (by a
        run killed in between) is dropped.
        """
        if self.out_dir is None:
            return
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise write_error(err, self.out_dir, "the output folder") from err
        remove_stale_temp_files(self.out_dir)
        self._rows = list(history)
        atomic_write_text(self.out_dir / METRICS_CSV, csv_text(self._rows))

    def save_epoch(self, row: dict[str, float], checkpoint: dict[str, Any], improved: bool) -> Optional[Path]:
        """Add ``row`` to ``metrics.csv`` (rewritten atomically), save ``best.pt`` when ``improved``, then ``last.pt``.

        Returns:
            The path of ``last.pt``, or ``None`` when nothing is written.
        """
        if self.out_dir is None:
            return None
        # A few hundred short rows: rewriting them all costs far less than the checkpoint after it.
        self._rows.append(row)
        atomic_write_text(self.out_dir / METRICS_CSV, csv_text(self._rows), f"{METRICS_CSV} with the row of epoch {row.get('epoch')} (the previous one, if any, is intact)")
        # best before last: after a kill in between, best.pt is never older than last.pt says.
        if improved:
            save_checkpoint(checkpoint, self.out_dir / BEST_CHECKPOINT)
        return save_checkpoint(checkpoint, self.out_dir / LAST_CHECKPOINT)

    def finish(self, summary: dict[str, Any]) -> None:
        """Write ``metrics.json`` (non-finite numbers as ``null``)."""
        if self.out_dir is None:
            return
        atomic_write_text(self.out_dir / METRICS_JSON, json.dumps(json_safe(summary), indent=2) + "\n")


__all__ = [
    "CSV_COLUMNS",
    "METRICS_CSV",
    "METRICS_JSON",
    "RUN_FILES",
    "RunFiles",
    "atomic_write_text",
    "csv_text",
    "remove_stale_temp_files",
]
