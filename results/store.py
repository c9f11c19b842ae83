"""The run store: one SQLite row per run (schema versioned), written only by the driver.

The columns are the fields of `RunRecord`; those typed as a list or dict hold JSON of full-precision numbers,
never rounded strings. An older store is migrated in place when it is opened, in one transaction, keeping
every row: version 2 added the evaluation's columns, version 3 turned each row's metrics from a dict of
composed names into long form (`results.legacy`) and added the key version of each run (rows from before
it are under key version 1), version 4 added the budget view and the weights each layer kept, version 5 the
settings a run's key hashes (so the report can tell runs of one cell apart that differ in a setting). Runs under an
older key version are never looked up by a current key: `older` counts them, so the command line can say so,
and the report leaves them out.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from results.legacy import migrate_row
from results.record import RunRecord

SCHEMA_VERSION = 5
_SQL_TYPES = {str: "TEXT", float: "REAL", int: "INTEGER", list: "JSON", dict: "JSON"}


def _sql_type(hint: Any) -> str:
    """str | None -> TEXT, list[Metric] -> JSON, ..."""
    if isinstance(hint, types.UnionType):
        (hint,) = (t for t in typing.get_args(hint) if t is not type(None))
    return _SQL_TYPES[typing.get_origin(hint) or hint]


_HINTS = typing.get_type_hints(RunRecord)
COLUMNS = {f.name: _sql_type(_HINTS[f.name]) for f in dataclasses.fields(RunRecord)}
COLUMNS["key"] += " PRIMARY KEY"
JSON_COLUMNS = [name for name, kind in COLUMNS.items() if kind == "JSON"]
# the columns a version added
ADDED_IN = {2: ("evaluation", "checks", "eval_key"), 3: ("key_version",), 4: ("budget", "kept_per_layer"),
            5: ("settings",)}


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path)
        self._db.row_factory = sqlite3.Row
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{path} has schema version {version}; this rpbench reads {SCHEMA_VERSION}")
        if version == SCHEMA_VERSION:
            return
        with self._db:
            self._db.execute("BEGIN")  # the DDL too: a migration interrupted half-way leaves the old store
            if version == 0:
                columns = ", ".join(f"{name} {kind}" for name, kind in COLUMNS.items())
                self._db.execute(f"CREATE TABLE IF NOT EXISTS runs ({columns})")
            else:
                for later in range(version + 1, SCHEMA_VERSION + 1):
                    MIGRATIONS[later](self._db)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def put(self, record: RunRecord) -> None:
        """Insert or replace one run's row, atomically."""
        row = record.to_dict()
        for name in JSON_COLUMNS:
            row[name] = _dumps(row[name])
        names = ", ".join(row)
        marks = ", ".join(f":{name}" for name in row)
        with self._db:
            self._db.execute(f"INSERT OR REPLACE INTO runs ({names}) VALUES ({marks})", row)

    def get(self, key: str) -> RunRecord | None:
        row = self._db.execute("SELECT * FROM runs WHERE key = ?", (key,)).fetchone()
        return _decode(row) if row else None

    def all(self) -> list[RunRecord]:
        return [_decode(row) for row in self._db.execute("SELECT * FROM runs ORDER BY rowid")]

    def older(self, key_version: int) -> dict[int, int]:
        """Key version -> how many runs were computed under it, for the versions older than `key_version`
        (a row without one is from key version 1)."""
        rows = self._db.execute("SELECT COALESCE(key_version, 1) AS v, COUNT(*) FROM runs WHERE "
                                "COALESCE(key_version, 1) < ? GROUP BY v ORDER BY v", (key_version,)).fetchall()
        return {int(v): int(n) for v, n in rows}

    def close(self) -> None:
        self._db.close()


def _dumps(value: Any) -> str | None:
    return json.dumps(value) if value is not None else None


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else None


def _decode(row: sqlite3.Row) -> RunRecord:
    values = dict(row)
    for name in JSON_COLUMNS:
        values[name] = _loads(values[name])
    return RunRecord.from_dict(values)


def _add_columns(version: int, db: sqlite3.Connection) -> None:
    for name in ADDED_IN[version]:
        db.execute(f"ALTER TABLE runs ADD COLUMN {name} {COLUMNS[name]}")


def _long_form_metrics(db: sqlite3.Connection) -> None:
    _add_columns(3, db)
    for rowid, metrics, evaluation in db.execute("SELECT rowid, metrics, evaluation FROM runs").fetchall():
        long, evaluation = migrate_row(_loads(metrics), _loads(evaluation))
        db.execute("UPDATE runs SET metrics = ?, evaluation = ? WHERE rowid = ?",
                   (_dumps([dataclasses.asdict(m) for m in long]), _dumps(evaluation), rowid))


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {2: lambda db: _add_columns(2, db),
                                                                3: _long_form_metrics,
                                                                4: lambda db: _add_columns(4, db),
                                                                5: lambda db: _add_columns(5, db)}
