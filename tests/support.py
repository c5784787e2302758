"""Helpers shared by the test suites: free ports, waiting for a listener, reading an SMTP
reply, PROXY headers."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from typing import BinaryIO

import pytest
from moto import mock_aws

PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_reply(stream: BinaryIO) -> bytes:
    """One SMTP reply, all its lines ("250-..." up to "250 ..."), or what came before EOF."""
    lines = []
    while True:
        line = stream.readline()
        if not line:
            return b"".join(lines)
        lines.append(line)
        if line[3:4] != b"-":
            return b"".join(lines)


def wait_for_port(port: int, process: subprocess.Popen | None = None,
                  timeout: float = 60, host: str = "127.0.0.1") -> None:
    """Wait until host:port accepts connections; fail if process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process exited early with {process.returncode}")
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listened on {host}:{port} within {timeout} s")


def proxy_v2_header(source: str, destination: str, source_port: int = 40000,
                    destination_port: int = 25) -> bytes:
    """A PROXY protocol v2 PROXY header over TCP, built from the specification (2.2)."""
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    if src.version == 4:
        family = 0x11  # AF_INET << 4 | STREAM
        addresses = struct.pack("!4s4sHH", src.packed, dst.packed, source_port,
                                destination_port)
    else:
        family = 0x21  # AF_INET6 << 4 | STREAM
        addresses = struct.pack("!16s16sHH", src.packed, dst.packed, source_port,
                                destination_port)
    version_command = 0x21  # version 2, command PROXY
    return (PROXY_V2_SIGNATURE + bytes([version_command, family])
            + struct.pack("!H", len(addresses)) + addresses)


def proxy_v2_local_header() -> bytes:
    """A PROXY v2 LOCAL header, as a load balancer's health check sends: no addresses."""
    return PROXY_V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)


@contextlib.contextmanager
def moto_account(monkeypatch: pytest.MonkeyPatch, region: str) -> Iterator[None]:
    """An in-process moto account in region, reached by boto3's usual credential chain
    (no endpoint override, no profile)."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    with mock_aws():
        yield
