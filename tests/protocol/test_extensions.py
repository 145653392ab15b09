"""Sec-WebSocket-Extensions parsing and formatting (RFC 6455 §9.1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fullduplex.protocol.errors import NegotiationError
from fullduplex.protocol.extensions import format_extension, parse_extensions

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def test_single_extension_without_params() -> None:
    assert parse_extensions(["permessage-deflate"]) == [("permessage-deflate", [])]


def test_params_with_and_without_values() -> None:
    assert parse_extensions(
        ["permessage-deflate; client_max_window_bits; server_max_window_bits=10"]
    ) == [
        (
            "permessage-deflate",
            [("client_max_window_bits", None), ("server_max_window_bits", "10")],
        )
    ]


@pytest.mark.parametrize(
    "header",
    [
        "foo;a=1;b",
        "foo ; a = 1 ; b",
        " \tfoo\t;\ta\t=\t1\t;\tb\t ",
        'foo; a="1"; b',
        'foo; a = "1" ;b',
    ],
)
def test_whitespace_and_quoting_are_tolerated(header: str) -> None:
    assert parse_extensions([header]) == [("foo", [("a", "1"), ("b", None)])]


def test_several_extensions_and_headers_keep_their_order() -> None:
    headers = [
        "permessage-deflate; client_max_window_bits, permessage-deflate",
        "x-webkit-deflate-frame",
        "permessage-deflate; server_no_context_takeover",
    ]
    assert parse_extensions(headers) == [
        ("permessage-deflate", [("client_max_window_bits", None)]),
        ("permessage-deflate", []),
        ("x-webkit-deflate-frame", []),
        ("permessage-deflate", [("server_no_context_takeover", None)]),
    ]


def test_quoted_value_is_unescaped() -> None:
    assert parse_extensions(['foo; bits="\\1\\0"']) == [("foo", [("bits", "10")])]


def test_empty_list_elements_are_ignored() -> None:
    # RFC 7230 §7: recipients must accept and ignore empty list elements.
    assert parse_extensions([", foo , ,bar,", "", "  "]) == [("foo", []), ("bar", [])]


def test_names_are_returned_as_sent() -> None:
    assert parse_extensions(["PerMessage-Deflate; Server_No_Context_Takeover"]) == [
        ("PerMessage-Deflate", [("Server_No_Context_Takeover", None)])
    ]


@pytest.mark.parametrize(
    "header",
    [
        ";a",  # no extension name
        "foo;",  # no parameter name
        "foo; ;a",
        "foo; =1",
        "foo; a=",  # no value
        "foo; a==1",
        "foo; a=1 2",  # two values
        "foo bar",  # two tokens
        "foo; a b",
        'foo; a="1',  # unterminated quoted-string
        'foo; a="1"x',  # junk after quoted-string
        'foo; a=""',  # quoted value must be a token once unquoted (§9.1)
        'foo; a="1 0"',
        'foo; a="a,b"',
        'foo; a="x\\',  # dangling escape
        'foo; a="x\x01"',  # control character in quoted-string
        "foo; a=\x01",
        "f@o",
        "foo; a=é",
        "foo; a=(1)",
        'foo; "a"=1',
        "foo; a=1;; b",
    ],
)
def test_malformed_headers_raise_negotiation_error(header: str) -> None:
    with pytest.raises(NegotiationError, match="Sec-WebSocket-Extensions"):
        parse_extensions([header])


def test_one_malformed_header_among_several_fails() -> None:
    with pytest.raises(NegotiationError):
        parse_extensions(["foo", "bar;", "baz"])


def test_format_extension() -> None:
    assert format_extension("permessage-deflate", []) == "permessage-deflate"
    assert (
        format_extension(
            "permessage-deflate",
            [("server_no_context_takeover", None), ("client_max_window_bits", "10")],
        )
        == "permessage-deflate; server_no_context_takeover; client_max_window_bits=10"
    )


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("", []),
        ("a b", []),
        ("foo", [("", None)]),
        ("foo", [("a;b", None)]),
        ("foo", [("a", "")]),
        ("foo", [("a", "1 0")]),
        ("foo", [("a", '"1"')]),
    ],
)
def test_format_extension_rejects_non_tokens(
    name: str, params: list[tuple[str, str | None]]
) -> None:
    with pytest.raises(ValueError):
        format_extension(name, params)


tokens = st.text(alphabet=TCHARS, min_size=1, max_size=12)
extensions = st.tuples(tokens, st.lists(st.tuples(tokens, st.none() | tokens), max_size=5))


@given(st.lists(extensions, min_size=1, max_size=4))
def test_format_then_parse_round_trips(
    items: list[tuple[str, list[tuple[str, str | None]]]],
) -> None:
    header = ", ".join(format_extension(name, params) for name, params in items)
    assert parse_extensions([header]) == items


@given(st.text(max_size=40))
def test_parser_never_fails_unexpectedly(header: str) -> None:
    try:
        result = parse_extensions([header])
    except NegotiationError:
        return
    for name, params in result:
        assert name and all(char in TCHARS for char in name)
        for param, value in params:
            assert param and all(char in TCHARS for char in param)
            assert value is None or (value and all(char in TCHARS for char in value))
