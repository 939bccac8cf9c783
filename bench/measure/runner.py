"""The runner: a Suite in, one run folder with a ResultRecord per scenario out.

For each scenario the parent prepares the artifact, starts a worker process (`python -m
pytest bench/measure/harness.py`, forked from the run's zygote or fresh: bench.measure.child.launch) with
its thread settings fixed in the environment, samples the worker's RSS while it runs, and appends the scenario's record
to results.jsonl the moment it ends. A failing scenario is a `failed` row; the run
goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import bench
from bench import runtimes
from bench.capacity import llm
from bench.capacity.host import measure_capacity, not_measured
from bench.checks.contention import wait_for_quiet
from bench.environment import collect_environment
from bench.errors import UserError
from bench.measure import contract
from bench.measure.child import ChildFiles, child_env, describe_exit, launch
from bench.measure.memory import RssSample, RssSampler, cpu_count, write_samples_csv
from bench.measure.runlock import lock_run_folder
from bench.measure.worker import SPEC_ENV, WINDOW_END_PHASE, WORKER_FACTS, WorkerFacts, WorkerSpec
from bench.measure.zygote import ZygoteWorkers, fork_available
from bench.models.sources import SourceError
from bench.profile import roofline
from bench.profile.profiler import profile_for_run
from bench.results.nospace import (
    NoSpaceLeft,
    is_no_space,
    nearly_full,
    release_reserve,
    reserve_space,
    says_no_space,
    where_no_space,
)
from bench.results.record import (
    RESULTS_FILE,
    KernelPeaks,
    ModelSourceInfo,
    ProfileFigures,
    PruningFacts,
    QuantizationFacts,
    ResultRecord,
    RssFigures,
    append_record,
)
from bench.results.runfolder import RunFolder, benchmark_round_times, load_run
from bench.results.stats import PERCENTILE_RULE, LatencyStats
from bench.results.timeline import build_timeline, worker_parts
from bench.suite.scenarios import Scenario, Suite, parse_suite

HARNESS_PATH = Path(__file__).with_name("harness.py")
# `bench run --worker`: fork each worker from the run's zygote (bench.measure.zygote), or start a fresh interpreter.
DEFAULT_WORKER_KIND = "fork" if fork_available() else "fresh"
# A failure in this process (preparing a scenario, measuring its capacity) has no worker log: its
# traceback goes here, in the scenario's worker folder, and the row's reason names the file.
RUNNER_TRACEBACK = "runner-traceback.log"
_POLL_S = 0.1


class Progress(Protocol):
    def scenario_started(self, index: int, total: int, scenario_id: str) -> None: ...
    def scenario_phase(self, phase: str, elapsed_s: float) -> None: ...
    def scenario_finished(self, record: ResultRecord) -> None: ...


class Silent:
    def scenario_started(self, index: int, total: int, scenario_id: str) -> None:
        pass

    def scenario_phase(self, phase: str, elapsed_s: float) -> None:
        pass

    def scenario_finished(self, record: ResultRecord) -> None:
        pass


@dataclass
class RunContext:
    run_id: str
    run_dir: Path
    suite: Suite
    environment: dict[str, Any]
    cache_dir: Path
    rss_interval_s: float | None = None  # overrides the suite's measure.rss_interval_s
    records: list[ResultRecord] = field(default_factory=list)
    pending: list[Scenario] | None = None  # when resuming: the scenarios without a row yet
    worker_kind: str = "fresh"  # fork: run_suite starts a zygote (bench.measure.zygote) and forks each worker from it
    workers: ZygoteWorkers | None = None  # that zygote, while run_suite runs
    debug: bool = False  # --debug: a failure's traceback is printed as well as kept (keep_traceback)

    @property
    def results_path(self) -> Path:
        return self.run_dir / "results.jsonl"

    @property
    def to_run(self) -> list[Scenario]:
        """The scenarios this run measures: the pending ones when resuming, else the suite's."""
        return list(self.pending) if self.pending is not None else list(self.suite.scenarios)


