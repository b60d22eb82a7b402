"""The lock files every install uses (make run, make test, CI, the Docker image) match pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>[^\s;\\]+)(?:\s*;\s*(?P<marker>[^\\]+?))?\s*\\?$")


def pins(lock: str) -> dict[str, str]:
    """Package -> pinned version for this interpreter's platform, each pin carrying its hashes."""
    text = (REPO / "requirements" / lock).read_text()
    found: dict[str, str] = {}
    for block in re.split(r"\n(?=\S)", text):
        first = block.splitlines()[0]
        match = PIN.match(first)
        if match is None:
            continue
        assert "--hash=sha256:" in block, f"{lock}: {first} has no hash"
        marker = match["marker"]
        if marker and not Marker(marker).evaluate():
            continue
        found[canonicalize_name(match["name"])] = match["version"]
    return found


def declared(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [Requirement(line) for line in listed]


@pytest.mark.parametrize(("lock", "extras"), [("run.txt", []), ("dev.txt", ["dev"])])
def test_every_declared_dependency_is_pinned_within_its_range(lock: str, extras: list[str]) -> None:
    locked = pins(lock)
    for requirement in declared() + [r for extra in extras for r in declared(extra)]:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is in pyproject.toml but not in {lock}: run make lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{lock} pins {name}=={locked[name]} outside pyproject.toml's {requirement}: make lock"
        )


def test_run_and_dev_locks_agree_on_every_shared_package() -> None:
    run, dev = pins("run.txt"), pins("dev.txt")
    assert run.keys() <= dev.keys()
    assert {name: (version, dev[name]) for name, version in run.items() if dev[name] != version} == {}


def test_installs_use_the_lock_files_only() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "--require-hashes -r $(RUN_LOCK)" in makefile and "--require-hashes -r $(DEV_LOCK)" in makefile
    # citywatch itself goes in without resolving: nothing unlocked can slip in through its ranges.
    assert re.findall(r"pip install[^\n]* -e \.", makefile) == ["pip install -q --no-deps -e ."] * 2
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert "pip install --require-hashes -r requirements/run.txt" in dockerfile
    assert "pip install --no-deps ." in dockerfile
