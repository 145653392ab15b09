"""Named limits with safe defaults; each one has a unit and the close code it triggers."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits enforced by the protocol core.

    ``None`` disables a limit (not recommended on a server facing the internet). These
    defaults are also the App's (``websocket_max_*``, ``max_header_*``): the settings
    read them from here, since this layer cannot depend on the one above it.
    """

    #: Largest message accepted, in bytes, after decompression. Exceeding it: close 1009.
    #: Checked on each frame's length field before the payload is read.
    max_message_size: int | None = 1 * MiB
    #: Largest single frame payload accepted, in bytes (as on the wire). Exceeding it: 1009.
    max_frame_size: int | None = 1 * MiB
    #: Frames one fragmented message may span whatever their size; beyond it each frame
    #: must bring 64 payload bytes on average (connection.FRAME_OVERHEAD). Exceeding: 1009.
    max_fragments: int | None = 1024
    #: Largest opening-handshake head (request or response line plus headers), in bytes.
    #: Exceeding it: 431 on the server, HandshakeFailed on the client.
    max_header_size: int = 16 * KiB
    #: Most header lines in the opening handshake. Exceeding it: 431.
    max_header_count: int = 100

    def __post_init__(self) -> None:
        for name in ("max_message_size", "max_frame_size", "max_fragments"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None, not {value!r}")
        if self.max_header_size <= 0 or self.max_header_count <= 0:
            raise ValueError("handshake header limits must be positive")
