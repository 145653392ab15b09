"""RequestHandler, routing, cookies, templates, static files and error pages, exercised
over real loopback sockets with aiohttp's client (and the raw client where exact bytes
matter)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from email.utils import formatdate
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from fullduplex.server import (
    App,
    HTTPError,
    RequestHandler,
    Route,
    Router,
    authenticated,
    create_signed_value,
    decode_signed_value,
)
from fullduplex.testing import TestClient

if TYPE_CHECKING:
    from conftest import Kit

SECRET = "test-secret-0123456789"


# ---------------------------------------------------------------------- routing


class Args(RequestHandler):
    def get(self, *args: str | None, **kwargs: str) -> None:
        self.write({"args": list(args), "kwargs": kwargs})


class OnlyPost(RequestHandler):
    def post(self) -> None:
        self.write("posted")


class Greet(RequestHandler):
    def initialize(self, greeting: str) -> None:
        self.greeting = greeting

    def get(self, name: str) -> None:
        self.write(f"{self.greeting}, {name}")


def test_router_matching_rules() -> None:
    router = Router()
    router.add(Route(r"/user/(\w+)", Args))
    router.add(Route("/room/{room}", Args))
    router.add(Route(r"/file/{path:.+}", Args))
    router.add(Route(r"/year/(?P<year>\d{4})", Args))
    router.add(Route("/exact", Args))
    router.add(Route(r"/ex.*", OnlyPost))
    router.add(Route("/exact", OnlyPost))  # shadowed by the first /exact

    m = router.match("/user/bob")
    assert m is not None and m.args == ("bob",) and m.kwargs == {}
    m = router.match("/room/a%20b")
    assert m is not None and m.kwargs == {"room": "a b"}
    assert router.match("/room/a/b") is None  # a placeholder is one segment
    m = router.match("/room/a%2Fb")
    assert m is not None and m.kwargs == {"room": "a/b"}
    m = router.match("/file/x/y.txt")
    assert m is not None and m.kwargs == {"path": "x/y.txt"}
    m = router.match("/year/2024")
    assert m is not None and m.kwargs == {"year": "2024"}
    assert router.match("/year/24") is None  # whole-path match only
    assert router.match("/user/bob/extra") is None
    m = router.match("/exact")
    assert m is not None and m.route.handler is Args
    m = router.match("/exactly")
    assert m is not None and m.route.handler is OnlyPost
    with pytest.raises(ValueError):
        Route("no-slash", Args)


def test_routing_over_http() -> None:
    # in-process (fullduplex.testing): routing, not sockets, is under test here
    app = App(
        [
            (r"/user/(\w+)/(\d+)?", Args),
            ("/room/{room}/msg/{id:\\d+}", Args),
            ("/post", OnlyPost),
            ("/hi/{name}", Greet, {"greeting": "hello"}),
        ]
    )
    app.add_route("/added", Args)

    @app.route("/decorated")
    class Decorated(RequestHandler):
        def get(self) -> None:
            self.write("decorated")

    with TestClient(app) as http:
        assert http.get("/user/bob/42").json() == {"args": ["bob", "42"], "kwargs": {}}
        assert http.get("/user/bob/").json() == {"args": ["bob", None], "kwargs": {}}
        r = http.get("/room/lobby/msg/7")
        assert r.json() == {"args": [], "kwargs": {"room": "lobby", "id": "7"}}
        assert http.get("/hi/%C3%A9").text == "hello, \u00e9"
        assert http.get("/added").status_code == 200
        assert http.get("/decorated").text == "decorated"
        r = http.get("/nowhere")
        assert r.status_code == 404
        assert "404 Not Found" in r.text
        r = http.get("/post")
        assert r.status_code == 405
        assert r.headers["allow"] == "POST"
        r = http.delete("/user/a/1")
        assert r.status_code == 405
        assert r.headers["allow"] == "GET, HEAD"
        assert http.request("PROPFIND", "/post").status_code == 405  # not a supported method
        assert http.request("BREW", "/post").status_code == 400  # not even a known one


# ---------------------------------------------------------------------- handler API


class Api(RequestHandler):
    async def get(self) -> None:
        self.write(
            {
                "name": self.get_argument("name"),
                "tags": self.get_arguments("tag"),
                "missing": self.get_argument("missing", None),
            }
        )

    def post(self) -> None:
        if self.request.headers.get("content-type") == "application/json":
            self.write({"json": self.get_json_body()})
        else:
            self.write({"form": self.get_body_argument("field"), "q": self.get_argument("q", "")})


class Headers_(RequestHandler):
    def get(self) -> None:
        self.set_status(201)
        self.set_header("X-One", "1")
        self.add_header("X-Multi", "a")
        self.add_header("X-Multi", "b")
        self.set_header("X-Gone", "x")
        self.clear_header("X-Gone")
        self.set_header("Content-Type", "text/plain")
        self.finish("made")


class Inject(RequestHandler):
    def get(self) -> None:
        self.set_header("X-Evil", "a\r\nSet-Cookie: pwned=1")


class Redirect(RequestHandler):
    def get(self) -> None:
        self.redirect("/target", permanent=self.get_argument("p", "") == "1")


class Lifecycle(RequestHandler):
    calls: list[str] = []

    async def prepare(self) -> None:
        self.calls.append("prepare")
        if self.get_argument("stop", ""):
            self.finish("stopped in prepare")

    def get(self) -> None:
        self.calls.append("get")
        self.write("from get")

    def on_finish(self) -> None:
        self.calls.append("finish")


class Teapot(RequestHandler):
    def get(self) -> None:
        raise HTTPError(418, "short and stout <b>")


def test_handler_api() -> None:
    app = App(
        [
            ("/api", Api),
            ("/headers", Headers_),
            ("/inject", Inject),
            ("/redirect", Redirect),
            ("/life", Lifecycle),
            ("/teapot", Teapot),
        ]
    )
    with TestClient(app) as http:
        r = http.get("/api?name=+ann+&tag=a&tag=b")
        assert r.headers["content-type"] == "application/json; charset=UTF-8"
        assert r.json() == {"name": "ann", "tags": ["a", "b"], "missing": None}
        r = http.get("/api")
        assert r.status_code == 400
        assert "missing argument" in r.text
        assert http.post("/api?q=1", data={"field": "v<"}).json() == {"form": "v<", "q": "1"}
        assert http.post("/api", json={"a": [1, 2]}).json() == {"json": {"a": [1, 2]}}
        r = http.post("/api", content=b"{nope", headers={"Content-Type": "application/json"})
        assert r.status_code == 400
        assert "not valid JSON" in r.text
        r = http.get("/headers")
        assert r.status_code == 201
        assert r.headers["x-one"] == "1"
        assert [v for n, v in r.header_list if n == "X-Multi"] == ["a", "b"]
        assert "x-gone" not in r.headers
        assert r.headers["content-type"] == "text/plain"
        assert r.text == "made"
        r = http.get("/inject")
        assert r.status_code == 500
        assert "pwned" not in r.headers.get("set-cookie", "")
        r = http.get("/redirect")  # the test client does not follow redirects
        assert r.status_code == 302 and r.headers["location"] == "/target"
        assert http.get("/redirect?p=1").status_code == 301
        Lifecycle.calls.clear()
        assert http.get("/life").text == "from get"
        assert http.get("/life?stop=1").text == "stopped in prepare"
        assert Lifecycle.calls == ["prepare", "get", "finish", "prepare", "finish"]
        r = http.get("/teapot")
        assert r.status_code == 418
        assert "short and stout &lt;b&gt;" in r.text  # the reason is escaped
        r = http.head("/api?name=x")  # HEAD runs GET, without a body
        assert r.status_code == 200
        assert int(r.headers["content-length"]) > 0
        assert r.content == b""


class Boom(RequestHandler):
    def get(self) -> None:
        raise RuntimeError("secret database password xyzzy")


def test_500_hides_details_unless_debug(kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
    async def main(debug: bool) -> str:
        async with kit.serve(App([("/boom", Boom)], debug=debug)) as server:
            response = await kit.request(server.port, target="/boom")
            assert response.status == 500
            return response.body.decode()

    with caplog.at_level(logging.ERROR, logger="fullduplex.server"):
        body = kit.run(main(False))
    assert "500 Internal Server Error" in body
    assert "xyzzy" not in body and "Traceback" not in body
    logged = [r for r in caplog.records if r.name == "fullduplex.server"]
    assert logged and logged[0].exc_info is not None  # logged with the traceback
    assert "xyzzy" in str(logged[0].exc_info[1])

    body = kit.run(main(True))
    assert "Traceback" in body and "xyzzy" in body


# ---------------------------------------------------------------------- templates


def test_templates_autoescape(kit: Kit, tmp_path: Path) -> None:
    (tmp_path / "message.html").write_text(
        "<p>{{ name }} - {{ time }} - says: {{ text }}</p>"
        "<a href='{{ static_url(\"app.css\") }}'>css</a>"
        "{% if current_user %}<i>{{ current_user }}</i>{% endif %}"
    )
    (tmp_path / "plain.txt").write_text("raw {{ text }}")
    static = tmp_path / "static"
    static.mkdir()
    (static / "app.css").write_text("body{}")
    payload = "<img src=x onerror=alert(1)>"

    class Page(RequestHandler):
        def get_current_user(self) -> str:
            return "<script>u</script>"

        def get(self, kind: str) -> None:
            if kind == "html":
                self.render("message.html", name="ann", time="2024-01-01 10:00:00", text=payload)
            else:
                self.set_header("Content-Type", "text/plain")
                self.write(self.render_string("plain.txt", text=payload))

    async def main() -> None:
        app = App([(r"/page/(\w+)", Page)], template_path=str(tmp_path), static_path=str(static))
        async with kit.serve(app) as server, aiohttp.ClientSession(server.url) as http:
            async with http.get("/page/html") as r:
                html = await r.text()
            assert "<img" not in html
            assert "&lt;img src=x onerror=alert(1)&gt;" in html
            assert "ann - 2024-01-01 10:00:00 - says: " in html
            assert "<script>" not in html and "&lt;script&gt;u" in html
            assert "/static/app.css?v=" in html
            async with http.get("/page/txt") as r:  # autoescape only for .html
                assert await r.text() == "raw " + payload

    kit.run(main())


# ---------------------------------------------------------------------- cookies, users


def test_signed_value_helpers() -> None:
    signed = create_signed_value(SECRET, "user", "ann")
    assert decode_signed_value(SECRET, "user", signed) == b"ann"
    # Tampering with any part, another name or another key: None.
    b64, ts, sig = signed.split("|")
    assert decode_signed_value(SECRET, "user", f"{b64}|{int(ts) + 1}|{sig}") is None
    assert decode_signed_value(SECRET, "user", f"Ym9i|{ts}|{sig}") is None
    assert decode_signed_value(SECRET, "user", f"{b64}|{ts}|{'0' * 64}") is None
    assert decode_signed_value(SECRET, "admin", signed) is None
    assert decode_signed_value("other", "user", signed) is None
    assert decode_signed_value(SECRET, "user", "garbage") is None
    assert decode_signed_value(SECRET, "user", None) is None
    # Expiry and timestamps from the future.
    old = create_signed_value(SECRET, "user", "ann", timestamp=time.time() - 40 * 86400)
    assert decode_signed_value(SECRET, "user", old) is None
    assert decode_signed_value(SECRET, "user", old, max_age_days=41) == b"ann"
    future = create_signed_value(SECRET, "user", "ann", timestamp=time.time() + 90 * 86400)
    assert decode_signed_value(SECRET, "user", future) is None
    # Key rotation: a list verifies with every key, signs with the first.
    assert decode_signed_value(["new-key", SECRET], "user", signed) == b"ann"
    with pytest.raises(RuntimeError):
        create_signed_value(None, "user", "ann")


class Login(RequestHandler):
    def get(self) -> None:
        self.write(f"login page, next={self.get_argument('next', '')}")

    def post(self) -> None:
        self.set_secure_cookie("user", self.get_body_argument("name"))
        self.set_cookie("theme", "dark", httponly=False, max_age=60)
        self.write("ok")


class Logout(RequestHandler):
    def get(self) -> None:
        self.clear_cookie("user")


class BaseHandler(RequestHandler):
    def get_current_user(self) -> str | None:
        self.lookups = getattr(self, "lookups", 0) + 1
        return self.get_secure_cookie("user")


class Private(BaseHandler):
    @authenticated
    def get(self) -> None:
        assert self.current_user == self.current_user
        self.write(f"hello {self.current_user} ({self.lookups} lookup)")

    @authenticated
    def post(self) -> None:
        self.write("posted")


def cookie_app(**settings: Any) -> App:
    return App(
        [
            ("/login", Login),
            ("/logout", Logout),
            ("/private", Private),
        ],
        cookie_secret=SECRET,
        login_url="/login",
        **settings,
    )


def test_cookies_and_authenticated(kit: Kit) -> None:
    async def main() -> None:
        async with kit.serve(cookie_app()) as server:
            jar = aiohttp.CookieJar(unsafe=True)
            async with aiohttp.ClientSession(server.url, cookie_jar=jar) as http:
                async with http.get("/private?x=1", allow_redirects=False) as r:
                    assert r.status == 302
                    assert r.headers["Location"] == "/login?next=%2Fprivate%3Fx%3D1"
                async with http.post("/private", allow_redirects=False) as r:
                    assert r.status == 403
                async with http.post("/login", data={"name": "ann"}) as r:
                    cookies = r.headers.getall("Set-Cookie")
                user_cookie = next(c for c in cookies if c.startswith("user="))
                assert "HttpOnly" in user_cookie and "SameSite=Lax" in user_cookie
                assert "Path=/" in user_cookie and "Max-Age=2592000" in user_cookie
                assert "Secure" not in user_cookie  # plain HTTP
                theme = next(c for c in cookies if c.startswith("theme="))
                assert theme.startswith("theme=dark;") and "HttpOnly" not in theme
                async with http.get("/private") as r:
                    assert await r.text() == "hello ann (1 lookup)"
                async with http.get("/logout") as r:
                    cleared = r.headers["Set-Cookie"]
                    assert cleared.startswith("user=;") and "Max-Age=0" in cleared
            # Tampered cookie: treated as anonymous.
            signed = create_signed_value(SECRET, "user", "ann")
            forged = signed.replace(signed.split("|")[0], "Ym9i")  # "bob"
            response = await kit.request(
                server.port, target="/private", headers=[("Cookie", f"user={forged}")]
            )
            assert response.status == 302
            response = await kit.request(
                server.port, target="/private", headers=[("Cookie", f'a=1; user="{signed}"')]
            )
            assert response.body == b"hello ann (1 lookup)"
            # Expired (signed 40 days ago, default max age 31 days): anonymous.
            stale = create_signed_value(SECRET, "user", "ann", timestamp=time.time() - 40 * 86400)
            response = await kit.request(
                server.port, target="/private", headers=[("Cookie", f"user={stale}")]
            )
            assert response.status == 302

    kit.run(main())


def test_secure_cookie_over_tls(kit: Kit, tmp_path: Path) -> None:
    from helpers import client_ssl_context, make_self_signed_cert, server_ssl_context

    cert, key = make_self_signed_cert(tmp_path)

    class Who(RequestHandler):
        def get(self) -> None:
            self.set_cookie("c", "1")
            self.write(f"{self.request.scheme} {self.request.secure}")

    async def main() -> None:
        app = App([("/", Who)])
        server = await app.serve("127.0.0.1", 0, ssl=server_ssl_context(cert, key))
        try:
            assert server.url.startswith("https://")
            connector = aiohttp.TCPConnector(ssl=client_ssl_context(cert))
            async with (
                aiohttp.ClientSession(connector=connector) as http,
                http.get(f"https://localhost:{server.port}/") as r,
            ):
                assert await r.text() == "https True"
                assert "Secure" in r.headers["Set-Cookie"]
        finally:
            await server.shutdown(drain_timeout=1)

    kit.run(main())


# ---------------------------------------------------------------------- static files


@pytest.fixture
def static_dir(tmp_path: Path) -> Path:
    root = tmp_path / "public"
    (root / "css").mkdir(parents=True)
    (root / "css" / "app.css").write_text("body { color: red }\n")
    (root / "hello.txt").write_text("hello static\n")
    (root / ".env").write_text("SECRET=1\n")
    (tmp_path / "secret.txt").write_text("outside the root\n")
    (root / "escape.txt").symlink_to(tmp_path / "secret.txt")
    return root


def test_static_files(kit: Kit, static_dir: Path) -> None:
    (static_dir / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 123))

    async def main() -> None:
        app = App(static_path=str(static_dir))
        async with kit.serve(app) as server, aiohttp.ClientSession(server.url) as http:
            async with http.get("/static/css/app.css") as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "text/css; charset=utf-8"
                assert r.headers["Cache-Control"] == "no-cache"
                assert await r.text() == "body { color: red }\n"
                etag = r.headers["ETag"]
                last_modified = r.headers["Last-Modified"]
            async with http.get("/static/css/app.css", headers={"If-None-Match": etag}) as r:
                assert r.status == 304
                assert await r.read() == b""
                assert r.headers["ETag"] == etag
            async with http.get(
                "/static/css/app.css", headers={"If-None-Match": f'"x", W/{etag}'}
            ) as r:
                assert r.status == 304
            async with http.get(
                "/static/css/app.css", headers={"If-Modified-Since": last_modified}
            ) as r:
                assert r.status == 304
            past = formatdate(time.time() - 3600 * 24 * 365, usegmt=True)
            async with http.get("/static/css/app.css", headers={"If-Modified-Since": past}) as r:
                assert r.status == 200
            async with http.get("/static/css/app.css", headers={"If-None-Match": '"other"'}) as r:
                assert r.status == 200
            async with http.head("/static/hello.txt") as r:
                assert r.status == 200
                assert r.headers["Content-Length"] == "13"
                assert await r.read() == b""

            url = app.static_url("css/app.css")
            digest = hashlib.sha256((static_dir / "css" / "app.css").read_bytes()).hexdigest()
            assert url == f"/static/css/app.css?v={digest[:16]}"
            async with http.get(url) as r:
                assert "immutable" in r.headers["Cache-Control"]

            async with http.get("/static/big.bin") as r:
                assert r.status == 200
                assert r.headers["Content-Length"] == str(3 * 1024 * 1024 + 123)
                assert await r.read() == (static_dir / "big.bin").read_bytes()
            async with http.get("/static/nope.txt") as r:
                assert r.status == 404
            async with http.get("/static/.env") as r:
                assert r.status == 404
            async with http.get("/static/css") as r:
                assert r.status == 403  # no directory listings

    kit.run(main(), timeout=15)


@pytest.mark.parametrize(
    "target",
    [
        "/static/../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/css/..%2f..%2fsecret.txt",
        "/static/..%5csecret.txt",
        "/static/%2fetc%2fpasswd",
        "/static//etc/passwd",
        "/static/hello.txt%00.png",
        "/static/escape.txt",
    ],
)
def test_static_traversal_refused(kit: Kit, static_dir: Path, target: str) -> None:
    async def main() -> None:
        async with kit.serve(App(static_path=str(static_dir))) as server:
            response = await kit.request(server.port, target=target)
            assert response.status in (400, 403, 404)
            assert b"outside the root" not in response.body
            assert b"root:" not in response.body

    kit.run(main())


def test_large_static_file_is_streamed_with_backpressure(kit: Kit, static_dir: Path) -> None:
    big = static_dir / "huge.bin"
    size = 24 * 1024 * 1024
    with open(big, "wb") as f:
        f.truncate(size)  # sparse: cheap to create

    async def main() -> None:
        async with kit.serve(App(static_path=str(static_dir))) as server:
            reader, writer = await kit.connect(server.port)
            writer.write(b"GET /static/huge.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            await asyncio.sleep(0.2)  # not reading: the server must not buffer it all
            connection = next(iter(server.app.connections))
            transport = connection.transport  # type: ignore[attr-defined]
            assert transport is not None
            assert transport.get_write_buffer_size() < 4 * 1024 * 1024
            response = await kit.read_response(reader)
            assert len(response.body) == size
            writer.close()

    kit.run(main(), timeout=20)


def test_client_js_route(kit: Kit) -> None:
    async def main() -> None:
        async with kit.serve(App()) as server:
            response = await kit.request(server.port, target="/fullduplex.js")
            assert response.status in (200, 404)  # 404 until the client is written
            if response.status == 200:
                assert "javascript" in (response.header("content-type") or "")
            off = App(client_js_url=None)
            assert all(r.pattern != "/fullduplex.js" for r in off.router.routes)

    kit.run(main())


def test_static_default_filename_and_fixed_file(kit: Kit, static_dir: Path) -> None:
    from fullduplex.server import StaticFileHandler

    (static_dir / "docs").mkdir()
    (static_dir / "docs" / "index.html").write_text("<h1>docs</h1>")
    (static_dir / "css" / "index.html").symlink_to(static_dir.parent / "secret.txt")

    async def main() -> None:
        app = App(
            [
                (
                    "/site/{path:.*}",
                    StaticFileHandler,
                    {"path": str(static_dir), "default_filename": "index.html"},
                ),
                ("/hello", StaticFileHandler, {"path": str(static_dir), "filename": "hello.txt"}),
            ]
        )
        async with kit.serve(app) as server:
            docs = await kit.request(server.port, target="/site/docs/")
            assert docs.status == 200 and docs.body == b"<h1>docs</h1>"
            assert docs.header("content-type") == "text/html; charset=utf-8"
            assert docs.header("x-content-type-options") == "nosniff"
            escape = await kit.request(server.port, target="/site/css/")
            assert escape.status == 403  # index.html is a symlink leaving the root
            fixed = await kit.request(server.port, target="/hello")
            assert fixed.body == b"hello static\n"

    kit.run(main())
