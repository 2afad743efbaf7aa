"""The one stage runner every pipeline uses (`run`, `cpl`, `codeplan`, `search`): a run directory whose config
snapshot is checked on resume, a manifest of finished stages with their seconds, atomic stage outputs, and one
engine open at a time, closed before any training.

A stage is a name and a function. It runs only if the manifest does not mark it done; a stage whose output
(a checkpoint renamed into place) exists although the manifest missed it (killed between the two) is marked done
without running again. Half-written outputs (`.NAME.partial-*` siblings) are removed before a stage runs again.

A stage's seconds are wall time summed over its attempts. A running stage writes its seconds so far to the
manifest (`running`) every HEARTBEAT_S, so an attempt that is killed still counts when the stage runs again; time
during which the process was stopped (SIGSTOP, a suspended job) is left out and summed under `paused_seconds`.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import platform
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml
from pydantic import BaseModel
from rich.console import Console

from forethought.engines import close_engine, get_engine
from forethought.errors import UserError
from forethought.jsonl import write_json
from forethought.tracking import Tracker

CONFIG, MANIFEST = "config.yaml", "manifest.json"
FIXED_SERVER = (
    "engine.kind=openai with base_urls serves one fixed model, but this run generates with its own checkpoint "
    "{model}; set engine.launch to a command that serves {{model}} (e.g. 'vllm serve {{model}} --served-model-name "
    "{{name}} --port {{port}}') instead of base_urls"
)


def _flatten(data, prefix: str = "") -> dict:
    """{"search": {"c_puct": 1.5}} -> {"search.c_puct": 1.5} (lists stay whole)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        out.update(_flatten(value, path) if isinstance(value, dict) and value else {path: value})
    return out


def changed_keys(previous: dict, current: dict, growable: Iterable[str] = (),
                 defaults: Iterable[str] = ()) -> list[str]:
    """Dotted keys whose values differ, except `output` (where the run is) and `report_to` (where it is tracked),
    growable counts that only grew, and
    settings the previous snapshot lacks that are at their defaults now (added to the recipe type since)."""
    old, new, defaults = _flatten(previous), _flatten(current), set(defaults)
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if key in ("output", "report_to") or a == b or (key not in old and key in defaults):  # (tracking only)
            continue
        if key in growable and isinstance(a, int) and isinstance(b, int) and b >= a:
            continue
        changed.append(key)
    return changed


def snapshot_config(root: Path, config: BaseModel, growable: Iterable[str] = ()) -> None:
    """Write root/config.yaml, or check that a resumed run's recipe equals it (growable counts may grow)."""
    resolved = config.model_dump(mode="json")
    chosen = _flatten(config.model_dump(mode="json", exclude_defaults=True))
    defaults = [k for k in _flatten(resolved) if k not in chosen]
    path = root / CONFIG
    if path.is_file():
        previous = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if changed := changed_keys(previous, resolved, growable, defaults):
            raise UserError(
                f"{root} holds a run made with a different config (differs in: {', '.join(changed)}); "
                "run the same command to resume it, or choose a new output=DIR"
            )
        if previous != resolved:  # a count grew or a new setting appeared: the snapshot follows
            _write_config(path, resolved)
        return
    if root.is_dir() and any(root.iterdir()):
        raise UserError(f"{root} is not empty and holds no {CONFIG}: it is not a run directory of this command; "
                        "choose a new output=DIR")
    root.mkdir(parents=True, exist_ok=True)
    _write_config(path, resolved)


def _write_config(path: Path, resolved: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    tmp.replace(path)


def read_manifest(root: Path) -> dict:
    """A run directory's manifest.json (stage statuses, seconds, peaks); empty stages and seconds when absent."""
    path = Path(root) / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"stages": {}, "seconds": {}}


def remove_partials(output: Path) -> None:
    """Delete what a killed stage left beside `output` (`.NAME.partial-*`, `.NAME.job-*` siblings)."""
    for pattern in (f".{output.name}.partial-*", f".{output.name}.job-*"):
        for stale in output.parent.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


