"""Helpers the commands share: time arguments and stamps, and the trail of a Location."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sesrelay.cli.where import Location
from sesrelay.config import PARAMETERS, ConfigError
from sesrelay.config.values import parse_retention, time_parser
from sesrelay.trail import TrailReader, TrailWriter

_parse_time = time_parser("s")
# The trail's retention when a message's own items do not show it.
DEFAULT_RETENTION = parse_retention(PARAMETERS["sesrelay_trail_retention"].default,
                                    "sesrelay_trail_retention")


def duration(text: str) -> timedelta:
    """An argparse type: a Postfix time value (90s, 30m, 24h, 7d, 2w; bare numbers are
    seconds)."""
    try:
        return timedelta(seconds=_parse_time(text, "--since"))
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_stamp(value: Any) -> datetime | None:
    """A trail or SES timestamp (ISO 8601) as an aware datetime; None if it is not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def show_utc(value: Any) -> str:
    """A timestamp as trace shows it: UTC to the millisecond, or the text as given."""
    parsed = parse_stamp(value)
    if parsed is None:
        return str(value or "?")
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def trail_reader(location: Location) -> TrailReader:
    """The trail's reader for this environment."""
    return TrailReader(location.client("dynamodb"), location.trail_table)


def trail_writer(location: Location, state: dict[str, Any] | None) -> TrailWriter:
    """A writer for the CLI's notes (deleted, flushed, redriven). It keeps the retention
    the message's last writer used (its state item's expiry minus its last update), as
    the CLI does not know the environment's sesrelay_trail_retention."""
    retention = DEFAULT_RETENTION
    if state:
        updated = parse_stamp(state.get("updated_at"))
        expires = state.get("expires")
        if updated is not None and isinstance(expires, int | float):
            retention = max(int(expires - updated.timestamp()), 0) or DEFAULT_RETENTION
    return TrailWriter(location.client("dynamodb"), location.trail_table, retention)


def now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.fromtimestamp(time.time(), UTC)
