"""Run the bench: train every planned system for the same budget, evaluate each with the judge, collect rows.

Each system trains and is evaluated in its own process (``umm train`` / ``umm eval``), so a crash stays one
failed row, peak memory is that system's own, and a run that was cut off resumes from its checkpoint. A
system whose ``result.json`` exists is not retrained: re-running the bench finishes what is missing. Stopping the
bench (SIGTERM or Ctrl-C) stops the processes it started too, and the rows they were running write no ``result.json``
(a failed row would be reused as done), so the next run trains them again from their checkpoints.

With ``jobs`` > 1 the rows run side by side, one per core, and a free core takes the ready row with the longest
chain of expected minutes still behind it (its own and its dependents'): list scheduling by critical path (Hu 1961;
"HLFET" in Kwok & Ahmad 1999). A chain such as ImageBind -> its decoder -> the bridges then starts early instead of
leaving one core idle at the end. Side jobs (the sampling-latency sweep) queue in the same pool by their length.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from umm.bench.plan import CLAIM_RUNS, SURVEY_ORDER, Dependency, Entry, dependency_name, entry_for
from umm.training.recipe import read_recipe


@dataclass(frozen=True)
class BenchConfig:
    out: Path
    budget_minutes: float = 5.0  # training budget of every survey system (the cap of the others), CPU-minutes of its process
    quick_steps: int = 0  # > 0: quick mode, tiny recipes trained for this many steps (tests)
    n_prompts: int = 60  # GenEval-like prompts (10 per category)
    n_images: int = 60  # images to caption / question
    eval_steps: int | None = None  # diffusion / MaskGIT steps at evaluation; None: each recipe's eval_args
    split: str = "heldout"
    threads: int = 0  # OMP_NUM_THREADS of the child processes (0: inherit)
    # where to take already-trained tokenizers / decoders (``<dir>/<recipe>/model``) instead of training them
    # under the bench budget; the survey's systems are always trained here
    reuse_from: Path | None = None
    level: str | None = None  # the bench level: each family's <family>_<level> recipe (None: <family>_s)
    # fractions of the budget at which each system's model is also scored: its time-to-quality curve
    snapshots: tuple[float, ...] = ()


def reused_model(entry: Entry, config: BenchConfig) -> Path | None:
    """The pre-trained model that stands in for a non-system entry (tokenizer, decoder), if one is there."""
    if config.reuse_from is None or entry.recipe is None or entry.name in SURVEY_ORDER + CLAIM_RUNS:
        return None
    model = config.reuse_from / entry.recipe.stem / "model"
    return model if (model / "config.json").is_file() else None


def dependency_model(dep: Dependency, config: BenchConfig, configs: Path) -> Path:
    """Where a dependency's trained model is: reused from ``reuse_from`` or trained by this bench."""
    name = dependency_name(dep, config.level)
    is_recipe = name == dep.run
    reused = reused_model(entry_for(name, configs, quick=False, is_recipe=is_recipe,
                                    level=None if is_recipe else config.level), config)
    return reused if reused is not None else config.out / name / "run" / "model"


class BenchStopped(Exception):
    """The bench was told to stop (SIGTERM or Ctrl-C) while this row's process ran: the row is left unfinished."""


_CHILDREN: set[subprocess.Popen] = set()  # the train / eval processes running now, one per job
_STOPPING = threading.Event()


def _stop(signum: int, frame: Any) -> None:
    """SIGTERM / SIGINT handler of :func:`run_all`: a SIGTERM to the bench does not reach the processes it started,
    so stop them, then exit (128 + the signal); the rows they ran raise :class:`BenchStopped` and write nothing."""
    _STOPPING.set()
    for proc in list(_CHILDREN):
        proc.terminate()
    raise SystemExit(128 + signum)