@dataclass
class WorkerOutcome:
    returncode: int | None
    timed_out: bool
    elapsed_s: float
    samples: list[RssSample]
    on_windows: list[tuple[float, float]]
    events: list[dict[str, Any]]
    worker: WorkerFacts  # what the worker wrote (a default, failed one if it wrote nothing)
    stderr_tail: str
    rss_limit_exceeded_bytes: int | None = None
    sampler_cpu_s: float = 0.0
    requested_s: float = 0.0  # time.monotonic() when the worker was asked for (bench.results.timeline)
    worker_kind: str = "fresh"


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def create_run_dir(reports_dir: Path, suite_name: str) -> tuple[str, Path]:
    """A new folder for this run; an existing run folder is never reused."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 1000):
        run_id = f"{stamp}-{suite_name}" + ("" if attempt == 1 else f"-{attempt}")
        try:
            (reports_dir / run_id).mkdir()
        except FileExistsError:
            continue
        return run_id, reports_dir / run_id
    raise RuntimeError(f"could not create a new run folder in {reports_dir}")


def start_run(
    suite: Suite,
    reports_dir: Path,
    *,
    rss_interval_s: float | None = None,
    worker_kind: str = DEFAULT_WORKER_KIND,
    start_workers: bool = False,
) -> RunContext:
    """A new run folder and its context. `start_workers`: the caller will run_suite it here, so start the
    zygote (worker_kind fork) at once: its imports then overlap collecting the environment (seconds)."""
    run_id, run_dir = create_run_dir(reports_dir, suite.name)
    lock_run_folder(run_dir)
    workers = _start_workers(worker_kind, run_dir) if start_workers and suite.scenarios else None
    with _closed_on_error(workers):
        environment = collect_environment()
        (run_dir / "suite.yaml").write_text(suite.text, encoding="utf-8")
        _write_json(run_dir / "environment.json", environment)
        _write_json(run_dir / "scenarios.json", [s.to_dict() for s in suite.scenarios])
        context = RunContext(
            run_id,
            run_dir,
            suite,
            environment,
            reports_dir / ".cache" / "artifacts",
            rss_interval_s,
            worker_kind=worker_kind,
            workers=workers,
        )
        write_run_info(context, status="running", started_at=utc_now(), worker_kind=worker_kind)
        context.results_path.touch()
    return context


def _start_workers(worker_kind: str, run_dir: Path) -> ZygoteWorkers | None:
    """The run's zygote when its workers fork; None for fresh workers."""
    if worker_kind != "fork":
        return None
    return ZygoteWorkers(child_env(1, {}), run_dir / "zygote.log", _print_step)


@contextlib.contextmanager
def _closed_on_error(workers: ZygoteWorkers | None) -> Iterator[None]:
    """End a zygote started for a run that then could not start (a refused resume, a full disk)."""
    try:
        yield
    except BaseException:
        if workers is not None:
            workers.close()
        raise


def _read_resumable(run_dir: Path) -> tuple[RunFolder, Suite]:
    """The run folder (bench.results.runfolder) and the suite of a run to resume; UserError when it is not one."""
    suite_path = run_dir / "suite.yaml"
    if not (run_dir / RESULTS_FILE).is_file() or not suite_path.is_file():
        raise UserError(f"{run_dir} is not a run folder (expected results.jsonl and suite.yaml in it)")
    folder = load_run(run_dir)
    # The copy in the run folder reads model paths from the original suite's folder.
    base_dir = Path(folder.info["suite_dir"]) if folder.info.get("suite_dir") else None
    suite = parse_suite(suite_path.read_text(encoding="utf-8"), str(suite_path), max_scenarios=10**9, base_dir=base_dir)
    return folder, suite


def check_resume_mode(run_dir: Path, *, on_fleet: bool) -> None:
    """Refuse to resume a fleet run here, or a local run on a fleet: its rows would mix two kinds of host.

    A fleet run is one whose run.json names a scheduler, whose suite names host groups, or
    that has a row measured on a fleet host."""
    _check_resume_mode(*_read_resumable(run_dir), on_fleet)


def _check_resume_mode(folder: RunFolder, suite: Suite, on_fleet: bool) -> None:
    run_dir, info = folder.path, folder.info
    fleet_rows = sum(bool(line.data.get("fleet")) for line in folder.lines)  # a half-written line is no row
    if info.get("scheduler"):
        why = f"it was started on the Dask scheduler {info['scheduler']}"
    elif suite.hosts:
        why = f"its suite names host groups (hosts: {', '.join(suite.hosts)})"
    elif fleet_rows:
        why = f"{fleet_rows} of its rows were measured on fleet hosts"
    else:
        why = None
    if why and not on_fleet:
        scheduler = info.get("scheduler") or "ADDRESS"
        raise UserError(
            f"cannot resume {run_dir} here: it is a fleet run ({why}). Without --scheduler its remaining "
            "scenarios would be measured on this machine, the client, and their rows mixed with the fleet "
            "hosts' rows as if they came from the same hosts. Resume it on the fleet: "
            f"bench run --resume {run_dir} --scheduler {scheduler}"
        )
    if not why and on_fleet:
        raise UserError(
            f"cannot resume {run_dir} on a fleet: it is a local run (its run.json names no scheduler and none of "
            "its rows came from a fleet host), so its rows were measured on the machine that started it, and "
            "rows from fleet hosts would be mixed with them as if from the same machine. Resume it on that "
            f"machine without --scheduler: bench run --resume {run_dir}; or start a new fleet run of its suite"
        )


