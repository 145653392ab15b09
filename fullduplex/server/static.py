"""Static files: :class:`StaticFileHandler` (revalidation, HEAD, streaming with
backpressure) and :func:`file_version`, the content hash behind ``static_url``."""

from __future__ import annotations

import datetime
import hashlib
import mimetypes
import os
from email.utils import formatdate, parsedate_to_datetime
from typing import ClassVar

from .web import HTTPError, RequestHandler

__all__ = ["StaticFileHandler", "file_version"]

_version_cache: dict[str, tuple[int, int, str]] = {}


def file_version(abspath: str) -> str | None:
    """A short content hash of a file (cached by size and mtime), None if missing."""
    try:
        st = os.stat(abspath)
    except OSError:
        return None
    cached = _version_cache.get(abspath)
    if cached is not None and cached[0] == st.st_mtime_ns and cached[1] == st.st_size:
        return cached[2]
    digest = hashlib.sha256()
    try:
        with open(abspath, "rb") as f:
            while block := f.read(1 << 16):
                digest.update(block)
    except OSError:
        return None
    version = digest.hexdigest()[:16]
    _version_cache[abspath] = (st.st_mtime_ns, st.st_size, version)
    return version


def _contained(root: str, path: str) -> str:
    """Resolve ``path`` (symlinks included); 403 unless it stays inside ``root``."""
    full = os.path.realpath(path)
    if full != root and not full.startswith(root + os.sep):
        raise HTTPError(403, "forbidden path")
    return full


def _text_type(ctype: str) -> bool:
    return ctype.startswith("text/") or ctype in (
        "application/javascript",
        "application/json",
        "application/xml",
        "image/svg+xml",
    )


class StaticFileHandler(RequestHandler):
    """Serve files under a directory: ``ETag``/``Last-Modified`` revalidation, HEAD,
    streaming in ``CHUNK_SIZE`` pieces with backpressure.

    Route kwargs: ``path`` (the root directory), ``default_filename`` (served for a
    directory, e.g. ``"index.html"``), ``filename`` (serve this one file whatever the
    URL says; used for ``/fullduplex.js``). Requests for paths with ``..`` segments,
    NUL, backslashes or absolute paths get ``403``; paths that resolve (through
    symlinks) outside the root get ``403``; hidden files (``.name``) are ``404``.
    A ``v`` query argument (from :meth:`RequestHandler.static_url`) makes the response
    cacheable for a year; otherwise browsers revalidate each time (``no-cache``).
    """

    CHUNK_SIZE: ClassVar[int] = 64 * 1024

    def initialize(
        self, path: str, default_filename: str | None = None, filename: str | None = None
    ) -> None:
        self.root = path
        self.default_filename = default_filename
        self.filename = filename

    def _resolve(self, url_path: str) -> str:
        """Map the URL path to a real file path inside the root, or raise HTTPError."""
        rel = self.filename if self.filename is not None else url_path
        if "\x00" in rel or "\\" in rel or rel.startswith("/") or os.path.isabs(rel):
            raise HTTPError(403, "forbidden path")
        segments = [s for s in rel.split("/") if s]
        if any(s == ".." for s in segments):
            raise HTTPError(403, "forbidden path")
        if any(s.startswith(".") for s in segments):
            raise HTTPError(404)
        root = os.path.realpath(self.root)
        full = _contained(root, os.path.join(root, *segments))
        if os.path.isdir(full):
            if not self.default_filename:
                raise HTTPError(403, "directory listing is not allowed")
            full = _contained(root, os.path.join(full, self.default_filename))
        return full

    async def get(self, path: str = "") -> None:
        """Serve the file (body omitted for HEAD)."""
        full = self._resolve(path)
        try:
            st = os.stat(full)
        except OSError:
            raise HTTPError(404) from None
        if not os.path.isfile(full):
            raise HTTPError(404)
        size = st.st_size
        etag = f'"{size:x}-{st.st_mtime_ns:x}"'
        self.set_header("ETag", etag)
        self.set_header("Last-Modified", formatdate(int(st.st_mtime), usegmt=True))
        if self.request.query_arguments.get("v"):
            self.set_header("Cache-Control", "public, max-age=31536000, immutable")
        else:
            self.set_header("Cache-Control", "no-cache")
        if self._not_modified(etag, st.st_mtime):
            self.clear_header("Content-Type")
            self.set_status(304)
            return
        ctype, encoding = mimetypes.guess_type(full)
        if full.endswith((".js", ".mjs")):
            # Browsers refuse modules served with another type; system tables vary.
            ctype, encoding = "text/javascript", None
        if encoding == "gzip":
            ctype = "application/gzip"
        elif encoding is not None:
            ctype = "application/octet-stream"
        ctype = ctype or "application/octet-stream"
        if _text_type(ctype):
            ctype += "; charset=utf-8"
        self.set_header("Content-Type", ctype)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Length", size)
        if self.request.method == "HEAD":
            return
        with open(full, "rb") as f:
            if size <= self.CHUNK_SIZE:
                self.write(f.read(size))
                return
            remaining = size
            while remaining > 0:
                chunk = f.read(min(self.CHUNK_SIZE, remaining))
                if not chunk:
                    break  # the file shrank: the connection closes after the response
                remaining -= len(chunk)
                self.write(chunk)
                await self.flush()

    def _not_modified(self, etag: str, mtime: float) -> bool:
        """RFC 9110 §13.1: If-None-Match wins over If-Modified-Since."""
        headers = self.request.headers
        inm = headers.get("if-none-match")
        if inm is not None:
            if inm.strip() == "*":
                return True
            tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
            return etag in tags
        ims = headers.get("if-modified-since")
        if ims:
            try:
                since = parsedate_to_datetime(ims)
            except (TypeError, ValueError, IndexError, OverflowError):
                return False  # not a usable date: the condition is ignored
            if since.tzinfo is None:
                since = since.replace(tzinfo=datetime.UTC)
            return int(mtime) <= since.timestamp()
        return False
