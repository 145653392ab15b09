"""Log output: plain text or one JSON object per line (``log_format="json"``).

The access lines (logger ``fullduplex.access``) carry their fields as record
attributes too (``peer``, ``method``, ``path``, ``status``/``close_code``,
``duration_ms``, ``bytes_in``, ``bytes_out``...), so the JSON output has them as keys
instead of one string to parse.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Final

__all__ = ["LOG_FORMATS", "JSONFormatter", "configure_logging"]

LOG_FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

#: Attributes every LogRecord has; anything else was passed with ``extra=``.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}


class JSONFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the
    record's ``extra`` fields, and the formatted traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(level: int | str = logging.INFO, log_format: str = "text") -> None:
    """Set up the root logger (once) and give its handlers the ``log_format``
    formatter: ``"text"`` or ``"json"``."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be 'text' or 'json', not {log_format!r}")
    if isinstance(level, str):
        level = getattr(logging, level.upper())
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format=TEXT_FORMAT)
    else:
        root.setLevel(level)
    formatter = JSONFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    for handler in root.handlers:
        handler.setFormatter(formatter)
