"""The training loop: one explicit function, readable top to bottom.

    for step:
        lr <- warmup + cosine
        for each task k:  batch_k -> system.losses(model, batch_k) -> L_k      (bf16 autocast)
        L = sum_k lambda_k L_k ;  L.backward() ;  clip ;  AdamW ;  EMA
        log (CSV, TensorBoard, progress) ; eval ; checkpoint

Exact resume: the data order and every random draw of step s are functions of (seed, step, rank), and the
checkpoint holds model, optimizer and EMA tensors, so a resumed run repeats the losses of an uninterrupted
one. Under ``torchrun`` the model is wrapped in DDP and every rank takes its share of each task's batch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import resource
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from umm import UmmError
from umm.config import ConfigError, save_yaml, to_dict
from umm.models.factory import build_model, model_config, unwrap
from umm.models.system import SystemBase, save_system
from umm.nn import autocast
from umm.registry import MODELS, SYSTEMS
from umm.training import distributed as dist_utils
from umm.training import parallel
from umm.training.build import build_dataset, build_text_tokenizer
from umm.training.checkpoint import (
    latest_checkpoint,
    load_model_state,
    load_training_state,
    read_checkpoint,
    save_checkpoint,
)
from umm.training.data import BatchSource
from umm.training.ema import EMA
from umm.training.logging import MetricsLogger, Progress
from umm.training.mfu import count_flops, peak_flops
from umm.training.optim import build_optimizer, lr_at
from umm.training.recipe import RunConfig

EvalFn = Callable[[nn.Module, SystemBase, int], dict[str, float]]


@dataclass
class TrainResult:
    run_dir: Path
    step: int  # steps completed
    stopped: str  # "done" | "time budget" | "signal" | "stop_after"
    losses: list[float] = field(default_factory=list)  # global mean total loss of each step run here
    eval: dict[str, float] = field(default_factory=dict)
    samples_per_second: float = 0.0
    mfu: float = 0.0
    flops_per_step: int = 0
    seconds: float = 0.0


def step_seed(seed: int, step: int, rank: int, task: str | None = None) -> int:
    """A well-mixed 63-bit seed for the random draws of (step, rank), or of one task's collate at that step."""
    key = f"{seed}/{step}/{rank}" if task is None else f"{seed}/{step}/{rank}/{task}"
    return int(hashlib.sha256(key.encode()).hexdigest()[:15], 16)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def build_system_and_model(run: RunConfig, run_dir: Path | None, dataset: Any,
                           save_tokenizer: bool = True) -> tuple[SystemBase, nn.Module]:
    """The recipe's tokenizer, system and freshly initialised model (seeded by ``train.seed``)."""
    family = MODELS.get(run.model)().family
    system_cls = SYSTEMS.get(family)
    options = system_cls.parse_options(run.system_args)
    for task in run.tasks:
        if task.name not in system_cls.tasks:
            raise ConfigError(f"system {family!r} has no task {task.name!r}; its tasks are {list(system_cls.tasks)}")
    base = load_base(run.train.init_from, family) if run.train.init_from else None
    if base is not None:  # fine-tuning: the base's tokenizer, saved in this run so it resumes alone
        tokenizer = base[1].tokenizer
        if run_dir is not None and save_tokenizer and tokenizer is not None:
            (run_dir / "tokenizer").mkdir(parents=True, exist_ok=True)
            tokenizer.save(run_dir / "tokenizer")
    else:
        tokenizer = build_text_tokenizer(run, run_dir, dataset, save=save_tokenizer)
    decided = system_cls.model_overrides(tokenizer, options)
    for key, value in decided.items():
        if key in run.model_args and run.model_args[key] != value:
            raise ConfigError(f"model_args.{key}={run.model_args[key]!r} conflicts with the system's {value!r}")
    torch.manual_seed(run.train.seed)
    model = build_model(model_config(run.model, {**decided, **run.model_args}))
    if base is not None:
        check_same_geometry(run, model.config, base[0].config, getattr(dataset, "canvas", None))
        model.load_state_dict(base[0].state_dict())
        if run.train.lora_rank:  # adapters on every linear layer; the base weights freeze
            from umm.models.lora import add_lora

            add_lora(model, run.train.lora_rank, run.train.lora_alpha)
    system = system_cls(tokenizer, model.config, options)
    if base is None and system.needs_base() is not None:
        raise ConfigError(f"config key {system.needs_base()!r} extends a trained model: set train.init_from to "
                          f"its run (runs/<name>/model)")
    system.prepare_model(model)  # e.g. start from a previous stage's weights, freeze what this stage keeps
    return system, model


