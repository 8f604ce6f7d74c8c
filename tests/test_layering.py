"""The folder layout is the architecture (ARCHITECTURE.md): this test enforces it.

It walks every module's imports with ``ast`` (no import is executed) and fails if

- a module under ``rudp/core/`` imports anything of rudp above the core (drivers,
  public faces, applications, testing) or anything that does I/O or reads a clock
  (sockets, threads, asyncio, ``time``, ``os``, ``select``, ...);
- the core calls the global ``random`` functions (``random.random()``): an injected
  ``random.Random`` is the only source of randomness it may use;
- a driver imports a public face, an application or the test tooling;
- anything but an application (or ``python -m rudp``) imports ``rudp.apps``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rudp"

CORE_MAY_IMPORT = ("rudp.core", "rudp.config", "rudp.events", "rudp.errors")
"""The only rudp modules a core module may import: its own layer and the shared vocabulary."""

FORBIDDEN_IN_CORE = {
    "asyncio",
    "os",
    "select",
    "selectors",
    "signal",
    "socket",
    "socketserver",
    "subprocess",
    "threading",
    "time",
    "datetime",
    "secrets",
}
"""Standard modules that do I/O, start threads or read a clock."""

GLOBAL_RANDOM_ALLOWED = {"Random", "SystemRandom"}
"""``random`` attributes the core may name: the classes, so a source can be injected."""


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_under(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def imported_names(path: Path) -> list[str]:
    """Every module name an ``import`` or ``from ... import`` in the file refers to."""
    return names_imported_by(path.read_text(), module_name(path), path.name == "__init__.py")


def names_imported_by(source: str, module: str, is_package: bool = False) -> list[str]:
    """The imports of ``source`` as module ``module``, relative ones resolved."""
    tree = ast.parse(source)
    package = module if is_package else module.rsplit(".", 1)[0]
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names.append(target)
            # ``from rudp import drivers`` imports the submodule rudp.drivers
            names.extend(f"{target}.{alias.name}" for alias in node.names)
    return names


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


CORE_MODULES = modules_under("core")


def test_the_core_exists_and_holds_the_protocol() -> None:
    names = {module_name(p) for p in CORE_MODULES}
    for expected in (
        "rudp.core.wire",
        "rudp.core.state",
        "rudp.core.connection",
        "rudp.core.sender",
        "rudp.core.receiver",
        "rudp.core.recovery",
        "rudp.core.endpoint",
        "rudp.core.congestion",
    ):
        assert expected in names


@pytest.mark.parametrize("path", CORE_MODULES, ids=module_name)
def test_core_imports_only_the_core_and_shared_vocabulary(path: Path) -> None:
    for name in imported_names(path):
        if name.split(".")[0] == "rudp":
            # ``from rudp.core import wire`` names both rudp.core and rudp.core.wire
            assert name in ("rudp", "rudp.core") or within(name, CORE_MAY_IMPORT), (
                f"{module_name(path)} imports {name}, which is above the core"
            )
        else:
            assert name.split(".")[0] not in FORBIDDEN_IN_CORE, (
                f"{module_name(path)} imports {name}: the core does no I/O and reads no clock"
            )


@pytest.mark.parametrize("path", CORE_MODULES, ids=module_name)
def test_core_uses_no_global_random(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "random":
            for alias in node.names:
                assert alias.name in GLOBAL_RANDOM_ALLOWED, (
                    f"{module_name(path)} imports random.{alias.name}"
                )
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "random"
        ):
            assert node.attr in GLOBAL_RANDOM_ALLOWED, (
                f"{module_name(path)} uses the global random.{node.attr}"
            )


@pytest.mark.parametrize("path", modules_under("drivers"), ids=module_name)
def test_drivers_do_not_reach_up(path: Path) -> None:
    above = ("rudp.sock", "rudp.api", "rudp.aio", "rudp.apps", "rudp.testing")
    for name in imported_names(path):
        assert not within(name, above), f"{module_name(path)} imports {name}"


@pytest.mark.parametrize(
    "path",
    [
        p
        for p in sorted(PACKAGE.rglob("*.py"))
        # ``python -m rudp`` is the command line's second entry point
        if not within(module_name(p), ("rudp.apps", "rudp.__main__"))
    ],
    ids=module_name,
)
def test_only_applications_import_applications(path: Path) -> None:
    for name in imported_names(path):
        assert not within(name, ("rudp.apps",)), f"{module_name(path)} imports {name}"


def test_the_checker_sees_a_violation() -> None:
    """The walker itself works: an upward import, a clock read and a relative import are found."""
    source = "import time\nfrom rudp.drivers import blocking\nfrom . import sender\n"
    names = names_imported_by(source, "rudp.core.planted")
    assert "time" in names
    assert "rudp.drivers.blocking" in names
    assert "rudp.core.sender" in names
    assert not within("rudp.drivers.blocking", CORE_MAY_IMPORT)