def resume_run(
    run_dir: Path,
    *,
    rss_interval_s: float | None = None,
    on_fleet: bool = False,
    worker_kind: str = DEFAULT_WORKER_KIND,
    start_workers: bool = False,
) -> RunContext:
    """Reopen an interrupted run folder; `pending` lists the scenarios that have no row yet.

    `on_fleet`: the caller will send the pending scenarios to a fleet (a fleet run must be
    resumed on one, a local run must not be). `start_workers`: as start_run's."""
    folder, suite = _read_resumable(run_dir)
    lock_run_folder(run_dir)  # before anything is written: a second writer is refused here
    _check_resume_mode(folder, suite, on_fleet)
    _set_aside_partial_line(folder.results_path)
    records = folder.records  # a partial last line, set aside now, was no row of it either
    workers = _start_workers(worker_kind, run_dir) if start_workers and not on_fleet else None
    with _closed_on_error(workers):
        environment = collect_environment()
        info, recorded = folder.info, folder.environment
        if environment["fingerprint"] != recorded.get("fingerprint"):
            raise UserError(
                f"cannot resume {run_dir} here: the environment differs from the one it started on "
                "(CPU, cores, kernel, Python or library versions); start a new run instead"
            )
        started_on, now_on = recorded.get("git"), environment.get("git")
        if isinstance(started_on, dict) and started_on.get("dirty") is False:
            now_on = _git_apart_from(now_on, run_dir.parent)  # the run's own files are no code change
        git_problem = git_difference(started_on, now_on)
        if git_problem:
            raise UserError(f"cannot resume {run_dir} here: {git_problem}")
        context = RunContext(
            run_dir.name,
            run_dir,
            suite,
            recorded,
            run_dir.parent / ".cache" / "artifacts",
            rss_interval_s,
            records,
            worker_kind=worker_kind,
            workers=workers,
        )
        done = {r.scenario_id for r in records}
        context.pending = [s for s in suite.scenarios if s.id not in done]
        # finished_at belonged to the interrupted part; the run has not finished while it runs again.
        resumed_at = [*info.get("resumed_at", []), utc_now()]
        write_run_info(
            context, status="running", finished_at=None, reason=None, resumed_at=resumed_at, worker_kind=worker_kind
        )
        return context


def _git_apart_from(git: Any, reports_dir: Path) -> Any:
    """`git` (environment.git_info()), not counting the reports folder as uncommitted changes: a
    run folder inside the checkout (and not git-ignored) is the run's own output, not a code change."""
    if not isinstance(git, dict) or not git.get("dirty"):
        return git
    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "--", ":/", f":(exclude){reports_dir.resolve()}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return git
    if done.returncode != 0:  # e.g. the reports folder is outside the checkout: nothing to leave out
        return git
    return {**git, "dirty": bool(done.stdout.strip())}


def git_difference(recorded: Any, current: Any) -> str | None:
    """Why the code checked out now is not the code a run started on, or None.

    Its rows are stamped with the run's recorded git sha, so rows measured from other code
    would carry a false sha. None too when either side cannot tell (no git, not a checkout)."""
    if not isinstance(recorded, dict) or not isinstance(current, dict):
        return None
    old_sha, new_sha = recorded.get("sha"), current.get("sha")
    if not old_sha or not new_sha:
        return None
    old_dirty, new_dirty = recorded.get("dirty"), current.get("dirty")
    if old_sha == new_sha and (old_dirty is None or new_dirty is None or old_dirty == new_dirty):
        return None

    def state(sha: str, dirty: bool | None, branch: Any) -> str:
        where = f" (branch {branch})" if branch and branch != "HEAD" else ""
        return f"commit {sha[:12]}{where}" + (", with uncommitted changes" if dirty else "")

    started = state(old_sha, old_dirty, recorded.get("branch"))
    now = state(new_sha, new_dirty, current.get("branch"))
    if old_sha != new_sha:
        back = f"`git checkout {old_sha[:12]}`" + (" and restore its uncommitted changes" if old_dirty else "")
    elif old_dirty:
        back = "restore the uncommitted changes it ran with"
    else:
        back = "set the changes made since aside (`git stash`; `git stash pop` once the run is done)"
    return (
        f"the run was started on {started}, and the checkout is now at {now}. Its rows are stamped with the "
        f"commit they ran on, so rows measured from other code would carry a false sha and mix two versions in "
        f"one run. To continue it, go back: {back}, then resume; or start a new run for the current code"
    )


def _set_aside_partial_line(results_path: Path) -> None:
    """A killed run can leave half a line; keep it in a side file and end the results at the last full line."""
    data = results_path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    side = results_path.with_name(f"results.jsonl.partial-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}")
    side.write_bytes(data[cut:])
    with open(results_path, "r+b") as f:
        f.truncate(cut)
        os.fsync(f.fileno())


@dataclass(frozen=True)
class ContentionPolicy:
    """`--on-contention`: what to do with a scenario measured on a contended host (bench.checks.contention)."""

    action: str = "mark"  # mark: keep the row, marked; retry: measure it again; wait: wait for quiet first
    retries: int = 2  # retry: measurements beyond the first, at most
    wait_limit_s: float = 120.0  # wait: give up waiting (and measure, marked if contended) after this


