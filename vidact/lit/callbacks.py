"""Pieces around the Lightning loop that vidact changes from the defaults.

Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts, so a resumed run
would lose the rows of the steps before its checkpoint. :class:`ResumableCSVLogger` appends
instead, keeping the file's columns, and drops rows the resumed run is about to log again (steps
after the checkpoint that an interrupted run had already logged).

:func:`wandb_logger` keeps the wandb run id in ``run_dir/wandb_id``, so a resumed or requeued run
continues the same wandb run (offline runs sync later with ``wandb sync run_dir/wandb/offline-*``).
"""

from __future__ import annotations

import csv
import os
import secrets
import string
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Keep metrics.csv, and start from its header: the writer rewrites the file whenever it
        # sees a column it does not know, and it must know the old columns to keep their values.
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(header)

    def save(self) -> None:
        first_step = min((m["step"] for m in self.metrics), default=None)
        if first_step is not None and os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                rows = list(csv.DictReader(f))
            kept = [r for r in rows if int(r["step"]) < first_step]
            if len(kept) < len(rows):
                with open(self.metrics_file_path, "w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
                    writer.writeheader()
                    writer.writerows(kept)
        super().save()


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` writing ``<save_dir>/metrics.csv`` and appending to it across resumes."""

    def __init__(self, save_dir) -> None:
        super().__init__(save_dir=save_dir, name="", version="")

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


WANDB_ID_FILE = "wandb_id"


def wandb_logger(cfg, run_dir: Path):
    """A ``WandbLogger`` in ``run_dir/wandb`` (mode ``log.wandb``) that reuses the run's id."""
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    id_file = Path(run_dir) / WANDB_ID_FILE
    if id_file.is_file():
        run_id = id_file.read_text().strip()
    else:
        # wandb's own id format (8 lowercase alphanumerics); wandb 0.31 no longer exports generate_id.
        run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        if rank_zero_only.rank == 0:
            tmp = id_file.with_name(f".{WANDB_ID_FILE}.tmp")
            tmp.write_text(run_id)
            os.replace(tmp, id_file)
    return WandbLogger(project=cfg.log.project, name=cfg.name, id=run_id, resume="allow", save_dir=str(run_dir),
                       mode=cfg.log.wandb, log_model=False)
