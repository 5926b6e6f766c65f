"""Argument parsing and merging of the guest's configuration sources."""

from __future__ import annotations

from pathlib import Path

from aero_selftest import config, early
from aero_selftest.config import DEFAULT_HTTP_URL, merge, split_args


def _texts(image: Path, fw_cfg: Path) -> tuple[str, str]:
    """The two args files read as the guest reads them at boot (``early.read_text``: "" when missing)."""
    return early.read_text(str(image)), early.read_text(str(fw_cfg))


def test_defaults() -> None:
    cfg = merge([])
    assert cfg.http_url == DEFAULT_HTTP_URL
    assert cfg.http_url_large == DEFAULT_HTTP_URL + "-large"
    assert cfg.udp_port == 18081
    assert cfg.dns_host == "host.lan"
    assert cfg.flags == frozenset()


def test_later_source_wins_for_values_and_flags_accumulate() -> None:
    cfg = merge(
        [
            ("image", ["--test-blk-resize", "--udp-port=1111", "--http-url=http://a:1/x"]),
            ("fw_cfg", ["--udp-port", "2222", "--test-input-events"]),
        ]
    )
    assert cfg.udp_port == 2222
    assert cfg.http_url == "http://a:1/x"
    assert cfg.flags == {"test-blk-resize", "test-input-events"}
    assert cfg.sources == ("image", "fw_cfg")


def test_no_prefix_and_false_value_remove_a_flag() -> None:
    cfg = merge(
        [
            ("image", ["--test-blk-reset", "--require-snd"]),
            ("fw_cfg", ["--no-test-blk-reset", "--require-snd=0"]),
        ]
    )
    assert cfg.flags == frozenset()


def test_aliases() -> None:
    cfg = merge([("argv", ["--test-tablet-events", "--test-snd"])])
    assert cfg.flags == {"test-input-tablet-events", "require-snd"}


def test_unknown_args_are_kept_not_fatal() -> None:
    cfg = merge([("fw_cfg", ["--frobnicate", "stray", "--udp-port=notanumber", "--blk-root"])])
    assert cfg.unknown == ("--frobnicate", "stray", "--blk-root", "--udp-port=notanumber")
    assert cfg.udp_port == 18081


def test_env_tokens_only_known_flags_with_true_values() -> None:
    env = {
        "AERO_VIRTIO_SELFTEST_TEST_BLK_RESIZE": "1",
        "AERO_VIRTIO_SELFTEST_TEST_INPUT_LEDS": "0",
        "AERO_VIRTIO_SELFTEST_EXPECT_BLK_MSI": "yes",
        "AERO_VIRTIO_SELFTEST_BOGUS": "1",
        "PATH": "/bin",
    }
    assert config.env_tokens(env) == ["--expect-blk-msi", "--test-blk-resize"]


def test_split_args_handles_quotes_comments_and_nul() -> None:
    text = "--http-url='http://10.0.2.2:1/a b' # comment\n--test-blk-resize\x00"
    assert split_args(text) == ["--http-url=http://10.0.2.2:1/a b", "--test-blk-resize"]


def test_load_reads_image_then_fw_cfg_then_argv(tmp_path: Path) -> None:
    image = tmp_path / "args"
    image.write_text("--udp-port=1 --test-blk-resize\n")
    fw = tmp_path / "raw"
    fw.write_bytes(b"--udp-port=2 --dns-host=example")
    cfg = config.load(["--dns-host=last"], {"AERO_VIRTIO_SELFTEST_TEST_NET_LINK_FLAP": "1"}, *_texts(image, fw))
    assert cfg.udp_port == 2
    assert cfg.dns_host == "last"
    assert cfg.flags == {"test-blk-resize", "test-net-link-flap"}
    assert cfg.sources == ("env", "image", "fw_cfg", "argv")


def test_load_survives_missing_and_unparsable_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text("--http-url='unterminated")
    cfg = config.load([], {}, *_texts(tmp_path / "missing", bad))
    assert cfg.http_url == DEFAULT_HTTP_URL
    assert len(cfg.unknown) == 1 and "unparsable" in cfg.unknown[0]


def test_config_fields_echo_effective_config() -> None:
    cfg = merge([("fw_cfg", ["--udp-port=5", "--test-net-link-flap", "--test-blk-resize"])])
    fields = config.config_fields(cfg)
    assert fields["udp_port"] == 5
    assert fields["http_url_large"] == DEFAULT_HTTP_URL + "-large"
    assert fields["flags"] == "test-blk-resize,test-net-link-flap"
    assert config.config_fields(merge([]))["flags"] == "none"


def test_baked_args_alone_when_the_host_sends_none(tmp_path: Path) -> None:
    """A baked image run with no fw_cfg file (--vm-provisioning=baked): the image's args are the config."""
    image = tmp_path / "args"
    image.write_text("--test-blk-resize --udp-port=4242 --http-url=http://10.0.2.2:9/baked\n")
    cfg = config.load([], {}, *_texts(image, tmp_path / "no-such-fw-cfg-file"))
    assert cfg.flags == {"test-blk-resize"}
    assert (cfg.udp_port, cfg.http_url) == (4242, "http://10.0.2.2:9/baked")
    assert cfg.sources == ("image",)
    assert config.config_fields(cfg)["sources"] == "image"


def test_noise_args_are_sizes_and_bad_ones_are_reported() -> None:
    cfg = merge([("fw_cfg", ["--noise-line-bytes=1048576", "--noise-binary-bytes", "65536"])])
    assert (cfg.noise_line_bytes, cfg.noise_binary_bytes) == (1048576, 65536)
    fields = config.config_fields(cfg)
    assert (fields["noise_line_bytes"], fields["noise_binary_bytes"]) == (1048576, 65536)
    assert "noise_line_bytes" not in config.config_fields(merge([]))  # the CONFIG line is unchanged without
    bad = merge([("argv", ["--noise-line-bytes=-1", "--noise-binary-bytes=lots", f"--noise-line-bytes={1 << 40}"])])
    assert (bad.noise_line_bytes, bad.noise_binary_bytes) == (0, 0)
    assert bad.unknown == (f"--noise-line-bytes={1 << 40}", "--noise-binary-bytes=lots")
