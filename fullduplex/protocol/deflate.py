"""permessage-deflate (RFC 7692): negotiation and the per-connection codec, sans-I/O.

Negotiation (RFC 7692 §7.1) is three functions: a client builds its offer with
:func:`client_offer` and checks the server's answer with
:func:`client_accept_response`; a server picks among the client's offers with
:func:`server_accept_offers`. Each returns a :class:`PerMessageDeflate`, the codec
the connection feeds frame payloads through (RFC 7692 §7.2).

Parameter names are read from our side's point of view in :class:`DeflateOptions`
but sent under their RFC names, so one options object serves both roles:

- ``server_no_context_takeover``: a server resets its compressor after each
  message; a client asks the server to.
- ``client_no_context_takeover``: a server requires the client to reset its
  compressor; a client resets its own (and offers the parameter as a hint).
- ``server_max_window_bits``: a server compresses with this window (None: 12);
  a client asks the server for at most this (None: no request).
- ``client_max_window_bits``: a server asks the client for at most this, if the
  client offered the parameter (None: 12); a client offers it as its own limit
  (None: offers the parameter without a value, and compresses with 15).

A compressor may always use a smaller window than the one negotiated, and a
decompressor must accept any window up to the negotiated one; that asymmetry is
what lets a server keep its compressor small without asking anything.

Window bits 8. zlib refuses ``windowBits=8`` for raw deflate (``deflateInit2``
rejects it since zlib 1.2.9; some versions silently use 9). A 9-bit window could
emit distances a strict 256-byte inflater rejects, so when a peer limits us to 8
we compress with ``windowBits=9`` and strategy ``Z_RLE``: its matches all have
distance 1 (zlib manual), which is valid under every window size. Our
decompressor always uses at least 9 bits: a 512-byte window reads every stream
valid for 256 bytes, and also tolerates peers whose zlib silently used 9.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import InvalidPayload, MessageTooBig, NegotiationError
from .extensions import ExtensionParams, format_extension

__all__ = [
    "EXTENSION_NAME",
    "SERVER_DEFAULT_WINDOW_BITS",
    "DeflateOptions",
    "PerMessageDeflate",
    "client_accept_response",
    "client_offer",
    "server_accept_offers",
]

#: The extension token (RFC 7692 §7).
EXTENSION_NAME = "permessage-deflate"

#: Window a server compresses with, and asks clients for, when the corresponding
#: ``*_max_window_bits`` option is None: 4 KiB windows instead of zlib's 32 KiB.
#: See docs/topics/compression.md for the measured cost and ratio.
SERVER_DEFAULT_WINDOW_BITS = 12

_MIN_WINDOW_BITS = 8
_MAX_WINDOW_BITS = 15
# RFC 7692 §7.2.1 / §7.2.2: the empty stored block that ends a sync flush.
_TAIL = b"\x00\x00\xff\xff"
# Largest max_length zlib's decompress() accepts (a Py_ssize_t).
_MAX_LENGTH = sys.maxsize
# RFC 7692 §7.1.2.1 / §7.1.2.2: "a decimal integer value without leading zeroes
# between 8 to 15, inclusive".
_WINDOW_BITS_VALUES = {str(bits): bits for bits in range(_MIN_WINDOW_BITS, _MAX_WINDOW_BITS + 1)}

_SERVER_NO_CONTEXT_TAKEOVER = "server_no_context_takeover"
_CLIENT_NO_CONTEXT_TAKEOVER = "client_no_context_takeover"
_SERVER_MAX_WINDOW_BITS = "server_max_window_bits"
_CLIENT_MAX_WINDOW_BITS = "client_max_window_bits"


def _check_window_bits(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int or None, not {value!r}")
    if not _MIN_WINDOW_BITS <= value <= _MAX_WINDOW_BITS:
        raise ValueError(f"{name} must be between 8 and 15, not {value}")


@dataclass(frozen=True, slots=True)
class DeflateOptions:
    """What our side wants from permessage-deflate; see the module docstring for roles.

    The defaults favour memory as much as bandwidth: a server compresses with a
    4 KiB window and ``mem_level=5``, asks clients for a 4 KiB window too, and keeps
    context between messages (small chat-like messages shrink ~3x with context,
    ~1.4x without). docs/topics/compression.md has the numbers.
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int | None = None
    client_max_window_bits: int | None = None
    #: zlib compression level, 0 (store) to 9. 6 is zlib's default; with small
    #: windows 9 gains nothing measurable.
    compress_level: int = 6
    #: zlib memLevel, 1 to 9: sizes the hash table and the literal buffer,
    #: 2**(mem_level + 9) bytes of compressor memory. zlib's default is 8 (128 KiB).
    mem_level: int = 5
    #: Messages shorter than this many bytes are sent uncompressed (RSV1 is
    #: per message, RFC 7692 §6). Below ~32 bytes deflate without context makes
    #: data larger and with context saves fewer bytes than a TCP header.
    min_size: int = 32

    def __post_init__(self) -> None:
        _check_window_bits("server_max_window_bits", self.server_max_window_bits)
        _check_window_bits("client_max_window_bits", self.client_max_window_bits)
        if not 0 <= self.compress_level <= 9:
            raise ValueError(f"compress_level must be between 0 and 9, not {self.compress_level}")
        if not 1 <= self.mem_level <= 9:
            raise ValueError(f"mem_level must be between 1 and 9, not {self.mem_level}")
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0, not {self.min_size}")


