"""N engine replicas as Ray actors: a call's requests are cut into chunks that idle replicas pull, results are put
back in input order, and the chunks of a replica that dies are retried on the others.

Seeded requests give the same samples on any replica (engines seed per request), so N replicas return exactly
what one would. Works with a local `ray.init()` or an existing cluster (`ray_address="auto"` or "ray://host:10001").
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from forethought.engines.base import Completion, Request
from forethought.engines.progress import RequestProgress
from forethought.errors import UserError


def _ray(what: str = "engine.replicas > 1"):
    try:
        import ray
    except ImportError:
        raise UserError(f"{what} needs Ray: pip install 'forethought[ray]'") from None
    return ray


def connect_ray(address: str | None, what: str = "engine.replicas > 1"):
    """Ray, joined to the cluster at `address` (None or "local": start one on this machine; "auto": the running
    cluster) unless this process is already connected; returns (ray, whether this call started the connection)."""
    ray = _ray(what)
    if ray.is_initialized():
        return ray, False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except ConnectionError as e:
        raise UserError(f"cannot connect to the Ray cluster at '{address}': {e}") from None
    return ray, True


class _Replica:
    """One engine inside a Ray actor process, with its own model copy (or server) and `threads` torch threads."""

    def __init__(self, kind: str, model: str, threads: int, options: dict) -> None:
        import torch

        from forethought.engines import get_engine

        self.threads, self.served = threads, 0
        self.engine = get_engine(kind, model, **options)
        torch.set_num_threads(threads)  # the hf engine sets all cores; a replica owns only its share

    def ready(self) -> bool:
        return True

    def generate(self, requests: list[Request]) -> list[Completion]:
        done = self.engine.generate(requests, progress=False)
        self.served += len(requests)
        return done

    def stats(self) -> dict:
        """Requests served so far and the process id (tests and benchmarks check the work was spread)."""
        import os

        return {"served": self.served, "pid": os.getpid()}

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if close:
            close()


class RayReplicaEngine:
    """Spread requests over `replicas` actors each running `get_engine(kind, model, **options)`."""

    def __init__(
        self,
        kind: str,
        model: str,
        *,
        replicas: int,
        ray_address: str | None = None,
        replica_cpus: float = 1.0,
        replica_gpus: float = 0.0,
        chunk_size: int | None = None,
        max_retries: int = 2,
        **options,
    ) -> None:
        if replicas < 1 or replica_cpus <= 0 or replica_gpus < 0 or max_retries < 0:
            raise UserError("engine.replicas must be >= 1, replica_cpus > 0, replica_gpus >= 0, max_retries >= 0")
        if chunk_size is not None and chunk_size < 1:
            raise UserError(f"engine.chunk_size must be >= 1 (got {chunk_size})")
        self.name = kind
        self.kind, self.model, self.chunk_size, self.max_retries = kind, model, chunk_size, max_retries
        ray, self._started_ray = connect_ray(ray_address)
        threads = max(1, int(replica_cpus))
        actor = ray.remote(_Replica).options(
            num_cpus=replica_cpus, num_gpus=replica_gpus, max_restarts=0, max_task_retries=0,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}},
        )
        self.actors = [actor.remote(kind, model, threads, options) for _ in range(replicas)]
        self.alive = list(range(replicas))
        try:
            self._get([a.ready.remote() for a in self.actors])
        except BaseException:
            self.close()
            raise

    def _get(self, refs):
        """ray.get that re-raises a UserError from inside a replica as itself (one line, no Ray traceback)."""
        ray = _ray()
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, UserError):
                raise UserError(str(cause)) from None
            raise

    def _chunks(self, requests: Sequence[Request]) -> list[range]:
        """Consecutive index ranges; by default about two chunks per live replica, so that the fast ones take more."""
        size = self.chunk_size or max(1, math.ceil(len(requests) / (2 * max(1, len(self.alive)))))
        return [range(i, min(i + size, len(requests))) for i in range(0, len(requests), size)]

    def generate(self, requests: Sequence[Request], *, progress: bool = True) -> list[Completion]:
        """Complete every request on the replicas; results keep the input order whatever replica ran them."""
        ray = _ray()
        requests = list(requests)
        chunks = self._chunks(requests)
        pending = deque(range(len(chunks)))
        tries = [0] * len(chunks)
        results: list[Completion | None] = [None] * len(requests)
        running: dict = {}  # ObjectRef -> (chunk, replica)
        per_replica = 2  # calls queued per replica: the next chunk waits in the actor while one runs
        with RequestProgress(len(requests), enabled=progress, label=f"generating on {len(self.alive)} replicas") as bar:
            while pending or running:
                load = {r: 0 for r in self.alive}
                for chunk, replica in running.values():
                    load[replica] = load.get(replica, 0) + 1
                for replica in sorted(self.alive, key=lambda r: load[r]):
                    while pending and load[replica] < per_replica:
                        chunk = pending.popleft()
                        ref = self.actors[replica].generate.remote([requests[i] for i in chunks[chunk]])
                        running[ref] = (chunk, replica)
                        load[replica] += 1
                if not running:
                    raise RuntimeError("every engine replica has failed; see the Ray logs (ray/session_latest/logs)")
                (ref,), _ = ray.wait(list(running), num_returns=1)
                chunk, replica = running.pop(ref)
                try:
                    done = self._get(ref)
                except ray.exceptions.RayActorError:  # the replica died or cannot be reached
                    if replica in self.alive:
                        self.alive.remove(replica)
                    tries[chunk] += 1
                    if tries[chunk] > self.max_retries:
                        raise RuntimeError(f"a chunk of {len(chunks[chunk])} requests failed on "
                                           f"{tries[chunk]} replicas; see the Ray logs") from None
                    pending.appendleft(chunk)
                    continue
                for i, completion in zip(chunks[chunk], done):
                    results[i] = completion
                bar.done(sum(s.tokens for c in done for s in c.samples), len(done))
        return results  # type: ignore[return-value]

    def stats(self) -> list[dict]:
        """Each live replica's stats() (requests served, process id)."""
        return self._get([self.actors[r].stats.remote() for r in self.alive])

    def close(self) -> None:
        """Stop each replica's engine (and any server it launched), end the actors, and Ray if we started it."""
        ray = _ray()
        for replica in self.alive:
            try:
                ray.get(self.actors[replica].close.remote(), timeout=60)
            except Exception:  # a replica that cannot close is ended below all the same
                pass
        for actor in self.actors:
            ray.kill(actor)
        self.actors, self.alive = [], []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False
