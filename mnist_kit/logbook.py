"""VisualDL logging for a run: one writer per run directory, written by one process.

This first version logs scalars; every VisualDL component is added here, behind the same small API.
On resume, the records up to the resumed step are carried into a fresh log file and the rest are set
aside, so the log has no duplicated and no missing steps.
"""

from __future__ import annotations

import shutil
import struct
import time
from pathlib import Path


def read_records(path: Path) -> list:
    """The ``Record`` protos of a VisualDL records file; a frame cut short by a crash ends the list."""
    from visualdl.proto.record_pb2 import Record

    blob = Path(path).read_bytes()
    out, pos = [], 0
    while pos + 8 <= len(blob):
        (length,) = struct.unpack("<Q", blob[pos:pos + 8])
        if pos + 8 + length > len(blob):
            break
        try:
            out.append(Record.FromString(blob[pos + 8:pos + 8 + length]))
        except Exception:  # noqa: BLE001 - a damaged tail: keep what came before
            break
        pos += 8 + length
    return out


class Logbook:
    def __init__(self, logdir: Path | None, resume_step: int | None = None, superseded: Path | None = None):
        """``resume_step``: keep the existing records up to and including this step; those after it are moved
        (with the old files) to ``superseded``."""
        self.writer = None
        if logdir is None:
            return
        from visualdl import LogWriter  # imported only when logging is on

        logdir = Path(logdir)
        old_files = sorted(logdir.glob("vdlrecords*")) if resume_step is not None else []
        kept, dropped = [], 0
        for f in old_files:
            for record in read_records(f):
                values = [v for v in record.values if v.tag != "meta_data_tag"]
                keep = [v for v in values if v.id <= resume_step]
                dropped += len(values) - len(keep)
                if keep:
                    del record.values[:]
                    record.values.extend(keep)
                    kept.append(record)
        stamp = f"{int(time.time()):010d}"
        name = f"vdlrecords.{stamp}.log" if not old_files else f"vdlrecords.{stamp}.resumed{len(old_files)}.log"
        self.writer = LogWriter(logdir=str(logdir), file_name=name)
        if old_files:
            file_writer = self.writer._get_file_writer()  # the records are replayed as they were written
            for record in kept:
                file_writer.add_record(record)
            self.writer.flush()
            for f in old_files:
                if dropped and superseded is not None:
                    superseded.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(f), superseded / f.name)
                else:
                    f.unlink()

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag=tag, value=float(value), step=int(step))

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