def reset_peak_rss() -> None:
    """Start a new peak resident memory measurement for this process (Linux; elsewhere nothing)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def release_free_memory() -> None:
    """Return the C heap's free pages to the system (glibc malloc_trim; elsewhere nothing): freed tensors below
    glibc's mmap threshold otherwise stay resident after a stage."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def machine() -> str:
    """The kind of machine a stage ran on, e.g. "AMD EPYC, AVX2, 2 CPUs" (+ GPU names): seconds measured on
    different kinds differ several-fold (fp32 on AVX2 vs AVX-512), so a run carried across machines says which."""
    parts = [_cpu()]
    torch = sys.modules.get("torch")  # only when already loaded: a stage that used no torch needs no GPU name
    if torch is not None and torch.cuda.is_available():
        parts += [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return ", ".join(parts)


@functools.lru_cache(maxsize=1)
def _cpu() -> str:
    name, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    isa = next((label for flag, label in (("amx_bf16", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))
                if flag in flags), None)
    return ", ".join([name] + ([isa] if isa else []) + [f"{os.cpu_count()} CPUs"])


def peak_rss_mb() -> int | None:
    """This process's peak resident memory in MB since the last reset_peak_rss (None where /proc has no VmHWM)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


HEARTBEAT_S = 10.0  # how often a running stage's seconds so far reach the manifest
STOPPED_S = 120.0  # a heartbeat this much later than due means the process was stopped: the gap is not counted


class Stopwatch:
    """A stage's running seconds, counted from heartbeat to heartbeat: a gap longer than a beat plus STOPPED_S (the
    process was stopped and continued) counts as one beat, the rest goes to `paused`."""

    def __init__(self, beat: float = HEARTBEAT_S, clock: Callable[[], float] = time.monotonic):
        self.beat, self.clock = beat, clock
        self.last, self.seconds, self.paused = clock(), 0.0, 0.0

    def tick(self) -> float:
        now = self.clock()
        gap, self.last = now - self.last, now
        if gap > self.beat + STOPPED_S:
            self.paused += gap - self.beat
            gap = self.beat
        self.seconds += gap
        return self.seconds

    def so_far(self) -> float:
        """The seconds counted so far plus the current beat's (at most one beat), without ticking."""
        return self.seconds + min(self.clock() - self.last, self.beat)


