"""The benchmark report builds from the committed JSON files alone and shows every section."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from bench import report


def test_report_builds_from_the_committed_results_with_every_section(tmp_path: Path) -> None:
    output = tmp_path / "report.html"

    assert report.main([str(report.RESULTS), str(output)]) == 0

    page = output.read_text()
    for title in report.SECTIONS:
        assert f"<h2>{title}</h2>" in page
    assert "<script" not in page and "http://" not in page.replace(
        "http://www.w3.org/2000/svg", ""
    ), "the page is self-contained"
    assert page.count("<svg") >= 4, "throughput, latency, lag and the precision-recall curve"
    # Every headline measured is shown with its verdict against the target.
    assert re.search(r"accepted referrals/s.*?class='verdict (PASS|MISS)'", page, re.S)
    assert "decide p99" in page and "messages delivered" in page


def test_a_missing_benchmark_is_said_to_be_missing(tmp_path: Path) -> None:
    shutil.copy(report.RESULTS / "ingest.json", tmp_path / "ingest.json")

    page = report.build(tmp_path)

    assert "not run (no JSON)" in page
    assert "No scaling.json" in page
    assert "linking.json has no precision_recall_curve" in page
