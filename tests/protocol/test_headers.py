"""Headers multi-dict and header helpers (RFC 9110 §5)."""

from __future__ import annotations

import pytest

from fullduplex.protocol.headers import Headers, build_host, check_header, is_token, token_list


class TestHeaders:
    def test_case_insensitive_lookup_keeps_spelling(self) -> None:
        headers = Headers([("Content-Type", "text/plain")])
        assert headers["content-type"] == "text/plain"
        assert headers["CONTENT-TYPE"] == "text/plain"
        assert headers.get("Content-type") == "text/plain"
        assert "cOnTeNt-TyPe" in headers
        assert list(headers.items()) == [("Content-Type", "text/plain")]

    def test_missing(self) -> None:
        headers = Headers()
        with pytest.raises(KeyError):
            headers["Host"]
        assert headers.get("Host") is None
        assert headers.get("Host", "x") == "x"
        assert headers.get_all("Host") == []
        assert headers.count("Host") == 0
        assert "Host" not in headers
        assert 42 not in headers

    def test_repeated_headers_first_value_and_all(self) -> None:
        headers = Headers()
        headers.add("Set-Cookie", "a=1")
        headers.add("X-Other", "y")
        headers.add("set-cookie", "b=2")
        assert headers["Set-Cookie"] == "a=1"
        assert headers.get_all("SET-COOKIE") == ["a=1", "b=2"]
        assert headers.count("set-cookie") == 2
        assert len(headers) == 3
        assert list(headers) == [("Set-Cookie", "a=1"), ("X-Other", "y"), ("set-cookie", "b=2")]
        assert headers.keys() == ["set-cookie", "x-other"]

    def test_get_all_returns_a_copy(self) -> None:
        headers = Headers([("A", "1")])
        headers.get_all("A").append("2")
        assert headers.get_all("A") == ["1"]

    def test_setitem_replaces_in_place(self) -> None:
        headers = Headers([("A", "1"), ("B", "2"), ("a", "3")])
        headers["A"] = "new"
        assert list(headers.items()) == [("A", "new"), ("B", "2")]
        assert headers.get_all("a") == ["new"]
        headers["C"] = "4"
        assert list(headers.items()) == [("A", "new"), ("B", "2"), ("C", "4")]

    def test_delitem_and_pop_all(self) -> None:
        headers = Headers([("A", "1"), ("B", "2"), ("a", "3")])
        del headers["a"]
        assert list(headers.items()) == [("B", "2")]
        assert "A" not in headers
        with pytest.raises(KeyError):
            del headers["A"]
        assert headers.pop_all("b") == ["2"]
        assert headers.pop_all("b") == []
        assert len(headers) == 0

    def test_copy_is_independent(self) -> None:
        headers = Headers([("A", "1")])
        other = headers.copy()
        other.add("A", "2")
        other.add("B", "3")
        assert headers.get_all("A") == ["1"]
        assert "B" not in headers
        assert other.get_all("A") == ["1", "2"]

    def test_equality(self) -> None:
        assert Headers([("A", "1")]) == Headers([("a", "1")])
        assert Headers([("A", "1"), ("B", "2")]) != Headers([("B", "2"), ("A", "1")])
        assert Headers() != {}

    def test_serialize(self) -> None:
        headers = Headers([("Host", "example.com"), ("X-Latin", "caf\xe9")])
        assert headers.serialize() == b"Host: example.com\r\nX-Latin: caf\xe9\r\n"
        assert Headers().serialize() == b""

    @pytest.mark.parametrize(
        "value",
        ["a\r\nInjected: yes", "a\nb", "a\rb", "a\x00b", "\r\n"],
    )
    def test_injection_in_value_rejected(self, value: str) -> None:
        headers = Headers()
        with pytest.raises(ValueError):
            headers.add("X-Test", value)
        with pytest.raises(ValueError):
            headers["X-Test"] = value
        assert len(headers) == 0

    @pytest.mark.parametrize("name", ["", "X Test", "X:Test", "X\r\nY", "X\x00", "Caf\xe9"])
    def test_invalid_name_rejected(self, name: str) -> None:
        with pytest.raises(ValueError):
            Headers().add(name, "v")

    def test_value_must_be_latin1(self) -> None:
        with pytest.raises(ValueError):
            Headers().add("X-Test", "snow \u2603")

    def test_setitem_existing_validates(self) -> None:
        headers = Headers([("A", "1")])
        with pytest.raises(ValueError):
            headers["A"] = "x\ny"
        assert headers.get_all("A") == ["1"]

    def test_check_header_and_is_token(self) -> None:
        check_header("X-Ok", "fine value\twith tab")
        with pytest.raises(ValueError):
            check_header("X-Bad", "a\r\n")
        assert is_token("permessage-deflate")
        assert not is_token("a b")
        assert not is_token("")


class TestTokenList:
    def test_comma_lists_and_repeats(self) -> None:
        assert token_list(["keep-alive, Upgrade"]) == ["keep-alive", "Upgrade"]
        assert token_list(["a", "b,c"]) == ["a", "b", "c"]

    def test_ows_and_empty_elements(self) -> None:
        # RFC 9110 §5.6.1: empty list elements are ignored, OWS is trimmed.
        assert token_list([" ,\t a\t,,  b ,", ""]) == ["a", "b"]
        assert token_list([]) == []

    def test_lower(self) -> None:
        assert token_list(["WebSocket, H2C"], lower=True) == ["websocket", "h2c"]
        assert token_list(["WebSocket"]) == ["WebSocket"]


class TestBuildHost:
    @pytest.mark.parametrize(
        ("host", "port", "secure", "expected"),
        [
            ("example.com", 80, False, "example.com"),
            ("example.com", 443, True, "example.com"),
            ("example.com", 443, False, "example.com:443"),
            ("example.com", 80, True, "example.com:80"),
            ("example.com", 8080, False, "example.com:8080"),
            ("::1", 80, False, "[::1]"),
            ("::1", 8765, True, "[::1]:8765"),
            ("[::1]", 8765, False, "[::1]:8765"),
            ("bücher.example", 80, False, "xn--bcher-kva.example"),
        ],
    )
    def test_build_host(self, host: str, port: int, secure: bool, expected: str) -> None:
        assert build_host(host, port, secure) == expected
