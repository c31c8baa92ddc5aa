"""Shared fixtures: the shipped default model, loaded once per session, and the repo's scripts as modules."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import pytest

# The toy models run fastest on one intra-op thread; a second thread on a busy 2-core machine slows every
# forward pass by an order of magnitude (see `acd perf`). Subprocesses inherit this too.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Query stores written by the tests (acd_env.query_store) go to a fresh folder, never to the user's cache.
os.environ["ACD_CACHE_DIR"] = tempfile.mkdtemp(prefix="acd-test-cache-")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TOY = "toy-4l"


def load_script(name: str) -> ModuleType:
    """Import `scripts/<name>.py` (scripts/ is not a package)."""
    module_name = f"_acd_script_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def script():
    """`script("zoo_report")` imports scripts/zoo_report.py as a module."""
    return load_script


@pytest.fixture(scope="session")
def toy_model():
    """The shipped default model `toy-4l` as a circuit-tracer ReplacementModel (loaded once)."""
    from acd_env.models import available_models, load_model

    if DEFAULT_TOY not in available_models():
        pytest.fail(f"{DEFAULT_TOY!r} is not in the zoo (acd_env/models/zoo); build it with `make zoo`")
    return load_model(DEFAULT_TOY)
