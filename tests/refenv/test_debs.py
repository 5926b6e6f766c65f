"""Pure parts of the private apt configuration: sources parsing, closure filtering, version records."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_aero_virtio.refenv import debs

DEB822 = """\
Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main
"""


def test_deb822_main_archive_only() -> None:
    got = debs.parse_deb822_sources(DEB822)
    assert got == [debs.AptSource("http://mirror.example/debian", "/usr/share/keyrings/debian-archive-keyring.gpg")]


def test_deb822_disabled_and_inline_key() -> None:
    text = (
        "Types: deb\nURIs: http://a.example/debian/\nSuites: trixie\nEnabled: no\n\n"
        "Types: deb\nURIs: http://b.example/debian/\nSuites: trixie\nSigned-By:\n -----BEGIN PGP\n .\n"
    )
    assert debs.parse_deb822_sources(text) == [debs.AptSource("http://b.example/debian", None)]


def test_one_line_sources() -> None:
    text = (
        "# comment\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main\n"
        "deb http://m.example/debian-security bookworm-security main\n"
        "deb-src http://m.example/debian bookworm main\n"
    )
    assert debs.parse_one_line_sources(text) == [debs.AptSource("http://m.example/debian", "/k.gpg")]


def test_find_debian_source_prefers_deb822(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    (tmp_path / "sources.list").write_text("deb http://other.example/debian bookworm main\n")
    assert debs.find_debian_source(tmp_path).uri == "http://mirror.example/debian"


def test_find_debian_source_missing_names_fix(tmp_path: Path) -> None:
    with pytest.raises(debs.AptError, match="fix:"):
        debs.find_debian_source(tmp_path)


def test_render_sources_uses_trixie_and_keyring() -> None:
    text = debs.render_sources(debs.AptSource("http://m.example/debian", "/k.gpg"))
    assert "Suites: trixie\n" in text and "URIs: http://m.example/debian\n" in text
    assert "Signed-By: /k.gpg\n" in text and "Components: main\n" in text
    assert "Signed-By" not in debs.render_sources(debs.AptSource("http://m.example/debian", None))


CLOSURE = """\
qemu-system-x86
  Depends: qemu-system-common
 |Depends: <debconf-2.0>
  Depends: adduser
qemu-system-common
  Depends: libc6
<debconf-2.0>
adduser
  Depends: passwd
passwd
libc6
libc6:i386
"""


def test_closure_drops_virtual_and_maintscript_only() -> None:
    assert debs.parse_depends_closure(CLOSURE) == ["libc6", "qemu-system-common", "qemu-system-x86"]


def test_direct_depends_first_alternative() -> None:
    out = "linux-image-amd64\n  Depends: linux-image-6.12.1-amd64\n |Depends: foo\n  Depends: <virt>\n"
    assert debs.parse_direct_depends(out) == ["linux-image-6.12.1-amd64"]


def test_parse_show_and_filenames() -> None:
    out = (
        "Package: qemu-system-x86\nVersion: 1:10.0.2+ds-1\nArchitecture: amd64\nDescription: x\n y\n\n"
        "Package: seabios\nVersion: 1.16.3-2\nArchitecture: all\n\n"
        "Package: seabios\nVersion: 1.0-1\nArchitecture: all\n"
    )
    infos = debs.parse_show(out)
    assert infos["qemu-system-x86"].filename == "qemu-system-x86_1%3a10.0.2+ds-1_amd64.deb"
    assert infos["seabios"].version == "1.16.3-2"


def test_versions_text_is_order_independent() -> None:
    a = debs.DebInfo("a", "1", "all")
    b = debs.DebInfo("b", "2", "amd64")
    assert debs.versions_text([a, b]) == debs.versions_text([b, a]) == "a 1 all\nb 2 amd64\n"
