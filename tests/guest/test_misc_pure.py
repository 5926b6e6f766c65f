"""Pure parts of the blk and snd checks."""

from __future__ import annotations

from pathlib import Path

from aero_selftest import blk, snd


def test_parse_stat_and_delta() -> None:
    text = "   57 0 8368 30 9 0 8204 40 0 60 70 0 0 0 0 1 2\n"
    st = blk.parse_stat(text)
    assert st["read_sectors"] == 8368 and st["write_sectors"] == 8204 and st["flush_ios"] == 1
    assert blk.stat_delta({"read_ios": 50}, {"read_ios": 57}) == {"read_ios": 7}
    assert "flush_ios" not in blk.parse_stat("1 2 3 4 5 6 7 8 9 10 11")  # old kernels: fewer columns


def test_parse_hw_params() -> None:
    text = "access: RW_INTERLEAVED\nformat: S16_LE\nsubformat: STD\nchannels: 2\nrate: 48000 (48000/1)\n"
    params = snd.parse_hw_params(text)
    assert snd.format_desc(params) == "S16_LE/48000Hz/2ch"
    assert snd.parse_hw_params("closed\n") == {}
    assert snd.format_desc({}) == "unknown"


def test_parse_aplay_verbose() -> None:
    text = "Hardware PCM card 0\n  period_size  : 1024\n  buffer_size  : 4096\n  tstamp_mode  : NONE\n"
    assert snd.parse_aplay_verbose(text) == {"period_size": 1024, "buffer_size": 4096}


def test_classify_error() -> None:
    assert snd.classify_error("arecord: pcm_read:2221: read error: Input/output error") == "io_error"
    assert snd.classify_error("aplay: main:831: audio open error: No such file or directory") == "device_missing"
    assert snd.classify_error("Device or resource busy") == "busy"
    assert snd.classify_error("???") == "error"


def _sysfs_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_partitions_in_number_order_and_whole_disk_last(tmp_path: Path) -> None:
    for name, number in (("vda10", 10), ("vda2", 2), ("vda1", 1)):
        _sysfs_file(tmp_path / "vda" / name / "partition", f"{number}\n")
    _sysfs_file(tmp_path / "vda" / "queue" / "rotational", "0\n")
    parts = blk.partitions("vda", tmp_path)
    assert parts == ["vda1", "vda2", "vda10"]
    assert blk.disk_devices("vda", parts) == ["/dev/vda1", "/dev/vda2", "/dev/vda10", "/dev/vda"]
    assert blk.partitions("vdb", tmp_path) == []


def test_loop_backings(tmp_path: Path) -> None:
    _sysfs_file(tmp_path / "loop0" / "loop" / "backing_file", "/dev/vda2\n")
    (tmp_path / "loop1").mkdir()  # unbound: no loop/ directory
    _sysfs_file(tmp_path / "vda" / "size", "1\n")
    assert blk.loop_backings(tmp_path) == [("loop0", "/dev/vda2")]
