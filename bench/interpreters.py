"""Which Python runs the relay in the bench, and a virtualenv for it.

Production runs the container image's Python (relay_container/Dockerfile's PYTHON_IMAGE:
the official image, built with profile-guided optimisation and LTO). The bench should
measure what users will run: default_python() says how it comes closest on this machine.
`bench/run --relay-python PATH` (repeatable) measures others, side by side in the same
rounds, each in a virtualenv of its own made as the image's is.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENVS = REPO / "bench" / ".venvs"  # git-ignored
MINIMUM = (3, 11)  # pyproject.toml's requires-python

_DESCRIBE = """
import json, sys, sysconfig
args = sysconfig.get_config_var("CONFIG_ARGS") or ""
print(json.dumps({"python": sys.version.split()[0],
                  "python_executable": sys.executable,
                  "python_pgo": "yes" if "--enable-optimizations" in args else "no",
                  "python_lto": "yes" if "--with-lto" in args else "no",
                  "python_shared": "yes" if "--enable-shared" in args else "no"}))
"""


def describe(python: str) -> dict[str, str]:
    """An interpreter's version, path and build: PGO and LTO as its configure arguments
    declare them (python.org's builds and the official images do; a distribution may
    optimise without declaring it, so "no" means "not declared"), and where it comes from
    (pyenv, the distribution, or elsewhere)."""
    found = json.loads(subprocess.run([python, "-c", _DESCRIBE], check=True,
                                      capture_output=True, text=True).stdout)
    executable = found["python_executable"]
    found["python_source"] = ("pyenv" if "/.pyenv/" in executable else
                              "distribution" if executable.startswith("/usr/bin/") else
                              "other")
    return found


def image_version() -> str:
    """The minor version of the container image's Python ("3.12")."""
    dockerfile = (REPO / "relay_container" / "Dockerfile").read_text()
    match = re.search(r"^ARG PYTHON_IMAGE=\S*python:(\d+\.\d+)", dockerfile, re.MULTILINE)
    if not match:
        raise RuntimeError("relay_container/Dockerfile: no ARG PYTHON_IMAGE=...python:X.Y")
    return match.group(1)


def _candidates(version: str) -> list[str]:
    found = [shutil.which(f"python{version}")]
    found += [str(p) for p in sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python3"))]
    found.append(f"/usr/bin/python{version}")
    return [p for p in dict.fromkeys(found) if p and Path(p).exists()]


def default_python() -> tuple[str, str]:
    """The relay's interpreter when none is asked for, and why it was chosen: the image's
    version built as the image's is (with PGO and LTO declared); else the distribution's
    Python 3, a release build made by the distribution (its configure arguments declare no
    optimisation, but Debian's measured the fastest here), because the build changes the
    relay's CPU per message more than the minor version does (docs/BENCHMARKS.md: on
    pyenv's unoptimised 3.12 the relay took 28 % more CPU per message than on Debian's
    3.11, on pyenv's 3.11 14 % more); else any build of the image's version; else the
    project's virtualenv."""
    version = image_version()
    usable = []
    for python in _candidates(version):
        try:
            usable.append((python, describe(python)))
        except (OSError, subprocess.CalledProcessError, ValueError):
            continue
    for python, found in usable:
        if found["python_pgo"] == "yes":
            return python, f"the image's Python {version}, optimised as the image's is"
    distribution = "/usr/bin/python3"
    try:
        found = describe(distribution)
    except (OSError, subprocess.CalledProcessError, ValueError):
        found = {}
    if found and tuple(map(int, found["python"].split(".")[:2])) >= MINIMUM:
        return distribution, (f"no optimised Python {version} here (the image's): the "
                              "distribution's release build")
    if usable:
        return usable[0][0], f"the image's Python {version}, not built as the image's is"
    return sys.executable, f"no Python {version} on this machine: the project's virtualenv"


def environment(python: str) -> Path:
    """A virtualenv for the relay on this interpreter, made once under bench/.venvs/ as
    the Dockerfile makes the image's (requirements/relay.txt, then the project, here
    editable so that it runs this checkout's code); its bin directory."""
    if Path(python).resolve() == Path(sys.executable).resolve():
        return Path(sys.executable).parent
    found = describe(python)
    tag = hashlib.sha256(found["python_executable"].encode()).hexdigest()[:8]
    venv = VENVS / f"py{found['python']}-{found['python_source']}-{tag}"
    ready = venv / ".ready"
    if not ready.exists():
        shutil.rmtree(venv, ignore_errors=True)
        print(f"bench: creating {venv}", file=sys.stderr)
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "-r", str(REPO / "requirements" / "relay.txt")], check=True)
        subprocess.run([*pip, "--no-deps", "-e", str(REPO)], check=True)
        ready.write_text(python + "\n")
    return venv / "bin"
