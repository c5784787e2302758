"""The Lambda functions' synthesized code asset runs in isolation, with the pinned
versions: it is unpacked into a clean virtualenv on the Lambda runtime's Python version
(no pip, no site-packages, nothing of the tests on sys.path), the handlers are imported
from it, and the worker delivers a batch against moto's server."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_lambda as lambda_

import app as cdk_app
from sesrelay import aws
from sesrelay.config import config_from_mapping
from sesrelay.dev import create_resources, dev_environment, point_at_emulation, sqs_event
from sesrelay.dev import start_emulation as start_moto_server
from sesrelay.outbox import read_outbox
from sesrelay.spool import new_queue_id, object_key, spool_envelope, utc_now
from stacks.lambda_bundle import REQUIREMENTS, bundled_code
from stacks.python_function import ARCHITECTURE, RUNTIME
from tests.support import free_port

ENVIRONMENT = "prod"  # the environment with both functions
HANDLERS = {"Worker": "ses_worker", "SesEvents": "ses_events"}
# Nothing of the relay, the AWS emulation or CDK belongs in a function's code.
FOREIGN = ("smtp_relay", "aiosmtpd", "moto", "aws_cdk", "constructs", "cdk_nag", "jsii",
           "werkzeug", "flask", "pytest", "tests", "stacks")
SENDER_DOMAIN = "sender.example"

# Run by the clean virtualenv's interpreter (-I: no PYTHONPATH, no user site, not even
# the working directory; -B: no bytecode written, as /var/task is read-only in Lambda):
# argv[1] is the unpacked asset, argv[2] the handler module, stdin an SQS event for it
# or nothing.
PROBE = r"""
import importlib, importlib.metadata, json, sys, sysconfig, time
asset = sys.argv[1]
sys.path.insert(0, asset)
started = time.perf_counter()
handler = importlib.import_module(sys.argv[2])
import_seconds = time.perf_counter() - started
response = None
event = sys.stdin.read()
if event:
    class Context:
        function_name = "sesrelay-test-worker"
        function_version = "$LATEST"
        memory_limit_in_mb = 512
        aws_request_id = "00000000-0000-0000-0000-000000000000"
        invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:test"
        log_group_name = "/aws/lambda/test"
        log_stream_name = "test"
        def get_remaining_time_in_millis(self):
            return 60_000
    response = handler.handler(json.loads(event), Context())
stdlib = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")}
outside = sorted(
    name for name, module in list(sys.modules.items())
    if getattr(module, "__file__", None)
    and not any(module.__file__.startswith(root + "/") for root in (asset, *stdlib)))
print(json.dumps({
    "python": "%d.%d" % sys.version_info[:2], "sys_path": sys.path,
    "stdlib": sorted(stdlib), "import_seconds": import_seconds, "outside": outside,
    "versions": {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()},
    "response": response}))
"""


def pinned() -> dict[str, str]:
    """name == version from the requirements file, names normalised (PEP 503)."""
    pins = {}
    for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[_normal(name)] = version
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lambda_python() -> str:
    """An interpreter of the Lambda runtime's Python version: on PATH, or from pyenv; the
    tests' own one (with a warning) when this machine has none."""
    version = RUNTIME.name.removeprefix("python")
    candidates = [*sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}")),
                  Path(f"/usr/bin/python{version}"), Path(f"/usr/local/bin/python{version}")]
    for candidate in candidates:  # never pyenv's shims: they answer for another version
        if candidate.is_file():
            return str(candidate)
    warnings.warn(f"no Python {version} here: the asset is checked on Python "
                  f"{sys.version_info.major}.{sys.version_info.minor} instead", stacklevel=1)
    return sys.executable


