"""Shared by the compatibility command's tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _shared_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytester points HOME at a fresh directory; keep inner runs on the real reference cache (no rebuild)."""
    from pytest_aero_virtio.refenv.cache import cache_root

    monkeypatch.setenv("AERO_VIRTIO_CACHE", str(cache_root()))
