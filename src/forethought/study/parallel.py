"""Run a study's stages `parallel` at a time, each in its own process (`study.parallel` > 1), on this machine or
as Ray tasks on a cluster (`study.ray_address`).

Each arm x seed (and each transfer evaluation) is one child process (`python -m forethought.study.parallel SOURCE
STUDY_DIR STAGE`) that runs exactly what the serial study runs for that stage, in the arm's own directory, so it
resumes the same way. Worker slot k owns `devices[k]` (CUDA_VISIBLE_DEVICES) when the study lists devices; on a
CPU the slots split the torch threads (OMP_NUM_THREADS = threads // parallel). Only this process writes the
study's manifest: a stage is marked done, with its wall time and the child's peak resident memory, when its child
exits 0; a running child's seconds so far are written every HEARTBEAT_S, so a killed study still counts them, and
time the study was stopped (SIGSTOP) is left out, as in the serial study (runs/stages.py).

Order: the study's, except that a stage waits for what it needs. A transfer evaluation waits for its arm; an arm
whose iteration-0 evaluation has the same inputs as an earlier arm's (study/reuse.py) waits until that one is
finished, so it copies it instead of evaluating again, unless nothing else is left to run. A child's output goes
to STUDY/logs/STAGE.log. A child dies with this process (Linux), so a killed study leaves none behind.

On Ray, each stage is a task asking for `stage_cpus` CPUs and `stage_gpus` GPUs (Ray sets the task's
CUDA_VISIBLE_DEVICES) that runs the same child process on whichever node has them free, in the directory the study
was started from; that directory, the study directory and the study file must be at the same paths on every node
(a shared filesystem), and every node needs forethought and the models. Stopping the study (SIGSTOP) does not
stop tasks already running on the cluster.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from forethought.errors import UserError
from forethought.runs.stages import HEARTBEAT_S, Stopwatch

POLL = 0.2  # seconds between checks of the running children
PARENT = "FORETHOUGHT_STUDY_PARENT"  # the study process's pid, in a child's environment


def next_ready(pending: list[str], ready: Callable[[str], bool], nothing_running: bool) -> str | None:
    """The first pending stage (study order) whose dependencies are met; when none is and nothing runs, the first
    pending one anyway (an evaluation to copy whose arm failed must not stall the study: the waiting arm then
    evaluates itself; an arm comes before its transfer evaluations, and those of a failed arm are dropped)."""
    for name in pending:
        if ready(name):
            return name
    return pending[0] if pending and nothing_running else None


def slot_env(slot: int, parallel: int, devices: list[str], threads: int, base: dict | None = None) -> dict:
    """The environment of worker slot `slot`: its devices, or its share of the CPU threads."""
    env = dict(os.environ if base is None else base)
    if devices:
        env["CUDA_VISIBLE_DEVICES"] = devices[slot]
    else:
        env["OMP_NUM_THREADS"] = str(max(1, threads // parallel))
    return env


def log_path(root: Path, stage: str) -> Path:
    return root / "logs" / (stage.replace("/", "__") + ".log")


def _die_with_parent(parent: int) -> None:
    """In the child: SIGKILL when the study process dies (Linux prctl PR_SET_PDEATHSIG; elsewhere nothing), or exit
    now if it already has."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(1)


def _command(study, stage: str) -> list[str]:
    """The child's arguments after `python -m forethought.study.parallel`."""
    return [str(study.source), str(study.root), stage]


def _argv(args: list[str]) -> list[str]:
    """The child's command line, with the interpreter of the process that starts it."""
    return [sys.executable, "-m", "forethought.study.parallel", *args]


def _exit_and_rss(proc: subprocess.Popen, block: bool) -> tuple[int, int] | None:
    """A finished child's (exit status, peak resident MB), or None while it runs."""
    pid, status, usage = os.wait4(proc.pid, 0 if block else os.WNOHANG)
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss // 1024


