#!/usr/bin/env python
"""What a run computed, as a short fingerprint: its metrics rows without the timings, and every VisualDL record
without wall times (and without the random id VisualDL gives a hyper-parameter record), hashed per tag.

Two runs of the same config, seed, code path and thread count print the same JSON; a refactor that must not
change behaviour is checked by training the same runs before and after and comparing (how issue 30's moves were
checked):

    .venv/bin/python scripts/fingerprint_run.py checkpoints/RUN > before.json
    ... change the code, train the same run again under the same name ...
    .venv/bin/python scripts/fingerprint_run.py checkpoints/RUN | diff before.json -
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from mnist_kit.board.writer import read_records
from mnist_kit.experiments.rundir import TIMING_KEYS


def fingerprint(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    tags: dict[str, list[str]] = {}
    for path in sorted((run / "vdl").rglob("*vdlrecords*")):
        for record in read_records(path):
            for value in record.values:
                value.timestamp = 0
                if value.HasField("hparam"):
                    value.hparam.name = ""
                if "per_sec" in value.tag or "seconds" in value.tag:
                    continue  # timings differ between identical runs
                digest = hashlib.sha256(value.SerializeToString()).hexdigest()[:16]
                tags.setdefault(f"{path.parent.name}/{value.tag}", []).append(digest)
    return {"metrics": [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows],
            "records": {tag: f"{hashlib.sha256(''.join(d).encode()).hexdigest()[:16]} x{len(d)}"
                        for tag, d in sorted(tags.items())}}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: fingerprint_run.py RUN_DIR")
    print(json.dumps(fingerprint(Path(sys.argv[1])), indent=1))