def run_suite(
    context: RunContext,
    progress: Progress | None = None,
    *,
    shuffle_seed: int | None = None,
    on_contention: ContentionPolicy | None = None,
) -> list[ResultRecord]:
    """Run the context's pending scenarios (all of them for a new run), appending a row for each.

    `shuffle_seed`: run them in a seeded random order (recorded in run.json), so that a host's
    slow drift over the run does not line up with the suite's order (dense first, say)."""
    progress = progress or Silent()
    scenarios = context.to_run
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(scenarios)
        write_run_info(context, shuffle_seed=shuffle_seed)
    total = len(scenarios)
    unfinished = None  # the id of the scenario being measured, until its row is on disk
    if scenarios:
        open_workers(context)
    try:
        reserve_space(context.run_dir)
        for index, scenario in enumerate(scenarios, start=1):
            unfinished = scenario.id
            progress.scenario_started(index, total, scenario.id)
            record = measure(context, scenario, progress, on_contention or ContentionPolicy())
            append_record(context.results_path, record)
            unfinished = None
            context.records.append(record)
            progress.scenario_finished(record)
    except KeyboardInterrupt:
        write_run_info(context, status="interrupted", finished_at=utc_now())
        raise
    except Exception as exc:
        if not is_no_space(exc):
            raise
        raise stop_for_space(context, where_no_space(exc, context.run_dir), unfinished) from exc
    finally:
        release_reserve(context.run_dir)
        close_workers(context)
    write_run_info(context, status="complete", finished_at=utc_now())
    return context.records


def open_workers(context: RunContext) -> None:
    """With worker_kind fork: start the run's zygote, unless start_run or resume_run did; its imports overlap
    the first artifact's preparation."""
    if context.workers is None:
        context.workers = _start_workers(context.worker_kind, context.run_dir)


def close_workers(context: RunContext) -> None:
    """End the zygote (no process of the run outlives it) and record what it was in run.json."""
    workers, context.workers = context.workers, None
    if workers is None:
        return
    workers.close()
    with contextlib.suppress(OSError):  # e.g. a full disk: the run's own ending says so
        write_run_info(context, zygotes=[dataclasses.asdict(f) for f in workers.facts])


def measure(
    context: RunContext, scenario: Scenario, progress: Progress, policy: ContentionPolicy, file_stem: str | None = None
) -> ResultRecord:
    """run_scenario, with the --on-contention policy applied (here, or on a fleet host)."""
    waited_s = None
    if policy.action == "wait":
        _, waited_s = wait_for_quiet(scenario.threads, policy.wait_limit_s, announce=progress.scenario_phase)
    record = run_scenario(context, scenario, progress, file_stem=file_stem)
    attempts = 1
    while policy.action == "retry" and record.contended and attempts <= policy.retries:
        progress.scenario_phase(f"contended: measuring again ({attempts + 1} of {policy.retries + 1})", 0.0)
        record = run_scenario(context, scenario, progress, file_stem=file_stem)
        attempts += 1
    if record.contention is not None and (attempts > 1 or waited_s is not None):
        contention = dataclasses.replace(record.contention, attempts=attempts, waited_s=waited_s)
        record = dataclasses.replace(record, contention=contention)
    return record


def stop_for_space(context: RunContext, path: Path, unfinished: str | None) -> NoSpaceLeft:
    """End a run whose disk filled up: its rows stay, run.json says why, and how to go on. `unfinished`: the
    row id (its raw files' stem) whose row was not stored."""
    if unfinished is not None:  # its raw files have no row to go with; --resume measures it again
        shutil.rmtree(context.run_dir / "workers" / unfinished, ignore_errors=True)
        for raw in (
            context.run_dir / "benchmark" / f"{unfinished}.json",
            context.run_dir / "rss" / f"{unfinished}.csv",
        ):
            raw.unlink(missing_ok=True)
    release_reserve(context.run_dir)  # the room to write run.json in
    reason = f"no space left on {path}"
    with contextlib.suppress(OSError):  # if even that fails, the message below still says it
        write_run_info(context, status="interrupted", finished_at=utc_now(), reason=reason)
    return NoSpaceLeft(
        path,
        f"{reason}: the run stopped. Its {len(context.records)} finished row(s) are in {context.results_path}"
        f"{'' if unfinished is None else f' ({unfinished} has none yet)'}; free some space, then continue it "
        f"with: bench run --resume {context.run_dir}",
    )


