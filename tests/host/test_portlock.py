"""Fixed-port locks: the second VM waits for the first; a lock held too long is PORT_IN_USE."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from pytest_aero_virtio.errors import AeroConfigError
from pytest_aero_virtio.host.portlock import PortLocks, lock_dir


def test_second_holder_waits_until_the_first_releases(tmp_path: Path) -> None:
    first = PortLocks([18080, 18081], timeout_s=5, directory=tmp_path)
    first.acquire()
    got_it = threading.Event()

    def second() -> None:
        with PortLocks([18081, 18080], timeout_s=5, directory=tmp_path):
            got_it.set()

    t = threading.Thread(target=second)
    t.start()
    time.sleep(0.5)
    assert not got_it.is_set(), "the second holder must wait while the first holds the ports"
    first.release()
    t.join(5)
    assert got_it.is_set()


def test_timeout_is_port_in_use_naming_the_port(tmp_path: Path) -> None:
    with PortLocks([18080], timeout_s=5, directory=tmp_path):
        t0 = time.monotonic()
        with pytest.raises(AeroConfigError) as exc:
            PortLocks([18080], timeout_s=0.5, directory=tmp_path).acquire()
        assert time.monotonic() - t0 < 3
    assert exc.value.token == "PORT_IN_USE" and "18080" in str(exc.value) and "-n 1" in str(exc.value)


def test_ephemeral_ports_take_no_lock(tmp_path: Path) -> None:
    locks = PortLocks([0, 0], timeout_s=1, directory=tmp_path)
    locks.acquire()
    assert locks.ports == [] and not any(tmp_path.iterdir())
    locks.release()


def test_lock_dir_is_private() -> None:
    path = lock_dir()
    assert path.stat().st_mode & 0o777 == 0o700
