"""Kernel module dependency resolution from a ``modules.dep`` text (pure).

Debian's linux-image packages ship no modules.dep (depmod runs in postinst), so the builder generates one
from each module's ``.modinfo depends=`` (the same information depmod records) and then orders ``insmod``
from it.  Module names compare with ``-`` and ``_`` equivalent, as the kernel does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def normalize(name: str) -> str:
    """Canonical module name: basename without .ko[.xz|.zst|.gz], dashes as underscores."""
    base = name.rsplit("/", 1)[-1]
    for suffix in (".xz", ".zst", ".gz"):
        base = base.removesuffix(suffix)
    return base.removesuffix(".ko").replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """``path: dep-path dep-path`` lines -> {path: [dep paths]} (dep order as depmod wrote it)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        path, _, deps = line.partition(":")
        out[path.strip()] = deps.split()
    return out


def render_modules_dep(paths_deps: Mapping[str, Iterable[str]]) -> str:
    """The inverse of parse_modules_dep, from {path: [module names]} with names resolved to paths."""
    by_name = {normalize(p): p for p in paths_deps}
    lines = []
    for path in sorted(paths_deps):
        deps = [by_name[normalize(d)] for d in paths_deps[path] if normalize(d) in by_name]
        lines.append(f"{path}: {' '.join(deps)}".rstrip() + "\n")
    return "".join(lines)


def load_order(dep: Mapping[str, list[str]], wanted: Iterable[str], builtin: Iterable[str] = ()) -> list[str]:
    """Module paths to ``insmod`` so every module comes after what it depends on.

    ``wanted`` are module names; ones in ``builtin`` (from modules.builtin) are skipped.  A wanted name
    that is neither a module nor built in raises KeyError naming it: a silently missing driver would
    show up much later as a confusing guest failure.
    """
    by_name = {normalize(p): p for p in dep}
    built = {normalize(b) for b in builtin}
    order: list[str] = []
    visiting: set[str] = set()

    def visit(path: str) -> None:
        if path in order:
            return
        if path in visiting:
            raise ValueError(f"module dependency cycle through {path}")
        visiting.add(path)
        for d in dep.get(path, []):
            visit(d)
        visiting.discard(path)
        order.append(path)

    for name in wanted:
        n = normalize(name)
        if n in built:
            continue
        if n not in by_name:
            raise KeyError(f"kernel module {name!r} is neither in modules.dep nor built in")
        visit(by_name[n])
    return order


SIG_MAGIC = b"~Module signature appended~\n"


def strip_signature(ko: bytes) -> bytes:
    """A module without its appended signature (unchanged if it has none).

    Verifying Debian's module signatures costs tens of milliseconds per module under TCG; the test VM's
    kernel does not enforce signatures (it only notes the taint), so the image ships unsigned modules.
    Layout: ``<ELF> <signature> <struct module_signature (12 bytes, sig_len big-endian at 8)> <magic>``.
    """
    if not ko.endswith(SIG_MAGIC):
        return ko
    end = len(ko) - len(SIG_MAGIC)
    info = ko[end - 12 : end]
    sig_len = int.from_bytes(info[8:12], "big")
    start = end - 12 - sig_len
    if start < 0:
        raise ValueError("corrupt module signature trailer")
    return ko[:start]
