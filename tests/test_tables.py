"""Circuit tables: round trip, validation errors, atomic writes."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import acd_env
from acd_env.case import CaseSettings
from acd_env.errors import TableError
from acd_env.table_build import build_task_table
from acd_env.tables import FORMAT_VERSION, load_table, save_table, select_prompts


@pytest.fixture(scope="module")
def model():
    return acd_env.load_model("toy-4l")


@pytest.fixture(scope="module")
def table(model):
    return build_task_table(model, "counting", "test", CaseSettings(n_candidates=16), n=2)


@pytest.fixture
def saved(table, tmp_path):
    return save_table(table, tmp_path / "t.npz")


def test_round_trip(table, saved, model):
    info = acd_env.models.model_info(model)
    loaded = load_table(saved, weights_hash=info.weights_hash)
    assert loaded.meta["format_version"] == FORMAT_VERSION
    assert loaded.meta["model"] == "toy-4l" and loaded.meta["weights_hash"] == info.weights_hash
    assert [c.prompt for c in loaded.cases] == [c.prompt for c in table.cases]
    for a, b in zip(loaded.cases, table.cases, strict=True):
        np.testing.assert_array_equal(a.tokens, b.tokens)
        np.testing.assert_array_equal(a.descriptors, b.descriptors)
        np.testing.assert_array_equal(a.features, b.features)
        assert a.n_valid == b.n_valid and a.patch_source == b.patch_source
    for name, values in table.measurements.items():
        np.testing.assert_array_equal(loaded.measurements[name], values)
    assert not list(saved.parent.glob("*.tmp"))


def test_missing_and_corrupt_tables(tmp_path, saved):
    with pytest.raises(TableError, match="does not exist"):
        load_table(tmp_path / "nope.npz")
    truncated = tmp_path / "trunc.npz"
    truncated.write_bytes(saved.read_bytes()[:200])
    with pytest.raises(TableError, match="corrupt or truncated"):
        load_table(truncated)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a table at all")
    with pytest.raises(TableError, match="corrupt or truncated"):
        load_table(garbage)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.zeros(3))
    with pytest.raises(TableError, match="not a circuit table"):
        load_table(foreign)


def _rewrite(src, dst, edit):
    with np.load(src) as data:
        arrays = {k: data[k] for k in data.files}
    edit(arrays)
    np.savez(dst, **arrays)
    return dst


def test_old_version_foreign_model_and_nan(tmp_path, saved):
    def old(arrays):
        meta = json.loads(str(arrays["meta"]))
        arrays["meta"] = np.array(json.dumps({**meta, "format_version": 1}))

    with pytest.raises(TableError, match=r"format version 1.*rebuild"):
        load_table(_rewrite(saved, tmp_path / "old.npz", old))
    with pytest.raises(TableError, match=r"built for model 'toy-4l'.*rebuild it for this model"):
        load_table(saved, weights_hash="0123456789abcdef", model_name="toy-other")

    def nan(arrays):
        arrays["m_kl"] = arrays["m_kl"].copy()
        arrays["m_kl"][0, 0, 0] = np.nan

    with pytest.raises(TableError, match="NaN or inf in measurement 'kl'"):
        load_table(_rewrite(saved, tmp_path / "nan.npz", nan))

    def shape(arrays):
        arrays["descriptors"] = arrays["descriptors"][:, :3]

    with pytest.raises(TableError, match="descriptors has shape"):
        load_table(_rewrite(saved, tmp_path / "shape.npz", shape))


def test_write_is_atomic(table, tmp_path, monkeypatch):
    target = tmp_path / "atomic.npz"
    save_table(table, target)
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(KeyboardInterrupt):
        save_table(table, target)
    assert target.read_bytes() == before  # the old table is intact
    assert not list(tmp_path.glob("*.tmp"))  # and nothing half-written is left
    assert zipfile.is_zipfile(target)


def test_file_build_equals_in_memory_build_and_releases_the_attribution_cache(model, tmp_path):
    """The sharded file build gives the in-memory table (same prompts, measurements, metadata apart from timing)
    and drops each prompt's cached attribution once measured (clean activations of a large model would pile
    up over a long build), leaving no shards behind."""
    from acd_env.backends import _CASE_CACHE
    from acd_env.table_build import build_table_file, shard_dir

    settings = CaseSettings(n_candidates=16, steering_scale=3.0)  # not cached by another test's env
    out = build_table_file(model, "counting", "test", tmp_path / "c.npz", settings, n=2, shard_size=1)
    built = load_table(out)
    assert not shard_dir(out).exists()
    assert not [key for key in _CASE_CACHE.get(model, {}) if key[1] == settings]
    again = build_task_table(model, "counting", "test", settings, n=2)
    for name, values in again.measurements.items():
        np.testing.assert_array_equal(built.measurements[name], values)
    strip = ("build_seconds", "n_prompts")
    assert {k: v for k, v in built.meta.items() if k not in strip} == {
        k: v for k, v in again.meta.items() if k not in strip
    }


def test_select_prompts_keeps_the_chosen_prompts_rows_aligned():
    from acd_env.table_store import resolve_tables

    table = resolve_tables("toy-4l", "ioi", "test", None)
    rows = [5, 0, 3]
    part = select_prompts(table, rows)
    assert [c.prompt.id for c in part.cases] == [table.cases[r].prompt.id for r in rows]
    assert part.meta["n_prompts"] == 3 and table.meta["n_prompts"] == len(table.cases)
    for name, values in table.measurements.items():
        assert np.array_equal(part.measurements[name], values[rows])
    assert table.circuit is not None and part.circuit is not None
    for name, values in table.circuit.items():
        assert np.array_equal(part.circuit[name], values[rows])
