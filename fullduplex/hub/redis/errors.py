"""Which Redis client errors mean "Redis cannot be reached"."""

from __future__ import annotations

from typing import Final

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["LOST", "RedisConnectionError"]

#: Errors that mean "Redis cannot be reached" (anything else is a bug or a bad reply).
LOST: Final = (RedisConnectionError, RedisTimeoutError, OSError)