def _run(cmd: list[str], log: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run ``cmd`` (pinned to the core in env's UMM_BENCH_CORE, when the bench runs jobs side by side), its
    output appended to ``log``; returns the exit code and the last line. Raises :class:`BenchStopped` once the
    bench is stopping."""
    core = env.get("UMM_BENCH_CORE")
    if core is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", core, *cmd]
    with log.open("a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        if _STOPPING.is_set():
            raise BenchStopped(cmd[0])
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, text=True)
        _CHILDREN.add(proc)
        if _STOPPING.is_set():  # the stop came between the check above and the start: _stop did not see it
            proc.terminate()
        try:
            proc.wait()
        finally:
            _CHILDREN.discard(proc)
    if _STOPPING.is_set():
        raise BenchStopped(cmd[0])
    tail = [line for line in log.read_text().splitlines() if line.strip()][-1:] or [""]
    return proc.returncode, tail[0]


def trained_tasks(recipe: Path) -> list[str]:
    """The task names a recipe trains (with its bases): which of a system's scores measure a job it learned."""
    return [task["name"] for task in read_recipe(recipe).get("tasks", [])]


def own_budget(recipe: Path, cap: float) -> float:
    """CPU-minutes a non-survey run trains: its recipe's ``train.time_budget_minutes`` (none: the cap), at most ``cap``."""
    own = float(read_recipe(recipe).get("train", {}).get("time_budget_minutes") or 0.0)
    return min(own, cap) if own > 0 else cap


def expected_minutes(entry: Entry, config: BenchConfig) -> float:
    """What a row is expected to hold its core: its training budget and about a minute of scoring (snapshots and the
    final eval: 0.4-0.8 min at L3); in quick mode every row the same."""
    if entry.recipe is None:
        return 0.0
    if config.quick_steps:
        return 1.0
    train = config.budget_minutes if entry.name in SURVEY_ORDER else own_budget(entry.recipe, config.budget_minutes)
    return train + 1.0


def critical_paths(entries: list[Entry], config: BenchConfig) -> dict[str, float]:
    """Each entry's longest chain of expected minutes to the end of the bench: its own and its slowest dependents'
    (the rows that wait for it), the order in which the pool starts ready rows."""
    dependents = {e.name: [d for d in entries if any(dependency_name(x, config.level) == e.name for x in d.dependencies)]
                  for e in entries}
    chains: dict[str, float] = {}

    def chain(entry: Entry) -> float:  # the plan has no cycles (plan() refuses them)
        if entry.name not in chains:
            chains[entry.name] = expected_minutes(entry, config) + max((chain(d) for d in dependents[entry.name]), default=0.0)
        return chains[entry.name]

    return {e.name: chain(e) for e in entries}


@dataclass(frozen=True)
class SideJob:
    """A command the bench runs in its pool beside the rows, pinned to a free core as a row is, and makes no row
    (the sampling-latency sweep). It writes ``done``; a later run finds it there and does not run it again."""
    name: str
    cmd: list[str]
    done: Path
    minutes: float  # expected length: its place in the queue (a short job fills a core late in the bench)


def latency_job(config: BenchConfig) -> SideJob:
    """The sampling-latency sweep (``umm.bench.latency``) as a side job: ~3 minutes, tiny in quick mode."""
    out = config.out / "latency.json"
    cmd = [sys.executable, "-m", "umm.bench.latency", "--out", str(out)] + (["--quick"] if config.quick_steps else [])
    return SideJob("latency", cmd, out, 0.1 if config.quick_steps else 3.0)


def _child_env(config: BenchConfig, core: int | None) -> dict[str, str]:
    """The environment of a row's or a side job's processes: the bench's thread count and, side by side, its core."""
    env = dict(os.environ)
    if config.threads:
        env["OMP_NUM_THREADS"] = str(config.threads)
    if core is not None:
        env["UMM_BENCH_CORE"] = str(core)
    return env


def run_side(job: SideJob, config: BenchConfig, core: int | None = None) -> bool:
    """Run a side job (output in ``<out>/<name>.log``); True when it wrote its file."""
    env = _child_env(config, core)
    print(f"{job.name}: running beside the rows", flush=True)
    code, tail = _run(job.cmd, config.out / f"{job.name}.log", env)
    if code != 0 or not job.done.is_file():
        print(f"{job.name}: failed: {tail}", flush=True)
        return False
    print(f"{job.name}: wrote {job.done}", flush=True)
    return True


def train_command(entry: Entry, config: BenchConfig, run_dir: Path) -> list[str]:
    cmd = [sys.executable, "-m", "umm.cli", "train", str(entry.recipe)]
    if config.quick_steps:
        cmd += [f"train.steps={config.quick_steps}", "train.log_every=1", "train.warmup_steps=1"]
    elif entry.name in SURVEY_ORDER:
        # the budget decides when to stop (and anneals the learning rate), not the recipe's step count; it is
        # CPU time of the run's own process, so two systems sharing the machine get the same training
        cmd += [f"train.time_budget_minutes={config.budget_minutes}", "train.steps=1000000", "train.budget_clock=process"]
    else:
        # a tokenizer, a decoder or a claim run trains as its recipe says (its steps, its own time budget), never
        # longer than the survey systems' budget: vq_l1's 1,500 steps take ~6 CPU-minutes, imagebind_extend_l1's
        # claim is decided in ~2.4 of its 5 (the learning rate anneals by whichever ends first)
        cmd += [f"train.time_budget_minutes={own_budget(entry.recipe, config.budget_minutes):g}", "train.budget_clock=process"]
    if config.snapshots and entry.name in SURVEY_ORDER + CLAIM_RUNS:
        cmd.append("train.snapshots=[" + ", ".join(f"{f:g}" for f in config.snapshots) + "]")
    for dep in entry.dependencies:
        cmd.append(f"{dep.key}={dependency_model(dep, config, entry.recipe.parent)}")
    cmd += ["--out", str(run_dir), "--quiet"]
    if (run_dir / "checkpoints" / "latest").is_file():
        cmd.append("--resume")
    return cmd


def eval_command(config: BenchConfig, model_dir: Path, out: Path, curve_point: bool = False) -> list[str]:
    """``umm eval`` of a trained model (a curve point: the bench's split only, as the time-to-quality curves and the
    claims read them, with no fidelity, diagnostics or sample grid)."""
    steps = 2 if config.quick_steps else config.eval_steps
    cmd = [sys.executable, "-m", "umm.cli", "eval", str(model_dir), "--split", config.split,
           "--n-prompts", str(config.n_prompts), "--n-images", str(config.n_images), "--out", str(out / "eval.json")]
    cmd += ["--steps", str(steps)] if steps else []  # else the recipe's own eval_args (Show-o 16, diffusion 8, ...)
    return cmd + (["--no-fidelity", "--no-diagnostics", "--no-test-split"] if curve_point else ["--samples", str(out / "samples.png")])


def run_entry(entry: Entry, config: BenchConfig, index: int, total: int, core: int | None = None) -> dict[str, Any]:
    """Train and evaluate one entry (or reuse its finished result); returns its row. ``core``: the CPU core its
    processes are pinned to when entries run side by side."""
    out = config.out / entry.name
    result_path = out / "result.json"
    label = f"[{index}/{total}] {entry.name}"
    if result_path.is_file():
        print(f"{label}: done before, reusing {result_path}", flush=True)
        row = json.loads(result_path.read_text())
        if entry.recipe is not None and "tasks" not in row:  # rows written before the runner recorded them
            row["tasks"] = trained_tasks(entry.recipe)
        return row
    out.mkdir(parents=True, exist_ok=True)
    row: dict[str, Any] = {"system": entry.name, "cell": entry.cell, "recipe": str(entry.recipe) if entry.recipe else None}
    if entry.recipe is not None:
        row["tasks"] = trained_tasks(entry.recipe)
    if entry.recipe is None:
        where = entry.looked_for.name if entry.looked_for else f"{entry.name}_s.yaml"
        print(f"{label}: no recipe (umm/recipes/{where}), reported without training", flush=True)
        row["status"] = "no recipe"
        result_path.write_text(json.dumps(row, indent=2))
        return row
    env = _child_env(config, core)
    log = out / "bench.log"
    reused = reused_model(entry, config)
    if reused is not None:
        # trained earlier under its own recipe: evaluated here, its training figures read from its summary
        print(f"{label}: reusing {reused} (trained under its own recipe), evaluating", flush=True)
        row["reused"] = str(reused)
        summary = reused.parent / "summary.json"
        if summary.is_file():
            row.update(json.loads(summary.read_text()))
        row["started"] = time.time()
        return _evaluate(row, config, reused, out, log, env, label, result_path, time.perf_counter())
    budget = f"{config.quick_steps} steps" if config.quick_steps else f"{config.budget_minutes:g} min"
    print(f"{label}: training {entry.recipe.name} ({budget})", flush=True)
    row["started"] = time.time()  # wall-clock stamps: the report's per-system and whole-bench wall time
    start = time.perf_counter()
    code, tail = _run(train_command(entry, config, out / "run"), log, env)
    row["train_wall_seconds"] = time.perf_counter() - start
    if code != 0:
        row.update(status="train failed", error=tail)
        print(f"{label}: training failed: {tail}", flush=True)
        result_path.write_text(json.dumps(row, indent=2))
        return row
    row.update(json.loads((out / "run" / "summary.json").read_text()))
    print(f"{label}: evaluating", flush=True)
    scoring = time.perf_counter()
    row["curve"] = _curve(config, out, log, env, label)
    return _evaluate(row, config, out / "run" / "model", out, log, env, label, result_path, scoring)


def _curve(config: BenchConfig, out: Path, log: Path, env: dict[str, str], label: str) -> list[dict[str, Any]]:
    """Score every snapshot of the run (``train.snapshots``): the time-to-quality points before the final model.
    Each point holds its fraction of the budget, step, training CPU-minutes and the scores ``umm eval`` gave."""
    points = []
    for snap in sorted((out / "run" / "snapshots").glob("*/snapshot.json"), key=lambda p: float(p.parent.name)):
        meta = json.loads(snap.read_text())
        where = out / "curve" / snap.parent.name
        if not (where / "eval.json").is_file():
            where.mkdir(parents=True, exist_ok=True)
            print(f"{label}: scoring its snapshot at {meta['fraction']:g} of the budget", flush=True)
            code, tail = _run(eval_command(config, snap.parent / "model", where, curve_point=True), log, env)
            if code != 0:
                points.append({**meta, "error": tail})
                continue
        points.append({**meta, "cpu_minutes": meta["seconds"] / 60, "metrics": json.loads((where / "eval.json").read_text())})
    return points


def _evaluate(row: dict[str, Any], config: BenchConfig, model: Path, out: Path, log: Path, env: dict[str, str],
              label: str, result_path: Path, scoring: float) -> dict[str, Any]:
    """The final ``umm eval`` of ``model``; ``scoring``: when its scoring began (perf_counter, snapshots included)."""
    code, tail = _run(eval_command(config, model, out), log, env)
    row["eval_wall_seconds"], row["finished"] = time.perf_counter() - scoring, time.time()
    if code != 0:
        row.update(status="eval failed", error=tail)
        print(f"{label}: evaluation failed: {tail}", flush=True)
    else:
        row["status"] = "reused" if "reused" in row else "ok"
        row["metrics"] = json.loads((out / "eval.json").read_text())
        headline = {k: v for k, v in row["metrics"].items() if k in ("geneval/overall", "caption/colour", "qa/accuracy")}
        print(f"{label}: {row.get('steps', '?')} steps, {row.get('samples_per_second', float('nan')):.1f} samples/s; "
              + ", ".join(f"{k} {v:.3f}" for k, v in headline.items()), flush=True)
    result_path.write_text(json.dumps(row, indent=2))
    return row


def run_all(entries: list[Entry], config: BenchConfig, jobs: int = 1, side: tuple[SideJob, ...] = ()) -> list[dict[str, Any]]:
    """Every entry's row, in plan order. Up to ``jobs`` entries (and ``side`` jobs) run at a time, each pinned to its
    own core when jobs > 1; an entry starts only once the entries it depends on have finished (their models exist),
    the ready one with the longest chain behind it first (:func:`critical_paths`)."""
    _STOPPING.clear()
    # signal handlers belong to the main thread; Ctrl-C (SIGINT) reaches the children as well, but without the
    # handler the rows it cut would be written as failed
    stops = (signal.SIGTERM, signal.SIGINT) if threading.current_thread() is threading.main_thread() else ()
    previous = {signum: signal.signal(signum, _stop) for signum in stops}
    try:
        return _run_all(entries, config, jobs, side)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run_all(entries: list[Entry], config: BenchConfig, jobs: int, side: tuple[SideJob, ...]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    chains = critical_paths(entries, config)
    pending: list[tuple[int, Entry | SideJob]] = list(enumerate(entries))
    pending += [(len(entries) + k, job) for k, job in enumerate(side) if not job.done.is_file()]
    free = list(range(jobs))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        running: dict[Any, tuple[Entry | SideJob, int]] = {}
        while pending or running:
            ready = [(i, item) for i, item in pending if isinstance(item, SideJob)
                     or all(dependency_name(d, config.level) in rows for d in item.dependencies)]
            # the longest chain of minutes first (a side job: its own length), then plan order
            ready.sort(key=lambda t: (-(t[1].minutes if isinstance(t[1], SideJob) else chains[t[1].name]), t[0]))
            for i, item in ready[: len(free)]:
                pending.remove((i, item))
                core = free.pop(0)
                pinned = core if jobs > 1 else None
                future = (pool.submit(run_side, item, config, pinned) if isinstance(item, SideJob)
                          else pool.submit(run_entry, item, config, i + 1, len(entries), pinned))
                running[future] = (item, core)
            if not running:
                names = ", ".join(item.name for _, item in pending)
                raise RuntimeError(f"bench entries whose dependencies are not in the plan: {names}")
            # wake twice a second: a signal may be delivered to a worker thread, and the main thread runs its
            # handler (_stop) only between waits, not while blocked until a row finishes
            finished, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in finished:
                item, core = running.pop(future)
                result = future.result()
                if isinstance(item, Entry):
                    rows[item.name] = result
                free.append(core)
    return [rows[e.name] for e in entries]