@contextlib.contextmanager
def heartbeat(on_beat: Callable[[Stopwatch], None], beat: float | None = None):
    """Yield a Stopwatch ticked (and `on_beat` called) every `beat` seconds by a daemon thread until the block ends;
    it is ticked once more at the end."""
    watch, stop = Stopwatch(HEARTBEAT_S if beat is None else beat), threading.Event()

    def loop():
        while not stop.wait(watch.beat):
            watch.tick()
            with contextlib.suppress(Exception):  # best effort: the stage's own end records its seconds
                on_beat(watch)

    thread = threading.Thread(target=loop, name="stage-heartbeat", daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        stop.set()
        thread.join()
        watch.tick()


class StageRunner:
    """One run directory: config snapshot, manifest (status and seconds per stage), engine lifecycle."""

    def __init__(self, root: str | Path, config: BaseModel, *, engine_settings=None, growable: Iterable[str] = (),
                 progress: bool = True):
        self.root = Path(root)
        # report_to: the tracking backends (tracking.py), opened on entering the runner, closed on leaving it
        self.tracker = Tracker(self.root, getattr(config, "report_to", []), config.model_dump(mode="json"))
        snapshot_config(self.root, config, growable)
        self.settings, self.progress = engine_settings, progress
        self.manifest = read_manifest(self.root)
        self._lock = threading.RLock()  # the heartbeat thread writes the manifest too
        self._live: dict[str, Stopwatch] = {}  # the running stages' stopwatches
        self._engine = (None, None)

    # ---------------------------------------------------------------- manifest
    def status(self, name: str) -> str | None:
        return self.manifest["stages"].get(name)

    def done(self, name: str) -> bool:
        return self.status(name) in ("done", "skipped")

    def mark(self, name: str, status: str = "done") -> None:
        with self._lock:
            self.manifest["stages"][name] = status
            self._save()

    def add_seconds(self, name: str, seconds: float, paused: float = 0.0) -> None:
        """Wall time of a stage (and time it was stopped), summed over interrupted attempts; ends its `running`."""
        with self._lock:
            self.manifest.get("running", {}).pop(name, None)
            self.manifest["seconds"][name] = round(self.manifest["seconds"].get(name, 0.0) + seconds, 3)
            if paused:
                stopped = self.manifest.setdefault("paused_seconds", {})
                stopped[name] = round(stopped.get(name, 0.0) + paused, 3)
            self._save()

    def running(self, name: str, watch: Stopwatch) -> None:
        """A running attempt's seconds so far, kept in the manifest until the attempt is recorded."""
        with self._lock:
            self.manifest.setdefault("running", {})[name] = {"seconds": round(watch.seconds, 3),
                                                              "paused": round(watch.paused, 3)}
            self._save()

    def recover(self, name: str) -> None:
        """Count what an earlier attempt at `name` ran before it was killed (its last heartbeat)."""
        with self._lock:
            killed = self.manifest.get("running", {}).get(name)
            if killed:
                self.add_seconds(name, killed["seconds"], killed["paused"])

    def annotate(self, key: str, name: str, value) -> None:
        """Keep `value` about stage `name` under manifest[key] (e.g. `reused`), saved with the next manifest write."""
        with self._lock:
            self.manifest.setdefault(key, {})[name] = value

    def redo_if_lost(self, name: str, output: Path, needed: bool) -> None:
        """Mark done stage `name` to run again when its output is gone (a run directory copied without its weights,
        e.g. to carry a study to another machine) and a stage still to run `needed` it; a finished run whose
        checkpoints were deleted is left alone."""
        if needed and self.status(name) == "done" and not output.exists():
            Console(stderr=True).print(f"[yellow]warning:[/] {output} is missing and still needed: stage {name} runs "
                                       "again", soft_wrap=True)
            self.mark(name, "pending")

    def elapsed(self, name: str) -> float:
        """Seconds stage `name` has run so far over its attempts, the running one included (stops left out)."""
        watch = self._live.get(name)
        return self.manifest["seconds"].get(name, 0.0) + (watch.so_far() if watch is not None else 0.0)

    @property
    def seconds(self) -> dict[str, float]:
        return dict(self.manifest["seconds"])

    def _save(self) -> None:
        write_json(self.root / MANIFEST, self.manifest)

    # ---------------------------------------------------------------- stages
    def stage(self, name: str, fn: Callable[[], str | None], *, output: Path | None = None,
              trains: bool = False) -> bool:
        """Run `fn` unless `name` is done; returns whether it ran. `fn` may return a status string ("skipped").

        `output`: the stage's atomic result (a directory renamed into place); if it exists the stage is done.
        `trains`: the open engine is closed first, so sampling memory (GPU, servers, actors) is free for training.
        """
        if self.done(name):
            return False
        self.recover(name)
        if output is not None:
            if output.exists():  # killed after the atomic rename, before the manifest was written
                self.mark(name)
                return False
            remove_partials(output)
        if trains:
            self.release_engine()
        reset_peak_rss()
        watch = Stopwatch()
        try:
            with heartbeat(lambda w: self.running(name, w)) as watch:
                self._live[name] = watch
                with self.tracker.training(name) if trains else contextlib.nullcontext():
                    status = fn()
        finally:
            self._live.pop(name, None)
            gc.collect()  # a stage's trainer or engine buffers, held in cycles, go now...
            release_free_memory()  # ...and the C heap gives them back, so the next stage starts small
            self.record(name, watch.seconds, peak_rss_mb(), paused=watch.paused)
        self.mark(name, status if isinstance(status, str) else "done")
        return True

    def record(self, name: str, seconds: float, peak_mb: int | None, status: str | None = None,
               paused: float = 0.0) -> None:
        """An attempt at stage `name`: its seconds (summed over attempts; `paused`: time it was stopped, not in
        `seconds`), its peak resident memory (the largest over attempts) and, when given, its status (a stage run
        elsewhere, e.g. a study's child process)."""
        with self._lock:
            if peak_mb is not None:
                peaks = self.manifest.setdefault("peak_rss_mb", {})
                peaks[name] = max(peaks.get(name, 0), peak_mb)
            self.manifest.setdefault("machine", {})[name] = machine()  # the last attempt's
            self.add_seconds(name, seconds, paused)
        self.tracker.log_stage_seconds(name, self.manifest["seconds"][name])
        if status is not None:
            self.mark(name, status)

    # ---------------------------------------------------------------- engine lifecycle
    def engine(self, model: str):
        """An engine on `model`, reused while the model stays the same; another model closes the current one."""
        if self._engine[0] != str(model):
            self.release_engine()
            s = self.settings
            if s.fixed_model and Path(model).resolve().is_relative_to(self.root.resolve()):
                raise UserError(FIXED_SERVER.format(model=model))
            self._engine = (str(model), get_engine(s.kind, str(model), **s.options()))
        return self._engine[1]

    def release_engine(self) -> None:
        """Close the current engine (its server, Ray actors or GPU memory) and drop it."""
        engine, self._engine = self._engine[1], (None, None)
        if engine is not None:
            close_engine(engine)
        del engine
        gc.collect()

    # ---------------------------------------------------------------- tracking
    def log_metrics(self, step: int, metrics: dict, prefix: str = "iter") -> None:
        """A pipeline's numbers at `step` (iteration or round) into the run's tracking backends, if any."""
        self.tracker.log_metrics(step, metrics, prefix)

    def log_table(self, step: int, name: str, rows: list[dict]) -> None:
        """Example trajectories (question, plan, reflection, solution, verdict) at `step` into the backends."""
        self.tracker.log_table(step, name, rows)

    def __enter__(self):
        self.tracker.open()
        return self

    def __exit__(self, *exc):
        try:
            self.release_engine()
        finally:
            self.tracker.close()
