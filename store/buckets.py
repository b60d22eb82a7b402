"""UTC time buckets shared by every backend, so that both answer with the same bucket starts.

Minutes, hours and days are fixed lengths from the epoch; weeks start on Monday 00:00 UTC (the epoch was a
Thursday, so a week bucket is offset by four days); months are calendar months.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from store.base import Bucket, QueryTooLarge

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000
WEEK_MS: Final = 7 * DAY_MS
# 1970-01-05, the first Monday after the epoch.
WEEK_OFFSET_MS: Final = 4 * DAY_MS

FIXED_MS: Final = {Bucket.MINUTE: MINUTE_MS, Bucket.HOUR: HOUR_MS, Bucket.DAY: DAY_MS, Bucket.WEEK: WEEK_MS}

# Largest number of buckets one aggregate or series may span (a minute series over a week is 10,080).
MAX_BUCKETS: Final = 20_000


def floor_ms(time_ms: int, bucket: Bucket) -> int:
    if bucket is Bucket.MONTH:
        moment = datetime.fromtimestamp(time_ms / 1000, UTC)
        return int(datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp() * 1000)
    size = FIXED_MS[bucket]
    offset = WEEK_OFFSET_MS if bucket is Bucket.WEEK else 0
    return (time_ms - offset) // size * size + offset


def next_ms(bucket_start_ms: int, bucket: Bucket) -> int:
    """The start of the bucket after the one starting at `bucket_start_ms`."""
    if bucket is Bucket.MONTH:
        moment = datetime.fromtimestamp(bucket_start_ms / 1000, UTC)
        year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
        return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)
    return bucket_start_ms + FIXED_MS[bucket]


def ceil_ms(time_ms: int, bucket: Bucket) -> int:
    start = floor_ms(time_ms, bucket)
    return start if start == time_ms else next_ms(start, bucket)


def widen(from_ms: int, to_ms: int, bucket: Bucket) -> tuple[int, int]:
    """[from_ms, to_ms) widened to whole buckets; refuses spans of more than MAX_BUCKETS buckets."""
    if from_ms >= to_ms:
        raise ValueError("`from` must be earlier than `to`")
    start, end = floor_ms(from_ms, bucket), ceil_ms(to_ms, bucket)
    approx_size = 30 * DAY_MS if bucket is Bucket.MONTH else FIXED_MS[bucket]
    if (end - start) // approx_size > MAX_BUCKETS:
        raise QueryTooLarge(
            f"{(end - start) // approx_size} {bucket.value} buckets asked; at most {MAX_BUCKETS}: "
            "use a larger bucket or a shorter time range"
        )
    return start, end