class PerMessageDeflate:
    """The negotiated permessage-deflate codec of one connection (RFC 7692 §7.2).

    "Local" is our side (our compressor), "remote" the peer (our decompressor).
    zlib objects are created on first use; when the side they serve does not take
    over context they are dropped after each message, so an idle connection holds
    no zlib memory for that direction.
    """

    name = EXTENSION_NAME

    __slots__ = (
        "_deflater",
        "_in_message",
        "_inflate_wbits",
        "_inflater",
        "_message_size",
        "compress_level",
        "local_max_window_bits",
        "local_no_context_takeover",
        "mem_level",
        "min_size",
        "remote_max_window_bits",
        "remote_no_context_takeover",
    )

    def __init__(
        self,
        *,
        local_no_context_takeover: bool = False,
        remote_no_context_takeover: bool = False,
        local_max_window_bits: int = _MAX_WINDOW_BITS,
        remote_max_window_bits: int = _MAX_WINDOW_BITS,
        compress_level: int = 6,
        mem_level: int = 5,
        min_size: int = 0,
    ) -> None:
        _check_window_bits("local_max_window_bits", local_max_window_bits)
        _check_window_bits("remote_max_window_bits", remote_max_window_bits)
        #: We reset our compressor after each message.
        self.local_no_context_takeover = local_no_context_takeover
        #: The peer resets its compressor after each message, so we reset our decompressor.
        self.remote_no_context_takeover = remote_no_context_takeover
        #: Window our compressor uses (at most what the peer allowed).
        self.local_max_window_bits = local_max_window_bits
        #: Largest window the peer may compress with.
        self.remote_max_window_bits = remote_max_window_bits
        self.compress_level = compress_level
        self.mem_level = mem_level
        self.min_size = min_size
        self._deflater: zlib._Compress | None = None
        self._inflater: zlib._Decompress | None = None
        # At least 9 bits: zlib-based peers limited to 8 really compress with 9.
        self._inflate_wbits = -max(remote_max_window_bits, 9)
        self._in_message = False  # an incoming compressed message has started
        self._message_size = 0  # bytes it has decompressed to so far

    def __repr__(self) -> str:
        return (
            f"PerMessageDeflate(local_no_context_takeover={self.local_no_context_takeover}, "
            f"remote_no_context_takeover={self.remote_no_context_takeover}, "
            f"local_max_window_bits={self.local_max_window_bits}, "
            f"remote_max_window_bits={self.remote_max_window_bits})"
        )

    # -- sending -------------------------------------------------------------

    def should_compress(self, size: int) -> bool:
        """Whether a message of ``size`` bytes is worth compressing (``min_size``)."""
        return size >= self.min_size

    def _new_deflater(self) -> zlib._Compress:
        if self.local_max_window_bits == _MIN_WINDOW_BITS:
            # zlib cannot make a 256-byte window for raw deflate; Z_RLE only emits
            # distance-1 matches, valid for any window (see the module docstring).
            return zlib.compressobj(
                self.compress_level, zlib.DEFLATED, -9, self.mem_level, zlib.Z_RLE
            )
        return zlib.compressobj(
            self.compress_level, zlib.DEFLATED, -self.local_max_window_bits, self.mem_level
        )

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        """Compress one whole message into the payload of its frame(s) (RFC 7692 §7.2.1)."""
        deflater = self._deflater
        if deflater is None:
            deflater = self._new_deflater()
            if not self.local_no_context_takeover:
                self._deflater = deflater
        return _deflate_message(deflater, data)

    @property
    def shared_key(self) -> tuple[int, int, int]:
        """What :meth:`compress_shared` output depends on: connections with equal keys
        can be sent the same compressed message."""
        return (self.local_max_window_bits, self.compress_level, self.mem_level)

    def compress_shared(self, data: bytes | bytearray | memoryview) -> bytes:
        """Compress one message independently of this connection's context (a fresh
        compressor with our parameters), so one result serves every connection with
        the same :attr:`shared_key`. A connection sent it must then
        :meth:`reset_compressor`: its peer's decompressor has seen text our own
        compressor did not produce, so our next message may not refer back past it."""
        return _deflate_message(self._new_deflater(), data)

    def reset_compressor(self) -> None:
        """Start our next message with a fresh compressor (no reference to earlier
        messages); always valid, since a decompressor needs no earlier context."""
        self._deflater = None


    # -- receiving -----------------------------------------------------------

    def decompress(
        self,
        data: bytes | bytearray | memoryview,
        fin: bool,
        max_size: int | None,
    ) -> bytes:
        """Decompress one frame's payload of a compressed message (RFC 7692 §7.2.2).

        Feed every frame of the message in order, ``fin=True`` on the last.
        ``max_size`` caps the decompressed size of the whole message.

        Raises :class:`MessageTooBig` (1009) when the message would exceed
        ``max_size`` and :class:`InvalidPayload` (1007) on corrupt data; the codec is
        unusable afterwards, as the connection is failing anyway.
        """
        inflater = self._inflater
        if inflater is None:
            inflater = self._inflater = zlib.decompressobj(self._inflate_wbits)
        chunk: bytes | bytearray | memoryview
        if fin:
            if not data and not self._in_message:
                # A compressed message with no payload at all: taken as the empty
                # message (the tail alone would stop inside a stored block header).
                if self.remote_no_context_takeover:
                    self._inflater = None
                return b""
            # §7.2.2: append 00 00 ff ff to the payload, then inflate. One copy is
            # cheaper than a second decompress() call, and small next to inflating.
            chunk = b"".join((data, _TAIL))
            # Past the end of a BFINAL block (§7.2.3.3) only our tail may remain.
            allowed_rest = len(_TAIL)
        elif not data:
            return b""
        else:
            chunk = data
            allowed_rest = 0
            self._in_message = True
        try:
            if inflater.eof:
                # A block with BFINAL set already ended the stream in an earlier frame.
                if data:
                    raise InvalidPayload("compressed data continues after the final deflate block")
                out = b""
            elif max_size is None:
                out = inflater.decompress(chunk)
            else:
                # Never let zlib produce more than max_size + 1 bytes for the message:
                # a few KiB of input can inflate to gigabytes (a deflate bomb).
                room = max_size - self._message_size
                if room < 0:
                    raise MessageTooBig(f"decompressed message exceeds {max_size} bytes")
                out = inflater.decompress(chunk, room + 1 if room < _MAX_LENGTH else _MAX_LENGTH)
                if len(out) > room or inflater.unconsumed_tail:
                    raise MessageTooBig(f"decompressed message exceeds {max_size} bytes")
            if inflater.eof and len(inflater.unused_data) > allowed_rest:
                raise InvalidPayload("compressed data continues after the final deflate block")
        except zlib.error as exc:
            self._reset_inflater()
            raise InvalidPayload(f"invalid compressed data: {exc}") from None
        except (InvalidPayload, MessageTooBig):
            self._reset_inflater()
            raise
        if fin:
            self._in_message = False
            self._message_size = 0
            # The peer starts from an empty window next time if it does not take over
            # context, or if it ended its deflate stream with a BFINAL block.
            if self.remote_no_context_takeover or inflater.eof:
                self._inflater = None
        else:
            self._message_size += len(out)
        return out

    def _reset_inflater(self) -> None:
        self._inflater = None
        self._in_message = False
        self._message_size = 0


