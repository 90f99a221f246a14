"""Packaging rules of the distribution, read from ``pyproject.toml``, ``.ci/constraints.txt`` and ``.ci/smoke.sh``.

Like the vendor OpenTelemetry distributions, e2e-otel pins the OpenTelemetry packages it is tested
with, in lockstep; the libraries the host project also uses get open floors, and those floors are
what ``.ci/smoke.sh`` installs on its low end. Building and installing the wheel is the smoke
test's job (it needs the package index); these checks keep the three files agreeing.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# What the host project also depends on: floors only, so the project's own pins win.
HOST_LIBRARIES = ("django", "djangorestframework", "drf-spectacular", "prometheus-client", "pymysql", "psutil")
# The releases of opentelemetry-python (API/SDK/proto/exporters); the rest are opentelemetry-python-contrib's.
CORE = ("opentelemetry-api", "opentelemetry-sdk", "opentelemetry-proto", "opentelemetry-exporter-otlp")


def _requirements(*, dev: bool = True) -> dict[str, Requirement]:
    """Runtime requirements and those of the extras (``dev``: also the linters, which CI does not lock)."""
    project = PYPROJECT["project"]
    lines = list(project["dependencies"])
    for name, extra in project["optional-dependencies"].items():
        if dev or name != "dev":
            lines += [line for line in extra if not line.startswith("e2e-otel")]
    return {Requirement(line).name.lower(): Requirement(line) for line in lines}


def _pin(requirement: Requirement) -> Version:
    (spec,) = requirement.specifier
    assert spec.operator == "==", f"{requirement} must be an exact pin"
    return Version(spec.version)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_opentelemetry_packages_are_pinned_in_lockstep() -> None:
    otel = {name: _pin(req) for name, req in _requirements().items() if name.startswith("opentelemetry-")}
    core = {otel[name] for name in CORE}
    contrib = {version for name, version in otel.items() if name not in CORE}
    assert len(core) == 1 and len(contrib) == 1, otel
    (core_version,), (contrib_version,) = core, contrib
    assert contrib_version.is_prerelease and contrib_version.major == 0  # contrib's 0.NNbM release train
    # The SDK release names the contrib train it belongs to through its semantic-conventions pin.
    sdk_requires = [Requirement(r) for r in metadata.requires("opentelemetry-sdk") or []]
    semconv = next(r for r in sdk_requires if r.name == "opentelemetry-semantic-conventions")
    assert Version(metadata.version("opentelemetry-sdk")) == core_version, "tests run on another SDK than shipped"
    assert contrib_version in semconv.specifier, (contrib_version, semconv)


def test_host_libraries_get_the_tested_floors_and_no_pins() -> None:
    requirements = _requirements()
    smoke = (REPO / ".ci" / "smoke.sh").read_text()
    low = re.search(r"^smoke low \w+ ((?:.*\\\n)*.*)$", smoke, re.M).group(1)  # type: ignore[union-attr]
    tested_low = {_canonical(m[0]): Version(m[1]) for m in re.findall(r'"([A-Za-z_.-]+)==([\d.]+)\.\*"', low)}
    for name in HOST_LIBRARIES:
        specs = {spec.operator: Version(spec.version) for spec in requirements[name].specifier}
        assert "==" not in specs and "~=" not in specs, f"{name} is the host's to pin: {requirements[name]}"
        # The floor is what the smoke test installs at the low end: a floor nobody tested is a guess.
        assert specs[">="] == tested_low[name], (name, specs, tested_low)
    assert requirements["django"].specifier.contains("4.2.2") and requirements["django"].specifier.contains("5.1.15")
    assert requirements["djangorestframework"].specifier.contains("3.14.0")


def test_constraints_lock_matches_the_pins() -> None:
    lock = {}
    for line in (REPO / ".ci" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            lock[_canonical(name)] = Version(version)
    for name, requirement in _requirements(dev=False).items():
        if name.startswith("opentelemetry-"):
            assert lock.get(name) == _pin(requirement), f"{name}: the CI lock and pyproject.toml disagree"
        else:
            assert lock[_canonical(name)] in requirement.specifier, f"{name}: the lock is outside {requirement}"


def test_licence_is_an_spdx_expression_with_a_backend_that_reads_it() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    (backend,) = (Requirement(r) for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools"))
    assert not backend.specifier.contains("76.9") and backend.specifier.contains("77.0")  # PEP 639 support


@pytest.mark.parametrize("section", ["## Set-up: two commands", "## Using it in your project"])
def test_readme_installs_without_the_ci_lock(section: str) -> None:
    readme = (REPO / "README.md").read_text()
    text = readme.split(section, 1)[1].split("\n## ", 1)[0]
    commands = [line for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()
                if "pip install" in line]
    assert commands and not any(re.search(r"\s(-c|--constraint)\b|constraints\.txt", line) for line in commands)
