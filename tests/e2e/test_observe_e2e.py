"""Seeing what happened, end to end on real QEMU: screenshots named in failures and attached in JUnit, progress
lines of a slow guest, the HTML report rendered in a real headless browser, and a kept VM a person reaches
over its printed QMP socket until Enter."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import termios
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from aero_e2e_procs import HANGING_BOOT_SECTOR, qemu_pids_with

pytestmark = pytest.mark.slow

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
PNG = b"\x89PNG\r\n\x1a\n"

TWO_VMS = """
import pytest

@pytest.mark.aero_check("virtio-blk")
def test_first_vm(aero_vm):
    aero_vm.expect_pass()

@pytest.mark.aero_vm(vectors=0)
@pytest.mark.aero_check("virtio-blk")
def test_second_vm(aero_vm):
    aero_vm.expect_pass()
"""


def _named(artifacts: Path) -> list[str]:
    """``-name <artifacts>`` on QEMU's command line, so the ``artifacts`` fixture finds leaked processes."""
    return ["--qemu-extra-arg=-name", f"--qemu-extra-arg={artifacts}", f"--vm-artifacts={artifacts}"]


def _run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=textwrap.dedent(source))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=400)


# --- the browser -----------------------------------------------------------------------------------------

CHECK_SCRIPT = """
<script>
window.addEventListener("load", () => setTimeout(() => {
  const found = [...document.querySelectorAll("img[class^=aero-]")].map((img) => ({
    alt: img.alt,
    loaded: img.complete && img.naturalWidth > 0,
    shown: img.getBoundingClientRect().height > 0,
  }));
  const out = document.createElement("pre");
  out.id = "aero-image-check";
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
}, 1500));
</script>
"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: scripts/setup-host installs it (apt-get install chromium)")
        pytest.skip("no chromium here (scripts/setup-host installs it)")
    return found


def _browser(*args: str) -> str:
    argv = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    return done.stdout


def images_in_browser(report: Path) -> list[dict[str, object]]:
    """Every picture the plugin put in the rendered report (``img.aero-*``): its alt text, whether it loaded
    and whether it is on screen (passed tests' rows are collapsed)."""
    checked = report.with_name("image-check.html")
    checked.write_text(report.read_text(encoding="utf-8") + CHECK_SCRIPT, encoding="utf-8")
    dom = _browser("--virtual-time-budget=10000", "--dump-dom", checked.as_uri())
    found = re.search(r'<pre id="aero-image-check">(.*?)</pre>', dom, re.S)
    assert found, f"the check script did not run; the browser gave: {dom[:500]}"
    return list(json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")))


def page_screenshot(report: Path, out: Path) -> Path:
    """The whole report, every row expanded (pytest-html's ``?collapsed=``), as a PNG."""
    uri = report.as_uri() + "?collapsed="
    _browser("--window-size=1280,3000", f"--screenshot={out}", "--virtual-time-budget=5000", uri)
    assert out.read_bytes()[:8] == PNG
    if os.environ.get("AERO_VIRTIO_UPDATE_DOCS"):  # refresh the picture the docs show
        DOCS_IMG.mkdir(exist_ok=True)
        shutil.copy(out, DOCS_IMG / out.name)
    return out


# --- the tests ---------------------------------------------------------------------------------------------


def test_silent_foreign_guest_leaves_a_screenshot_per_vm(pytester: pytest.Pytester, artifacts: Path) -> None:
    """A guest that never prints (a disk whose boot sector only loops: a hung guest) on two VMs, one per xdist
    worker: each failure names its VM's screenshot, JUnit (written by the controller) attaches it, the workers
    print progress lines while the tests wait, and the HTML report shows the screenshots in a real browser."""
    blank = pytester.path / "blank.img"
    blank.write_bytes(HANGING_BOOT_SECTOR + b"\0" * ((1 << 20) - 512))
    junit, report = pytester.path / "junit.xml", pytester.path / "report.html"
    res = _run(
        pytester, TWO_VMS, *_named(artifacts), f"--vm-image={blank}", "--vm-silence-timeout=32",
        f"--junitxml={junit}", f"--html={report}", "--self-contained-html", "-n", "2",
        "--vm-http-port=auto", "--vm-udp-port=auto",  # a foreign guest's fixed ports would make the VMs take turns
    )  # fmt: skip
    res.assert_outcomes(failed=2)
    out = res.stdout.str() + res.stderr.str()
    shots = sorted(artifacts.glob("*/screen-fail-*.png"))
    assert sorted(p.parent.name[-3:] for p in shots) == ["vm0", "vm1"], out  # gw0-vm0, gw1-vm1
    for shot in shots:
        assert shot.read_bytes()[:8] == PNG
        assert f"screenshot: {shot}" in out  # named in the failure text
    # a non-TTY run: a progress line per VM once it has run 30 s, saying what the test waits for
    for vm in ("vm0", "vm1"):
        line = rf"\[gw\d\] aero-virtio: {vm} up 3\ds, no marker yet; the test waits for the final virtio-blk"
        assert re.search(line, out), out
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    props = {p.get("name"): p.get("value") for p in suite.findall("./properties/property")}
    assert props["aero.image"] == str(blank) and props["aero.image_bytes"] == str(1 << 20), props
    assert props["aero.qemu_version"] and props["aero.accel"] and len(props["aero.image_sha256"] or "") == 16
    cases = suite.findall("testcase")
    assert len(cases) == 2
    for case in cases:
        attached = re.findall(r"\[\[ATTACHMENT\|(.+?)\]\]", case.findtext("system-out") or "")
        pngs = [pytester.path / p for p in attached if p.endswith(".png")]
        assert pngs and all(p.read_bytes()[:8] == PNG for p in pngs), attached
    images = images_in_browser(report)
    assert images and all(img["loaded"] for img in images), images
    failing = [img for img in images if str(img["alt"]).endswith("failed") and img["shown"]]
    assert {str(img["alt"]).split(":")[0] for img in failing} == {"vm0", "vm1"}, images


def test_html_report_of_the_reference_guest(pytester: pytest.Pytester, artifacts: Path, tmp_path: Path) -> None:
    """A sound VM with a failing test: the report shows the failing test's screenshot, the spectrum of the WAV
    with its peak, and the VM's marker timeline; every picture loads in the browser."""
    source = """
    import pytest

    @pytest.mark.aero_check("virtio-net")
    def test_virtio_net_and_a_wrong_expectation(aero_vm):
        aero_vm.expect_pass()
        assert aero_vm.udp_datagrams() < 0, "a failure on purpose: its screenshot is in the report"

    @pytest.mark.aero_check("virtio-snd", audio="wav", at_end=True)
    def test_virtio_snd_wav_on_host(aero_vm):
        aero_vm.expect_pass()
        aero_vm.check_wav()
    """
    report = pytester.path / "report.html"
    res = _run(pytester, source, *_named(artifacts), f"--html={report}", "--self-contained-html")
    res.assert_outcomes(passed=1, failed=1)
    images = images_in_browser(report)
    alts = [str(img["alt"]) for img in images]
    assert all(img["loaded"] for img in images), images
    assert any(a.startswith("vm0: screen when test_virtio_net_and_a_wrong_expectation failed") for a in alts), alts
    assert "spectrum of audio.wav" in alts and any("markers after QEMU started" in a for a in alts), alts
    shown = [img for img in images if img["shown"]]
    assert any(str(img["alt"]).endswith("failed") for img in shown), images
    page_screenshot(report, tmp_path / "html-report.png")


def _ctty() -> None:
    """In the child: a new session whose controlling terminal is stdin (the pty), like a shell gives."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


KEEP = """
import pytest

@pytest.mark.aero_check("virtio-net")
def test_fails_after_boot(aero_vm):
    aero_vm.handle.stream.wait_for(lambda m: m.kind == "START", 120, "START")
    assert False, "on purpose"
"""


def _qmp(path: str, command: str) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        stream = sock.makefile("rw")
        assert "QMP" in json.loads(stream.readline())
        for cmd in ("qmp_capabilities", command):
            stream.write(json.dumps({"execute": cmd}) + "\n")
            stream.flush()
            reply = json.loads(stream.readline())
        return dict(reply)


def test_keep_on_failure_waits_for_enter(pytester: pytest.Pytester, artifacts: Path) -> None:
    pytester.makepyfile(test_inner=KEEP)
    master, slave = os.openpty()
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--vm-keep-on-failure", *_named(artifacts)]
    proc = subprocess.Popen(
        [*argv, "test_inner.py"], cwd=pytester.path, stdin=slave, stdout=slave, stderr=slave, preexec_fn=_ctty
    )
    os.close(slave)
    seen, status, deadline = b"", None, time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 1)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                seen += chunk
            if status is None and b"press Enter" in seen:
                sockets = dict(re.findall(rb"(QMP|console): +socat \S+ UNIX-CONNECT:(\S+)", seen))
                status = _qmp(sockets[b"QMP"].decode(), "query-status")
                with socket.socket(socket.AF_UNIX) as console:
                    console.connect(sockets[b"console"].decode())  # the guest's console is there too
                assert qemu_pids_with(str(artifacts)), "the VM must still run while the person looks"
                os.write(master, b"\n")
            if proc.poll() is not None and not select.select([master], [], [], 0.5)[0]:
                break
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = seen.decode(errors="replace")
    assert status == {"return": {"status": "running", "running": True}}, text
    assert "because test_inner.py::test_fails_after_boot failed: AssertionError: on purpose" in text
    assert re.search(r"vncviewer 127\.0\.0\.1::59\d\d", text), text
    assert rc == 1, text
    attach_dir = re.search(r"UNIX-CONNECT:(/\S+)/qmp\.sock", text)
    assert attach_dir and not Path(attach_dir.group(1)).exists(), "the private socket directory is removed"


def test_keep_on_failure_without_a_terminal_does_not_wait(pytester: pytest.Pytester, artifacts: Path) -> None:
    pytester.makepyfile(test_inner=KEEP)
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--vm-keep-on-failure", *_named(artifacts)]
    done = subprocess.run(
        [*argv, "test_inner.py"], cwd=pytester.path, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        start_new_session=True, timeout=300, check=False,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "QMP:     socat - UNIX-CONNECT:" in out and "no terminal to wait on" in out
