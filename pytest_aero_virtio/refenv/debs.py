"""Debian 13 packages as files, without installing anything into the host.

A private apt configuration (its own sources file, lists, cache and an empty dpkg status) lets ``apt-get
update`` / ``apt-cache depends`` / ``apt-get download`` work on trixie from a Debian 12 host: installing
trixie's QEMU would replace libc6 and ~190 other system packages of a Debian 12 host, so we only ever
unpack .debs into cache directories with ``dpkg-deb -x``.

The mirror URI and keyring are read from the system's own apt sources at run time (never written in the
repository).  Pure parts (sources parsing, closure filtering, version records) are unit-tested; the thin I/O
around them runs apt.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_aero_virtio.refenv.buildtools import run_captured
from pytest_aero_virtio.refenv.cache import cache_root, file_lock, progress

SUITE = "trixie"
COMPONENT = "main"
ARCH = "amd64"

# Packages whose only job is to run maintainer scripts (users, debconf questions, init integration) or that
# are the package manager itself.  Unpacking them into a sysroot contributes nothing the guest or the
# bundled QEMU uses, and some (perl-base, systemd) are large.
MAINTSCRIPT_ONLY = frozenset(
    {
        "adduser",
        "base-files",
        "base-passwd",
        "cdebconf",
        "debconf",
        "debconf-2.0",
        "debianutils",
        "dpkg",
        "init-system-helpers",
        "install-info",
        "login",
        "lsb-base",
        "passwd",
        "perl-base",
        "sensible-utils",
        "systemd",
        "systemd-sysv",
        "sysvinit-utils",
        "ucf",
        "udev",
        "usrmerge",
        "usr-is-merged",
    }
)


class AptError(RuntimeError):
    """apt could not do what the reference environment needs; the message says why and what to do."""


@dataclass(frozen=True)
class AptSource:
    """One Debian archive as the host's apt knows it: where it is and which keyring signs it."""

    uri: str
    signed_by: str | None


@dataclass(frozen=True)
class DebInfo:
    """A resolved package: the exact file ``apt-get download`` will produce."""

    package: str
    version: str
    arch: str

    @property
    def filename(self) -> str:
        """``apt-get download`` quotes the epoch colon as %3a in the file name."""
        return f"{self.package}_{self.version.replace(':', '%3a')}_{self.arch}.deb"


def _deb822_paragraphs(text: str) -> list[dict[str, str]]:
    """Split deb822 text into paragraphs of ``field: value`` (continuations joined, comments dropped)."""
    paras: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    last: str | None = None
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if cur:
                paras.append(cur)
            cur, last = {}, None
            continue
        if raw[0] in " \t" and last is not None:
            cur[last] += "\n" + raw.strip()
            continue
        name, sep, value = raw.partition(":")
        if not sep:
            continue
        last = name.strip().lower()
        cur[last] = value.strip()
    if cur:
        paras.append(cur)
    return paras


