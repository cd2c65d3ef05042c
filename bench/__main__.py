"""Run every benchmark, write bench/results/<name>.json, print a short table."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench import chaos, consent, ingest, linking, notifications, pipeline, timeline
from shared.logging import configure_logging

RESULTS = Path(__file__).parent / "results"
BENCHMARKS = {
    "ingest": ingest.run,
    "pipeline": pipeline.run,
    "consent": consent.run,
    "linking": linking.run,
    "timeline": timeline.run,
    "notifications": notifications.run,
    "chaos": chaos.run,  # faults, not capacity: `make chaos`, not part of a plain `make bench`
}
DEFAULT = [name for name in BENCHMARKS if name != "chaos"]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (for a smoke run)")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    configure_logging("bench", "WARNING", json=True)
    # Benchmarks measure capacity, not the per-client rate limit (100 requests/s per process by
    # default), which a few benchmark clients at full load would exceed.
    os.environ.setdefault("THREADLINE_RATE_LIMIT_PER_SECOND", "1000000")
    os.environ.setdefault("THREADLINE_RATE_LIMIT_BURST", "1000000")
    for name in args.only or DEFAULT:
        result = BENCHMARKS[name](quick=args.quick)
        result["machine"] = {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        }
        result["finished_at"] = datetime.now(UTC).isoformat()
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"\n{name}  →  bench/results/{name}.json")
        print(f"{'metric':<44} {'value':>12}  unit")
        for metric, (value, unit) in result["table"].items():
            print(f"{metric:<44} {value:>12}  {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
