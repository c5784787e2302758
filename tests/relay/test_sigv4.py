"""The relay's own SigV4 signer (smtp_relay/sigv4.py) against botocore's as the oracle:
for the same request, credentials and time, the same Authorization header to the byte,
over many generated requests. A wrong signature is an S3 or SQS request AWS refuses, so
every message would get 451."""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
from typing import Any
from urllib.parse import urlsplit

import botocore.session
import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtp_relay import sigv4
from smtp_relay.spool_client import put_digests

TOKEN_ALPHABET = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
credentials = st.builds(
    sigv4.Credentials,
    access_key=st.from_regex(r"[A-Z0-9]{16,20}", fullmatch=True),
    secret_key=st.text(TOKEN_ALPHABET, min_size=1, max_size=40),
    token=st.none() | st.text(TOKEN_ALPHABET, min_size=1, max_size=400))
moments = st.datetimes(min_value=datetime.datetime(2000, 1, 1),
                       max_value=datetime.datetime(2099, 12, 31))
endpoints = st.sampled_from([
    "https://sesrelay-spool.s3.eu-west-1.amazonaws.com", "https://s3.us-east-1.amazonaws.com",
    "http://127.0.0.1:4566", "http://LOCALHOST:80", "https://sqs.ap-south-1.amazonaws.com:443",
    "http://sqs.us-east-1.localhost.localstack.cloud:4566"])
regions = st.sampled_from(["us-east-1", "eu-west-1", "ap-southeast-2", "us-gov-west-1"])
# Keys with spaces, unicode (non-BMP too), "+", "%", "~", "//" and dots.
keys = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=200)
# Header values with runs of spaces and tabs, which the canonical form collapses.
metadata_values = st.text(st.sampled_from("ab Z09 \t-_.:/=+"), max_size=40)
bodies = st.binary(max_size=20000) | st.sampled_from([b"", b"x" * (1024 * 1024 + 7)])


def oracle(signer: type[SigV4Auth], frozen: sigv4.Credentials, region: str, service: str,
           moment: datetime.datetime, request: AWSRequest,
           monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The headers botocore signs the request with at that moment."""
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: moment)
    signer(Credentials(frozen.access_key, frozen.secret_key, frozen.token), service,
           region).add_auth(request)
    return dict(request.headers.items())


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(endpoint=endpoints, region=regions, key=keys, body=bodies, frozen=credentials,
       moment=moments, metadata=st.dictionaries(st.from_regex(r"[a-z][a-z0-9-]{0,15}",
                                                              fullmatch=True),
                                                metadata_values, max_size=3))
def test_put_object_is_signed_as_botocore_signs_it(
        endpoint: str, region: str, key: str, body: bytes, frozen: sigv4.Credentials,
        moment: datetime.datetime, metadata: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    https = endpoint.startswith("https")
    origin = endpoint.split("//")[1].lower().removesuffix(":443").removesuffix(":80")
    path = "/bucket/" + sigv4.uri_path(key)
    crc, payload = put_digests(body, https)
    headers = {"Host": origin, "Content-Type": "message/rfc822",
               "Content-Length": str(len(body)), "x-amz-checksum-crc32": crc,
               **{f"x-amz-meta-{name}": value for name, value in metadata.items()}}
    ours = sigv4.sign("PUT", origin, path, headers, payload, frozen, region, "s3",
                      moment.strftime("%Y%m%dT%H%M%SZ"), s3=True)
    request = AWSRequest("PUT", endpoint + path, headers=dict(headers), data=body)
    # What botocore's PutObject sets up: a streaming body with its checksum in a header.
    request.context.update({"has_streaming_input": True, "checksum": {
        "request_algorithm": {"in": "header", "name": "x-amz-checksum-crc32"}}})
    theirs = oracle(S3SigV4Auth, frozen, region, "s3", moment, request, monkeypatch)
    assert ours == theirs


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(endpoint=endpoints, region=regions, frozen=credentials, moment=moments,
       messages=st.lists(st.text(max_size=3000), min_size=1, max_size=10),
       operation=st.sampled_from(["SendMessage", "SendMessageBatch"]))
def test_send_message_is_signed_as_botocore_signs_it(
        endpoint: str, region: str, frozen: sigv4.Credentials, moment: datetime.datetime,
        messages: list[str], operation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    origin = endpoint.split("//")[1].lower().removesuffix(":443").removesuffix(":80")
    body = json.dumps({"QueueUrl": f"{endpoint}/000000000000/q", "Entries": [
        {"Id": str(n), "MessageBody": m} for n, m in enumerate(messages)]}).encode()
    headers = {"Host": origin, "X-Amz-Target": f"AmazonSQS.{operation}",
               "Content-Type": "application/x-amz-json-1.0", "Content-Length": str(len(body))}
    ours = sigv4.sign("POST", origin, "/", headers, hashlib.sha256(body).hexdigest(), frozen,
                      region, "sqs", moment.strftime("%Y%m%dT%H%M%SZ"))
    request = AWSRequest("POST", endpoint + "/", headers=dict(headers), data=body)
    theirs = oracle(SigV4Auth, frozen, region, "sqs", moment, request, monkeypatch)
    assert ours == theirs


def test_a_wrong_secret_changes_the_signature() -> None:
    """The comparison above can fail: the signature depends on the secret."""
    args = ("POST", "h", "/", {"Host": "h"}, sigv4.EMPTY_SHA256)
    first = sigv4.sign(*args, sigv4.Credentials("AK", "secret-1"), "us-east-1", "sqs",
                       "20260101T000000Z")
    second = sigv4.sign(*args, sigv4.Credentials("AK", "secret-2"), "us-east-1", "sqs",
                        "20260101T000000Z")
    assert first["Authorization"] != second["Authorization"]


@functools.cache
def path_style_s3() -> Any:
    """A botocore S3 client whose URLs are path-style (an IP endpoint); it sends nothing."""
    return botocore.session.get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="AK", aws_secret_access_key="SK")


@settings(max_examples=300, deadline=None)
@given(key=keys)
def test_keys_are_encoded_in_the_url_as_botocore_encodes_them(key: str) -> None:
    """The path signed and sent is the one botocore would use for that key."""
    url = path_style_s3().generate_presigned_url("put_object",
                                                 Params={"Bucket": "bucket", "Key": key})
    assert urlsplit(url).path == "/bucket/" + sigv4.uri_path(key)
