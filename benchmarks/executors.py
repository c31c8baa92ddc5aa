"""Where the work of `acd tables build` and `acd bench` runs: the executor seam.

    --executor local        this process (the default; Ray is never imported)
    --executor ray          Ray: a local instance started for the run, or the cluster at --ray-address
    --ray-address ADDR      host:port of a running cluster's head (`ray start --head` prints it), `auto`, or
                            ray://host:port (Ray client)
    --workers N             Ray workers (default: one per CPU of the cluster, or per GPU share)
    --gpus-per-worker F     GPUs reserved by each worker (e.g. 1 for one model copy per GPU, 0.5 for two)

Jobs: benchmarks.ray_tables (one actor per worker holding the model; prompts handed out dynamically) and
benchmarks.ray_bench (one Ray task per episode sequence). A missing Ray, or an address where no cluster
answers, fails within seconds with an error naming the address.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from acd_env.errors import ACDError, unknown
from benchmarks.options import add_options, from_args, option

EXECUTORS = ("local", "ray")
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ExecutorOptions:
    """Where the work runs; each field is also the command-line option of `acd tables build` and `acd bench`."""

    kind: str = option(
        "local", flag="--executor", dest="executor", help="local (default: this process) or ray"
    )
    address: str | None = option(
        None,
        flag="--ray-address",
        dest="ray_address",
        help="Ray cluster head host:port, auto, or ray://host:port (default: start one)",
    )
    workers: int | None = option(None, type=int, help="Ray workers (default: one per CPU, or per GPU share)")
    gpus_per_worker: float = option(0.0, help="GPUs each Ray worker reserves (default %(default)g)")

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise unknown("executor", self.kind, EXECUTORS)
        if self.workers is not None and (
            isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers <= 0
        ):
            raise ACDError(f"--workers must be a positive integer, got {self.workers!r}")
        if not isinstance(self.gpus_per_worker, int | float) or self.gpus_per_worker < 0:
            raise ACDError(f"--gpus-per-worker must be a number ≥ 0, got {self.gpus_per_worker!r}")
        if self.kind == "local":
            for flag, value, default in (
                ("--ray-address", self.address, None),
                ("--workers", self.workers, None),
                ("--gpus-per-worker", self.gpus_per_worker, 0.0),
            ):
                if value != default:
                    raise ACDError(f"{flag} needs --executor ray (the local executor runs in this process)")

    @property
    def is_ray(self) -> bool:
        return self.kind == "ray"


def add_executor_args(parser: argparse.ArgumentParser) -> None:
    add_options(parser.add_argument_group("executor (see benchmarks/executors.py)"), ExecutorOptions)


def executor_options(args: argparse.Namespace) -> ExecutorOptions:
    return ExecutorOptions(**from_args(ExecutorOptions, args))


def _check_reachable(address: str) -> None:
    """Fail within seconds when nothing listens at host:port (ray.init would otherwise retry for a minute)."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ACDError(f"--ray-address {address!r} is not host:port, ray://host:port or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        raise ACDError(
            f"no Ray cluster answers at --ray-address {address!r} ({e.strerror or e}); start one with "
            "`ray start --head` and pass the address it prints, or leave --ray-address out to start a local one"
        ) from None


def check_available(opts: ExecutorOptions) -> None:
    """For `--executor ray`: Ray is installed and the address answers (seconds; call before any real work)."""
    if not opts.is_ray:
        return
    if importlib.util.find_spec("ray") is None:
        raise ACDError(
            "--executor ray needs Ray, which is not installed: pip install 'active-circuit-discovery[ray]' "
            "(ray==2.60.0), or use --executor local"
        )
    if opts.address and opts.address != "auto":
        _check_reachable(opts.address)


@contextlib.contextmanager
def ray_session(opts: ExecutorOptions) -> Iterator[Any]:
    """Connect to the cluster at `opts.address`, or start a local instance (shut down on exit); yields `ray`."""
    check_available(opts)
    import ray

    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            if opts.address:
                ray.init(address=opts.address, **kwargs)
            else:
                cpus = max(opts.workers or 0, os.cpu_count() or 1)
                ray.init(num_cpus=cpus, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ACDError(
                f"cannot connect to Ray at {opts.address or 'a new local instance'!r}: {e}"
            ) from None
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def worker_count(ray: Any, opts: ExecutorOptions) -> int:
    """--workers, else as many as the cluster's CPUs (or GPUs ÷ --gpus-per-worker) allow."""
    if opts.workers:
        return opts.workers
    resources = ray.cluster_resources()
    if opts.gpus_per_worker > 0:
        gpus = resources.get("GPU", 0)
        if gpus < opts.gpus_per_worker:
            raise ACDError(
                f"--gpus-per-worker {opts.gpus_per_worker} but the Ray cluster has {gpus:g} GPUs; "
                "add GPU nodes or use --gpus-per-worker 0"
            )
        return max(1, int(gpus // opts.gpus_per_worker))
    return max(1, int(resources.get("CPU", 1)))


def remote_error(ray: Any, error: BaseException) -> BaseException:
    """The error raised inside a Ray worker, as the driver should report it (ACDError stays an ACDError)."""
    cause = getattr(error, "cause", None)
    if isinstance(error, ray.exceptions.RayTaskError) and isinstance(cause, ACDError):
        return ACDError(str(cause))
    return error
