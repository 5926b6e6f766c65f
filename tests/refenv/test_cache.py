"""Cache root selection, key stability and the atomic build-once entry protocol."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pytest_aero_virtio.refenv import cache


def test_cache_root_precedence() -> None:
    assert cache.cache_root({"AERO_VIRTIO_CACHE": "/x", "XDG_CACHE_HOME": "/y"}) == Path("/x")
    assert cache.cache_root({"XDG_CACHE_HOME": "/y", "HOME": "/h"}) == Path("/y/aero-virtio")
    assert cache.cache_root({"HOME": "/h"}) == Path("/h/.cache/aero-virtio")


def test_stable_key_order_free_and_unambiguous() -> None:
    k = cache.stable_key([("a", "1"), ("b", b"2")])
    assert k == cache.stable_key([("b", b"2"), ("a", "1")])
    assert len(k) == 16 and int(k, 16) >= 0
    assert cache.stable_key([("ab", "c")]) != cache.stable_key([("a", "bc")])
    assert k != cache.stable_key([("a", "1"), ("b", b"3")])
    assert k == "8f3b38fadbc769fb"  # pinned: a changed key scheme would silently rebuild every user's cache


def test_ensure_entry_builds_once_and_atomically(tmp_path: Path) -> None:
    calls: list[Path] = []

    def build(tmp: Path, final: Path) -> None:
        assert not final.exists() and tmp.parent == final.parent
        calls.append(tmp)
        (tmp / "f").write_text("x")

    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.ensure_entry(tmp_path, "k", "0123", build)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert {r.name for r in results} == {"k-0123"}
    assert (tmp_path / "k-0123" / "f").read_text() == "x"


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def build(tmp: Path, final: Path) -> None:
        (tmp / "half").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.ensure_entry(tmp_path, "k", "1", build)
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".locks")] == []


def test_stale_entries_keeps_current_and_shared_dirs(tmp_path: Path) -> None:
    for name in ("qemu-1", "qemu-2", "base-1", "image-1", "guest-9", ".tmp-base-x", "apt", "debs", "caps", ".locks"):
        (tmp_path / name).mkdir()
    stale = cache.stale_entries(tmp_path, {tmp_path / "qemu-2", tmp_path / "base-1", tmp_path / "image-1"})
    assert [p.name for p in stale] == [".tmp-base-x", "guest-9", "qemu-1"]
    assert cache.stale_entries(tmp_path / "missing", set()) == []
