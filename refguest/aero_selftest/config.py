"""Selftest configuration: command-line style args from several sources, merged (later wins).

Sources, in order: ``AERO_VIRTIO_SELFTEST_*`` environment variables (the Windows selftest's names),
``/etc/aero-selftest/args`` (baked into the image), the fw_cfg file ``opt/aero/args`` (per run, from the
host), then the process's own argv.  Each file holds args in shell syntax (split with :mod:`shlex`); both are
read once per boot, by :func:`early.read_args`, and their texts handed to :func:`load`.
Flags accumulate across sources (``--no-<flag>`` removes one); valued args are replaced by later sources.
Unknown args never stop the run: they are collected and reported in an INFO line, so an older guest
keeps working with a newer host.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence

from .record import record

DEFAULT_HTTP_URL = "http://10.0.2.2:18080/aero-virtio-selftest"
DEFAULT_UDP_PORT = 18081
DEFAULT_DNS_HOST = "host.lan"

FLAGS = frozenset(
    {
        "test-blk-resize",
        "test-blk-reset",
        "test-input-events",
        "test-input-events-extended",
        "test-input-media-keys",
        "test-input-led",
        "test-input-leds",
        "test-input-tablet-events",
        "test-snd-buffer-limits",
        "test-snd-capture",
        "test-net-link-flap",
        "require-snd",
        "require-snd-capture",
        "disable-snd",
        "disable-snd-capture",
        "expect-blk-msi",
        "require-blk-msix",
        "require-net-msix",
        "require-snd-msix",
        "require-input-msix",
    }
)
# Aliases the Windows selftest accepts.
FLAG_ALIASES = {"test-tablet-events": "test-input-tablet-events", "test-snd": "require-snd"}
# Serial-cost measurement: bytes of one long printable line / of a binary burst written before every marker.
NOISE_ARGS = ("noise-line-bytes", "noise-binary-bytes")
VALUED = frozenset({"http-url", "udp-port", "dns-host", "blk-root", *NOISE_ARGS})
NOISE_MAX = 64 * 1024 * 1024

ENV_PREFIX = "AERO_VIRTIO_SELFTEST_"


@record(frozen=True)
class Config:
    """The effective configuration the checks run with."""

    flags: frozenset[str] = frozenset()
    http_url: str = DEFAULT_HTTP_URL
    udp_port: int = DEFAULT_UDP_PORT
    dns_host: str = DEFAULT_DNS_HOST
    blk_root: str = ""
    noise_line_bytes: int = 0
    noise_binary_bytes: int = 0
    unknown: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    @property
    def http_url_large(self) -> str:
        return self.http_url + "-large"

    def has(self, flag: str) -> bool:
        return flag in self.flags


@record
class _State:
    flags: set[str]
    values: dict[str, str]
    unknown: list[str]


def _apply_tokens(state: _State, tokens: Sequence[str]) -> None:
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if not tok.startswith("--"):
            state.unknown.append(tok)
            continue
        name, eq, value = tok[2:].partition("=")
        name = FLAG_ALIASES.get(name, name)
        if name in VALUED:
            if not eq:
                if i < len(tokens) and not tokens[i].startswith("--"):
                    value = tokens[i]
                    i += 1
                else:
                    state.unknown.append(tok)
                    continue
            state.values[name] = value
        elif name in FLAGS and (not eq or value.lower() in ("1", "true", "yes", "on")):
            state.flags.add(name)
        elif name in FLAGS and value.lower() in ("0", "false", "no", "off"):
            state.flags.discard(name)
        elif name.startswith("no-") and FLAG_ALIASES.get(name[3:], name[3:]) in FLAGS and not eq:
            state.flags.discard(FLAG_ALIASES.get(name[3:], name[3:]))
        else:
            state.unknown.append(tok)


def env_tokens(environ: Mapping[str, str]) -> list[str]:
    """Map ``AERO_VIRTIO_SELFTEST_TEST_BLK_RESIZE=1`` style variables to ``--test-blk-resize``.

    Only the names of known flags are honoured (``TEST_*``, ``REQUIRE_*``, ``EXPECT_*``, ``DISABLE_*``);
    a value of 0/false/no/off (or empty) means "not set".
    """
    out = []
    for key, value in sorted(environ.items()):
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower().replace("_", "-")
        name = FLAG_ALIASES.get(name, name)
        if name in FLAGS and value.strip().lower() not in ("", "0", "false", "no", "off"):
            out.append("--" + name)
    return out


def split_args(text: str) -> list[str]:
    """Split an args file (shell syntax; ``#`` comments allowed; NUL bytes from fw_cfg ignored)."""
    return shlex.split(text.replace("\x00", " "), comments=True)


def _int_value(values: dict[str, str], name: str, default: int, lo: int, hi: int, unknown: list[str]) -> int:
    """A valued arg as an int in [lo, hi]; a bad value is reported as unknown and the default used."""
    raw = values.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        unknown.append(f"--{name}={raw}")
        return default
    return value


def merge(sources: Iterable[tuple[str, Sequence[str]]]) -> Config:
    """Merge ``(source name, tokens)`` pairs in order into a Config (later valued args win)."""
    state = _State(set(), {}, [])
    used: list[str] = []
    for source, tokens in sources:
        if tokens:
            used.append(source)
        _apply_tokens(state, tokens)
    unknown = list(state.unknown)
    values = state.values
    udp_port = _int_value(values, "udp-port", DEFAULT_UDP_PORT, 1, 65535, unknown)  # bad ones reported in this order
    noise_line_bytes, noise_binary_bytes = (_int_value(values, name, 0, 0, NOISE_MAX, unknown) for name in NOISE_ARGS)
    return Config(
        flags=frozenset(state.flags),
        http_url=values.get("http-url", DEFAULT_HTTP_URL),
        udp_port=udp_port,
        dns_host=values.get("dns-host", DEFAULT_DNS_HOST),
        blk_root=values.get("blk-root", ""),
        noise_line_bytes=noise_line_bytes,
        noise_binary_bytes=noise_binary_bytes,
        unknown=tuple(unknown),
        sources=tuple(used),
    )


def load(argv: Sequence[str], environ: Mapping[str, str], image_text: str, fw_cfg_text: str) -> Config:
    """Merge every source (env, image file, fw_cfg, argv).

    ``image_text``, ``fw_cfg_text``: the two args files' texts as :func:`early.read_args` read them (empty for
    a file that is missing or unreadable: no tokens, and not listed among the sources).
    """
    sources: list[tuple[str, Sequence[str]]] = [("env", env_tokens(environ))]
    for name, text in (("image", image_text), ("fw_cfg", fw_cfg_text)):
        try:
            sources.append((name, split_args(text)))
        except ValueError as exc:  # unbalanced quotes: report, keep going with the rest
            sources.append((name, [f"<{name}: unparsable args: {exc}>"]))
    sources.append(("argv", list(argv)))
    return merge(sources)


def config_fields(cfg: Config) -> dict[str, str | int]:
    """The CONFIG line's fields (effective values, enabled flags as a comma list; noise sizes when set)."""
    fields: dict[str, str | int] = {
        "http_url": cfg.http_url,
        "http_url_large": cfg.http_url_large,
        "udp_port": cfg.udp_port,
        "dns_host": cfg.dns_host,
        "blk_root": cfg.blk_root or "auto",
        "flags": ",".join(sorted(cfg.flags)) or "none",
        "sources": ",".join(cfg.sources) or "defaults",
    }
    if cfg.noise_line_bytes:
        fields["noise_line_bytes"] = cfg.noise_line_bytes
    if cfg.noise_binary_bytes:
        fields["noise_binary_bytes"] = cfg.noise_binary_bytes
    return fields
