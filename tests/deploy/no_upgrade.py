"""The proxy that blocks WebSocket (``deploy/nginx-no-upgrade.conf``) and demo nodes behind it.

Used by ``tests/deploy/test_no_upgrade_proxy.py`` and the browser test of the HTTP
fallback. The nginx file runs as it is, with its upstream ports and listen address
replaced; the nodes are ``fullduplex demo`` processes sharing one Redis and one
cookie secret file, each with its own ``--node-id``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from procs import (
    LOCALHOST,
    NGINX,
    REPO,
    Nginx,
    Process,
    Stack,
    _http_get,
    _wait,
    free_port,
    main_context,
    require,
)

NO_UPGRADE_CONF = REPO / "deploy" / "nginx-no-upgrade.conf"
#: The demo nodes (their --node-id), with the port each has in the file.
CONF_NODES = {"node-a": 8001, "node-b": 8002}


def render_no_upgrade_conf(prefix: Path, ports: Mapping[str, int], listen_port: int) -> str:
    """``deploy/nginx-no-upgrade.conf`` made runnable in ``prefix``: node ``name`` on
    ``ports[name]``, listening on 127.0.0.1:``listen_port``."""
    site = NO_UPGRADE_CONF.read_text()
    assert set(ports) == set(CONF_NODES), f"the configuration routes {sorted(CONF_NODES)}"
    for name, default in CONF_NODES.items():
        site, count = re.subn(rf"127\.0\.0\.1:{default}\b", f"{LOCALHOST}:{ports[name]}", site)
        assert count == 1, f"deploy/nginx-no-upgrade.conf: {name} not in the upstream"
    assert "listen 8080;" in site
    site = site.replace("listen 8080;", f"listen {LOCALHOST}:{listen_port};")
    return main_context(prefix, site)


class NoUpgradeNginx(Nginx):
    """nginx with deploy/nginx-no-upgrade.conf in front of the named nodes (plain HTTP)."""

    def __init__(self, prefix: Path, ports: Mapping[str, int]) -> None:
        prefix.mkdir(parents=True, exist_ok=True)
        Process.__init__(self, "nginx-no-upgrade", prefix / "stderr.log")
        self.prefix = prefix
        self.port = free_port()
        self.url = f"http://{LOCALHOST}:{self.port}"
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(render_no_upgrade_conf(prefix, ports, self.port))

    def start(self) -> NoUpgradeNginx:
        self._spawn([NGINX, "-p", str(self.prefix), "-c", str(self.conf)])
        assert self.proc is not None
        log = self.prefix / "error.log"
        _wait(lambda: bool(_http_get(self.port, "/")), "nginx", self.proc, log)
        return self


class DemoNode(Process):
    """``fullduplex demo`` as node ``node_id`` on a shared hub and cookie secret file."""

    def __init__(self, workdir: Path, node_id: str, hub: str, secret_file: Path) -> None:
        super().__init__(node_id, workdir / f"demo-{node_id}.log")
        self.node_id = node_id
        self.hub = hub
        self.secret_file = secret_file
        self.port = free_port()
        self.url = f"http://{LOCALHOST}:{self.port}"

    def start(self) -> DemoNode:
        argv = [
            sys.executable, "-m", "fullduplex.cli", "demo",
            "--host", LOCALHOST, "--port", str(self.port),
            "--redis", self.hub,
            "--node-id", self.node_id,
            "--cookie-secret-file", str(self.secret_file),
            "--loop", "asyncio", "--log-level", "warning",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("FULLDUPLEX_DEMO_SECRET", None)  # the file is the only shared key
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self._spawn(argv, env)
        assert self.proc is not None
        _wait(
            lambda: _http_get(self.port, "/").startswith(b"HTTP/1.1 200"),
            f"demo node {self.node_id}",
            self.proc,
            self.log,
            timeout=15.0,
        )
        return self


class Cluster:
    """Redis, two demo nodes (``node-a``, ``node-b``) and the no-upgrade nginx, in a Stack."""

    def __init__(self, stack: Stack) -> None:
        require(NGINX, "nginx")
        self.stack = stack
        self.redis = stack.redis()
        self.secret_file = stack.tmp / "cookie-secret"
        self.secret_file.write_text(os.urandom(24).hex() + "\n")
        self.secret_file.chmod(0o600)
        self.nodes: dict[str, DemoNode] = {}
        for name in CONF_NODES:
            node = DemoNode(stack.tmp, name, self.redis.url, self.secret_file)
            stack.processes.append(node)
            self.nodes[name] = node.start()
        self.proxy = NoUpgradeNginx(
            stack.tmp / "nginx-no-upgrade", {n: node.port for n, node in self.nodes.items()}
        )
        self.proxy.check()
        stack.processes.append(self.proxy)
        self.proxy.start()
