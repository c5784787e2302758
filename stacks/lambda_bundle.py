"""The code asset of sesrelay's Python Lambda functions, bundled on this machine (no
Docker): the handler package, the core package it imports, and the pinned runtime
dependencies (requirements/worker.txt, which both functions run) installed as wheels
for the function's Python version and architecture. The function runs the libraries
the tests ran, boto3 included: nothing comes from a layer, and the runtime's own boto3
is shadowed because the code directory comes first on a Lambda function's sys.path."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import jsii
from aws_cdk import aws_lambda as lambda_

REPO_ROOT = Path(__file__).resolve().parent.parent
CORE_PACKAGE = REPO_ROOT / "sesrelay"
REQUIREMENTS = REPO_ROOT / "requirements" / "worker.txt"
# Installed dependencies are kept here, one directory per requirements file, Python
# version and platform: every synthesis (and every test synthesizing) reuses them.
DEPENDENCY_CACHE = REPO_ROOT / "build" / "lambda-dependencies"
# Lambda's Python 3.12+ runtimes run on Amazon Linux 2023 (glibc 2.34): wheels built for
# it or for an older glibc run there. pip takes each tag literally, so all are listed.
_GLIBC_TAGS = ("manylinux_2_34", "manylinux_2_28", "manylinux_2_17", "manylinux2014")
PLATFORMS = {
    lambda_.Architecture.ARM_64.name: tuple(f"{tag}_aarch64" for tag in _GLIBC_TAGS),
    lambda_.Architecture.X86_64.name: tuple(f"{tag}_x86_64" for tag in _GLIBC_TAGS),
}


class BundlingError(RuntimeError):
    """The dependencies could not be installed into the asset."""


def python_version(runtime: lambda_.Runtime) -> str:
    """"3.13" for the python3.13 runtime."""
    prefix = "python"
    if not runtime.name.startswith(prefix):
        raise BundlingError(f"{runtime.name} is not a Python runtime")
    return runtime.name.removeprefix(prefix)


def dependencies(requirements: Path, version: str, platforms: tuple[str, ...]) -> Path:
    """A directory holding requirements installed for Python version on platforms (wheels
    only, no bytecode: the build machine's Python would compile for itself), built once.

    The cache key is the requirements' content with the version and platforms: every line
    pins an exact version, and a published wheel never changes.
    """
    key = hashlib.sha256(requirements.read_bytes()
                         + f"\0{version}\0{','.join(platforms)}".encode())
    target = DEPENDENCY_CACHE / key.hexdigest()[:32]
    if target.is_dir():
        return target
    DEPENDENCY_CACHE.mkdir(parents=True, exist_ok=True)
    # Built aside and renamed into place: parallel syntheses (pytest -n) never see half.
    building = Path(tempfile.mkdtemp(prefix="building-", dir=DEPENDENCY_CACHE))
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--no-compile", "--only-binary=:all:", "--implementation", "cp",
               "--python-version", version,
               *(f"--platform={platform}" for platform in platforms),
               "--target", str(building), "--requirement", str(requirements)]
    result = subprocess.run(command, capture_output=True, text=True, check=False,
                            env={**os.environ, "PIP_NO_INPUT": "1"})
    if result.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        raise BundlingError(f"pip could not install {requirements} for Python {version} on "
                            f"{platforms[0]}:\n{result.stderr.strip()}")
    # Console scripts: not importable, and their #! line names this machine's Python.
    shutil.rmtree(building / "bin", ignore_errors=True)
    try:
        building.rename(target)
    except OSError:  # another process finished first; its copy is the same
        shutil.rmtree(building, ignore_errors=True)
    return target


@jsii.implements(cdk.ILocalBundling)
class LocalBundle:
    """Builds a function's code: the dependencies first, then the packages over them."""

    def __init__(self, packages: dict[str, Path], dependency_dir: Path) -> None:
        self.packages = packages
        self.dependency_dir = dependency_dir

    def try_bundle(self, output_dir: str, *args: Any, **kwargs: Any) -> bool:
        """Copy the dependencies and each package into output_dir, without caches."""
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(self.dependency_dir, output_dir, dirs_exist_ok=True, ignore=ignore)
        for name, source in self.packages.items():
            shutil.copytree(source, Path(output_dir) / name, dirs_exist_ok=True,
                            ignore=ignore)
        return True


def code_packages(handler_package: str) -> dict[str, Path]:
    """The packages of a function whose handler lives in lambdas/<handler_package>."""
    return {handler_package: REPO_ROOT / "lambdas" / handler_package, "sesrelay": CORE_PACKAGE}


def bundled_code(packages: dict[str, Path], runtime: lambda_.Runtime,
                 architecture: lambda_.Architecture,
                 requirements: Path = REQUIREMENTS) -> lambda_.Code:
    """The code asset holding packages and requirements built for runtime on
    architecture."""
    built = dependencies(requirements, python_version(runtime), PLATFORMS[architecture.name])
    return lambda_.Code.from_asset(
        str(next(iter(packages.values()))),
        # Hashed by what was bundled: the default hashes only the first package's source,
        # so a change in the core package or in a pinned version would not reach AWS.
        asset_hash_type=cdk.AssetHashType.OUTPUT,
        bundling=cdk.BundlingOptions(
            # Never pulled: the local bundler always succeeds.
            image=runtime.bundling_image,
            local=LocalBundle(packages, built),
        ),
    )