# -- negotiation (RFC 7692 §7.1) ---------------------------------------------


def _deflate_message(deflater: zlib._Compress, data: bytes | bytearray | memoryview) -> bytes:
    """One message through ``deflater``, as the payload of its frame(s)."""
    body = deflater.compress(data)
    # §7.2.1: flush so the data ends with an empty stored block (00 00 ff ff),
    # then remove those four octets. An empty message thus becomes the single
    # octet 0x00 (the stored block's header bits), one valid form (§7.2.3.6).
    flushed = deflater.flush(zlib.Z_SYNC_FLUSH)
    if body:
        return body + flushed[:-4]
    return flushed[:-4]


@dataclass(slots=True)
class _Params:
    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int | None = None
    client_max_window_bits_offered: bool = False
    client_max_window_bits: int | None = None


def _window_bits(name: str, value: str | None) -> int:
    if value is None or value not in _WINDOW_BITS_VALUES:
        raise NegotiationError(f"{EXTENSION_NAME}: invalid value {value!r} for {name}")
    return _WINDOW_BITS_VALUES[value]


def _parse_params(params: Sequence[tuple[str, str | None]], *, response: bool) -> _Params:
    """Check the syntax of one offer's or response's parameters (RFC 7692 §7).

    §7: an offer (server declines it) or response (client fails) is invalid if it has
    an unknown parameter, a parameter with an invalid value, or a duplicate.
    """
    result = _Params()
    seen: set[str] = set()
    for name, value in params:
        if name in seen:
            raise NegotiationError(f"{EXTENSION_NAME}: duplicate parameter {name}")
        seen.add(name)
        if name in (_SERVER_NO_CONTEXT_TAKEOVER, _CLIENT_NO_CONTEXT_TAKEOVER):
            # §7.1.1.1, §7.1.1.2: "This extension parameter has no value."
            if value is not None:
                raise NegotiationError(f"{EXTENSION_NAME}: {name} takes no value")
            if name == _SERVER_NO_CONTEXT_TAKEOVER:
                result.server_no_context_takeover = True
            else:
                result.client_no_context_takeover = True
        elif name == _SERVER_MAX_WINDOW_BITS:
            # §7.1.2.1: a value 8..15 is required, in offers and responses alike.
            result.server_max_window_bits = _window_bits(name, value)
        elif name == _CLIENT_MAX_WINDOW_BITS:
            # §7.1.2.2: the value is optional in an offer; a response must carry one.
            result.client_max_window_bits_offered = True
            if value is not None or response:
                result.client_max_window_bits = _window_bits(name, value)
        else:
            raise NegotiationError(f"{EXTENSION_NAME}: unknown parameter {name}")
    return result


