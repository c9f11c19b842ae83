"""The run store: one SQLite row per run (schema versioned), written only by the driver.

Metrics and costs are stored as JSON of full-precision numbers, never as rounded strings.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
COLUMNS = {
    "key": "TEXT PRIMARY KEY",
    "dataset": "TEXT", "arch": "TEXT", "objective": "TEXT", "pretrain_objective": "TEXT",
    "method": "TEXT", "scope": "TEXT", "sparsity": "REAL", "sparsity_actual": "REAL",
    "seed": "INTEGER", "preset": "TEXT",
    "metrics": "JSON", "cost": "JSON", "versions": "JSON", "eval_desc": "TEXT",
    "device": "TEXT", "status": "TEXT", "error": "TEXT", "finished_at": "TEXT",
    # version 2: the evaluation's sweep and wall times, its self-checks, and the key of its settings
    "evaluation": "JSON", "checks": "JSON", "eval_key": "TEXT",
}
ADDED_IN = {2: ("evaluation", "checks", "eval_key")}
JSON_COLUMNS = {name for name, kind in COLUMNS.items() if kind == "JSON"}


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path)
        self._db.row_factory = sqlite3.Row
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{path} has schema version {version}; this rpbench reads {SCHEMA_VERSION}")
        with self._db:
            if version == 0:
                columns = ", ".join(f"{name} {kind}" for name, kind in COLUMNS.items())
                self._db.execute(f"CREATE TABLE IF NOT EXISTS runs ({columns})")
            else:  # an older store: add what later versions added, keep every row
                for added in range(version + 1, SCHEMA_VERSION + 1):
                    for name in ADDED_IN[added]:
                        self._db.execute(f"ALTER TABLE runs ADD COLUMN {name} {COLUMNS[name]}")
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def put(self, record: dict[str, Any]) -> None:
        """Insert or replace one run's row, atomically."""
        row = {name: record.get(name) for name in COLUMNS}
        for name in JSON_COLUMNS:
            row[name] = json.dumps(row[name]) if row[name] is not None else None
        names = ", ".join(row)
        marks = ", ".join(f":{name}" for name in row)
        with self._db:
            self._db.execute(f"INSERT OR REPLACE INTO runs ({names}) VALUES ({marks})", row)

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM runs WHERE key = ?", (key,)).fetchone()
        return _decode(row) if row else None

    def all(self) -> list[dict[str, Any]]:
        return [_decode(row) for row in self._db.execute("SELECT * FROM runs ORDER BY rowid")]

    def close(self) -> None:
        self._db.close()


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    record = dict(row)
    for name in JSON_COLUMNS:
        record[name] = json.loads(record[name]) if record[name] else None
    metrics = record.get("metrics") or {}
    record.update(metrics)
    return record
