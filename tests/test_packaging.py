"""The project's own files agree: README quick start, .ci/run, Dockerfile, extras."""

import re
import tomllib

from conftest import ROOT


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_extras_defined():
    extras = _pyproject()["project"]["optional-dependencies"]
    assert {"test", "cuda"} <= set(extras)
    test_deps = " ".join(extras["test"])
    for dep in ("tensorflow", "keras", "pytest"):
        assert dep in test_deps


def test_ci_runs_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = 'pip install -e ".[test]" && pytest'
    assert command in readme
    assert command in ci


def test_dockerfile_installs_defined_extras():
    extras = set(_pyproject()["project"]["optional-dependencies"])
    docker = (ROOT / "Dockerfile").read_text()
    installs = re.findall(r'pip install[^\n]*-e\s+"?\.\[([a-z0-9_,]+)\]', docker)
    assert installs, "the Dockerfile must pip install the project with its extras"
    for group in installs:
        assert set(group.split(",")) <= extras
    assert "cuda" in ",".join(installs)