def run_scenario(
    context: RunContext, scenario: Scenario, progress: Progress, *, file_stem: str | None = None
) -> ResultRecord:
    """Measure one scenario; its raw files are named after `file_stem` (default: the scenario id)."""
    file_stem = file_stem or scenario.id
    started_at, started = utc_now(), time.perf_counter()
    base = record_base(context, scenario, started_at)
    reason = runtimes.unsupported_reason(scenario)
    if reason is not None:
        return ResultRecord(**base, status="unsupported", reason=reason, duration_s=0.0)
    progress.scenario_phase("preparing artifact (cached after the first time)", 0.0)
    artifact_started = time.perf_counter()
    try:
        artifact = runtimes.prepare_artifact(scenario, context.cache_dir)
        reference = runtimes.reference_outputs(scenario, context.cache_dir, runtimes.fidelity_count(scenario))
        generation_artifact = runtimes.prepare_generation(scenario, context.cache_dir)
        generates = scenario.generate is not None and runtimes.generation_reason(scenario) is None
        reference_tokens = runtimes.reference_tokens(scenario, context.cache_dir) if generates else None
    except runtimes.Unsupported as exc:
        return ResultRecord(**base, status="unsupported", reason=str(exc), duration_s=time.perf_counter() - started)
    except SourceError as exc:  # the user's file or factory: the message names it and the suite field
        return ResultRecord(**base, status="failed", reason=str(exc), duration_s=time.perf_counter() - started)
    except Exception as exc:  # a model that cannot be built, converted or saved is this row's failure
        if is_no_space(exc):  # ... unless the disk is full: that ends the run (run_suite)
            raise NoSpaceLeft(where_no_space(exc, context.cache_dir)) from exc
        kept = keep_traceback(context, file_stem, exc, "preparing the artifact")
        return ResultRecord(
            **base,
            status="failed",
            reason=f"preparing the artifact failed: {type(exc).__name__}: {exc}{kept.note}",
            duration_s=time.perf_counter() - started,
            files=kept.files,
        )
    base.update(
        artifact_bytes=artifact.bytes,
        artifact_sha256=artifact.sha256,
        artifact_prepare_s=artifact.prepare_s,
        artifact_cached=artifact.cached,
        quantized_layers=artifact.facts.get("quantized_layers"),
        ort_reduce_range=artifact.facts.get("ort_reduce_range"),
        pruning=PruningFacts(**artifact.facts["pruning"]) if artifact.facts.get("pruning") else None,
        quantization=QuantizationFacts(**facts) if (facts := artifact.facts.get("quantization")) else None,
    )
    artifact_s = time.perf_counter() - artifact_started

    out_dir = context.run_dir / "workers" / file_stem
    benchmark_json = context.run_dir / "benchmark" / f"{file_stem}.json"
    interval_s = context.rss_interval_s or scenario.measure.rss_interval_s
    outcome = run_worker(
        scenario,
        artifact.path,
        out_dir,
        benchmark_json,
        rss_interval_s=interval_s,
        rss_steady_interval_s=scenario.measure.rss_steady_interval_s,
        progress=progress,
        reference_path=reference.path if reference else None,
        generation_path=generation_artifact.path if generation_artifact else None,
        reference_tokens_path=reference_tokens.path if reference_tokens else None,
        workers=context.workers,
    )
    rss_csv = context.run_dir / "rss" / f"{file_stem}.csv"
    phase_starts = [(e["t_s"], e["phase"]) for e in outcome.events]
    origin_s = outcome.samples[0].t_s if outcome.samples else 0.0
    write_samples_csv(rss_csv, outcome.samples, origin_s, phase_starts)
    base["files"] = {
        "benchmark_json": _relative(benchmark_json, context.run_dir),
        "rss_csv": _relative(rss_csv, context.run_dir),
        "worker_dir": _relative(out_dir, context.run_dir),
    }
    record = build_record(base, scenario, outcome, benchmark_json, interval_s, time.perf_counter() - started)
    if record.status == "failed" and (says_no_space(record.reason) or nearly_full(context.run_dir)):
        raise NoSpaceLeft(context.run_dir)  # the worker could not write its files: not the scenario's failure
    exited_s = outcome.requested_s + outcome.elapsed_s
    parts = {"artifact_s": artifact_s, **worker_parts(outcome.events, outcome.requested_s, exited_s)}
    if record.generation is not None and record.generation.bytes_per_decode_step:
        extra_started = time.perf_counter()
        record = _with_decode_floor(context, record)
        parts["bandwidth_s"] = time.perf_counter() - extra_started
    if scenario.profile and record.status == "ok":
        extra_started = time.perf_counter()
        record = _with_profile(context, scenario, artifact.path, file_stem, record, progress)
        parts["profile_s"] = time.perf_counter() - extra_started
    if scenario.capacity is not None and record.status == "ok":
        extra_started = time.perf_counter()
        record = _with_capacity(context, scenario, artifact.path, file_stem, record, progress)
        parts["capacity_s"] = time.perf_counter() - extra_started
    return dataclasses.replace(record, timeline=build_timeline(time.perf_counter() - started, parts))


def _with_capacity(
    context: RunContext,
    scenario: Scenario,
    artifact_path: Path,
    file_stem: str,
    record: ResultRecord,
    progress: Progress,
) -> ResultRecord:
    """Measure serving capacity with pinned instance processes (forked from the run's zygote, as its workers
    are), after the timed worker has ended."""
    out_dir = context.run_dir / "capacity" / file_stem
    started = time.perf_counter()
    try:
        figures = measure_capacity(
            scenario,
            artifact_path,
            out_dir,
            lambda text: progress.scenario_phase(text, time.perf_counter() - started),
            _print_step,
            workers=context.workers,
            serve=llm.serve_mode(scenario.capacity) if scenario.generate and scenario.capacity else None,
        )
    except Exception as exc:  # capacity is an extra: like a profile, it never fails the timed row
        kept = keep_traceback(context, file_stem, exc, "measuring capacity")
        figures = not_measured(scenario, f"capacity measurement failed: {type(exc).__name__}: {exc}{kept.note}")
        record = dataclasses.replace(record, files={**record.files, **kept.files})
    return dataclasses.replace(
        record, files={**record.files, "capacity_dir": _relative(out_dir, context.run_dir)}, capacity=figures
    )


