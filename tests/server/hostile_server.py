"""A server for the hostile-client tests, run as a subprocess so its RSS and open files
can be measured: ``python hostile_server.py PORT STATIC_DIR SETTINGS_JSON`` (a ``"loop"`` key in the
settings picks the event loop, as ``App.run(loop=...)``).

It serves the bundled ``/fullduplex.js``, files under ``/static/`` and a tiny ``/``
page, and stops on SIGTERM (the tests poll the port until it accepts).
"""

from __future__ import annotations

import json
import sys

from fullduplex.server import App, RequestHandler


class Hello(RequestHandler):
    def get(self) -> None:
        self.write("hello")


def main() -> None:
    port = int(sys.argv[1])
    settings = json.loads(sys.argv[3])
    loop = settings.pop("loop", "auto")
    app = App([("/", Hello)], static_path=sys.argv[2], access_log=False, **settings)
    app.run("127.0.0.1", port, loop=loop)


if __name__ == "__main__":
    main()
