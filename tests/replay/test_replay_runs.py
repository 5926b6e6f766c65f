"""``--vm-replay`` end to end (no QEMU): a recorded run gives its verdicts again, an old harness's serial log
is judged, and scripted guest lines with broken fields give tokened failures, never a Python exception."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

DATA = Path(__file__).parents[1] / "data"
REPO = Path(__file__).parents[2]


def replay(pytester: pytest.Pytester, source: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest(
        "-p", "no:cacheprovider", f"--rootdir={REPO}", str(REPO / "vmm_flows"), f"--vm-replay={source}", *args
    )


def test_a_recorded_run_gives_its_verdicts_again(pytester: pytest.Pytester) -> None:
    res = replay(pytester, DATA / "recorded-run", "-rs")
    # the fixture has no audio.wav (size): that one host check skips, naming what was not recorded
    res.assert_outcomes(passed=40, skipped=3)
    res.stdout.fnmatch_lines(["*replaying*no QEMU runs*", "*audio.wav missing*"])


def test_a_recorded_run_replays_any_selection_of_it(pytester: pytest.Pytester) -> None:
    res = replay(pytester, DATA / "recorded-run", "-k", "blk")
    res.assert_outcomes(passed=7)


def test_an_old_harness_serial_log_is_judged(pytester: pytest.Pytester) -> None:
    """A Windows guest's COM1 log (CRLF, bare old-style markers, hex vectors): the guest's checks are judged,
    the host-side ones skip because a bare log has no host side."""
    res = replay(
        pytester,
        DATA / "old-harness-win7-serial.log",
        "-m",
        "not aero_opt_in",
        "-k",
        "not snd and not tablet and not counters and not csum_offloaded",
        "-rs",
    )
    outcomes = res.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, res.stdout.str()
    assert outcomes["passed"] >= 10 and outcomes["skipped"] >= 3
    res.stdout.fnmatch_lines(["*qmp.log missing*", "*http.log missing*"])


def test_a_failing_line_in_a_log_fails_with_its_token(pytester: pytest.Pytester, tmp_path: Path) -> None:
    log = tmp_path / "com1.log"
    text = (DATA / "old-harness-win7-serial.log").read_text()
    log.write_text(text.replace("virtio-blk|PASS|irq_mode=msix", "virtio-blk|FAIL|reason=write_failed|irq_mode=msix"))
    res = replay(pytester, log, "-k", "test_virtio_blk and not intx and not resize and not reset and not counters")
    res.assert_outcomes(failed=1, passed=1, deselected=41)  # test_virtio_blk fails; test_virtio_blk_msix passes
    res.stdout.fnmatch_lines(["FAIL: VIRTIO_BLK_FAILED: virtio-blk failed in the guest: reason=write_failed*"])


MUTATIONS = {"missing": None, "empty": "", "non-numeric": "x!y", "huge": "9" * 5000}
_LINE = re.compile(r"^(AERO_VIRTIO_(?:SELFTEST\|TEST\|[^|]+|WIN7_HOST\|[^|]+)\|[A-Z]+)((?:\|[^|\r\n]*)*)$")


def mutate(text: str, index: int, value: str | None) -> str:
    """The ``index``-th ``key=value`` field of every TEST and host line set to ``value`` (None: removed)."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            out.append(line)
            continue
        parts = m[2].split("|")[1:]
        fields = [i for i, p in enumerate(parts) if "=" in p]
        if index < len(fields):
            at = fields[index]
            key = parts[at].split("=", 1)[0]
            if value is None:
                del parts[at]
            else:
                parts[at] = f"{key}={value}"
        out.append("|".join([m[1], *parts]))
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("kind", list(MUTATIONS))
def test_broken_fields_give_tokens_never_python_errors(pytester: pytest.Pytester, tmp_path: Path, kind: str) -> None:
    """Every field every test reads, one position at a time, missing / empty / non-numeric / huge: each test
    passes (the field was optional), skips, or fails with ``FAIL: <TOKEN>:`` - never a bare Python error."""
    tokened = 0
    for index in range(12):
        run_dir = tmp_path / f"{kind}-{index}"
        shutil.copytree(DATA / "recorded-run", run_dir)
        for vm in run_dir.iterdir():
            for name in ("serial.log", "host-markers.log"):
                path = vm / name
                if path.exists():
                    path.write_text(mutate(path.read_text(), index, MUTATIONS[kind]))
        junit = run_dir / "junit.xml"
        res = replay(pytester, run_dir, f"--junitxml={junit}")
        text = res.stdout.str()
        for bad in ("KeyError", "ValueError", "TypeError", "IndexError", "Traceback", "INTERNALERROR"):
            assert bad not in text, f"{kind} field #{index}: {bad}\n{text[-3000:]}"
        for case in ET.parse(junit).getroot().iter("testcase"):
            for failure in case.iter("failure"):
                message = failure.get("message", "")
                assert re.match(r"(Failed: )?FAIL: [A-Z0-9_]+: ", message), (
                    f"{kind} field #{index}: {case.get('name')}: {message}"
                )
                tokened += 1
        assert res.ret in (0, 1), text[-2000:]
    assert tokened >= 12, f"the mutations hardly reached any assertion ({tokened} failures): the test went blind"
