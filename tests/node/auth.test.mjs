// The browser client after the server closes with 4001 (credential expired): it calls
// options.refreshAuth, reconnects with the subprotocols that resolves to, and gives up
// for good when the refresh fails. The peer is a `ws` server on 127.0.0.1.
import { test } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import WebSocket, { WebSocketServer } from "ws";
import { FullDuplexSocket } from "../../fullduplex/static/fullduplex.mjs";

const T = { timeout: 5000 };

/** A server that records each connection's offered subprotocols, answers with
 * "fd-auth", and closes the first connection with 4001. */
async function expiringServer() {
  const offered = [];
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, handleProtocols: () => "fd-auth" });
  wss.on("connection", (ws, request) => {
    offered.push(request.headers["sec-websocket-protocol"]);
    if (offered.length === 1) setTimeout(() => ws.close(4001, "authentication expired"), 20);
  });
  await once(wss, "listening");
  return { wss, offered, url: `ws://127.0.0.1:${wss.address().port}/` };
}

function waitFor(predicate, ms = 3000) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const tick = () => {
      if (predicate()) return resolve();
      if (Date.now() - started > ms) return reject(new Error("timed out"));
      setTimeout(tick, 10);
    };
    tick();
  });
}

test("4001 calls refreshAuth and reconnects with the new token", T, async () => {
  const { wss, offered, url } = await expiringServer();
  const calls = [];
  const socket = new FullDuplexSocket(url, ["fd-auth", "fd-token.old"], {
    WebSocket,
    minDelay: 10,
    refreshAuth: async (event) => {
      calls.push(event);
      return ["fd-auth", "fd-token.new"];
    },
  });
  try {
    await waitFor(() => offered.length === 2);
    assert.deepEqual(calls, [{ code: 4001, reason: "authentication expired" }]);
    assert.equal(offered[0], "fd-auth,fd-token.old");
    assert.equal(offered[1], "fd-auth,fd-token.new");
    await waitFor(() => socket.readyState === FullDuplexSocket.OPEN);
    assert.equal(socket.protocol, "fd-auth");
  } finally {
    socket.close();
    wss.close();
  }
});

test("a failed refresh closes the socket for good", T, async () => {
  const { wss, offered, url } = await expiringServer();
  const socket = new FullDuplexSocket(url, ["fd-auth", "fd-token.old"], {
    WebSocket,
    minDelay: 10,
    refreshAuth: () => Promise.reject(new Error("logged out")),
  });
  try {
    const closed = await once(socket, "close");
    assert.equal(closed[0].code, 4001);
    assert.equal(socket.readyState, FullDuplexSocket.CLOSED);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(offered.length, 1);
  } finally {
    wss.close();
  }
});
