"""`report --format json`: one leaderboard-style JSON record per run, one per line (runs.jsonl).

A line is the run's whole `RunRecord` (cell, every metric in long form at full precision, cost, evaluation,
checks, versions, keys) plus what a leaderboard reads without knowing rpbench: the threat model (from the
evaluation description), the cost beyond the shared pretraining, and the metrics by their results.csv column.
`read_jsonl` gives the records back exactly; the derived fields are left out on the way back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmark.core.io import atomic_write_text
from results.cost import method_cost
from results.record import RunRecord
from results.threat import threat_model

FORMAT = "rpbench-run"
FORMAT_VERSION = 1
DERIVED = ("format", "format_version", "threat_model", "cost_beyond_pretraining", "metrics_by_column")


def entry(record: RunRecord) -> dict[str, Any]:
    """The leaderboard record of one run."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, **record.to_dict(),
            "threat_model": threat_model(record.eval_desc).to_dict(),
            "cost_beyond_pretraining": method_cost(record), "metrics_by_column": record.by_column()}


def write_jsonl(records: list[RunRecord], path: Path) -> None:
    """One line per record, in order (floats as Python writes them: the shortest text that reads back the same)."""
    atomic_write_text("".join(json.dumps(entry(r), sort_keys=False) + "\n" for r in records), path)


def read_jsonl(path: Path) -> list[RunRecord]:
    """The records of a runs.jsonl file."""
    records = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        values = json.loads(line)
        if values.get("format") != FORMAT:
            raise ValueError(f"{path}:{number}: not an {FORMAT} record")
        records.append(RunRecord.from_dict({k: v for k, v in values.items() if k not in DERIVED}))
    return records
