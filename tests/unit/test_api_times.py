"""Instants: the status's RFC 3339 with milliseconds, and what Kubernetes and clients write."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from img2img.api.times import format_time_ms, parse_rfc3339, parse_time_ms

# 2024-11-24T17:00:00Z, as `date -u -d 2024-11-24T17:00:00Z +%s` prints it (x 1000)
NOV_24 = 1732467600000


def test_format_has_milliseconds_in_utc():
    assert format_time_ms(NOV_24 + 123) == "2024-11-24T17:00:00.123Z"
    assert format_time_ms(NOV_24 + 5) == "2024-11-24T17:00:00.005Z"
    assert format_time_ms(NOV_24) == "2024-11-24T17:00:00.000Z"


@pytest.mark.parametrize("text, expected", [
    ("2024-11-24T17:00:00Z", datetime(2024, 11, 24, 17, tzinfo=timezone.utc)),  # as Kubernetes writes it
    ("2024-11-24t17:00:00z", datetime(2024, 11, 24, 17, tzinfo=timezone.utc)),  # RFC 3339 allows lower case
    ("2024-11-24T17:00:00.123456Z", datetime(2024, 11, 24, 17, 0, 0, 123456, tzinfo=timezone.utc)),
    ("2024-11-24T18:00:00+01:00", datetime(2024, 11, 24, 17, tzinfo=timezone.utc)),
    ("2024-11-24T17:00:00", datetime(2024, 11, 24, 17, tzinfo=timezone.utc)),  # no offset: UTC
])
def test_rfc3339_parses_to_an_aware_instant(text, expected):
    parsed = parse_rfc3339(text)
    assert parsed == expected and parsed.tzinfo is not None


def test_rfc3339_keeps_the_writers_offset():
    assert parse_rfc3339("2024-11-24T18:00:00+01:00").utcoffset() == timedelta(hours=1)


def test_rfc3339_absent_is_none_and_garbage_is_an_error():
    assert parse_rfc3339(None) is None and parse_rfc3339("") is None
    with pytest.raises(ValueError):
        parse_rfc3339("yesterday")


@pytest.mark.parametrize("value, ms", [
    ("2024-11-24T17:00:00Z", NOV_24), ("2024-11-24T17:00:00.123Z", NOV_24 + 123),
    ("2024-11-24T18:00:00+01:00", NOV_24), (NOV_24 + 5, NOV_24 + 5), (str(NOV_24), NOV_24),
    ("", None), (None, None), ("yesterday", None), (True, None), ({"a": 1}, None)])
def test_time_ms_reads_instants_and_ms_and_treats_the_unreadable_as_missing(value, ms):
    assert parse_time_ms(value) == ms


def test_format_and_parse_round_trip():
    assert parse_time_ms(format_time_ms(NOV_24 + 123_456)) == NOV_24 + 123_456
