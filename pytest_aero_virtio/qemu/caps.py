"""What a QEMU binary can do: devices, device properties, QMP commands. Probed once, never assumed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["Caps"]


def _empty_props() -> Mapping[str, frozenset[str]]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Caps:
    """Capabilities of one QEMU binary (see :func:`probe`)."""

    version: tuple[int, int, int]
    devices: frozenset[str] = frozenset()
    device_props: Mapping[str, frozenset[str]] = field(default_factory=_empty_props)
    qmp_commands: frozenset[str] = frozenset()

    @property
    def version_str(self) -> str:
        return ".".join(str(v) for v in self.version)

    def has_device(self, name: str) -> bool:
        return name in self.devices

    def has_prop(self, device: str, prop: str) -> bool:
        return prop in self.device_props.get(device, frozenset())

    def has_command(self, name: str) -> bool:
        return name in self.qmp_commands
