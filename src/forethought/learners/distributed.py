"""Run a learner (SFT, Step-APO or the value model) in several processes with `accelerate launch` (DDP; FSDP or
DeepSpeed by config).

`launch_training` writes the training job (kind, rows, settings) to a folder, launches `python -m
forethought.learners.distributed JOB` under accelerate, and reads back the stats that rank 0 wrote; each rank runs
the learner's own train function, which splits the batch, saves on rank 0 and gathers counts (learners/common.py).
The recipe's batch_size stays the global batch: each of N processes takes batch_size / N rows per step, so the same
recipe trains the same way on 1 or N processes. Callers use `forethought.learners.train`, which picks in-process or
launched training from `cfg.distributed.processes`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

from forethought.errors import UserError
from forethought.learners.common import DistributedSettings, TrainStats

__all__ = ["DistributedSettings", "KINDS", "launch_flags", "launch_training", "learner"]

Kind = Literal["sft", "step_apo", "value"]
KINDS: tuple[str, ...] = ("sft", "step_apo", "value")


def learner(kind: str):
    """(config class, train function, preflight check or None) for a learner kind."""
    if kind == "sft":
        from forethought.learners.sft import SFTConfig, train_sft

        return SFTConfig, train_sft, None
    if kind == "step_apo":
        from forethought.learners.step_apo import StepAPOConfig, check_trl, train_step_apo

        return StepAPOConfig, train_step_apo, check_trl
    if kind == "value":
        from forethought.learners.value_model import ValueConfig, train_value_model

        return ValueConfig, train_value_model, None
    raise UserError(f"unknown learner kind {kind!r}; expected one of {', '.join(KINDS)}")


def launch_flags(settings: DistributedSettings, *, cuda: bool, port: int) -> list[str]:
    """`accelerate launch` options for the settings (DDP is `--multi_gpu`, which on a CPU-only machine runs gloo)."""
    flags = ["--num_processes", str(settings.processes), "--num_machines", "1", "--main_process_port", str(port),
             "--dynamo_backend", "no", "--mixed_precision", "bf16" if cuda else "no"]
    if settings.accelerate_config:
        if not Path(settings.accelerate_config).is_file():
            raise UserError(f"learner.distributed.accelerate_config: file not found: {settings.accelerate_config}")
        return ["--config_file", settings.accelerate_config, *flags]
    if settings.strategy == "fsdp":
        return [*flags, "--use_fsdp", "--fsdp_sharding_strategy", "FULL_SHARD", "--fsdp_auto_wrap_policy",
                "TRANSFORMER_BASED_WRAP", "--fsdp_state_dict_type", "FULL_STATE_DICT"]
    if settings.strategy == "deepspeed":
        return [*flags, "--use_deepspeed", "--zero_stage", str(settings.zero_stage)]
    return [*flags, "--multi_gpu"]


def launch_training(
    model: str | Path,
    rows: list[dict],
    output_dir: Path,
    cfg,
    *,
    seed: int,
    max_steps: int | None = None,
    progress: bool = True,
    trace: bool = False,
    kind: Kind = "sft",
) -> TrainStats:
    """Train like the `kind` learner's train function (train_sft, train_step_apo, train_value_model) but in
    `cfg.distributed.processes` processes; returns rank 0's TrainStats (counts summed over the ranks)."""
    import torch

    from forethought.engines.server import free_port

    config_class, _, preflight = learner(kind)
    if not isinstance(cfg, config_class):
        raise TypeError(f"learner kind {kind!r} takes a {config_class.__name__}, got {type(cfg).__name__}")
    if preflight is not None:
        preflight()  # fail here with one clear error rather than in every rank
    if trace and kind != "sft":
        raise ValueError("trace=True is recorded by the SFT learner only")
    if not rows:  # the learner's own message says why there is nothing to train on; no processes to start
        return learner(kind)[1](model, rows, output_dir, cfg, seed=seed, max_steps=max_steps, progress=progress)
    settings: DistributedSettings = cfg.distributed
    if cfg.batch_size % settings.processes:
        raise UserError(f"learner.batch_size={cfg.batch_size} must be divisible by "
                        f"learner.distributed.processes={settings.processes} (it is the global batch)")
    output_dir = Path(output_dir)
    if output_dir.exists():
        raise UserError(f"{output_dir} already exists; delete it to train it again")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    job = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.job-", dir=output_dir.parent))
    try:
        spec = {"kind": kind, "model": str(model), "output_dir": str(output_dir.resolve()), "cfg": cfg.model_dump(),
                "seed": seed, "max_steps": max_steps, "progress": progress}
        if trace:
            spec["trace"] = True
        (job / "job.json").write_text(json.dumps(spec), encoding="utf-8")
        with open(job / "rows.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        port = settings.main_process_port or free_port()
        command = [sys.executable, "-m", "accelerate.commands.launch", *launch_flags(settings, cuda=cuda, port=port),
                   "-m", "forethought.learners.distributed", str(job)]
        env = dict(os.environ)
        if not cuda:
            threads = settings.threads_per_process or max(1, (os.cpu_count() or 1) // settings.processes)
            env["OMP_NUM_THREADS"] = str(threads)
        log = job / "train.log"
        with open(log, "wb") as sink:
            done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL,
                                  stdout=None if progress else sink, stderr=None if progress else subprocess.STDOUT)
        if done.returncode != 0 or not (job / "stats.json").is_file():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if not progress else ""
            kept = output_dir.parent / f"{output_dir.name}.failed-train.log"
            if not progress:
                shutil.copy(log, kept)
            raise RuntimeError(f"training in {settings.processes} processes failed (exit {done.returncode})"
                               + (f"; log kept at {kept}, it ends with:\n{tail}" if tail else ""))
        return TrainStats.model_validate_json((job / "stats.json").read_text(encoding="utf-8"))
    finally:
        shutil.rmtree(job, ignore_errors=True)


def _worker(job: Path) -> None:
    """One rank: read the job, run the learner its kind names, and (rank 0) write the stats."""
    spec = json.loads((job / "job.json").read_text(encoding="utf-8"))
    config_class, train, _ = learner(spec["kind"])
    rows = [json.loads(line) for line in (job / "rows.jsonl").read_text(encoding="utf-8").splitlines() if line]
    cfg = config_class.model_validate(spec["cfg"])
    extra = {"trace": True} if spec.get("trace") else {}
    stats = train(spec["model"], rows, Path(spec["output_dir"]), cfg, seed=spec["seed"],
                  max_steps=spec["max_steps"], progress=spec["progress"], **extra)
    if int(os.environ.get("RANK", "0")) == 0:
        tmp = job / "stats.json.tmp"
        tmp.write_text(stats.model_dump_json(), encoding="utf-8")
        tmp.replace(job / "stats.json")
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # leave together: a rank exiting with the process group's
        dist.barrier()  # threads still running can abort ("terminate called without an active exception")
        dist.destroy_process_group()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
