"""What each evaluator and check cost in the runs of a store: seconds per attacked example, per evaluator.

    python benchmarks/eval_cost.py --out runs

Reads the wall times and attacked-example counts every evaluation records (record.evaluation), so the
figures are those of the real models of the grid, on the machine that ran it. Prints one line per evaluator:
the median and the minimum over runs of milliseconds per attacked example.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

from results.record import RunRecord
from results.store import Store


def per_example_ms(records: list[RunRecord]) -> dict[str, list[float]]:
    """Evaluator or check label -> milliseconds per attacked example, one value per run that attacked any."""
    costs: dict[str, list[float]] = defaultdict(list)
    for record in records:
        evaluation = record.evaluation or {}
        for label, seconds in (evaluation.get("seconds") or {}).items():
            attacked = (evaluation.get("attacked") or {}).get(label)
            if attacked:
                costs[label].append(1000 * seconds / attacked)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs"), help="the folder given to `run --out`")
    args = parser.parse_args()
    records = [r for r in Store(args.out / "runs.db").all() if r.status == "done"]
    for label, values in sorted(per_example_ms(records).items()):
        print(f"{label:>18}: median {statistics.median(values):8.2f} ms/example, min {min(values):8.2f} "
              f"({len(values)} runs)")


if __name__ == "__main__":
    main()
