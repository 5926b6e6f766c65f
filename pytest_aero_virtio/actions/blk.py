"""Grow the virtio disk when the guest says ``virtio-blk-resize|READY|disk=N|old_bytes=X``.

The guest polls its disk size for 60 s (docs/protocol.md). The new size is ``X + delta`` rounded up to
a 512-byte sector, computed from the guest's own figure (not the image file's) so the guest sees exactly
the growth it expects. ``blockdev-resize`` is used when this QEMU has it (probed in Caps); QEMU 7.2 and
10.0 only have ``block_resize``, which also serves as the fallback when the first command is refused.
Both address the disk by ``node-name`` (the ``-blockdev`` node ``disk0``), which works with ``-snapshot``
and needs no legacy drive id.
"""

from __future__ import annotations

import time

from pytest_aero_virtio.actions import topics
from pytest_aero_virtio.actions.base import ActionContext, is_qmp_refusal, on_ready
from pytest_aero_virtio.errors import QMP_BLK_RESIZE_FAILED
from pytest_aero_virtio.markers import Marker

__all__ = ["BLK_RESIZE", "SECTOR", "resize_commands", "resize_target"]

TOPIC = topics.BLK_RESIZE
TEST = "virtio-blk-resize"
SECTOR = 512


def resize_target(old_bytes: int, delta: int) -> int:
    """``old + delta`` rounded up to a whole 512-byte sector."""
    if old_bytes < 0 or delta <= 0:
        raise ValueError(f"old_bytes must be >= 0 and delta > 0 (got {old_bytes}, {delta})")
    wanted = old_bytes + delta
    return -(-wanted // SECTOR) * SECTOR


def resize_commands(has_blockdev_resize: bool, node: str, size: int) -> list[tuple[str, dict[str, object]]]:
    """The QMP commands to try, in order."""
    args: dict[str, object] = {"node-name": node, "size": size}
    cmds: list[tuple[str, dict[str, object]]] = [("block_resize", dict(args))]
    if has_blockdev_resize:
        cmds.insert(0, ("blockdev-resize", dict(args)))
    return cmds


async def run_blk_resize(ctx: ActionContext, m: Marker) -> None:
    disk = m.fields.get("disk", "")
    raw_old = m.fields.get("old_bytes", "")
    try:
        old = int(raw_old)
        new = resize_target(old, ctx.blk_resize_delta)
    except ValueError:
        ctx.host(
            TOPIC,
            "FAIL",
            disk=disk,
            reason=f"READY line has no usable old_bytes (old_bytes={raw_old!r}): {m.raw}",
            token=QMP_BLK_RESIZE_FAILED,
        )
        return
    cmds = resize_commands(ctx.caps.has_command("blockdev-resize"), ctx.disk_node, new)
    ctx.host(TOPIC, "REQUEST", disk=disk, old_bytes=old, new_bytes=new, qmp_cmd=cmds[0][0])
    started = time.monotonic()
    errors: list[str] = []
    for i, (cmd, args) in enumerate(cmds):
        try:
            await ctx.qmp.execute(cmd, args)
        except Exception as exc:
            errors.append(f"{cmd}: {type(exc).__name__}: {exc}")
            if is_qmp_refusal(exc) and i + 1 < len(cmds):
                continue  # refused: try the next command
            break
        else:
            ctx.host(
                TOPIC,
                "PASS",
                disk=disk,
                old_bytes=old,
                new_bytes=new,
                qmp_cmd=cmd,
                ms=round((time.monotonic() - started) * 1000, 1),
            )
            return
    ctx.host(
        TOPIC,
        "FAIL",
        disk=disk,
        old_bytes=old,
        new_bytes=new,
        qmp_cmd=cmds[len(errors) - 1][0],
        reason="; ".join(errors),
        token=QMP_BLK_RESIZE_FAILED,
    )


#: ``once``: the disk grows exactly once per VM, even if the guest repeats its READY line.
BLK_RESIZE = on_ready("blk_resize", TEST, run_blk_resize, TOPIC, QMP_BLK_RESIZE_FAILED)