def _codec(
    options: DeflateOptions,
    *,
    local_no_context_takeover: bool,
    remote_no_context_takeover: bool,
    local_max_window_bits: int,
    remote_max_window_bits: int,
) -> PerMessageDeflate:
    return PerMessageDeflate(
        local_no_context_takeover=local_no_context_takeover,
        remote_no_context_takeover=remote_no_context_takeover,
        local_max_window_bits=local_max_window_bits,
        remote_max_window_bits=remote_max_window_bits,
        compress_level=options.compress_level,
        mem_level=options.mem_level,
        min_size=options.min_size,
    )


def client_offer(options: DeflateOptions) -> str:
    """The ``Sec-WebSocket-Extensions`` value a client sends to offer permessage-deflate.

    ``client_max_window_bits`` is always offered (§7.1.2.2), with a value if
    ``options.client_max_window_bits`` is set, so that a server may shrink our window
    to save its own memory.
    """
    params: ExtensionParams = []
    if options.server_no_context_takeover:
        params.append((_SERVER_NO_CONTEXT_TAKEOVER, None))
    if options.client_no_context_takeover:
        # §7.1.1.2: a hint that we will not use context takeover, even if the
        # server does not echo it.
        params.append((_CLIENT_NO_CONTEXT_TAKEOVER, None))
    if options.server_max_window_bits is not None:
        params.append((_SERVER_MAX_WINDOW_BITS, str(options.server_max_window_bits)))
    bits = options.client_max_window_bits
    params.append((_CLIENT_MAX_WINDOW_BITS, None if bits is None else str(bits)))
    return format_extension(EXTENSION_NAME, params)


