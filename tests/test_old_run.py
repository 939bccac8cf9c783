"""A run folder written by main at 362afc7 (before issue 30's one run model) still reads, compares,
exports, reports and plans the same.

tests/data/run-main-362afc7/ is what `bench run` wrote for a four-scenario suite (its suite.yaml is
in it), less the files no reader needs and that are large: workers/ (the workers' own files),
figures/, report.html, report.md and results.csv (the report writes those again). The expected
outputs in tests/data/run-main-362afc7.expected/ were written by that same main from this folder:
the compare verdicts (the folder against a copy of itself, and against its own rows read back
from the history), the three export formats, report.md (less its "Generated" time; the folder's
path as RUN_DIR) and results.csv.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.cli import main

DATA = Path(__file__).parent / "data"
OLD_RUN = DATA / "run-main-362afc7"
EXPECTED = DATA / "run-main-362afc7.expected"
RUN_ID = "20261207-152344-oldrun"
VERDICT_KEYS = ("scenario_id", "metric", "verdict", "baseline", "candidate", "change", "ci_low", "ci_high", "note")


@pytest.fixture
def old(tmp_path: Path) -> Path:
    """A copy of the checked-in run, so that nothing a command writes lands in tests/data."""
    return Path(shutil.copytree(OLD_RUN, tmp_path / "old"))


def _verdicts(out: str) -> dict:
    data = json.loads(out)
    return {"summary": data["summary"], "rows": [{k: row[k] for k in VERDICT_KEYS} for row in data["rows"]]}


def test_compare_gives_the_verdicts_main_gave(old, tmp_path, capsys):
    expected = json.loads((EXPECTED / "compare.json").read_text(encoding="utf-8"))
    other = shutil.copytree(old, tmp_path / "old2")
    history = tmp_path / "h.sqlite"
    assert main(["compare", str(old), str(other), "--format", "json", "--history", str(history)]) == 0
    assert _verdicts(capsys.readouterr().out) == expected
    # ... and the same once its rows went through the history and came back
    assert main(["history", "import", str(old), "--history", str(history), "--label", "fixture"]) == 0
    capsys.readouterr()
    assert main(["compare", RUN_ID, str(other), "--format", "json", "--history", str(history)]) == 0
    assert _verdicts(capsys.readouterr().out) == expected


@pytest.mark.parametrize("kind", ["github-action-benchmark", "bencher", "openmetrics"])
def test_export_writes_what_main_wrote(old, tmp_path, kind):
    out = tmp_path / "export.txt"
    assert main(["export", str(old), "--format", kind, "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == (EXPECTED / f"export-{kind}.txt").read_text(encoding="utf-8")


def test_the_report_says_what_main_said(old, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(old), "--out", str(out)]) == 0
    lines = (out / "report.md").read_text(encoding="utf-8").splitlines()
    assert sum(line.startswith("Generated ") for line in lines) == 1
    shown = "\n".join(line for line in lines if not line.startswith("Generated ")).replace(str(old), "RUN_DIR")
    assert shown + "\n" == (EXPECTED / "report.md").read_text(encoding="utf-8")
    assert (out / "results.csv").read_text(encoding="utf-8") == (EXPECTED / "results.csv").read_text(encoding="utf-8")


def test_plan_says_the_run_has_no_capacity_rows(old, tmp_path, capsys):
    assert (
        main(
            [
                "plan",
                "--run",
                str(old),
                "--slo-p99-ms",
                "50",
                "--target-qps",
                "100",
                "--history",
                str(tmp_path / "h.sqlite"),
            ]
        )
        == 2
    )
    assert f"run {RUN_ID} ({old}) has no capacity measurements" in capsys.readouterr().err
