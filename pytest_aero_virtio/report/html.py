"""The HTML report (pytest-html, the ``html`` extra): what each test's row shows.

Each test's row gets one HTML block (a pytest-html ``extras.html``, so every picture is visible at once rather
than behind pytest-html's one-at-a-time media viewer): the screenshot (a failing test's own, and the VM's last
screen on the row of its last test), for a sound test the spectrum of the recorded WAV with its peak marked,
for a VM's last test the chart of its marker arrival times, and the serial tail. Images are embedded as data
URIs, so the report is one file (``--self-contained-html`` or not) that CI can keep as an artifact.

Blocks are built on the machine that ran the test (an xdist worker, where the files are) and travel to the
report in ``report.extras``.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RowEvidence", "img_tag", "row_extras", "row_html"]

LOG = logging.getLogger(__name__)

#: Long serial lines wrap instead of widening the results table past the window.
_PRE = "white-space:pre-wrap;word-break:break-all;max-width:1200px"


@dataclass
class RowEvidence:
    """What one test's row shows (paths on this machine; the block embeds their content)."""

    vm: str
    tail: Sequence[str]
    screenshots: list[tuple[str, Path]] = field(default_factory=list)
    wav: Path | None = None
    timeline: Path | None = None


def img_tag(png: bytes, alt: str, css: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="{css}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}" style="max-width:100%">'


def _figure(png: bytes, caption: str, css: str) -> str:
    style = "display:inline-block;vertical-align:top;margin:4px 12px 4px 0;max-width:" + (
        "480px" if css == "aero-screenshot" else "640px"
    )
    return (
        f'<figure class="{css}" style="{style}">{img_tag(png, caption, css)}'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _plots(ev: RowEvidence) -> list[str]:
    """The matplotlib pictures; a missing or unreadable input leaves a note instead of breaking the report."""
    from .plots import read_timeline, spectrum_png, timeline_png

    out = []
    if ev.wav is not None:
        try:
            out.append(_figure(spectrum_png(ev.wav), f"spectrum of {ev.wav.name}", "aero-spectrum"))
        except (OSError, ValueError) as exc:
            out.append(f"<p>no spectrum of {html.escape(str(ev.wav))}: {html.escape(str(exc))}</p>")
    if ev.timeline is not None and ev.timeline.exists():
        entries = read_timeline(ev.timeline)
        chart = timeline_png(entries, f"{ev.vm}: marker arrival times")
        out.append(_figure(chart, f"{ev.vm}: {len(entries)} markers after QEMU started", "aero-timeline"))
    return out


def row_html(ev: RowEvidence) -> str:
    """The block of one row (screenshots first: a failing test's screen is what a reader looks for)."""
    parts = [f'<div class="aero-virtio"><p><b>aero-virtio VM {html.escape(ev.vm)}</b></p>']
    for caption, path in ev.screenshots:
        try:
            parts.append(_figure(path.read_bytes(), caption, "aero-screenshot"))
        except OSError:
            continue
    try:
        parts += _plots(ev)
    except ImportError as exc:  # matplotlib missing: pictures of files only
        note = f"plots need the html extra (pip install 'pytest-aero-virtio[html]'): {exc}"
        parts.append(f"<p>{html.escape(note)}</p>")
    serial = "\n".join(ev.tail) or "(no serial output)"
    parts.append(f"<p>last {len(ev.tail)} serial lines</p>")
    parts.append(f'<pre class="aero-serial" style="{_PRE}">{html.escape(serial)}</pre></div>')
    return "".join(parts)


def row_extras(ev: RowEvidence) -> list[dict[str, Any]]:
    """The row's block as pytest-html extras (empty when pytest-html is not installed)."""
    try:
        from pytest_html import extras
    except ImportError:
        return []
    try:
        return [extras.html(row_html(ev))]
    except Exception:  # evidence must never fail a test report
        LOG.exception("building the HTML evidence of %s failed", ev.vm)
        return []