def client_accept_response(
    options: DeflateOptions, params: list[tuple[str, str | None]]
) -> PerMessageDeflate:
    """Check the server's permessage-deflate response against our offer (RFC 7692 §7.1).

    ``params`` are the parameters of the ``permessage-deflate`` element of the
    response, for the offer built by :func:`client_offer` with the same ``options``.
    Raises :class:`NegotiationError` when the client must fail the connection.
    """
    response = _parse_params(params, response=True)
    # §7.1.1.1: a server accepting an offer with server_no_context_takeover MUST
    # include it in its response.
    if options.server_no_context_takeover and not response.server_no_context_takeover:
        raise NegotiationError(
            f"{EXTENSION_NAME}: response lacks server_no_context_takeover, which we offered"
        )
    # §7.1.2.1: a server accepting an offer with server_max_window_bits MUST answer
    # with server_max_window_bits of the same or a smaller value. Without a request,
    # the server MAY still announce one.
    remote_bits = response.server_max_window_bits
    if options.server_max_window_bits is not None:
        if remote_bits is None:
            raise NegotiationError(
                f"{EXTENSION_NAME}: response lacks server_max_window_bits, which we offered"
            )
        if remote_bits > options.server_max_window_bits:
            raise NegotiationError(
                f"{EXTENSION_NAME}: server_max_window_bits={remote_bits} is larger than"
                f" the {options.server_max_window_bits} we offered"
            )
    # §7.1.2.2: the response's client_max_window_bits has a value (checked by
    # _parse_params) and binds us. We always offer the parameter, so it is never
    # unexpected. A value above the one we offered is harmless: we keep ours.
    local_bits = options.client_max_window_bits or _MAX_WINDOW_BITS
    if response.client_max_window_bits is not None:
        local_bits = min(local_bits, response.client_max_window_bits)
    return _codec(
        options,
        # §7.1.1.2: with client_no_context_takeover in the response we MUST NOT use
        # context takeover; without it we still honour our own offer's hint.
        local_no_context_takeover=(
            response.client_no_context_takeover or options.client_no_context_takeover
        ),
        remote_no_context_takeover=response.server_no_context_takeover,
        local_max_window_bits=local_bits,
        remote_max_window_bits=remote_bits or _MAX_WINDOW_BITS,
    )


def _server_accept(options: DeflateOptions, offer: _Params) -> tuple[str, PerMessageDeflate]:
    response: ExtensionParams = []
    # §7.1.1.1: an offered server_no_context_takeover MUST be echoed; the server MAY
    # add it unasked.
    local_no_context_takeover = offer.server_no_context_takeover or (
        options.server_no_context_takeover
    )
    if local_no_context_takeover:
        response.append((_SERVER_NO_CONTEXT_TAKEOVER, None))
    # §7.1.1.2: the server MAY add client_no_context_takeover unasked. When the client
    # offered it as a hint we echo it, which makes it binding and lets us drop our
    # decompressor between messages.
    remote_no_context_takeover = offer.client_no_context_takeover or (
        options.client_no_context_takeover
    )
    if remote_no_context_takeover:
        response.append((_CLIENT_NO_CONTEXT_TAKEOVER, None))
    # §7.1.2.1: answer a requested server_max_window_bits with the same or a smaller
    # value. Unrequested, we do not announce our (smaller) window: a compressor may
    # always use less than allowed, and some clients reject the unsolicited parameter.
    local_bits = options.server_max_window_bits or SERVER_DEFAULT_WINDOW_BITS
    if offer.server_max_window_bits is not None:
        local_bits = min(local_bits, offer.server_max_window_bits)
        response.append((_SERVER_MAX_WINDOW_BITS, str(local_bits)))
    # §7.1.2.2: client_max_window_bits MUST NOT appear in the response unless offered;
    # if offered with a value, ours must not exceed it.
    remote_bits = _MAX_WINDOW_BITS
    if offer.client_max_window_bits_offered:
        remote_bits = options.client_max_window_bits or SERVER_DEFAULT_WINDOW_BITS
        if offer.client_max_window_bits is not None:
            remote_bits = min(remote_bits, offer.client_max_window_bits)
        response.append((_CLIENT_MAX_WINDOW_BITS, str(remote_bits)))
    codec = _codec(
        options,
        local_no_context_takeover=local_no_context_takeover,
        remote_no_context_takeover=remote_no_context_takeover,
        local_max_window_bits=local_bits,
        remote_max_window_bits=remote_bits,
    )
    return format_extension(EXTENSION_NAME, response), codec


def server_accept_offers(
    options: DeflateOptions, offers: list[list[tuple[str, str | None]]]
) -> tuple[str, PerMessageDeflate] | None:
    """Accept the first acceptable permessage-deflate offer (RFC 7692 §5, §7.1).

    ``offers`` holds the parameters of each ``permessage-deflate`` element of the
    request, in the client's order of preference. Invalid offers are declined (§7:
    unknown or duplicate parameter, invalid value) and the next one is tried.
    Returns the response's header element and the codec, or None to decline all.
    """
    for params in offers:
        try:
            offer = _parse_params(params, response=False)
        except NegotiationError:
            continue
        return _server_accept(options, offer)
    return None