def load_base(path: str, family: str) -> tuple[nn.Module, SystemBase]:
    """The trained system ``train.init_from`` names, checked to be of the recipe's family."""
    from umm.models.system import load_system

    model, system = load_system(path)
    if system.family != family:
        raise ConfigError(f"train.init_from={path!r} is a {system.family} system; this recipe trains {family}")
    return model, system


def check_same_geometry(run: RunConfig, config: Any, base: Any, canvas: int | None) -> None:
    """Fine-tuning loads every weight of the base, so the recipe's model config must be the base's exactly;
    one line names what differs (and the data canvas must be the model's image size)."""
    mine, theirs = to_dict(config), to_dict(base)
    differ = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
    if differ:
        shown = ", ".join(f"{k} ({mine.get(k)!r} here, {theirs.get(k)!r} in the base)" for k in differ[:3])
        raise ConfigError(f"train.init_from={run.train.init_from!r}: the model differs from the base in {shown}; "
                          f"use the base's model and model_args")  # fmt: skip
    size = getattr(config, "image_size", None)
    if canvas is not None and size is not None and canvas != size:
        raise ConfigError(f"train.init_from={run.train.init_from!r}: data.canvas={canvas} but the base model reads "
                          f"{size} px images; set data.canvas={size}")  # fmt: skip


