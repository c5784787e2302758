"""The relay image, checked without Docker (no daemon here: the image is not built): every
COPY source is in the build context the stack gives, every stage is the one base image,
and requirements/relay.txt resolves to wheels for that image's Python on the task's
architecture (ARM64: tests/cdk/test_resources.py checks the task definition)."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stacks.relay_service import DOCKERFILE, IMAGE_EXCLUDE

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / DOCKERFILE).read_text()
BASE_IMAGE = "public.ecr.aws/docker/library/python:3.12-slim"
# python:3.12-slim is Debian bookworm (glibc 2.36): wheels for it or an older glibc run
# there. pip takes each tag literally, so all are listed.
PLATFORMS = tuple(f"{tag}_aarch64" for tag in (
    "manylinux_2_36", "manylinux_2_34", "manylinux_2_28", "manylinux_2_17", "manylinux2014"))
# What pip says when it cannot reach the package index (not a resolution failure).
UNREACHABLE = re.compile(r"Could not fetch URL|NewConnectionError|Max retries exceeded|"
                         r"Temporary failure in name resolution|Network is unreachable")


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped)."""
    joined = re.sub(r"\\\n", " ", TEXT)
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def excluded(path: str) -> bool:
    """Whether the stack's asset exclude list keeps path out of the build context."""
    return any(fnmatch.fnmatch(path, pattern) or path.startswith(f"{pattern}/")
               for pattern in IMAGE_EXCLUDE)


def test_every_copy_source_is_in_the_build_context() -> None:
    copies = [args.split() for name, args in instructions() if name == "COPY"
              and not args.startswith("--from=")]
    sources = [source for *found, _destination in copies for source in found]
    assert sources, "no COPY found"
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not excluded(source), f"COPY {source}: the stack excludes it (IMAGE_EXCLUDE)"


def test_every_stage_is_the_base_image_named_once_by_tag_or_digest() -> None:
    """Both stages come from the PYTHON_IMAGE build argument, whose default is the base
    image's tag, optionally pinned to one image by its digest (never a bare digest
    without the tag a reader can recognise)."""
    stages = [args.split()[0] for name, args in instructions() if name == "FROM"]
    assert stages == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    [default] = [args.split("=", 1)[1] for name, args in instructions()
                 if name == "ARG" and args.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(re.escape(BASE_IMAGE) + r"(@sha256:[0-9a-f]{64})?", default), default
    # The ARG comes before the first FROM: only there is it visible to FROM lines.
    names = [name for name, _ in instructions()]
    assert names.index("ARG") < names.index("FROM")


def test_relay_requirements_resolve_to_wheels_for_the_image(tmp_path: Path) -> None:
    version = re.search(r":(\d+\.\d+)-", BASE_IMAGE).group(1)  # type: ignore[union-attr]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
         "--only-binary=:all:", "--implementation", "cp", "--python-version", version,
         *(f"--platform={platform}" for platform in PLATFORMS),
         "--dest", str(tmp_path), "--requirement", str(ROOT / "requirements/relay.txt")],
        capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0 and UNREACHABLE.search(result.stdout + result.stderr):
        pytest.skip(f"the package index is unreachable: {result.stderr.strip()[-300:]}")
    assert result.returncode == 0, result.stdout + result.stderr
    pinned = {line.split("==")[0].lower().replace("_", "-") for line in
              (ROOT / "requirements/relay.txt").read_text().splitlines()
              if "==" in line and not line.lstrip().startswith("#")}
    wheels = {path.name.split("-")[0].lower().replace("_", "-")
              for path in tmp_path.glob("*.whl")}
    assert wheels == pinned, f"downloaded {sorted(wheels)}, pinned {sorted(pinned)}"


def test_the_relay_starts_without_the_development_dependencies() -> None:
    # The image installs requirements/relay.txt only: `sesrelay serve` must not import
    # what only `sesrelay dev`, the tests or the CDK app use (a top-level import of one
    # of these would stop every task at start).
    absent = ("cryptography", "moto", "aws_cdk", "cdk_nag", "hypothesis", "pytest")
    script = (f"import sys\nfor name in {absent!r}:\n    sys.modules[name] = None\n"
              "from sesrelay.cli import main\nimport smtp_relay.server\n"
              "sys.argv = ['sesrelay', 'serve', '--help']\nmain()\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    assert "usage: sesrelay serve" in result.stdout
