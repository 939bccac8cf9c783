"""`bench run --resume` on hand-made run folders: what it refuses, and what it leaves in run.json.

The environment is faked (no torch import, no worker): these are the checks before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import UserError
from bench.measure import runner
from bench.measure.runner import resume_run
from bench.suite.scenarios import load_suite

SHA = "1234567890abcdef1234567890abcdef12345678"
OTHER = "fedcba0987654321fedcba0987654321fedcba09"
SUITE = "name: r\nmatrix: {model: [tiny_mlp], batch_size: [1, 2]}\n"


def make_run(tmp_path: Path, *, suite: str = SUITE, info: dict | None = None, git: dict | None = None) -> Path:
    run_dir = tmp_path / "reports" / "20260101-120000-r"
    run_dir.mkdir(parents=True)
    (run_dir / "suite.yaml").write_text(suite)
    (run_dir / "results.jsonl").write_text("")
    run_info = {
        "run_id": run_dir.name,
        "suite": "r",
        "status": "interrupted",
        "started_at": "2026-01-01T12:00:00+00:00",
        "finished_at": "2026-01-01T12:05:00+00:00",
        **(info or {}),
    }
    (run_dir / "run.json").write_text(json.dumps(run_info))
    git = {"sha": SHA, "branch": "main", "dirty": False} if git is None else git
    (run_dir / "environment.json").write_text(json.dumps({"fingerprint": "fp", "git": git}))
    return run_dir


@pytest.fixture
def here(monkeypatch, tmp_path):
    """The environment resume_run sees now; set `here["git"]` to move the checkout. The process
    runs outside any git checkout (as git_info would see it for these fakes)."""
    now = {"fingerprint": "fp", "git": {"sha": SHA, "branch": "main", "dirty": False}}
    monkeypatch.setattr(runner, "collect_environment", lambda: json.loads(json.dumps(now)))
    monkeypatch.chdir(tmp_path)
    return now


def test_resume_clears_the_previous_end_and_lists_what_is_left(tmp_path, here):
    run_dir = make_run(tmp_path)
    context = resume_run(run_dir)
    assert [s.id for s in context.pending] == ["tiny_mlp-b1-t1-fp32-eager", "tiny_mlp-b2-t1-fp32-eager"]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "running" and info["finished_at"] is None and len(info["resumed_at"]) == 1


def test_resume_after_checking_out_another_commit_is_refused_naming_the_way_back(tmp_path, here):
    run_dir = make_run(tmp_path)
    here["git"] = {"sha": OTHER, "branch": "feature", "dirty": False}
    with pytest.raises(UserError) as caught:
        resume_run(run_dir)
    message = str(caught.value)
    assert f"started on commit {SHA[:12]} (branch main)" in message
    assert f"now at commit {OTHER[:12]} (branch feature)" in message
    assert f"git checkout {SHA[:12]}" in message
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"  # left as it was


def test_resume_with_uncommitted_changes_made_since_is_refused(tmp_path, here):
    run_dir = make_run(tmp_path)
    here["git"] = {"sha": SHA, "branch": "main", "dirty": True}
    with pytest.raises(UserError) as caught:
        resume_run(run_dir)
    assert f"now at commit {SHA[:12]} (branch main), with uncommitted changes" in str(caught.value)
    assert "git stash" in str(caught.value)


def test_the_runs_own_files_in_the_checkout_are_not_uncommitted_changes(tmp_path, here):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "code")
    run_dir = make_run(tmp_path)  # reports/ in the checkout, not ignored: git status shows it
    here["git"]["dirty"] = True
    assert resume_run(run_dir).pending
    (tmp_path / "code.py").write_text("x = 2\n")  # a real change to the code is still one
    with pytest.raises(UserError, match="uncommitted changes"):
        resume_run(run_dir)


def test_resume_where_git_cannot_tell_goes_ahead(tmp_path, here):
    here["git"] = {"sha": None, "branch": None, "dirty": None}  # no git here
    assert resume_run(make_run(tmp_path / "a")).pending
    here["git"] = {"sha": OTHER, "branch": "x", "dirty": False}
    assert resume_run(make_run(tmp_path / "b", git={"sha": None, "branch": None, "dirty": None})).pending


@pytest.mark.parametrize(
    ("suite", "info", "why"),
    [
        (SUITE, {"scheduler": "tcp://10.0.0.1:8786"}, "started on the Dask scheduler tcp://10.0.0.1:8786"),
        (SUITE.replace("matrix", "hosts: [lab]\nmatrix"), {}, "its suite names host groups (hosts: lab)"),
    ],
)
def test_a_fleet_run_is_not_resumed_on_the_client(tmp_path, here, capsys, suite, info, why):
    run_dir = make_run(tmp_path, suite=suite, info=info)
    with pytest.raises(UserError, match="--scheduler") as caught:
        resume_run(run_dir)
    assert why in str(caught.value) and "measured on this machine" in str(caught.value)
    # The command line refuses it too, before anything runs.
    assert main(["run", "--resume", str(run_dir), "--no-history"]) == 2
    err = capsys.readouterr().err
    assert "is a fleet run" in err and "Traceback" not in err
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"


def test_a_local_run_is_not_resumed_on_a_fleet(tmp_path, here, capsys):
    run_dir = make_run(tmp_path)
    with pytest.raises(UserError, match="it is a local run"):
        resume_run(run_dir, on_fleet=True)
    # Refused before connecting: nothing listens on port 9, and no connection error is reached.
    argv = ["run", "--resume", str(run_dir), "--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "it is a local run" in err and "no Dask scheduler answered" not in err


class FakeZygote:
    """Stands in for bench.measure.zygote.ZygoteWorkers: records that it was started and closed."""

    def __init__(self, *args):
        self.closed = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def zygotes(monkeypatch) -> list[FakeZygote]:
    started: list[FakeZygote] = []
    monkeypatch.setattr(runner, "ZygoteWorkers", lambda *args: started.append(FakeZygote(*args)) or started[-1])
    return started


def test_the_zygote_starts_before_the_environment_is_collected_and_serves_the_run(tmp_path, here, zygotes, monkeypatch):
    # Its imports overlap collect_environment's (seconds); run_suite's open_workers then keeps it.
    zygotes_at_collect = []
    collect = runner.collect_environment
    monkeypatch.setattr(runner, "collect_environment", lambda: zygotes_at_collect.append(len(zygotes)) or collect())
    (tmp_path / "suite.yaml").write_text(SUITE)
    suite = load_suite(tmp_path / "suite.yaml")
    context = runner.start_run(suite, tmp_path / "reports", worker_kind="fork", start_workers=True)
    assert zygotes_at_collect == [1] and context.workers is zygotes[0]
    runner.open_workers(context)
    assert context.workers is zygotes[0] and len(zygotes) == 1
    resumed = resume_run(make_run(tmp_path / "b"), worker_kind="fork", start_workers=True)
    assert zygotes_at_collect == [1, 2] and resumed.workers is zygotes[1] and not zygotes[1].closed


def test_a_refused_resume_ends_the_zygote_it_started(tmp_path, here, zygotes):
    run_dir = make_run(tmp_path)
    here["git"] = {"sha": OTHER, "branch": "feature", "dirty": False}
    with pytest.raises(UserError):
        resume_run(run_dir, worker_kind="fork", start_workers=True)
    assert len(zygotes) == 1 and zygotes[0].closed


def test_no_zygote_for_fresh_workers_a_fleet_or_a_caller_that_does_not_ask(tmp_path, here, zygotes):
    assert resume_run(make_run(tmp_path / "a"), worker_kind="fresh", start_workers=True).workers is None
    fleet_run = make_run(tmp_path / "b", info={"scheduler": "tcp://10.0.0.1:8786"})
    assert resume_run(fleet_run, worker_kind="fork", start_workers=True, on_fleet=True).workers is None
    assert resume_run(make_run(tmp_path / "c"), worker_kind="fork").workers is None
    assert zygotes == []
