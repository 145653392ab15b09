"""The admin listener: metrics, liveness, readiness and inspection on their own port.

Started beside the main listener when the ``metrics_port`` setting is set (it binds
``metrics_host``, loopback by default, so it is not exposed with the application):

* ``GET /metrics`` - Prometheus exposition (:mod:`fullduplex.server.metrics`);
* ``GET /healthz`` - 200 while the process serves (liveness; stays 200 while draining);
* ``GET /readyz`` - 200, or 503 once a drain or shutdown began (take the node out of
  the load balancer);
* ``GET /inspect`` - JSON: connections by transport (count, oldest), rooms and their
  presence counts, the hub backend's health.

``metrics_path`` serves the metrics on the main port as well (opt-in).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .metrics import render_metrics, transport_of
from .web import RequestHandler

if TYPE_CHECKING:
    from .app import App

__all__ = ["MetricsHandler", "admin_app", "inspect_app"]

#: Rooms listed by ``/inspect`` at most (the rest are counted): the reply stays small.
INSPECT_MAX_ROOMS = 200


class _AdminHandler(RequestHandler):
    target: App

    def initialize(self, target: App) -> None:
        self.target = target


class MetricsHandler(_AdminHandler):
    """``GET``: the target app's metrics in the Prometheus text format."""

    def get(self) -> None:  # type: ignore[override]
        body, content_type = render_metrics(self.target)
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-store")
        self.write(body)


class HealthHandler(_AdminHandler):
    """``GET``: liveness, 200 as long as the event loop answers."""

    def get(self) -> None:  # type: ignore[override]
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.write("ok\n")


class ReadyHandler(_AdminHandler):
    """``GET``: readiness, 503 once the node drains or shuts down."""

    def get(self) -> None:  # type: ignore[override]
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        if self.target.draining:
            self.set_status(503)
            self.write("draining\n")
        else:
            self.write("ready\n")


class InspectHandler(_AdminHandler):
    """``GET``: what the node holds right now, as JSON."""

    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.write(await inspect_app(self.target))


async def inspect_app(app: App) -> dict[str, Any]:
    """Connections by transport (count, age of the oldest), rooms with their local
    member and presence counts (at most :data:`INSPECT_MAX_ROOMS`), hub health."""
    now = asyncio.get_running_loop().time()
    transports: dict[str, dict[str, Any]] = {}
    for connection in list(app.connections):
        name = transport_of(connection)
        entry = transports.setdefault(name, {"count": 0, "oldest_seconds": 0.0})
        entry["count"] += 1
        opened = getattr(connection, "opened_at", None)
        if opened is not None:
            entry["oldest_seconds"] = max(entry["oldest_seconds"], round(now - opened, 3))
    report: dict[str, Any] = {
        "ready": not app.draining,
        "connections": transports,
        "total_connections": sum(e["count"] for e in transports.values()),
    }
    hub: Any = app._hub  # report on the hub in use; never create one for this
    if hub is None:
        report["hub"] = {"backend": None}
        report["rooms"] = {}
        return report
    available = bool(getattr(hub, "available", True))
    hub_report: dict[str, Any] = {"backend": type(hub).__name__, "available": available}
    stats = getattr(hub, "stats", None)
    if stats is not None and hasattr(stats, "as_dict"):
        hub_report["stats"] = stats.as_dict()
    report["hub"] = hub_report
    names = list(hub.rooms)
    rooms: dict[str, Any] = {}
    for name in names[:INSPECT_MAX_ROOMS]:
        entry = {"members": len(hub.members(name))}
        if available:
            try:
                async with asyncio.timeout(1.0):
                    entry["presence"] = len(await hub.presence(name))
            except Exception as exc:  # a hub outage must not break the report
                entry["presence_error"] = type(exc).__name__
        rooms[name] = entry
    report["rooms"] = rooms
    report["room_count"] = len(names)
    return report


def admin_app(target: App) -> App:
    """The small app served on the admin listener of ``target``."""
    from .app import App

    kwargs = {"target": target}
    return App(
        [
            ("/metrics", MetricsHandler, kwargs),
            ("/healthz", HealthHandler, kwargs),
            ("/readyz", ReadyHandler, kwargs),
            ("/inspect", InspectHandler, kwargs),
        ],
        access_log=False,
        client_js_url=None,
        server_header=None,
        tune_malloc=False,
    )
