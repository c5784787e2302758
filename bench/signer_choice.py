"""awscrt against the relay's own signer and HTTP client, on the relay's hot-path request.

    .venv/bin/pip install awscrt==0.38.0      # only for this comparison
    .venv/bin/python bench/signer_choice.py

Starts bench/spool_sink.py and, from one asyncio loop as the relay runs, sends the same
10 KB SQS SendMessage over one keep-alive connection, interleaved in rounds:

- lean: smtp_relay.spool_client.LeanSpoolClient (sigv4.py on asyncio streams);
- awscrt: AWS's C runtime, its SigV4 signer and HTTP client; its answers arrive on the
  CRT's own event-loop thread and are handed to the asyncio loop (asyncio.wrap_future);
- botocore: the relay's botocore client in its thread pool (BotocoreSpoolClient).

It prints the process CPU time (all threads, the CRT's included) and wall time per request,
and the signing alone for lean and awscrt. Ratios matter, not absolute times: the machine
is shared.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REQUESTS = 2000
ROUNDS = 3
BODY = json.dumps({"queue_id": "Q" * 16, "message": "x" * 10240})


async def lean_sender(endpoint: str) -> tuple[Callable[[], Awaitable[object]], Callable[[], None]]:
    from sesrelay.timeouts import RELAY_S3, RELAY_SQS
    from smtp_relay.spool_client import LeanSpoolClient

    client = LeanSpoolClient(RELAY_S3, RELAY_SQS, "bench-spool")
    queue = f"{endpoint}/000000000000/bench"
    return (lambda: client.send_messages(queue, [("a", BODY)])), client.close


async def botocore_sender(endpoint: str
                          ) -> tuple[Callable[[], Awaitable[object]], Callable[[], None]]:
    from sesrelay.timeouts import RELAY_S3, RELAY_SQS
    from smtp_relay.spool_client import BotocoreSpoolClient

    client = BotocoreSpoolClient(RELAY_S3, RELAY_SQS)
    queue = f"{endpoint}/000000000000/bench"
    return (lambda: client.send_messages(queue, [("a", BODY)])), lambda: None


async def awscrt_sender(endpoint: str
                        ) -> tuple[Callable[[], Awaitable[object]], Callable[[], None]]:
    from awscrt import auth, http
    from awscrt import io as crt_io

    port = int(endpoint.rsplit(":", 1)[1])
    group = crt_io.EventLoopGroup(1)
    bootstrap = crt_io.ClientBootstrap(group, crt_io.DefaultHostResolver(group))
    connection = await asyncio.wrap_future(http.HttpClientConnection.new(
        host_name="127.0.0.1", port=port, bootstrap=bootstrap))
    credentials = auth.AwsCredentialsProvider.new_static("bench", "bench")
    queue = f"{endpoint}/000000000000/bench"

    async def send() -> object:
        body = json.dumps({"QueueUrl": queue, "MessageBody": BODY}).encode()
        request = http.HttpRequest("POST", "/", http.HttpHeaders([
            ("Host", f"127.0.0.1:{port}"), ("X-Amz-Target", "AmazonSQS.SendMessage"),
            ("Content-Type", "application/x-amz-json-1.0"),
            ("Content-Length", str(len(body)))]), io.BytesIO(body))
        config = auth.AwsSigningConfig(
            algorithm=auth.AwsSigningAlgorithm.V4,
            signature_type=auth.AwsSignatureType.HTTP_REQUEST_HEADERS,
            credentials_provider=credentials, region="us-east-1", service="sqs",
            signed_body_value=hashlib.sha256(body).hexdigest())
        await asyncio.wrap_future(auth.aws_sign_request(request, config))
        chunks: list[bytes] = []
        stream = connection.request(request, on_body=lambda chunk, **_: chunks.append(chunk))
        stream.activate()
        status = await asyncio.wrap_future(stream.completion_future)
        answer = json.loads(b"".join(chunks))
        if status != 200 or "MessageId" not in answer:
            raise RuntimeError(f"awscrt: {status} {answer}")
        return answer

    return send, connection.close


def sign_only() -> dict[str, float]:
    """Microseconds of CPU to sign one SendMessage, lean vs awscrt (no I/O)."""
    from awscrt import auth, http

    from smtp_relay import sigv4

    body = json.dumps({"QueueUrl": "q", "MessageBody": BODY}).encode()
    headers = {"Host": "sqs.us-east-1.amazonaws.com", "X-Amz-Target": "AmazonSQS.SendMessage",
               "Content-Type": "application/x-amz-json-1.0", "Content-Length": str(len(body))}
    credentials = sigv4.Credentials("AKIDEXAMPLE", "secret", "token")
    provider = auth.AwsCredentialsProvider.new_static("AKIDEXAMPLE", "secret", "token")
    count = 5000
    started = time.process_time()
    for _ in range(count):
        sigv4.sign("POST", headers["Host"], "/", headers, hashlib.sha256(body).hexdigest(),
                   credentials, "us-east-1", "sqs", time.strftime("%Y%m%dT%H%M%SZ"))
    lean = (time.process_time() - started) / count * 1e6
    started = time.process_time()
    for _ in range(count):
        request = http.HttpRequest("POST", "/", http.HttpHeaders(list(headers.items())),
                                   io.BytesIO(body))
        config = auth.AwsSigningConfig(
            algorithm=auth.AwsSigningAlgorithm.V4,
            signature_type=auth.AwsSignatureType.HTTP_REQUEST_HEADERS,
            credentials_provider=provider, region="us-east-1", service="sqs",
            signed_body_value=hashlib.sha256(body).hexdigest())
        auth.aws_sign_request(request, config).result()
    crt = (time.process_time() - started) / count * 1e6
    return {"lean_sign_us": lean, "awscrt_sign_us": crt}


async def measure(endpoint: str) -> dict[str, dict[str, float]]:
    """CPU and wall microseconds per request for each client, medians over ROUNDS."""
    senders = {"lean": await lean_sender(endpoint), "awscrt": await awscrt_sender(endpoint),
               "botocore": await botocore_sender(endpoint)}
    figures: dict[str, dict[str, list[float]]] = {n: {"cpu_us": [], "wall_us": []}
                                                  for n in senders}
    for number in range(ROUNDS):
        order = list(senders) if number % 2 == 0 else list(reversed(senders))
        for name in order:
            send, _ = senders[name]
            for _ in range(50):  # warm the connection
                await send()
            cpu, wall = time.process_time(), time.monotonic()
            for _ in range(REQUESTS):
                await send()
            figures[name]["cpu_us"].append((time.process_time() - cpu) / REQUESTS * 1e6)
            figures[name]["wall_us"].append((time.monotonic() - wall) / REQUESTS * 1e6)
    for _, close in senders.values():
        close()
    return {name: {k: statistics.median(v) for k, v in values.items()}
            for name, values in figures.items()}


def main() -> int:
    """Run the comparison and print it as JSON and a table."""
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "port"
        sink = subprocess.Popen([sys.executable, str(REPO / "bench" / "spool_sink.py"),
                                 "--ready-file", str(ready)])
        try:
            while not ready.exists():
                time.sleep(0.05)
            endpoint = f"http://127.0.0.1:{ready.read_text()}"
            os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench",
                               "AWS_SECRET_ACCESS_KEY": "bench",
                               "AWS_DEFAULT_REGION": "us-east-1"})
            results = asyncio.run(measure(endpoint))
        finally:
            sink.terminate()
            sink.wait()
    results["sign_only"] = sign_only()
    print(json.dumps(results, indent=2))
    print("\n| client | CPU µs/request | wall µs/request |\n|---|---|---|")
    for name in ("lean", "awscrt", "botocore"):
        print(f"| {name} | {results[name]['cpu_us']:.0f} | {results[name]['wall_us']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