def write_summary(path: Path, run: RunConfig, result: TrainResult, model: nn.Module, device: torch.device) -> None:
    """The run's headline figures as JSON (read by ``umm bench`` and reports)."""
    peak_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    summary = {
        "model": run.model, "family": model.config.family, "steps": result.step, "stopped": result.stopped,
        "seconds": result.seconds, "samples_per_second": result.samples_per_second, "mfu": result.mfu,
        "flops_per_step": result.flops_per_step, "samples_per_step": sum(t.batch_size for t in run.tasks),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "peak_rss_mb": peak_rss_kb / 1024, "device": str(device), "final_loss": result.losses[-1] if result.losses else None,
        "eval": result.eval,
    }
    if device.type == "cuda":
        summary["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    path.write_text(json.dumps(summary, indent=2))


def after_optimizer_step(model: nn.Module) -> None:
    """Let modules apply their non-gradient updates once per step, after the optimizer: a VQ codebook's EMA
    and dead-code restarts (van den Oord et al. 2017, app. A.1). Done inside ``forward`` they would make two
    forwards of one batch disagree; recorded there and applied here, a step stays a pure function of its
    inputs and the checkpoint holds the result."""
    for module in model.modules():
        hook = getattr(module, "after_optimizer_step", None)
        if callable(hook):
            hook()


def train(
    run: RunConfig,
    run_dir: str | Path | None = None,
    resume: bool = False,
    show_progress: bool = True,
    eval_fn: EvalFn | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train ``run``; write checkpoints, metrics and the final system under ``run_dir``.

    ``eval_fn(model, system, step)`` is called every ``train.eval_every`` steps and at the end (on rank 0);
    ``stop_after`` ends the run after that many steps as if it had been interrupted (used by tests).
    """
    cfg = run.train
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    info = dist_utils.init_distributed(cfg.device)
    device = info.device
    run_dir = Path(run_dir or Path("runs") / run.run_name)
    ckpt_dir = run_dir / "checkpoints"
    if run_dir.exists() and not run_dir.is_dir():
        raise UmmError(f"run directory {str(run_dir)!r} is a file; choose another --out")
    if resume and latest_checkpoint(ckpt_dir) is None:
        raise UmmError(f"--resume: no checkpoint in {ckpt_dir}; drop --resume to start a new run there")
    if not resume and latest_checkpoint(ckpt_dir) is not None:
        raise UmmError(f"{run_dir} already holds checkpoints; pass --resume to continue or choose another --out")

    # ---- data, system, model (everything is validated before the run directory is written) ---------------
    dataset = build_dataset(run.data, run.data.split)
    system, model = build_system_and_model(run, run_dir, dataset, save_tokenizer=info.is_main)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_yaml(to_dict(run), run_dir / "recipe.yaml")
    dist_utils.barrier()
    model.to(device)
    for module in model.modules():
        if hasattr(module, "gradient_checkpointing"):
            module.gradient_checkpointing = cfg.grad_checkpointing
    source = BatchSource(dataset, run.tasks, info.rank, info.world_size, cfg.seed)
    sharded = cfg.parallel == "fsdp" and info.world_size > 1
    if sharded and cfg.ema_decay > 0:
        raise UmmError("train.ema_decay > 0 keeps a full copy of the weights on every rank, which defeats "
                       "train.parallel=fsdp; use train.parallel=ddp for EMA")
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None

    start_step, elapsed_before = 0, 0.0
    checkpoint = latest_checkpoint(ckpt_dir) if resume else None
    flops_per_step = 0
    if checkpoint is not None:  # full weights go into the model before FSDP shards it
        ckpt_tensors, ckpt_meta = read_checkpoint(checkpoint)
        load_model_state(model, ckpt_tensors)
    # DDP wraps the model; FSDP shards it in place, so the optimizer is built after, over the shards
    train_model = parallel.wrap(model, info, cfg.parallel)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
    if checkpoint is not None:
        load_training_state(ckpt_tensors, ckpt_meta, model, optimizer, ema)
        start_step, elapsed_before = ckpt_meta["step"], ckpt_meta.get("elapsed", 0.0)
        flops_per_step = ckpt_meta.get("flops_per_step", 0)
        del ckpt_tensors
    if cfg.compile:
        train_model = torch.compile(train_model)

    logger = MetricsLogger(run_dir, enabled=info.is_main)
    if checkpoint is not None and info.is_main:
        for stream in logger.streams.values():
            stream.truncate_after(start_step)
    progress = Progress(cfg.steps, run.run_name, enabled=show_progress and info.is_main, start=start_step)

    stop_signal = {"flag": False}
    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop_signal.update(flag=True))

    params = [p for p in model.parameters() if p.requires_grad]
    peak = peak_flops(device, torch.bfloat16 if cfg.precision == "bf16" else torch.float32)
    result = TrainResult(run_dir, start_step, "done")
    samples_per_step = source.step_size
    counted_tasks = None  # the tasks whose step flops_per_step counts
    window_start, window_steps = time.perf_counter(), 0  # throughput windows: always wall time
    clock = time.process_time if cfg.budget_clock == "process" else time.perf_counter  # the budget's clock
    run_start = clock()
    budget = cfg.time_budget_minutes * 60
    if checkpoint is not None:  # the last throughput measured, until this run measures its own
        result.samples_per_second, result.mfu = ckpt_meta.get("samples_per_second", 0.0), ckpt_meta.get("mfu", 0.0)
    # a run resumed after its time budget ran out (a bench re-scoring a finished row) trains no further step
    spent = budget > 0 and elapsed_before >= budget
    if spent:
        result.stopped = "time budget"

    def save(step: int) -> None:
        # under FSDP every rank takes part in gathering the full state; rank 0 writes it
        weights, moments = parallel.full_state(model, optimizer) if sharded else (model, optimizer)
        if info.is_main:
            elapsed = elapsed_before + clock() - run_start
            extra = {"elapsed": elapsed, "flops_per_step": flops_per_step,
                     "samples_per_second": result.samples_per_second, "mfu": result.mfu}
            save_checkpoint(ckpt_dir, step, weights, moments, ema, extra, keep=cfg.keep_checkpoints)
        dist_utils.barrier()

    def evaluation_model() -> nn.Module | None:
        """The model to evaluate or export on rank 0 (an unsharded copy under FSDP; collective then)."""
        return parallel.full_model(model, device, info.is_main) if sharded else unwrap(model)

    def snapshot(fraction: float, step: int, seconds: float) -> None:
        """Export the model as it is at ``fraction`` of the budget (EMA weights, if any, on a copy: training goes
        on with its own) to run/snapshots/<fraction>/model, beside a copy of the recipe and its step and seconds."""
        current = evaluation_model()
        if not info.is_main:
            return
        out = run_dir / "snapshots" / f"{fraction:g}"
        exported = copy.deepcopy(current)
        if ema is not None:
            ema.copy_to(exported)
        save_system(out / "model", exported, system)
        save_yaml(to_dict(run), out / "recipe.yaml")
        (out / "snapshot.json").write_text(json.dumps({"fraction": fraction, "step": step, "seconds": seconds}))

    # the snapshots still to take (a resumed run has written the earlier ones)
    pending_snapshots = [f for f in cfg.snapshots if not (run_dir / "snapshots" / f"{f:g}" / "model").is_dir()]

    def make_batches(step: int, names: tuple[str, ...]) -> dict[str, dict]:
        """This rank's collated batches of the tasks ``names`` at ``step`` (on CPU). Each task's batch is a pure
        function of (seed, step, rank, task), whichever other tasks are collated with it, so a staged task's
        data is neither drawn nor collated before it starts (EMU3's video tokenizer is half of its step)."""
        batches = {}
        for name, samples in source.samples(step, names).items():
            generator = torch.Generator().manual_seed(step_seed(cfg.seed, step, info.rank, name))
            batches[name] = system.collate(samples, name, generator)
        return batches

    def active_tasks(fraction: float) -> tuple:
        """The tasks of a step at ``fraction`` of the budget (staged training: ``tasks.start``)."""
        return tuple(t for t in run.tasks if fraction >= t.start)

    # Data for step s + 1 is generated and collated in a background thread while step s computes (torch ops
    # release the GIL), for the tasks of step s; a task that joins at step s + 1 is collated then, in the loop.
    prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="umm-data")
    start_fraction = max(start_step / cfg.steps, elapsed_before / budget if budget else 0.0)
    pending = prefetch.submit(make_batches, start_step, tuple(t.name for t in active_tasks(start_fraction)))

    # ---- the loop ----------------------------------------------------------------------------------------
    try:
        step = start_step
        while step < cfg.steps and not spent:
            elapsed = elapsed_before + clock() - run_start
            # every rank takes the same fraction: by its own clock a rank could set another learning rate, or
            # start a staged task one step before the others (a backward the others never run)
            fraction = dist_utils.agree_max(max(step / cfg.steps, elapsed / budget if budget else 0.0), device)
            lr = lr_at(fraction, step, cfg.warmup_steps, cfg.lr, cfg.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            generator = torch.Generator(device=device).manual_seed(step_seed(cfg.seed, step, info.rank))
            active = active_tasks(fraction)
            names = tuple(t.name for t in active)
            batches = pending.result()
            joining = tuple(name for name in names if name not in batches)
            if joining:  # a staged task starts at this step: its batch was not prefetched
                batches.update(make_batches(step, joining))
            batches = {name: to_device(batches[name], device) for name in names}
            if step + 1 < cfg.steps:
                pending = prefetch.submit(make_batches, step + 1, names)
            logged: dict[str, torch.Tensor] = {}
            if active != counted_tasks:  # the FLOPs and samples of a step change with its tasks: count again
                flops_per_step = 0 if counted_tasks is not None else flops_per_step
                counted_tasks, samples_per_step = active, sum(t.batch_size for t in active)

            def forward_backward() -> torch.Tensor:
                # One backward per task. Under DDP the gradients are all-reduced after the last task only
                # (no_sync before), so tasks that use different parameters (ImageBind trains one encoder pair
                # per task) never leave a parameter marked ready twice in one reduction; the summed gradients
                # are those of backward(sum_k lambda_k L_k).
                total = torch.zeros((), device=device)
                for i, task in enumerate(active):
                    # (FSDP reduce-scatters after each backward and accumulates the sharded gradients)
                    defer = dist_utils.is_distributed() and not sharded and i < len(active) - 1
                    with train_model.no_sync() if defer else nullcontext():
                        with autocast(cfg.precision, device):
                            losses = system.losses(train_model, batches[task.name], generator)
                        task_loss = task.weight * sum(v for k, v in losses.items() if k.endswith("_loss")).float()
                        for k, v in losses.items():
                            logged[f"{task.name}/{k}"] = v.detach().float()
                        if not torch.isfinite(task_loss):
                            parts = ", ".join(f"{k}={v.item():.4g}" for k, v in logged.items())
                            raise UmmError(
                                f"loss became {task_loss.item()} at step {step} ({parts}); stopping. Lower train.lr "
                                f"or use train.precision=fp32; the last good checkpoint is in {ckpt_dir}"
                            )
                        task_loss.backward()
                    total = total + task_loss.detach()
                return total

            if flops_per_step == 0:  # count the FLOPs of one real step (forward + backward), once per run
                total = None

                def counted() -> None:
                    nonlocal total
                    total = forward_backward()

                flops_per_step = count_flops(counted)
            else:
                total = forward_backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            if sharded:
                grad_norm = grad_norm.full_tensor()  # a DTensor over the shards
            if not torch.isfinite(grad_norm):
                raise UmmError(f"gradient norm became {grad_norm.item()} at step {step}; stopping (checkpoint in {ckpt_dir})")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            after_optimizer_step(model)
            if ema is not None:
                ema.update(model, step)
            step += 1
            window_steps += 1
            mean_total = dist_utils.all_reduce_mean(total.detach()).item()
            result.losses.append(mean_total)

            if step % cfg.log_every == 0 or step == cfg.steps:
                seconds = time.perf_counter() - window_start
                sps = samples_per_step * window_steps / seconds
                achieved = flops_per_step * window_steps / seconds
                mfu = achieved / peak
                row = {"loss": mean_total, "lr": lr, "grad_norm": grad_norm.item(), "samples_per_s": sps,
                       "tflops": achieved / 1e12, "mfu": mfu, "elapsed_s": elapsed_before + clock() - run_start}
                row.update({k: dist_utils.all_reduce_mean(v).item() for k, v in logged.items()})
                logger.log("train", step, row)
                progress.update(step, f"loss {mean_total:.4f}  {sps:.1f} samples/s  MFU {mfu:.1%}", force_line=True)
                result.samples_per_second, result.mfu = sps, mfu
                window_start, window_steps = time.perf_counter(), 0
            else:
                progress.update(step, f"loss {mean_total:.4f}")

            if eval_fn is not None and cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                evaluated = evaluation_model()
                if info.is_main:
                    logger.log("eval", step, eval_fn(evaluated, system, step))
                dist_utils.barrier()

            if pending_snapshots:
                seconds = elapsed_before + clock() - run_start
                done = max(step / cfg.steps, seconds / budget if budget else 0.0)
                # every rank takes the snapshot at the same step (under FSDP exporting it is collective)
                while pending_snapshots and dist_utils.broadcast_flag(done >= pending_snapshots[0], device):
                    snapshot(pending_snapshots.pop(0), step, seconds)

            out_of_time = budget > 0 and elapsed_before + clock() - run_start >= budget
            stop = dist_utils.broadcast_flag(stop_signal["flag"] or out_of_time, device)
            if stop or (stop_after is not None and step - start_step >= stop_after):
                result.stopped = "signal" if stop_signal["flag"] else "time budget" if out_of_time else "stop_after"
                save(step)
                if result.stopped != "time budget":
                    result.step = step
                    return result
                break
            if step % cfg.save_every == 0:
                save(step)
        result.step = step
        if result.stopped == "done" and step > start_step and step % cfg.save_every != 0:
            save(step)

        # ---- the trained system --------------------------------------------------------------------------
        final = evaluation_model()
        if ema is not None:
            ema.copy_to(final)  # the exported weights are the EMA weights
        if info.is_main:
            lora = {"base": cfg.init_from, "rank": cfg.lora_rank, "alpha": cfg.lora_alpha} if cfg.lora_rank else None
            save_system(run_dir / "model", final, system, lora=lora)
            if eval_fn is not None:
                result.eval = eval_fn(final, system, step)
                logger.log("eval", step, result.eval)
        result.flops_per_step = flops_per_step
        result.seconds = elapsed_before + clock() - run_start
        if info.is_main:
            write_summary(run_dir / "summary.json", run, result, final, device)
        dist_utils.barrier()  # under torchrun: no rank leaves while rank 0 still writes the model
        return result
    finally:
        prefetch.shutdown(wait=True, cancel_futures=True)
        progress.close()
        logger.close()
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
