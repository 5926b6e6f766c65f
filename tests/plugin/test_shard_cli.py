"""--vm-shard and --vm-durations through real pytest runs that boot no VM, and the JUnit merge of shards.

Selections without VM tests are split too (by a stable hash of the node ids), so a plain test file shows the
whole path: option validation, deselection, empty shards, JUnit per shard, merge, comparison with one run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_aero_virtio.junit_merge import main as merge_main

JUNIT_COMPARE = Path(__file__).resolve().parents[2] / "scripts" / "junit-compare"

PLAIN = """
import pytest

@pytest.mark.parametrize("i", range(12))
def test_pass(i):
    pass

def test_fail():
    assert False

@pytest.mark.skip(reason="on purpose")
def test_skip():
    pass

@pytest.fixture
def broken():
    raise RuntimeError("setup breaks")

def test_error(broken):
    pass
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", *args)


def compare(a: Path, b: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(JUNIT_COMPARE), str(a), str(b)], capture_output=True, text=True)


@pytest.mark.parametrize("value", ["3", "0/3", "4/3", "x/y"])
def test_bad_shard_is_a_usage_error(pytester: pytest.Pytester, value: str) -> None:
    pytester.makepyfile(test_plain=PLAIN)
    res = run(pytester, f"--vm-shard={value}")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines([f"*CONFIG_ERROR: --vm-shard='{value}':*", "fix: pass --vm-shard=K/N with 1 <= K <= N*"])


def test_bad_shard_in_the_ini_file_is_a_usage_error_too(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain=PLAIN)
    pytester.makeini("[pytest]\nvm_shard = 2/1\n")
    res = run(pytester)
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*--vm-shard='2/1': there is no shard 2 of 1*"])


def test_bad_durations_file_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain=PLAIN)
    res = run(pytester, "--vm-shard=1/2", "--vm-durations=missing.json")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*--vm-durations=missing.json: no such file*", "fix: record one*"])
    (pytester.path / "bad.json").write_text('{"vm": "slow"}')
    res = run(pytester, "--vm-shard=1/2", "--vm-durations=bad.json")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*VM 'vm' has 'slow', not a number of seconds*"])


def test_empty_selection_still_exits_5_but_an_empty_shard_exits_0(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_only():\n    pass\n")
    assert run(pytester, "-k", "nothing_matches", "--vm-shard=1/2").ret == pytest.ExitCode.NO_TESTS_COLLECTED
    results = [run(pytester, f"--vm-shard={k}/2") for k in (1, 2)]
    outcomes = [r.parseoutcomes() for r in results]
    assert sorted(o.get("passed", 0) for o in outcomes) == [0, 1]
    assert [r.ret for r in results] == [0, 0]
    empty = results[[o.get("passed", 0) for o in outcomes].index(0)]
    empty.stdout.fnmatch_lines(["*1 deselected*"])


def test_shards_merge_into_the_single_run(pytester: pytest.Pytester) -> None:
    """Three shards' JUnit files merge into the test set and outcomes of one unsharded run."""
    pytester.makepyfile(test_plain=PLAIN)
    full = pytester.path / "full.xml"
    run(pytester, f"--junitxml={full}").assert_outcomes(passed=12, failed=1, skipped=1, errors=1)
    parts = []
    for k in (1, 2, 3):
        part = pytester.path / f"shard-{k}.xml"
        res = run(pytester, f"--vm-shard={k}/3", f"--junitxml={part}")
        res.stdout.fnmatch_lines([f"aero-virtio: shard {k}/3: no VM tests selected; * other test(s) here"])
        parts.append(part)
    merged = pytester.path / "merged.xml"
    assert merge_main([str(merged), *map(str, parts)]) == 0
    same = compare(full, merged)
    assert same.returncode == 0, same.stdout
    assert "15 vs 15 tests, 0 differences" in same.stdout
    # the check can fail: one shard missing
    missing = pytester.path / "two-of-three.xml"
    assert merge_main([str(missing), str(parts[0]), str(parts[1])]) == 0
    assert compare(full, missing).returncode == 1


def test_merge_refuses_a_test_that_ran_in_two_shards(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makepyfile(test_plain=PLAIN)
    a, b = pytester.path / "a.xml", pytester.path / "b.xml"
    run(pytester, "--vm-shard=1/1", f"--junitxml={a}")
    run(pytester, "-k", "test_fail", f"--junitxml={b}")
    out = pytester.path / "merged.xml"
    assert merge_main([str(out), str(a), str(b)]) == 1
    err = capsys.readouterr().err
    assert "1 test(s) ran in more than one shard" in err and "test_plain::test_fail" in err
    assert not out.exists()


def test_merge_names_unreadable_inputs(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text("<testsuites><testsuite>")
    with pytest.raises(SystemExit, match=r"bad.xml: not a JUnit XML file"):
        merge_main([str(tmp_path / "out.xml"), str(bad)])
    with pytest.raises(SystemExit, match=r"nope.xml: no such file"):
        merge_main([str(tmp_path / "out.xml"), str(tmp_path / "nope.xml")])


def test_merge_console_script_is_installed(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "aero-virtio-junit-merge"
    assert script.exists(), "pip install -e . installs the console script"
    junit = tmp_path / "one.xml"
    junit.write_text(textwrap.dedent("""\
        <testsuites><testsuite name="pytest" tests="1">
        <testcase classname="m" name="t" time="0.1"/></testsuite></testsuites>"""))
    proc = subprocess.run([str(script), str(tmp_path / "out.xml"), str(junit)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "1 tests (0 failed, 0 errors, 0 skipped) from 1 file(s)" in proc.stdout
