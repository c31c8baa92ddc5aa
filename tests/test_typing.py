"""What the type checker relies on matches what runs: `acd_env.__all__` is spelled out (pyright cannot read
`*_LAZY`), so it must list the lazy exports exactly, and each must resolve."""

from __future__ import annotations

import acd_env


def test_all_lists_the_lazy_exports():
    assert set(acd_env.__all__) == {"CIRCUIT_ENV_ID", "ENV_ID", *acd_env._LAZY}
    assert len(acd_env.__all__) == len(set(acd_env.__all__))
    for name in acd_env.__all__:
        assert getattr(acd_env, name) is not None