@dataclass(frozen=True)
class KeptTraceback:
    """Where keep_traceback put a traceback: the reason's note and the row's files entry (empty if unwritten)."""

    note: str
    files: dict[str, str]


def keep_traceback(context: RunContext, file_stem: str, exc: BaseException, during: str) -> KeptTraceback:
    """Append the traceback of a failure in this process to the scenario's RUNNER_TRACEBACK (a fleet
    host sends it back with the row's files); with --debug, print it too."""
    text = "".join(traceback.format_exception(exc))
    if context.debug:
        print(f"bench: {file_stem}: {during} failed:\n{text}", file=sys.stderr, end="")
    path = context.run_dir / "workers" / file_stem / RUNNER_TRACEBACK
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{utc_now()} {during} failed:\n{text}\n")
    except OSError:  # the row still says what failed; a full disk is the run's own ending (run_suite)
        return KeptTraceback("", {})
    relative = _relative(path, context.run_dir)
    return KeptTraceback(f" (traceback: {relative})", {"runner_traceback": relative})


def _print_step(line: str) -> None:
    """A capacity step's result, kept on the console (a live phase line is cleared first)."""
    print(("\r\033[K" if sys.stderr.isatty() else "") + f"    {line}", file=sys.stderr, flush=True)


def memory_bandwidth(context: RunContext) -> float | None:
    """The host's memory bandwidth in bytes/s (None: its measurement failed, environment.json says why).

    Measured the first time a row of the run needs it (a generation row, a profiled row), at the usable
    cores, in a process of its own between two scenarios (about 2 s, or none when the fingerprint's is
    cached), then kept in the run's environment.json as `memory_bandwidth`; a run without such a row
    neither pays for it nor records it."""
    recorded = context.environment.get("memory_bandwidth")
    if recorded is None:
        measured = roofline.measure_bandwidth(
            cpu_count(), cache_dir=context.cache_dir.parent / "peak", fingerprint=context.environment.get("fingerprint")
        )
        recorded = dataclasses.asdict(measured)
        context.environment["memory_bandwidth"] = recorded
        _write_json(context.run_dir / "environment.json", context.environment)
    return roofline.MemoryBandwidth(**recorded).bytes_per_s


def _with_decode_floor(context: RunContext, record: ResultRecord) -> ResultRecord:
    """A generation row's decode floor (bytes per decode step / the bandwidth) and its TPOT against it."""
    figures = record.generation
    assert figures is not None
    floor = roofline.floor_s(figures.bytes_per_decode_step, memory_bandwidth(context))
    tpot = figures.tpot_s.median if figures.tpot_s else None
    measured = dataclasses.replace(
        figures, decode_floor_s=floor, bandwidth_utilization=roofline.utilization(floor, tpot)
    )
    return dataclasses.replace(record, generation=measured)


def _with_profile(
    context: RunContext,
    scenario: Scenario,
    artifact_path: Path,
    file_stem: str,
    record: ResultRecord,
    progress: Progress,
) -> ResultRecord:
    """Profile the scenario a second time, in its own process (forked from the run's zygote, as its workers
    are), after its timed worker has ended."""
    progress.scenario_phase("profiling (a separate, untimed run)", 0.0)
    files, fields = profile_for_run(
        scenario,
        artifact_path,
        context.run_dir,
        file_stem,
        timed_median_s=record.latency_s.median if record.latency_s else None,
        cache_dir=context.cache_dir.parent / "peak",
        fingerprint=context.environment.get("fingerprint"),
        bandwidth_bytes_per_s=memory_bandwidth(context),
        workers=context.workers,
    )
    return dataclasses.replace(record, files={**record.files, **files}, profile=ProfileFigures(**fields))