def _is_main_archive(uri: str, suites: Sequence[str]) -> bool:
    """The main Debian archive: not the security archive, and carrying a plain release suite."""
    if "security" in uri or "ports" in uri:
        return False
    return any("-" not in s and "/" not in s for s in suites)


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Debian archives named in a deb822 ``.sources`` file, main archive entries only, in file order."""
    out: list[AptSource] = []
    for p in _deb822_paragraphs(text):
        if p.get("enabled", "yes").lower() == "no" or "deb" not in p.get("types", "").split():
            continue
        suites = p.get("suites", "").split()
        signed = p.get("signed-by")
        if signed is not None and "\n" in signed.strip():
            signed = None  # an inline key block: we cannot point apt at it by path; fall back to trusted.gpg
        for uri in p.get("uris", "").split():
            if _is_main_archive(uri, suites):
                out.append(AptSource(uri=uri.rstrip("/"), signed_by=signed))
    return out


_ONE_LINE = re.compile(r"^\s*deb\s+(?:\[(?P<opts>[^\]]*)\]\s+)?(?P<uri>\S+)\s+(?P<suite>\S+)")


def parse_one_line_sources(text: str) -> list[AptSource]:
    """Debian archives named in a one-line-style ``sources.list`` (``deb [signed-by=...] URI suite comp``)."""
    out: list[AptSource] = []
    for line in text.splitlines():
        m = _ONE_LINE.match(line.split("#", 1)[0])
        if not m or not _is_main_archive(m["uri"], [m["suite"]]):
            continue
        signed = None
        for opt in (m["opts"] or "").split():
            k, _, v = opt.partition("=")
            if k == "signed-by":
                signed = v
        out.append(AptSource(uri=m["uri"].rstrip("/"), signed_by=signed))
    return out


def find_debian_source(etc_apt: Path = Path("/etc/apt")) -> AptSource:
    """The host's Debian archive (URI + keyring), preferring deb822 files; ``AptError`` when there is none."""
    candidates: list[AptSource] = []
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        for f in sorted(parts.glob("*.sources")):
            candidates += parse_deb822_sources(f.read_text(errors="replace"))
        for f in sorted(parts.glob("*.list")):
            candidates += parse_one_line_sources(f.read_text(errors="replace"))
    main = etc_apt / "sources.list"
    if main.is_file():
        candidates += parse_one_line_sources(main.read_text(errors="replace"))
    debian = [c for c in candidates if "debian" in c.uri]
    if debian:
        return debian[0]
    if candidates:
        return candidates[0]
    raise AptError(
        f"no Debian archive found in {etc_apt}/sources.list.d/*.sources or {etc_apt}/sources.list; "
        "fix: run on a Debian or Ubuntu host whose apt sources name a Debian mirror"
    )


def render_sources(src: AptSource, suite: str = SUITE, component: str = COMPONENT) -> str:
    """Our private deb822 sources file: the host's archive and keyring, but Debian 13's suite."""
    lines = ["Types: deb", f"URIs: {src.uri}", f"Suites: {suite}", f"Components: {component}"]
    if src.signed_by:
        lines.append(f"Signed-By: {src.signed_by}")
    lines.append(f"Architectures: {ARCH}")
    return "\n".join(lines) + "\n"


def parse_depends_closure(output: str, exclude: Iterable[str] = MAINTSCRIPT_ONLY) -> list[str]:
    """Real package names from ``apt-cache depends --recurse`` output, sorted.

    Top-level (unindented) lines are the packages reached; ``<name>`` lines are virtual packages (provided by
    some real package that also appears) and are dropped, as are the maintainer-script-only packages.
    """
    skip = set(exclude)
    names = set()
    for line in output.splitlines():
        if not line or line[0].isspace():
            continue
        name = line.strip()
        if name.startswith("<") or name in skip:
            continue
        names.add(name.split(":", 1)[0])
    return sorted(names)


def parse_show(output: str) -> dict[str, DebInfo]:
    """``apt-cache show --no-all-versions`` records by package name (first record wins)."""
    out: dict[str, DebInfo] = {}
    for p in _deb822_paragraphs(output):
        if "package" in p and "version" in p and p["package"] not in out:
            out[p["package"]] = DebInfo(p["package"], p["version"], p.get("architecture", ARCH))
    return out


def parse_direct_depends(output: str) -> list[str]:
    """First alternatives of the ``Depends:`` lines of a non-recursive ``apt-cache depends`` output."""
    deps: list[str] = []
    for line in output.splitlines():
        s = line.strip()
        if s.startswith("Depends:") and not line.lstrip().startswith("|"):
            name = s.split(":", 1)[1].strip()
            if not name.startswith("<"):
                deps.append(name)
    return deps


def versions_text(infos: Iterable[DebInfo]) -> str:
    """A canonical text of resolved versions, the input of cache keys built from packages."""
    return "".join(f"{i.package} {i.version} {i.arch}\n" for i in sorted(infos, key=lambda i: i.package))


