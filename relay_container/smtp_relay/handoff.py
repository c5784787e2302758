"""The durable handoff: message bytes to S3, then the envelope to SQS.

The relay answers 250 only after both calls succeeded. If either call fails (or times
out, when it may still have taken effect) the S3 object is deleted again, so an envelope
that reached SQS anyway finds no object and the worker drops it: nothing the client was
told to retry is ever sent by us.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from botocore.exceptions import BotoCoreError, ClientError

from sesrelay import aws
from sesrelay.spool import META_CONTRACT_VERSION, META_QUEUE_ID, Envelope

log = logging.getLogger("sesrelay.relay")

# Enough threads to keep the HTTP connection pool (aws.CLIENT_CONFIG) busy.
_executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="spool")


class SpoolError(Exception):
    """The message could not be made durable; the client must retry (451)."""


class Spool:
    """Writes accepted messages to the S3 bucket and SQS queue named in the configuration."""

    def __init__(self, bucket: str, queue_url: str) -> None:
        self.bucket = bucket
        self.queue_url = queue_url
        self._s3 = aws.client("s3")
        self._sqs = aws.client("sqs")

    async def store(self, envelope: Envelope, message: bytes | bytearray) -> None:
        """Make the message durable, off the event loop. Raises SpoolError on any failure."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(_executor, self._store, envelope, message)

    def _store(self, envelope: Envelope, message: bytes | bytearray) -> None:
        try:
            self._s3.put_object(
                Bucket=envelope.bucket, Key=envelope.key, Body=message,
                ContentType="message/rfc822",
                Metadata={META_QUEUE_ID: envelope.queue_id, META_CONTRACT_VERSION:
                          str(envelope.version)},
            )
        except (BotoCoreError, ClientError) as exc:
            # A failed or timed-out PutObject may still have stored the object.
            self._withdraw(envelope)
            raise SpoolError(f"S3 PutObject failed: {exc}") from exc
        try:
            self._sqs.send_message(QueueUrl=self.queue_url, MessageBody=envelope.to_json())
        except (BotoCoreError, ClientError) as exc:
            self._withdraw(envelope)
            raise SpoolError(f"SQS SendMessage failed: {exc}") from exc

    def _withdraw(self, envelope: Envelope) -> None:
        try:
            self._s3.delete_object(Bucket=envelope.bucket, Key=envelope.key)
        except (BotoCoreError, ClientError) as exc:
            # The worker never sends an object without an envelope, and the bucket's
            # lifecycle rule expires it; this is untidy, not dangerous.
            log.warning("%s: could not delete s3://%s/%s after the SQS failure: %s",
                        envelope.queue_id, envelope.bucket, envelope.key, exc)