def run_worker(
    scenario: Scenario,
    artifact_path: Path,
    out_dir: Path,
    benchmark_json: Path,
    *,
    rss_interval_s: float,
    rss_steady_interval_s: float | None = None,
    progress: Progress | None = None,
    test: str = "test_scenario",
    extra_env: dict[str, str] | None = None,
    sampler_toggle_period_s: float | None = None,
    reference_path: Path | None = None,
    generation_path: Path | None = None,
    reference_tokens_path: Path | None = None,
    workers: ZygoteWorkers | None = None,
) -> WorkerOutcome:
    """Run one scenario in a `python -m pytest` process while sampling its RSS: forked from the run's
    zygote when `workers` has one (the same pytest command line, run by the child), else a fresh one."""
    progress = progress or Silent()
    files = ChildFiles.in_folder(out_dir)
    benchmark_json.parent.mkdir(parents=True, exist_ok=True)
    spec = WorkerSpec(
        scenario.to_dict(),
        str(artifact_path),
        str(reference_path) if reference_path else None,
        str(out_dir),
        str(generation_path) if generation_path else None,
        str(reference_tokens_path) if reference_tokens_path else None,
    )
    contract.write(files.spec, spec)
    # An empty ini and --noconftest keep the user's pytest configuration out of the worker, and with plugin
    # autoloading off, the plugins installed next to it: only pytest-benchmark and bench's own are loaded
    # (hypothesis's alone imported hypothesis at the end of every worker, ~1.7 s).
    ini = out_dir / "pytest.ini"
    ini.write_text("[pytest]\n", encoding="utf-8")
    pytest_args = [
        f"{HARNESS_PATH}::{test}",
        "-c",
        str(ini),
        "--rootdir",
        str(out_dir),
        "--noconftest",
        "-p",
        "no:cacheprovider",
        "-p",
        "pytest_benchmark.plugin",
        "-p",
        "bench.measure.harness_plugin",
        "-q",
        "--no-header",
        f"--benchmark-json={benchmark_json}",
    ]
    env = child_env(
        scenario.threads, {SPEC_ENV: str(files.spec), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", **(extra_env or {})}
    )
    events_path = out_dir / "events.jsonl"
    started = time.monotonic()
    timed_out = False
    process = launch("pytest", pytest_args, env, files, workers)
    try:
        with RssSampler(
            process.pid, rss_interval_s, sampler_toggle_period_s, limit_bytes=scenario.max_rss_bytes
        ) as sampler:
            while process.poll() is None:
                elapsed_s = time.monotonic() - started
                if elapsed_s > scenario.timeout_s:
                    timed_out = True
                    break
                events = _read_events(events_path)
                phase = events[-1]["phase"] if events else "starting"
                timed = phase == "steady" or phase.startswith("block")  # block: bench selfcheck
                sampler.interval_s = (rss_steady_interval_s or rss_interval_s) if timed else rss_interval_s
                progress.scenario_phase(phase, elapsed_s)
                time.sleep(_POLL_S)
    finally:
        returncode = process.end()  # killed if it still runs: timed out, or interrupted (no orphan left)
    return WorkerOutcome(
        returncode=returncode,
        timed_out=timed_out,
        elapsed_s=time.monotonic() - started,
        samples=sampler.samples,
        on_windows=sampler.on_windows,
        events=_read_events(events_path),
        worker=read_worker_facts(out_dir / WORKER_FACTS),
        stderr_tail=process.tail(),
        rss_limit_exceeded_bytes=sampler.limit_exceeded_bytes,
        sampler_cpu_s=sampler.cpu_s,
        requested_s=started,
        worker_kind=process.kind,
    )


def read_worker_facts(path: Path) -> WorkerFacts:
    """The worker's worker.json; one that wrote none (it crashed first) gives a failed WorkerFacts without
    a reason (its output's tail gives one), and one that does not match WorkerFacts a failed one saying so."""
    if not path.exists():
        return WorkerFacts()
    try:
        return contract.read(WorkerFacts, path)
    except contract.ContractError as exc:  # bench's own bug, not the scenario's: said in the row, not hidden
        return WorkerFacts(reason=f"bench could not read the worker's facts: {exc}")


def build_record(
    base: dict[str, Any],
    scenario: Scenario,
    outcome: WorkerOutcome,
    benchmark_json: Path,
    rss_interval_s: float,
    duration_s: float,
) -> ResultRecord:
    worker = outcome.worker
    measured_samples = _samples_while_measuring(outcome)
    peak_sample = max(measured_samples, key=lambda s: s.rss_bytes, default=None)
    uss_values = [s.uss_bytes for s in measured_samples if s.uss_bytes is not None]
    uss_values += [v for v in worker.uss_at_phase_end_bytes.values() if v is not None]
    kernel = worker.kernel_peaks_bytes
    kernel_values = [v for v in kernel.values() if v is not None]
    measured: dict[str, Any] = dict(
        load_s=worker.load_s,
        first_inference_s=worker.first_inference_s,
        compile_s=worker.compile_s,
        compiled=worker.compiled,
        rss_bytes=RssFigures(
            before_load=worker.rss_before_load_bytes,
            after_load=worker.rss_after_load_bytes,
            after_first_inference=worker.rss_after_first_inference_bytes,
            peak=peak_sample.rss_bytes if peak_sample else None,
            peak_anon=peak_sample.rss_anon_bytes if peak_sample else None,
            peak_file=peak_sample.rss_file_bytes if peak_sample else None,
            peak_uss=max(uss_values) if uss_values else None,
            peak_worker_lifetime=max((s.rss_bytes for s in outcome.samples), default=None),
            before_release=worker.rss_before_release_bytes,
            after_release=worker.rss_after_release_bytes,
            after_malloc_trim=worker.rss_after_malloc_trim_bytes,
        ),
        model_freed_on_release=worker.model_freed_on_release,
        hygiene=worker.hygiene,
        peak_rss_kernel_bytes=max(kernel_values) if kernel_values else None,
        peak_rss_kernel_phase_bytes=KernelPeaks(
            **{k: kernel.get(k) for k in ("load", "first_inference", "warmup", "steady", "compile")}
        ),
        peak_rss_rusage_bytes=worker.peak_rss_rusage_bytes,
        torch_num_threads=worker.torch_num_threads,
        torch_num_interop_threads=worker.torch_num_interop_threads,
        worker_kind=outcome.worker_kind,
        worker_os_threads=worker.os_threads_after_steady,
        cpu_utilization=worker.cpu_utilization,
        ort_graph_optimization_level=worker.ort_graph_optimization_level,
        rounds_limited_by_time=worker.rounds_limited_by_time,
        rss_samples=len(outcome.samples),
        rss_sampler_cpu_s=outcome.sampler_cpu_s,
        rss_interval_s=rss_interval_s,
        rss_steady_interval_s=scenario.measure.rss_steady_interval_s,
        duration_s=duration_s,
    )
    if worker.status == "unsupported":
        return ResultRecord(**base, **measured, status="unsupported", reason=worker.reason)
    failure = _failure_reason(scenario, outcome)
    if failure is not None:
        return ResultRecord(**base, **measured, status="failed", reason=failure)
    latency = LatencyStats.from_times(benchmark_round_times(benchmark_json))
    return ResultRecord(
        **base,
        **measured,
        status="ok",
        fidelity=worker.fidelity,
        contention=worker.contention,
        pipeline=worker.pipeline,
        generation=worker.generation,
        latency_s=latency,
        throughput_samples_per_s=scenario.batch_size / latency.mean,
        percentile_rule=PERCENTILE_RULE,
    )


def _samples_while_measuring(outcome: WorkerOutcome) -> list[RssSample]:
    """Samples from the start of load to the end of the last phase, the window the kernel peaks cover.

    Before it the interpreter starts; after it pytest-benchmark writes its report. Neither
    is the scenario's memory (the harness's exit alone was seen to add ~140 MiB).
    """
    starts = [e["t_s"] for e in outcome.events if e["phase"] == "load"]
    ends = [e["t_s"] for e in outcome.events if e["phase"] in (WINDOW_END_PHASE, "done")]
    if not starts:
        return outcome.samples
    end_s = ends[0] if ends else float("inf")
    return [s for s in outcome.samples if starts[0] <= s.t_s <= end_s]


def _failure_reason(scenario: Scenario, outcome: WorkerOutcome) -> str | None:
    phase = outcome.events[-1]["phase"] if outcome.events else "startup"
    if outcome.rss_limit_exceeded_bytes is not None:
        return (
            f"exceeded max_rss_bytes during {phase}: sampled RSS {outcome.rss_limit_exceeded_bytes} bytes "
            f"> limit {scenario.max_rss_bytes} bytes; the worker was killed"
        )
    if outcome.timed_out:
        return f"timed out after {scenario.timeout_s:g} s (timeout_s) during {phase}; the worker was killed"
    if outcome.returncode == 0 and outcome.worker.status == "ok":
        return None
    if outcome.worker.reason:
        return outcome.worker.reason
    tail = outcome.stderr_tail.strip()
    reason = f"worker {describe_exit(outcome.returncode or 0)} during {phase}"
    return f"{reason}; last output:\n{tail}" if tail else reason


def record_base(context: RunContext, scenario: Scenario, started_at: str) -> dict[str, Any]:
    return dict(
        run_id=context.run_id,
        scenario_id=scenario.id,
        suite=context.suite.name,
        model=scenario.model,
        batch_size=scenario.batch_size,
        threads=scenario.threads,
        interop_threads=scenario.interop_threads,
        precision=scenario.precision,
        load=scenario.load,
        runtime=runtimes.runtime_of(scenario),
        artifact_format=runtimes.artifact_format(scenario),
        input_shape=list(scenario.input_shape),
        host_group=scenario.host_group,
        environment_fingerprint=context.environment["fingerprint"],
        git_sha=context.environment["git"]["sha"],
        started_at=started_at,
        variant=scenario.variant,
        grad_mode=scenario.grad_mode,
        module_mode=scenario.module_mode,
        model_source=ModelSourceInfo(**info) if (info := runtimes.source_record(scenario)) else None,
        **runtimes.inputs_record(scenario),
    )


def _read_events(path: Path) -> list[dict[str, Any]]:
    events = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.endswith("\n"):  # a line still being written is read next time
                    events.append(json.loads(line))
    except FileNotFoundError:
        pass
    return events


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root))


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")


def write_run_info(context: RunContext, **changes: Any) -> None:
    path = context.run_dir / "run.json"
    info = (
        json.loads(path.read_text(encoding="utf-8"))
        if path.exists()
        else {
            "run_id": context.run_id,
            "suite": context.suite.name,
            "suite_file": str(context.suite.path),
            "suite_dir": str(context.suite.path.absolute().parent),
            "scenarios": len(context.suite.scenarios),
            "bench_version": bench.__version__,
            "command": sys.argv,
        }
    )
    info.update(changes)
    # Whole or not at all: a write cut short (a full disk) must not leave run.json half-written.
    tmp = path.with_name(f".run.json.{os.getpid()}.tmp")
    try:
        _write_json(tmp, info)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