class Apt:
    """apt with a private configuration under ``<cache>/apt``; .debs are kept in ``<cache>/debs``."""

    def __init__(self, root: Path | None = None, source: AptSource | None = None) -> None:
        self.root = (root or cache_root()) / "apt"
        self.debs = self.root.parent / "debs"
        self._source = source

    # -- configuration -------------------------------------------------------------------------------------
    def _opts(self) -> list[str]:
        r = self.root
        opts = {
            "Dir::Etc::sourcelist": str(r / "etc" / "sources.list"),
            "Dir::Etc::sourceparts": str(r / "etc" / "sources.list.d"),
            "Dir::Etc::preferences": str(r / "etc" / "preferences"),
            "Dir::Etc::preferencesparts": str(r / "etc" / "preferences.d"),
            "Dir::State": str(r / "state"),
            "Dir::State::Lists": str(r / "state" / "lists"),
            "Dir::State::status": "/dev/null",
            "Dir::State::extended_states": str(r / "state" / "extended_states"),
            "Dir::Cache": str(r / "cache"),
            "Dir::Cache::archives": str(r / "cache" / "archives"),
            "Dir::Cache::pkgcache": str(r / "cache" / "pkgcache.bin"),
            "Dir::Cache::srcpkgcache": str(r / "cache" / "srcpkgcache.bin"),
            "APT::Architecture": ARCH,
            "APT::Architectures": ARCH,
            "APT::Sandbox::User": "root" if os.geteuid() == 0 else "",
            "Acquire::Languages": "none",
        }
        out: list[str] = []
        for k, v in opts.items():
            if v:
                out += ["-o", f"{k}={v}"]
        return out

    def _setup(self) -> None:
        src = self._source or find_debian_source()
        etc = self.root / "etc"
        (etc / "sources.list.d").mkdir(parents=True, exist_ok=True)
        (etc / "preferences.d").mkdir(parents=True, exist_ok=True)
        (self.root / "state" / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (self.root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        (etc / "sources.list").write_text("")
        (etc / "preferences").write_text("")
        (etc / "sources.list.d" / "aero-virtio.sources").write_text(render_sources(src))

    def _run(self, argv: list[str], cwd: Path | None = None) -> str:
        tool = argv[0]
        if shutil.which(tool) is None:
            raise AptError(f"{tool} not found; fix: run on a Debian/Ubuntu host (apt is required)")
        proc = run_captured(
            [tool, *self._opts(), *argv[1:]],
            cwd=cwd,
            env={**os.environ, "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"},
        )
        if proc.returncode != 0:
            raise AptError(
                f"{' '.join(argv[:2])} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}\n"
                "fix: check network access to the Debian mirror in /etc/apt/sources.list*, and run as root "
                "(or delete the cache directory " + str(self.root) + " and retry)"
            )
        return proc.stdout

    def _lists_present(self) -> bool:
        lists = self.root / "state" / "lists"
        return lists.is_dir() and any(lists.glob(f"*_dists_{SUITE}_*Packages*"))

    def update(self, force: bool = False) -> None:
        """``apt-get update`` on the private config: once, then only when forced (reproducible builds)."""
        with file_lock(self.root / "apt.lock"):
            if self._lists_present() and not force:
                return
            self._setup()
            progress(f"apt-get update (Debian {SUITE}, private configuration in {self.root})")
            self._run(["apt-get", "-q", "update"])
            if not self._lists_present():
                raise AptError(
                    f"apt-get update produced no {SUITE} package lists in {self.root}; fix: the mirror named "
                    "in the host's apt sources must carry the trixie suite"
                )

    def lists_digest(self) -> str:
        """Digest of the Release files: identical lists resolve identical versions (resolution cache key)."""
        h = hashlib.sha256()
        for f in sorted((self.root / "state" / "lists").glob("*Release")):
            h.update(f.name.encode() + f.read_bytes())
        return h.hexdigest()[:16]

    # -- queries -------------------------------------------------------------------------------------------
    def closure(self, packages: Sequence[str]) -> list[str]:
        """Hard-dependency closure of ``packages`` (no recommends/suggests), see parse_depends_closure."""
        out = self._run(
            [
                "apt-cache",
                "depends",
                "--recurse",
                "--no-recommends",
                "--no-suggests",
                "--no-conflicts",
                "--no-breaks",
                "--no-replaces",
                "--no-enhances",
                *packages,
            ]
        )
        return parse_depends_closure(out)

    def direct_depends(self, package: str) -> list[str]:
        """Direct Depends of one package (used to follow a metapackage such as linux-image-amd64)."""
        return parse_direct_depends(self._run(["apt-cache", "depends", package]))

    def show(self, packages: Sequence[str]) -> list[DebInfo]:
        """Candidate versions of ``packages``; ``AptError`` names any package the lists do not have."""
        infos = parse_show(self._run(["apt-cache", "show", "--no-all-versions", *packages]))
        missing = [p for p in packages if p not in infos]
        if missing:
            raise AptError(f"Debian {SUITE} has no package(s) {missing}; fix: refresh with `--refresh`")
        return [infos[p] for p in packages]

    def resolve(self, spec: str, roots: Sequence[str], metas: Sequence[str] = ()) -> list[DebInfo]:
        """Resolve once per (spec, roots, lists snapshot) and remember it, so a warm build runs no apt.

        ``roots`` are expanded to their hard-dependency closure; each of ``metas`` (a metapackage such as
        linux-image-amd64) contributes only the package it points at, not that package's dependencies.
        """
        self.update()
        text = f"{spec}\0{' '.join(roots)}\0{' '.join(metas)}\0{self.lists_digest()}"
        memo = self.root / "resolved" / f"{spec}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
        if not memo.is_file():
            with file_lock(self.root / "resolve.lock"):  # one apt-cache at a time (it rewrites pkgcache.bin)
                if not memo.is_file():
                    names = self.closure(roots) if roots else []
                    for meta in metas:
                        deps = self.direct_depends(meta)
                        if not deps:
                            raise AptError(
                                f"metapackage {meta} has no Depends in Debian {SUITE}; fix: refresh with --refresh"
                            )
                        names.append(deps[0])
                    infos = self.show(names)
                    memo.parent.mkdir(parents=True, exist_ok=True)
                    tmp = memo.with_suffix(f".tmp{os.getpid()}")
                    tmp.write_text(json.dumps([i.__dict__ for i in infos], indent=1))
                    os.replace(tmp, memo)
        data = json.loads(memo.read_text())
        return [DebInfo(d["package"], d["version"], d["arch"]) for d in data]

    # -- downloads and unpacking ---------------------------------------------------------------------------
    def download(self, infos: Sequence[DebInfo]) -> list[Path]:
        """The .deb files of ``infos``, downloading only those not already in ``<cache>/debs``."""
        self.debs.mkdir(parents=True, exist_ok=True)
        with file_lock(self.root / "download.lock"):
            missing = [i for i in infos if not (self.debs / i.filename).is_file()]
            if missing:
                self._setup()
                t0 = time.monotonic()
                progress(f"downloading {len(missing)} Debian {SUITE} package(s) into {self.debs}")
                with tempfile.TemporaryDirectory(dir=self.debs, prefix=".dl-") as tmp:
                    self._run(
                        ["apt-get", "-q", "download", *(f"{i.package}={i.version}" for i in missing)],
                        cwd=Path(tmp),
                    )
                    for i in missing:
                        got = Path(tmp) / i.filename
                        if not got.is_file():
                            raise AptError(f"apt-get download did not produce {i.filename} in {tmp}")
                        os.replace(got, self.debs / i.filename)
                progress(f"downloaded in {time.monotonic() - t0:.1f} s")
        return [self.debs / i.filename for i in infos]


def _unpack_one(deb: Path, dest: Path) -> None:
    proc = run_captured(["dpkg-deb", "-x", str(deb), str(dest)])
    if proc.returncode != 0:
        raise AptError(
            f"dpkg-deb -x {deb} failed: {proc.stderr.strip()}; fix: delete {deb} (corrupt download) and retry"
        )


def unpack(debs: Iterable[Path], dest: Path, jobs: int | None = None) -> None:
    """``dpkg-deb -x`` every package into ``dest`` (a sysroot; maintainer scripts are never run).

    Packages unpack side by side, largest first (the kernel package alone is a third of a cold image build):
    a package closure has no two packages shipping the same file, so the order does not matter.
    """
    dest.mkdir(parents=True, exist_ok=True)
    ordered = sorted(debs, key=lambda p: p.stat().st_size, reverse=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs or min(4, os.cpu_count() or 1)) as pool:
        for future in [pool.submit(_unpack_one, deb, dest) for deb in ordered]:
            future.result()
