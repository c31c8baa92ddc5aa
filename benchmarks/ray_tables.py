"""`acd tables build --executor ray`: one actor per worker loads the model once; the driver hands out prompts
one at a time (a worker that finishes early takes the next), streams the measurements back and alone writes
them, in shards (acd_env.table_build.build_table_sharded). A worker that dies mid-prompt is replaced and its
prompt goes back to the front of the queue; a driver killed mid-build resumes from its shards.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from acd_env.errors import ACDError
from acd_env.table_build import MeasuredPrompt, TableJob, build_table_sharded, progress_bar
from benchmarks.executors import ExecutorOptions, ray_session, remote_error, worker_count

MAX_ATTEMPTS = 3  # per prompt: workers it may take down before the build gives up on it


class TableWorker:
    """A Ray actor (wrapped with `ray.remote` by the driver): holds the model and measures prompts."""

    def __init__(self, job: TableJob, device: str | None) -> None:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        import torch

        from benchmarks.modelarg import load_model_arg

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        self.measurer = job.measurer(lambda spec: load_model_arg(spec, device))

    def describe(self) -> dict:
        return dict(self.measurer.describe(), pid=os.getpid())

    def measure(self, i: int) -> MeasuredPrompt:
        return self.measurer.measure(i)


def dispatch(
    ray: Any,
    workers: list[Any],
    make_worker: Callable[[], Any],
    pending: list[int],
    *,
    on_retry: Callable[[int, str], None] | None = None,
) -> Iterator[MeasuredPrompt]:
    """Measure `pending` on `workers`, one prompt in flight per worker; yields results as they finish."""
    queue = deque(pending)
    inflight: dict[Any, tuple[int, int]] = {}
    attempts: Counter = Counter()

    def submit(w: int) -> None:
        if queue:
            i = queue.popleft()
            inflight[workers[w].measure.remote(i)] = (w, i)

    for w in range(len(workers)):
        submit(w)
    while inflight:
        (ref,), _ = ray.wait(list(inflight), num_returns=1)
        w, i = inflight.pop(ref)
        try:
            item = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as e:
            attempts[i] += 1
            if attempts[i] >= MAX_ATTEMPTS:
                raise ACDError(
                    f"prompt {i} took down {attempts[i]} Ray workers ({type(e).__name__}); giving up. "
                    "The shards written so far are kept: re-run to resume"
                ) from None
            if on_retry:
                on_retry(i, type(e).__name__)
            kill_actor(ray, workers[w])
            workers[w] = make_worker()
            queue.appendleft(i)
            submit(w)
            continue
        except ray.exceptions.RayTaskError as e:
            raise remote_error(ray, e) from None
        yield item
        submit(w)


def kill_actor(ray: Any, actor: Any) -> None:
    with contextlib.suppress(Exception):  # already gone
        ray.kill(actor, no_restart=True)


def build_table_on_ray(
    job: TableJob,
    out: str | Path,
    opts: ExecutorOptions,
    *,
    device: str | None = None,
    progress: bool = False,
    restart: bool = False,
    shard_size: int = 16,
    echo: Callable[[str], None] = print,
) -> Path:
    """Build one table on Ray workers; the table equals `build_table_file`'s for the same job."""
    if device is None and opts.gpus_per_worker > 0:
        device = "cuda"  # Ray points each GPU worker at its own share (CUDA_VISIBLE_DEVICES)
    with ray_session(opts) as ray:
        n_workers = worker_count(ray, opts)
        actor = ray.remote(TableWorker).options(
            num_cpus=1, num_gpus=opts.gpus_per_worker, max_restarts=0, max_task_retries=0
        )

        def make_worker() -> Any:
            return actor.remote(job, device)

        workers = [make_worker() for _ in range(n_workers)]
        try:
            try:
                descriptions = ray.get([w.describe.remote() for w in workers])
            except ray.exceptions.RayActorError as e:
                raise ACDError(f"a Ray worker could not load model {job.model!r}: {e}") from None
            first = descriptions[0]
            for d in descriptions[1:]:
                if d["meta"] != first["meta"] or d["prompt_ids"] != first["prompt_ids"]:
                    raise ACDError(
                        f"Ray workers disagree on model {job.model!r} (weights {first['meta']['weights_hash']} vs "
                        f"{d['meta']['weights_hash']}): every node needs the same model files and package version"
                    )
            echo(f"Ray: {n_workers} workers (pids {', '.join(str(d['pid']) for d in descriptions)})")

            def retried(i: int, why: str) -> None:
                echo(f"Ray: a worker died measuring prompt {i} ({why}); it is retried on a fresh worker")

            with progress_bar(f"{first['meta']['model']} {job.task}/{job.split} (ray)", progress) as tick:
                return build_table_sharded(
                    out,
                    {"meta": first["meta"], "prompt_ids": first["prompt_ids"]},
                    lambda pending: dispatch(ray, workers, make_worker, pending, on_retry=retried),
                    shard_size=shard_size,
                    restart=restart,
                    progress=tick,
                )
        finally:
            for w in workers:
                kill_actor(ray, w)
