"""Chunked request bodies on Django's development server (`manage.py runserver`).

The development server gives the application a stream limited to Content-Length, so a
chunked body (no Content-Length) reads as empty. Its request handler here takes the
chunk framing off first and states the body's length, as gunicorn does; bodies are read
up to a cap past which every endpoint answers 413 anyway.
"""

from __future__ import annotations

from django.core.servers.basehttp import WSGIRequestHandler, WSGIServer

# Larger than any endpoint's limit: a body cut here is refused (413) by its endpoint.
READ_CAP = 16 * 1024 * 1024


class _DechunkingReader:
    """The connection's input; after `load(body)` it first serves that body."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._body = b""

    def load(self, body: bytes) -> None:
        self._body = body

    def read(self, size: int = -1) -> bytes:
        if self._body:
            size = len(self._body) if size is None or size < 0 else size
            part, self._body = self._body[:size], self._body[size:]
            return part
        return self._stream.read(size)

    def readline(self, size: int = -1) -> bytes:
        return self._stream.readline(size)

    def read_chunked(self, cap: int) -> tuple[bytes, bool]:
        """The de-chunked body (at most cap + 1 bytes), and whether it was complete."""
        parts, size = [], 0
        while size <= cap:
            size_line = self._stream.readline(1024)
            try:
                length = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                return b"".join(parts), False
            if length == 0:
                while self._stream.readline(1024).strip():  # trailer fields
                    pass
                return b"".join(parts), True
            part = self._stream.read(min(length, cap + 1 - size))
            parts.append(part)
            size += len(part)
            if len(part) < length:
                return b"".join(parts), False
            self._stream.readline(8)  # the CRLF after the chunk
        return b"".join(parts), False


class ChunkedRequestHandler(WSGIRequestHandler):
    def setup(self) -> None:
        super().setup()
        self.rfile = _DechunkingReader(self.rfile)

    def get_environ(self):
        environ = super().get_environ()
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and not environ.get("CONTENT_LENGTH"):
            body, complete = self.rfile.read_chunked(READ_CAP)
            if not complete:
                self.close_connection = True  # what is left of it cannot be read
            self.rfile.load(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return environ


class ChunkedWSGIServer(WSGIServer):
    """Django's development server with ChunkedRequestHandler."""

    def __init__(self, server_address, handler_class, *args, **kwargs) -> None:
        super().__init__(server_address, ChunkedRequestHandler, *args, **kwargs)
