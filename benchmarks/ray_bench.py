"""`acd bench --executor ray`: every (agent, protocol, fold, seed) sequence of episodes is a Ray task.

A sequence is the unit because agents keep memory across the prompts of a sequence (`stream`, the fitted
protocols); sequences are independent of each other. Each task builds its own envs (replay tables or the
model, cached per worker process) and agent (fitted with the run's first seed, as locally:
benchmarks.runner.AgentFactory), runs `benchmarks.runner.sequence_events` and streams every finished episode
back as it ends (a Ray streaming generator); the driver alone appends to `results.jsonl`. So the rows are the
same as a local run's with the same seeds, in another order, and the leaderboard (which sorts episodes
canonically) is identical apart from its timing columns. At most one task per worker is in flight; a task
whose worker dies is resubmitted, skipping the episodes it had already streamed back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from acd_env.errors import ACDError
from benchmarks.executors import ExecutorOptions, ray_session, remote_error, worker_count
from benchmarks.runner import AgentFactory, EnvSet, EpisodeSequence, Event, Known, Runner, sequence_events

MAX_ATTEMPTS = 3


def run_sequence_task(context: tuple, seq: EpisodeSequence, known: Known) -> Iterator[Event]:
    """The Ray task: `context` = (env factory, has_atp, budget, share_fit). (Ray gives a 1-CPU task one
    OpenMP thread, and the CLI's OMP_NUM_THREADS=1 reaches the workers through the environment.)"""
    make, has_atp, budget, share_fit = context
    envs = EnvSet(make=make, has_atp=has_atp)
    yield from sequence_events(seq, envs, budget, known, AgentFactory(share_fit))


class RayExecutor:
    """The Ray executor of `Runner.run`: `RayExecutor(opts)(runner, sequences, record)` (see `run_on_ray`)."""

    def __init__(self, opts: ExecutorOptions) -> None:
        self.opts = opts

    def __call__(
        self, runner: Runner, sequences: Sequence[EpisodeSequence], record: Callable[[Event], None]
    ) -> None:
        run_on_ray(runner, sequences, self.opts, record)


def run_on_ray(
    runner: Runner,
    sequences: Sequence[EpisodeSequence],
    opts: ExecutorOptions,
    record: Callable[[Event], None],
) -> None:
    with ray_session(opts) as ray:
        n_workers = worker_count(ray, opts)
        task = ray.remote(run_sequence_task).options(
            num_cpus=1, num_gpus=opts.gpus_per_worker, num_returns="streaming", max_retries=0
        )
        context = ray.put((runner.envs.make, runner.envs.has_atp, runner.budget, runner.share_fit))
        queue = deque(range(len(sequences)))
        inflight: dict[Any, int] = {}
        attempts: dict[int, int] = {}

        def submit(j: int) -> None:
            seq = sequences[j]
            inflight[task.remote(context, seq, runner.known(seq))] = j

        while queue and len(inflight) < n_workers:
            submit(queue.popleft())
        while inflight:
            (gen,), _ = ray.wait(list(inflight), num_returns=1)
            j = inflight[gen]
            try:
                event = ray.get(next(gen))
            except StopIteration:
                del inflight[gen]
                if queue:
                    submit(queue.popleft())
                continue
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as e:
                del inflight[gen]
                attempts[j] = attempts.get(j, 0) + 1
                if attempts[j] >= MAX_ATTEMPTS:
                    raise ACDError(
                        f"sequence {_describe(sequences[j])} took down {attempts[j]} Ray workers "
                        f"({type(e).__name__}); finished episodes are saved: re-run to resume"
                    ) from None
                submit(j)  # the episodes it streamed back are in the log now and are skipped
                continue
            except ray.exceptions.RayTaskError as e:
                raise remote_error(ray, e) from None
            record(event)


def _describe(seq: EpisodeSequence) -> str:
    return f"{seq.agent.name}/{seq.protocol.name}/{seq.fold.name}/seed {seq.seed}"
