"""One rule for every output path (bench.commands.common): a file output is never a folder, a folder
output never a file, folders missing on the way are created, and a path that breaks the rule is refused
when the command line is read (exit 2, before any work), naming the path. Counts and limits are >= 1."""

from __future__ import annotations

import pytest
from support.capacity_fakes import two_core_run
from support.demo_runs import Spec, make_run

from bench.cli import main
from bench.commands.common import check_writable, write_output
from bench.errors import UserError

# Each file output, as a working command line with OUT where the path goes.
FILE_OUTPUTS = {
    "export --output": ["export", "RUN", "--format", "bencher", "--output", "OUT"],
    "compare --output": ["compare", "RUN", "RUN", "--output", "OUT"],
    "plan --output": ["plan", "--run", "RUN", "--slo-p99-ms", "50", "--target-qps", "20000", "--output", "OUT"],
    "history --html": ["history", "--history", "HISTORY", "--html", "OUT"],
    "history export": ["history", "export", "OUT", "--history", "HISTORY"],
}
# Each folder output; the suite and scenario need not exist: the path is refused first.
FOLDER_OUTPUTS = {
    "run --reports": ["run", "missing.yaml", "--reports", "OUT"],
    "report --out": ["report", "RUN", "--out", "OUT"],
    "profile --out": ["profile", "some-id", "--suite", "missing.yaml", "--out", "OUT"],
    "profile --reports": ["profile", "some-id", "--suite", "missing.yaml", "--reports", "OUT"],
    "selfcheck --reports": ["selfcheck", "--reports", "OUT"],
}


@pytest.fixture
def paths(tmp_path):
    """RUN: a run folder with a capacity row (for plan); HISTORY: a history that holds it."""
    run_dir = make_run(tmp_path, [Spec(extra={"capacity": two_core_run()}), Spec(batch_size=4)])
    history = tmp_path / "history.sqlite"
    assert main(["history", "import", str(run_dir), "--history", str(history)]) == 0
    return {"RUN": str(run_dir), "HISTORY": str(history)}


def _argv(template: list[str], paths: dict[str, str], out) -> list[str]:
    return [paths.get(arg, str(out) if arg == "OUT" else arg) for arg in template]


def _refused(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "internal error" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("command", FILE_OUTPUTS)
def test_a_file_output_that_is_a_folder_or_under_a_file_is_refused_before_any_work(command, paths, tmp_path, capsys):
    folder = tmp_path / "some-folder"
    folder.mkdir()
    err = _refused(_argv(FILE_OUTPUTS[command], paths, folder), capsys)
    assert f"{folder} is a folder, not a file" in err
    assert list(folder.iterdir()) == []
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    err = _refused(_argv(FILE_OUTPUTS[command], paths, blocker / "out.json"), capsys)
    assert f"{blocker / 'out.json'} cannot be created: {blocker} is a file, not a folder" in err
    assert blocker.read_text() == "mine"


@pytest.mark.parametrize("command", FILE_OUTPUTS)
def test_a_file_output_gets_its_missing_folders_created(command, paths, tmp_path, capsys):
    out = tmp_path / "missing" / "deeper" / "out.txt"
    assert main(_argv(FILE_OUTPUTS[command], paths, out)) == 0, capsys.readouterr().err
    assert out.read_text(encoding="utf-8").strip()


@pytest.mark.parametrize("command", FOLDER_OUTPUTS)
def test_a_folder_output_that_is_a_file_is_refused_as_a_file(command, paths, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    err = _refused(_argv(FOLDER_OUTPUTS[command], paths, blocker), capsys)
    assert f"{blocker} is a file, not a folder" in err and "File exists" not in err
    assert blocker.read_text() == "mine"


def test_a_folder_output_gets_its_missing_folders_created(paths, tmp_path, capsys):
    out = tmp_path / "missing" / "side-by-side"
    assert main(["report", paths["RUN"], "--out", str(out)]) == 0
    assert (out / "report.html").is_file()


def test_the_default_reports_folder_being_a_file_is_said_so(tmp_path):
    # --reports' default is not read by argparse's type: the run's own check says it (it said "File exists").
    blocker = tmp_path / "reports"
    blocker.write_text("mine")
    with pytest.raises(UserError, match=f"the reports folder: {blocker} is a file, not a folder"):
        check_writable(blocker)


def test_a_write_that_fails_after_the_check_is_a_user_error_naming_the_file(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    with pytest.raises(UserError, match=f"cannot write {blocker / 'x.json'}"):
        write_output(blocker / "x.json", "{}")


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "missing.yaml", "--max-scenarios", "-1"],
        ["validate", "missing.yaml", "--max-scenarios", "0"],
        ["history", "--limit", "-1"],
        ["compare", "a", "b", "--resamples", "0"],
    ],
)
def test_counts_and_limits_below_one_are_argument_errors(argv, capsys):
    err = _refused(argv, capsys)
    assert f"expected a whole number >= 1, got {int(argv[-1])}" in err