@pytest.fixture(scope="module")
def assets(offline: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The unpacked code asset of each function of the dev environment, synthesized."""
    outdir = tmp_path_factory.mktemp("asset-synth")
    app, _ = cdk_app.create_app({"env": ENVIRONMENT}, outdir=str(outdir))
    assembly = app.synth()
    stack = assembly.get_stack_by_name(f"sesrelay-{ENVIRONMENT}")
    manifest = json.loads((Path(assembly.directory) / f"{stack.id}.assets.json").read_text())
    found = {}
    for prefix in HANDLERS:
        [function] = [r for key, r in stack.template["Resources"].items()
                      if r["Type"] == "AWS::Lambda::Function" and key.startswith(prefix)]
        asset_hash = function["Properties"]["Code"]["S3Key"].removesuffix(".zip")
        source = manifest["files"][asset_hash]["source"]
        assert source["packaging"] == "zip"
        found[prefix] = Path(assembly.directory) / source["path"]
    return found


@pytest.fixture(scope="module")
def clean_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A virtualenv without pip or any package, on the Lambda runtime's Python."""
    venv = tmp_path_factory.mktemp("lambda-venv") / "venv"
    subprocess.run([lambda_python(), "-m", "venv", "--without-pip", str(venv)], check=True)
    return str(venv / "bin" / "python")


def probe(python: str, asset: Path, package: str, event: dict[str, Any] | None = None,
          env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run PROBE in the clean virtualenv: import package's handler from asset (and give
    it event); its report."""
    result = subprocess.run(
        [python, "-I", "-B", "-c", PROBE, str(asset), f"{package}.handler"],
        input=json.dumps(event) if event else "",
        capture_output=True, text=True, timeout=120, cwd=asset.parent,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **(env or {})}, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_each_asset_holds_its_packages_and_exactly_the_pinned_distributions(
        assets: dict[str, Path]) -> None:
    for prefix, package in HANDLERS.items():
        asset = assets[prefix]
        installed = {}
        for info in asset.glob("*.dist-info"):
            name, version = info.name.removesuffix(".dist-info").split("-", 1)
            installed[_normal(name)] = version
        assert installed == pinned(), prefix
        top_level = {p.name.removesuffix(".py") for p in asset.iterdir()}
        assert {package, "sesrelay", "boto3", "botocore", "aws_lambda_powertools"} <= top_level
        assert not top_level & set(FOREIGN), prefix
        assert not list(asset.rglob("__pycache__")), "bytecode of the build machine's Python"


def test_handlers_import_in_a_clean_virtualenv_with_the_pinned_versions(
        assets: dict[str, Path], clean_python: str) -> None:
    for prefix, package in HANDLERS.items():
        asset = assets[prefix]
        report = probe(clean_python, asset, package)
        if report["python"] != RUNTIME.name.removeprefix("python"):
            warnings.warn(f"asset checked on Python {report['python']}, not the runtime's "
                          f"{RUNTIME.name}", stacklevel=1)
        # The asset, the interpreter's standard library and the venv's empty
        # site-packages: nothing of the tests' environment.
        for entry in report["sys_path"]:
            path = Path(entry)
            assert path == asset or "site-packages" not in entry or (
                not path.exists() or not any(path.iterdir())), entry
            assert ".venv" not in path.parts, entry
        assert report["outside"] == [], "modules from outside the asset and the stdlib"
        assert {_normal(n): v for n, v in report["versions"].items()} == pinned()
        size = sum(f.stat().st_size for f in asset.rglob("*") if f.is_file())
        print(f"\n{prefix} asset: {size / 1e6:.1f} MB unpacked; {package}.handler imported "
              f"in {report['import_seconds'] * 1000:.0f} ms on Python {report['python']}")


@pytest.fixture(scope="module")
def emulation() -> Iterator[tuple[str, dict[str, str], str, str]]:
    """moto's server in this process with the dev resources: its endpoint, the
    environment that points a worker at them, the queue's URL and ARN."""
    port = free_port()
    server = start_moto_server(port)
    saved = dict(os.environ)
    try:
        point_at_emulation(port)
        resources = create_resources(config_from_mapping(
            {"ses_identities": SENDER_DOMAIN}, source="test"))
        env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
        env.update(dev_environment(resources, None))
        yield f"http://127.0.0.1:{port}", env, resources.queue_url, resources.queue_arn
    finally:
        os.environ.clear()
        os.environ.update(saved)
        aws.reset_clients()
        server.stop()


def test_the_worker_in_the_clean_virtualenv_sends_a_batch_through_moto(
        assets: dict[str, Path], clean_python: str,
        emulation: tuple[str, dict[str, str], str, str]) -> None:
    endpoint, env, queue_url, queue_arn = emulation
    queue_id = new_queue_id()
    received = utc_now()
    message = (f"From: app@{SENDER_DOMAIN}\r\nTo: someone@example.org\r\n"
               f"Subject: asset {queue_id}\r\n\r\nhello\r\n").encode()
    envelope, body = spool_envelope(
        {"queue_id": queue_id, "mail_from": f"app@{SENDER_DOMAIN}",
         "rcpt_to": ("someone@example.org",), "size": len(message),
         "client_address": "10.80.0.9", "client_helo": "app.example",
         "received_at": received.isoformat()},
        message, "unused", object_key(queue_id, received))
    assert envelope.inline
    sqs = aws.client("sqs")
    sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                   AttributeNames=["All"])["Messages"]

    report = probe(clean_python, assets["Worker"], HANDLERS["Worker"],
                   sqs_event(messages, queue_arn), env)

    assert report["response"] == {"batchItemFailures": []}
    [sent] = [m for m in read_outbox(endpoint) if queue_id in m["raw"]]
    assert sent["rcpt_to"] == ["someone@example.org"]
    assert base64.b64decode(envelope.body).split(b"\r\n\r\n")[1] in sent["raw"].encode()


def _asset_key(packages: dict[str, Path], outdir: Path) -> str:
    """The S3 key of a function's code built from packages, in a stack of its own."""
    app = cdk.App(outdir=str(outdir))
    stack = cdk.Stack(app, "AssetHash")
    lambda_.Function(stack, "Function", runtime=RUNTIME, architecture=ARCHITECTURE,
                     handler="handler_package.handler.handler",
                     code=bundled_code(packages, RUNTIME, ARCHITECTURE))
    template = app.synth().get_stack_by_name("AssetHash").template
    [function] = [r for r in template["Resources"].values()
                  if r["Type"] == "AWS::Lambda::Function"]
    return str(function["Properties"]["Code"]["S3Key"])


def test_a_change_in_the_core_package_alone_changes_the_asset(offline: None,
                                                               tmp_path: Path) -> None:
    # Else `cdk deploy` would keep the old code: the asset's key names its content.
    handler = tmp_path / "handler_package"
    core = tmp_path / "core"
    for package in (handler, core):
        package.mkdir()
        (package / "__init__.py").write_text("")
    packages = {"handler_package": handler, "sesrelay": core}
    before = _asset_key(packages, tmp_path / "before")
    (core / "spool.py").write_text("CONTRACT_VERSION = 3\n")
    after = _asset_key(packages, tmp_path / "after")
    assert before != after
