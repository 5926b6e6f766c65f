"""The selftest's first moments: START before the heavy imports, unless noise is asked for; the console mirror;
waiting for the image's driver loader; the serial noise itself."""

from __future__ import annotations

import os
import pty
import termios
from pathlib import Path

import pytest
from aero_selftest import early, main, markers
from aero_selftest.pure import noise_binary, noise_line


def _pipe_text(fd: int) -> bytes:
    chunks = []
    while True:
        data = os.read(fd, 1 << 16)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def test_begin_writes_start_at_once(tmp_path: Path) -> None:
    r, w = os.pipe()
    console_r, console_w = os.pipe()
    texts = [early.read_text(str(tmp_path / "none"))]
    started = early.begin([], 1, texts, out_fd=w, console_fd=console_w)
    os.close(w)
    os.close(console_w)
    assert started
    assert _pipe_text(r) == b"AERO_VIRTIO_SELFTEST|START|version=1\n"
    assert _pipe_text(console_r) == b"AERO_VIRTIO_SELFTEST|START|version=1\n"


def test_begin_leaves_start_to_main_when_a_source_mentions_noise(tmp_path: Path) -> None:
    args = tmp_path / "raw"
    args.write_text("--http-url=http://x/ --noise-line-bytes=100")
    r, w = os.pipe()
    assert not early.begin([], 1, [early.read_text(str(args))], out_fd=w)
    assert not early.begin(["--noise-binary-bytes=5"], 1, [], out_fd=w)
    os.close(w)
    assert _pipe_text(r) == b""


def test_raw_output_clears_opost_on_a_tty_only() -> None:
    master, slave = pty.openpty()
    try:
        assert termios.tcgetattr(slave)[1] & termios.OPOST
        early.raw_output(slave)
        assert not termios.tcgetattr(slave)[1] & termios.OPOST
    finally:
        os.close(master)
        os.close(slave)
    r, w = os.pipe()
    early.raw_output(w)  # a pipe: nothing to do, no error
    os.close(r)
    os.close(w)


def test_console_lines_fit_one_row() -> None:
    assert early.console_line("short") == b"short\n"
    long = "AERO_VIRTIO_SELFTEST|TEST|virtio-net|PASS|" + "x=1|" * 40
    shown = early.console_line(long, width=80)
    assert len(shown) == 80 and shown.endswith(b"~\n") and shown.startswith(b"AERO_VIRTIO_SELFTEST|TEST|virtio-net")


def test_open_console_is_optional(tmp_path: Path) -> None:
    assert early.open_console({}) is None
    assert early.open_console({early.CONSOLE_ENV: str(tmp_path / "missing" / "tty")}) is None
    path = tmp_path / "console"
    path.write_text("")
    fd = early.open_console({early.CONSOLE_ENV: str(path)})
    assert fd is not None
    markers.write_all(markers.write_console(fd))("AERO_VIRTIO_SELFTEST|RESULT|PASS")
    os.close(fd)
    assert path.read_text() == "AERO_VIRTIO_SELFTEST|RESULT|PASS\n"


def test_console_mirror_never_raises() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    markers.write_console(w)("AERO_VIRTIO_SELFTEST|START|version=1")  # EBADF is swallowed


def test_wait_for_drivers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main.wait_for_drivers({}) == 0.0
    prefix = tmp_path / "drivers"
    Path(f"{prefix}.log").write_text("aero-init: insmod x.ko failed\n")
    Path(f"{prefix}.done").write_text("")
    assert main.wait_for_drivers({early.DRIVERS_ENV: str(prefix)}) < 1.0
    assert "insmod x.ko failed" in capsys.readouterr().err
    Path(f"{prefix}.done").unlink()
    assert main.wait_for_drivers({early.DRIVERS_ENV: str(prefix)}, timeout=0.1) >= 0.1


def test_noise_line_and_burst() -> None:
    line = noise_line(1 << 20)
    assert len(line) == (1 << 20) + 1 and line.endswith(b"\n") and line.count(b"\n") == 1
    assert all(0x21 <= b <= 0x7E for b in line[:-1]) and b"AERO" not in line
    burst = noise_binary(65536)
    assert len(burst) == 65537 and burst.endswith(b"\n") and set(burst[:-1]) == set(range(256))
    assert noise_line(0) == noise_binary(0) == b""


def test_write_noise_puts_the_line_before_the_burst() -> None:
    cfg = main.config.merge([("argv", ["--noise-line-bytes=300", "--noise-binary-bytes=512"])])
    r, w = os.pipe()
    main.write_noise(w, cfg)
    os.close(w)
    out = _pipe_text(r)
    assert out == noise_line(300) + noise_binary(512)


def test_the_image_and_the_selftest_agree_on_their_interface() -> None:
    """The image's /init (pytest_aero_virtio.refenv.scripts) and the selftest share names and exit codes."""
    from pytest_aero_virtio.refenv import scripts

    init = scripts.render_init([], [])
    assert main.EXIT_WATCHDOG == scripts.EXIT_WATCHDOG
    assert f"{early.CONSOLE_ENV}={scripts.CONSOLE_TTY}" in init
    assert f"{early.DRIVERS_ENV}={scripts.DRIVERS}" in init
    assert early.IMAGE_ARGS == "/" + scripts.BAKED_ARGS
    assert scripts.render_drivers([]).endswith(f": >{scripts.DRIVERS}.done\n")