class _Child:
    """A stage running in a child process of this one."""

    def __init__(self, stage: str, slot: int, proc: subprocess.Popen, log: Path):
        self.stage, self.slot, self.proc, self.log = stage, slot, proc, log
        self.watch = Stopwatch(beat=POLL)  # ticked at every poll: its running seconds, stops left out

    def poll(self) -> tuple[int, int] | None:
        return _exit_and_rss(self.proc, block=False)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _ray_stage(args: list[str], log: str, threads: int, cwd: str) -> tuple[int, int]:
    """On a Ray worker: run the stage's child process there in the study's working directory `cwd` (relative
    paths in the study mean the same there), dying with this worker, its output appended to `log`."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), PARENT: str(os.getpid())}
    with open(log, "ab") as sink:
        proc = subprocess.Popen(_argv(args), env=env, cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT)
    return _exit_and_rss(proc, block=True)


class _RayChild(_Child):
    """A stage running as a Ray task (on any node of the cluster); ended by cancelling the task, whose worker's
    death ends the stage's process. A task lost with its node counts as a failed stage."""

    def __init__(self, stage: str, slot: int, ref, log: Path):
        super().__init__(stage, slot, None, log)
        self.ref = ref

    def poll(self) -> tuple[int, int] | None:
        import ray

        if not ray.wait([self.ref], timeout=0)[0]:
            return None
        try:
            return tuple(ray.get(self.ref))
        except Exception as e:  # the worker or its node died
            with open(self.log, "a", encoding="utf-8") as sink:
                sink.write(f"\nthe Ray task running this stage failed: {type(e).__name__}: {e}\n")
            return -1, 0

    def kill(self) -> None:
        import ray

        ray.cancel(self.ref, force=True)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def run_parallel(study, planned: list[tuple[str, Callable[[], None]]], after_stage: Callable[[], None]) -> None:
    """Run the study's pending stages `study.cfg.parallel` at a time in child processes; `after_stage()` after each
    one that finished. Raises one UserError naming every stage whose child failed (the others still finish)."""
    from forethought.engines.hf import cpu_threads

    cfg, stages = study.cfg, study.stages
    parallel, devices = cfg.parallel, list(cfg.devices)
    threads = cpu_threads()
    on_ray = cfg.ray_address is not None
    if on_ray:
        from forethought.engines.replicas import connect_ray

        ray, started_ray = connect_ray(cfg.ray_address, "a study with ray_address")
        remote = ray.remote(_ray_stage).options(num_cpus=cfg.stage_cpus, num_gpus=cfg.stage_gpus, max_retries=0)
    pending = [name for name, _ in planned if not stages.done(name)]
    running: list[_Child] = []
    failed: list[str] = []

    waits = {name: study.waits_for(name) for name in pending}
    beat = time.monotonic()

    def ready(name: str) -> bool:
        return all(wait(stages) for wait in waits[name])

    try:
        while pending or running:
            free = sorted(set(range(parallel)) - {c.slot for c in running})
            while free and pending:
                name = next_ready(pending, ready, nothing_running=not running)
                if name is None:
                    break
                pending.remove(name)
                stages.recover(name)  # what a killed study's child had run of it
                slot = free.pop(0)
                running.append(_start_on_ray(study, name, slot, remote) if on_ray else
                               _start(study, name, slot, slot_env(slot, parallel, devices, threads)))
            time.sleep(POLL)
            for child in running:
                child.watch.tick()
            if time.monotonic() - beat >= HEARTBEAT_S:
                beat = time.monotonic()
                for child in running:
                    stages.running(child.stage, child.watch)
            for child in list(running):
                ended = child.poll()
                if ended is None:
                    continue
                running.remove(child)
                code, rss = ended
                seconds = child.watch.seconds
                stages.record(child.stage, seconds, rss, "done" if code == 0 else None, paused=child.watch.paused)
                if code == 0:
                    study.say(f"finished {child.stage} in {seconds:,.0f} s")
                    after_stage()
                else:
                    failed.append(f"{child.stage} (exit {code}; {child.log}: {_tail(child.log)})")
                    study.say(f"failed {child.stage} (exit {code}); log: {child.log}")
                    # its transfer evaluations need its final model: they wait for the next attempt
                    after = "transfer/" + child.stage.removeprefix("arms/") + "/"
                    pending = [name for name in pending if not name.startswith(after)]
    finally:
        for child in running:  # interrupted: stop the children (they resume with the study)
            child.kill()
        if on_ray and started_ray:
            ray.shutdown()
    if failed:
        raise UserError("study stages failed: " + "; ".join(failed) + ". Fix the cause and run the same command "
                        "again: finished stages are kept and the failed ones resume where they stopped")


def _log(study, name: str) -> Path:
    log = log_path(study.root, name)
    log.parent.mkdir(parents=True, exist_ok=True)
    return log


def _start(study, name: str, slot: int, env: dict) -> _Child:
    log = _log(study, name)
    with open(log, "ab") as sink:
        proc = subprocess.Popen(_argv(_command(study, name)), env={**env, PARENT: str(os.getpid())}, stdin=subprocess.DEVNULL,
                                stdout=sink, stderr=subprocess.STDOUT)
    study.say(f"started {name} (slot {slot}; log: {log})")
    return _Child(name, slot, proc, log)


def _start_on_ray(study, name: str, slot: int, remote) -> _RayChild:
    """Stage `name` as a Ray task (`remote`: _ray_stage with the study's resources), its log at an absolute path."""
    log = _log(study, name).resolve()
    ref = remote.remote(_command(study, name), str(log), max(1, int(study.cfg.stage_cpus)), os.getcwd())
    study.say(f"started {name} on Ray (log: {log})")
    return _RayChild(name, slot, ref, log)


def main(argv: list[str]) -> int:
    """Child process: run one stage of the study whose snapshot is STUDY_DIR/config.yaml."""
    source, root, stage = argv
    if os.environ.get(PARENT):
        _die_with_parent(int(os.environ[PARENT]))
    from forethought.config import load_yaml, validate
    from forethought.runs.stages import CONFIG
    from forethought.study.config import StudyConfig
    from forethought.study.runner import Study

    try:
        cfg = validate(StudyConfig, load_yaml(Path(root) / CONFIG), f"{root}/{CONFIG}")
        study = Study(cfg, source, progress=False)
        functions = dict(study.planned())
        if stage not in functions:
            raise UserError(f"the study in {root} has no stage '{stage}'")
        functions[stage]()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
