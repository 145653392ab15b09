// Tests of the browser client fullduplex/static/fullduplex.js, in Node with the `ws`
// package as the WebSocket implementation and, as the peer, a small in-test server
// speaking the rooms protocol of fullduplex.hub.RoomHandler. Run: npm test (in tests/node).
import { afterEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { EventEmitter, once as onceEmitter } from "node:events";
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import vm from "node:vm";
import WebSocket, { WebSocketServer } from "ws";
import fullduplex, { FullDuplexSocket, Room } from "../../fullduplex/static/fullduplex.mjs";

const CLIENT_JS = fileURLToPath(new URL("../../fullduplex/static/fullduplex.js", import.meta.url));
const T = { timeout: 5000 };

// ----------------------------------------------------------------- helpers

/** The next `type` event of an EventTarget, or a rejection after `ms`. */
function next(target, type, ms = 2000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      target.removeEventListener(type, on);
      reject(new Error(`timed out waiting for '${type}'`));
    }, ms);
    const on = (event) => {
      clearTimeout(timer);
      target.removeEventListener(type, on);
      resolve(event);
    };
    target.addEventListener(type, on);
  });
}

/** Every `type` event of `target`, as they come. */
function collect(target, type, map = (e) => e) {
  const seen = [];
  target.addEventListener(type, (e) => seen.push(map(e)));
  return seen;
}

async function until(predicate, ms = 2000, what = "condition") {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A ws server on 127.0.0.1 speaking the rooms protocol (JSON frames starting with
 * {"op":...}); any other frame is echoed, except the text commands "close <code>"
 * and "kill". Room state outlives connections, so clients can resume.
 */
async function startServer({ historySize = 100, port = 0, fallback = null } = {}) {
  const handleProtocols = (set) => [...set][0] ?? false;
  let http = null;
  let wss;
  if (fallback) {
    // WebSocket and the HTTP fallback transports on one port, as on the real server.
    wss = new WebSocketServer({ noServer: true, handleProtocols });
    http = fallbackServer(wss, fallback);
    http.listen(port, "127.0.0.1");
    await onceEmitter(http, "listening");
  } else {
    wss = new WebSocketServer({ host: "127.0.0.1", port, handleProtocols });
    await onceEmitter(wss, "listening");
  }
  const rooms = new Map();
  const received = []; // every text frame, in arrival order
  let connections = 0;
  let users = 0;

  const room = (name) => {
    // Each life of a room has its own epoch, as on the real server.
    if (!rooms.has(name)) rooms.set(name, { offset: 0, epoch: Math.random().toString(16).slice(2, 14), history: [], members: new Map() });
    return rooms.get(name);
  };
  const members = (r) => [...new Set(r.members.values())].sort();
  const send = (ws, obj) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(obj));
  const publish = (name, data) => {
    const r = room(name);
    const offset = ++r.offset;
    r.history.push({ offset, data });
    if (r.history.length > historySize) r.history.shift();
    for (const ws of r.members.keys()) send(ws, { op: "message", room: name, offset, epoch: r.epoch, data });
    return offset;
  };

  wss.on("connection", (ws) => {
    connections++;
    const user = `u${++users}`;
    ws.on("message", (raw, isBinary) => {
      if (isBinary) return ws.send(raw, { binary: true });
      const text = raw.toString();
      received.push(text);
      if (text === "kill") return ws.terminate();
      if (text.startsWith("close ")) return ws.close(Number(text.slice(6)), "bye");
      if (!text.startsWith('{"op"')) return ws.send(text);
      const req = JSON.parse(text);
      if (req.op === "join") {
        if (req.room === "forbidden") return send(ws, { op: "error", code: "forbidden", retryable: false, reason: "not allowed to join", room: req.room, request: "join" });
        if (req.room === "busy") {
          // A publish refused while the hub is down, answered before the join: not a refusal of the join.
          send(ws, { op: "error", code: "hub_unavailable", retryable: true, reason: "message not sent", room: req.room, request: "publish" });
        }
        const r = room(req.room);
        const since = req.since;
        const otherEpoch = req.epoch != null && req.epoch !== r.epoch;
        const reset = since != null && (since > r.offset || otherEpoch);
        const after = since == null ? null : reset ? 0 : since;
        const history = after == null ? r.history.slice() : r.history.filter((e) => e.offset > after);
        const first = history.length ? history[0].offset : r.offset + 1;
        const gap = after != null && after + 1 < first ? { from: after + 1, to: first - 1 } : null;
        r.members.set(ws, user);
        const frame = { op: "joined", room: req.room, offset: r.offset, epoch: r.epoch, members: members(r), history, gap };
        if (reset) frame.reset = true;
        send(ws, frame);
        for (const other of r.members.keys()) {
          if (other !== ws) send(other, { op: "presence", room: req.room, event: "join", user });
        }
      } else if (req.op === "leave") {
        const r = room(req.room);
        r.members.delete(ws);
        send(ws, { op: "left", room: req.room });
        for (const other of r.members.keys()) send(other, { op: "presence", room: req.room, event: "leave", user });
      } else if (req.op === "publish") {
        if (!room(req.room).members.has(ws)) return send(ws, { op: "error", code: "not_joined", retryable: false, reason: "not joined", room: req.room, request: "publish" });
        if (req.id === "stall") {
          return send(ws, { op: "error", code: "unknown_outcome", retryable: true, reason: "unknown outcome", room: req.room, request: "publish", id: req.id });
        }
        publish(req.room, req.data);
        if (req.id !== undefined) send(ws, { op: "published", room: req.room, id: req.id, offset: room(req.room).offset });
      }
    });
    ws.on("close", () => {
      for (const r of rooms.values()) r.members.delete(ws);
    });
  });

  const { port: bound } = (http || wss).address();
  const peers = () => (http ? [...wss.clients, ...http.sessions.values()] : [...wss.clients]);
  return {
    http,
    url: `ws://127.0.0.1:${bound}/`,
    port: bound,
    rooms,
    received,
    publish,
    get connections() {
      return connections;
    },
    /** Send `obj` as is to every client. */
    raw(obj) {
      for (const ws of peers()) send(ws, obj);
    },
    /** Send `text` as is to every client. */
    text(text) {
      for (const ws of peers()) ws.send(text);
    },
    /** Drop every connection without a closing handshake (the client sees 1006). */
    kill() {
      for (const ws of peers()) ws.terminate();
    },
    async close() {
      for (const ws of peers()) ws.terminate();
      await new Promise((r) => wss.close(r));
      if (http) {
        for (const socket of http.hung) socket.destroy();
        http.closeAllConnections();
        await new Promise((r) => http.close(r));
      }
    },
  };
}

/**
 * The server side of a fallback session, shaped like a `ws` socket (send, close,
 * terminate, readyState, "message" and "close" events) so that the rooms peer above
 * serves it unchanged. Records follow docs/topics/transports.md.
 */
class SessionPeer extends EventEmitter {
  constructor(id, transport, sessions) {
    super();
    this.id = id;
    this.transport = transport;
    this.sessions = sessions;
    this.readyState = WebSocket.OPEN;
    this.records = []; // [{seq, line}] not acknowledged yet
    this.seq = 0; // last server seq
    this.taken = 0; // last client seq taken
    this.closeSeq = 0;
    this.waiters = new Set();
    this.generation = 0;
    this.taken_messages = []; // every client record taken, in order
  }

  #push(record) {
    const seq = ++this.seq;
    this.records.push({ seq, line: JSON.stringify({ seq, ...record }) });
    for (const wake of this.waiters) wake();
    return seq;
  }

  send(data, options) {
    if (this.readyState !== WebSocket.OPEN) return;
    if (typeof data === "string" && !(options && options.binary)) this.#push({ text: data });
    else this.#push({ binary: Buffer.from(data).toString("base64") });
  }

  close(code, reason = "") {
    if (this.readyState !== WebSocket.OPEN) return;
    this.readyState = WebSocket.CLOSING;
    this.closeSeq = this.#push({ close: code, reason });
  }

  terminate() {
    if (this.readyState === WebSocket.CLOSED) return;
    this.readyState = WebSocket.CLOSED;
    this.sessions.delete(this.id);
    for (const wake of this.waiters) wake();
    this.emit("close");
  }

  acknowledge(ack) {
    this.records = this.records.filter((r) => r.seq > ack);
    if (this.closeSeq && ack >= this.closeSeq) this.terminate();
  }

  after(ack) {
    return this.records.filter((r) => r.seq > ack);
  }

  wait(ms) {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.waiters.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.waiters.add(wake);
    });
  }

  /** Client records, once each, in order; false on a gap. */
  take(records) {
    for (const record of records) {
      if (record.seq <= this.taken) continue;
      if (record.seq !== this.taken + 1) return false;
      this.taken = record.seq;
      this.taken_messages.push(record);
      if ("text" in record) this.emit("message", Buffer.from(record.text), false);
      else if ("binary" in record) this.emit("message", Buffer.from(record.binary, "base64"), true);
      else if ("close" in record) {
        this.close(record.close, record.reason || "");
        this.emit("close");
      }
    }
    return true;
  }
}

/**
 * An HTTP server for the fallback transports in front of `wss` (noServer). `mode` may
 * change while it runs: ws "accept" | "refuse" (the upgrade is dropped: 1006) | "hang"
 * (never answered); `buffer` (streaming/SSE bodies held back, as by a buffering proxy);
 * `cutEvery` n (every n-th polling answer is cut half-way and every n-th POST loses its
 * answer after its records were taken); `transports` offered.
 */
function fallbackServer(wss, mode) {
  mode.ws ??= "refuse";
  mode.transports ??= ["streaming", "sse", "polling"];
  mode.pollTimeout ??= 2000;
  mode.heartbeat ??= 1;
  const sessions = new Map();
  const stats = { opens: [], upgrades: 0, cuts: 0, gets: 0, posts: 0 };
  const hung = [];
  let counter = 0;
  const server = createServer(async (req, res) => {
    const url = new URL(req.url, "http://127.0.0.1");
    const q = url.searchParams;
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = Buffer.concat(chunks).toString();
    const json = (status, obj) => {
      res.writeHead(status, { "Content-Type": "application/json", "Cache-Control": "no-store" });
      res.end(JSON.stringify(obj));
    };
    if (q.has("fd_transport") && !q.has("fd_session")) {
      const transport = q.get("fd_transport");
      if (req.method !== "POST") return json(405, { error: "POST" });
      if (!mode.transports.includes(transport)) return json(404, { error: "not offered" });
      stats.opens.push(transport);
      const peer = new SessionPeer(`s${++counter}`, transport, sessions);
      sessions.set(peer.id, peer);
      json(200, { session: peer.id, transport, subprotocol: null, heartbeat: mode.heartbeat, poll_timeout: mode.pollTimeout / 1000, session_timeout: 45, max_buffer: 1048576, max_post: 1048576 });
      wss.emit("connection", peer, req);
      return;
    }
    const peer = sessions.get(q.get("fd_session"));
    if (!peer) return json(410, { error: "unknown session" });
    const ack = Math.max(Number(q.get("fd_ack") || 0), Number(req.headers["last-event-id"] || 0));
    if (req.method === "POST") {
      stats.posts++;
      const records = body.split("\n").filter(Boolean).map((line) => JSON.parse(line));
      if (!peer.take(records)) return json(400, { error: "gap" });
      peer.acknowledge(ack);
      if (mode.cutEvery && records.length && stats.posts % mode.cutEvery === 0) {
        stats.cuts++;
        return res.socket.destroy(); // taken, but the answer is lost
      }
      res.writeHead(204).end();
      return;
    }
    stats.gets++;
    if (q.has("fd_transport")) {
      // The session goes on with another transport (a client behind a buffering proxy).
      if (!mode.transports.includes(q.get("fd_transport"))) return json(404, { error: "not offered" });
      peer.transport = q.get("fd_transport");
      stats.switches = (stats.switches || 0) + 1;
    }
    peer.acknowledge(ack);
    const generation = ++peer.generation;
    for (const wake of peer.waiters) wake(); // a new receiving request ends the previous one
    const live = () => peer.generation === generation && peer.readyState !== WebSocket.CLOSED && !res.destroyed;
    if (peer.transport === "polling") {
      const end = Date.now() + mode.pollTimeout;
      while (live() && !peer.after(ack).length && Date.now() < end) await peer.wait(end - Date.now());
      const text = peer.after(ack).map((r) => r.line + "\n").join("");
      if (!live()) return res.destroyed || res.end();
      res.writeHead(200, { "Content-Type": "application/x-ndjson", "Content-Length": Buffer.byteLength(text) });
      if (mode.cutEvery && text && stats.gets % mode.cutEvery === 0) {
        stats.cuts++;
        res.write(text.slice(0, Math.floor(text.length / 2)));
        return setTimeout(() => res.socket.destroy(), 10);
      }
      return res.end(text);
    }
    const sse = peer.transport === "sse";
    res.writeHead(200, { "Content-Type": sse ? "text/event-stream" : "application/x-ndjson", "Cache-Control": "no-store", "X-Accel-Buffering": "no" });
    if (mode.buffer) {
      // A buffering proxy: nothing reaches the client until the response ends.
      while (live()) await peer.wait(1000);
      return;
    }
    const frame = (r) => (sse ? `id: ${r.seq}\ndata: ${r.line}\n\n` : r.line + "\n");
    res.write(sse ? 'retry: 1000\nevent: heartbeat\ndata: {"heartbeat": true}\n\n' : '{"heartbeat": true}\n');
    if (mode.stall) {
      // The connection dies unnoticed after its first byte: nothing more, ever.
      mode.stall = false;
      while (live()) await peer.wait(1000);
      return;
    }
    let position = ack;
    while (live()) {
      const batch = peer.after(position);
      if (batch.length) {
        res.write(batch.map(frame).join(""));
        position = batch[batch.length - 1].seq;
        if (peer.closeSeq && position >= peer.closeSeq) break;
        continue;
      }
      const before = peer.seq;
      await peer.wait(mode.heartbeat * 1000);
      if (peer.seq === before && live()) res.write(sse ? 'event: heartbeat\ndata: {"heartbeat": true}\n\n' : '{"heartbeat": true}\n');
    }
    if (!res.destroyed) res.end();
  });
  server.on("upgrade", (req, socket, head) => {
    if (mode.ws === "accept") {
      stats.upgrades++;
      return wss.handleUpgrade(req, socket, head, (ws) => wss.emit("connection", ws, req));
    }
    if (mode.ws === "hang") return hung.push(socket);
    socket.destroy();
  });
  server.hung = hung;
  server.sessions = sessions;
  server.stats = stats;
  server.mode = mode;
  return server;
}

/** A port where nothing listens (connections are refused at once). */
async function deadPort() {
  const server = await startServer();
  await server.close();
  return server.port;
}

const opened = [];
const servers = [];

function connect(url, protocols, options) {
  if (options === undefined && protocols && !Array.isArray(protocols) && typeof protocols === "object") {
    options = protocols;
    protocols = undefined;
  }
  const socket = new FullDuplexSocket(url, protocols, { WebSocket, minDelay: 10, maxDelay: 50, ...options });
  opened.push(socket);
  return socket;
}

async function server(options) {
  const s = await startServer(options);
  servers.push(s);
  return s;
}

afterEach(async () => {
  for (const socket of opened.splice(0)) socket.close();
  for (const s of servers.splice(0)) await s.close();
});

// ---------------------------------------------------------------- loading

describe("loading", T, () => {
  const source = readFileSync(CLIENT_JS, "utf8");

  test("a classic script defines window.FullDuplexSocket and window.fullduplex", () => {
    const window = { EventTarget, Event, CustomEvent, URL, DOMException, setTimeout, clearTimeout };
    window.window = window;
    vm.createContext(window);
    vm.runInContext(source, window, { filename: "fullduplex.js" });
    assert.equal(typeof window.FullDuplexSocket, "function");
    assert.equal(window.fullduplex.FullDuplexSocket, window.FullDuplexSocket);
    assert.equal(typeof window.fullduplex.Room, "function");
  });

  test("the same file is valid ES module code, and fullduplex.mjs exports it", () => {
    const probe = `${source}\nif (typeof globalThis.FullDuplexSocket !== "function") process.exit(3);`;
    const run = spawnSync(process.execPath, ["--input-type=module", "-e", probe], { encoding: "utf8", timeout: 4000 });
    assert.equal(run.status, 0, run.stderr);
    assert.equal(fullduplex.FullDuplexSocket, FullDuplexSocket);
    assert.equal(globalThis.FullDuplexSocket, FullDuplexSocket);
  });

  test("loaded twice, the first definition is kept", () => {
    vm.runInThisContext(source, { filename: "fullduplex.js" });
    assert.equal(globalThis.FullDuplexSocket, FullDuplexSocket);
  });
});

// ------------------------------------------------- the standard WebSocket surface

describe("WebSocket surface", T, () => {
  test("states are static and instance constants 0-3", async () => {
    const s = await server();
    const socket = connect(s.url);
    for (const [name, value] of Object.entries({ CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 })) {
      assert.equal(FullDuplexSocket[name], value);
      assert.equal(socket[name], value);
    }
    assert.ok(socket instanceof EventTarget);
  });

  test("open, message, close events and the readyState sequence", async () => {
    const s = await server();
    const socket = connect(s.url);
    const states = [socket.readyState];
    const order = [];
    socket.onopen = () => order.push("onopen");
    socket.addEventListener("open", () => {
      order.push("listener");
      states.push(socket.readyState);
    });
    await next(socket, "open");
    assert.deepEqual(order, ["onopen", "listener"]);
    assert.equal(socket.url, s.url);

    const got = next(socket, "message");
    socket.send("héllo");
    const message = await got;
    assert.equal(message.data, "héllo");
    assert.equal(message.origin, s.url.replace(/\/$/, ""));

    const closed = next(socket, "close");
    socket.close(1000, "done");
    states.push(socket.readyState);
    const event = await closed;
    states.push(socket.readyState);
    assert.deepEqual(states, [0, 1, 2, 3]);
    assert.equal(event.code, 1000);
    assert.equal(event.wasClean, true);
  });

  test("on* handlers: replacing keeps one listener, null removes it", async () => {
    const s = await server();
    const socket = connect(s.url);
    const calls = [];
    socket.onmessage = () => calls.push("a");
    socket.onmessage = (e) => calls.push("b:" + e.data);
    assert.equal(typeof socket.onmessage, "function");
    await next(socket, "open");
    socket.send("x");
    await next(socket, "message");
    socket.onmessage = null;
    assert.equal(socket.onmessage, null);
    socket.send("y");
    await next(socket, "message");
    assert.deepEqual(calls, ["b:x"]);
  });

  test("subprotocol list: protocol is the server's choice", async () => {
    const s = await server();
    const socket = connect(s.url, ["chat.v2", "chat.v1"]);
    assert.equal(socket.protocol, "");
    await next(socket, "open");
    assert.equal(socket.protocol, "chat.v2");
    assert.equal(typeof socket.extensions, "string");
  });

  test("binaryType blob (default) and arraybuffer", async () => {
    const s = await server();
    const socket = connect(s.url);
    assert.equal(socket.binaryType, "blob");
    await next(socket, "open");
    socket.send(new Uint8Array([1, 2, 3]));
    const blob = (await next(socket, "message")).data;
    assert.ok(blob instanceof Blob);
    assert.deepEqual([...new Uint8Array(await blob.arrayBuffer())], [1, 2, 3]);

    socket.binaryType = "nodebuffer"; // not a standard value: ignored
    assert.equal(socket.binaryType, "blob");
    socket.binaryType = "arraybuffer";
    socket.send(new Blob([new Uint8Array([4, 5])]));
    const buffer = (await next(socket, "message")).data;
    assert.ok(buffer instanceof ArrayBuffer);
    assert.deepEqual([...new Uint8Array(buffer)], [4, 5]);
  });

  test("URLs: http(s) becomes ws(s); bad URLs throw SyntaxError", async () => {
    const s = await server();
    const socket = connect(s.url.replace("ws:", "http:"));
    assert.equal(socket.url, s.url);
    await next(socket, "open");
    for (const bad of ["not a url", "ftp://127.0.0.1/", `${s.url}#frag`]) {
      assert.throws(() => connect(bad), (e) => e instanceof DOMException && e.name === "SyntaxError", bad);
    }
  });

  test("close() validates code and reason like the standard", async () => {
    const s = await server();
    const socket = connect(s.url);
    await next(socket, "open");
    for (const code of [0, 999, 1001, 1005, 2999, 5000, 65535]) {
      assert.throws(() => socket.close(code), (e) => e instanceof DOMException && e.name === "InvalidAccessError", String(code));
    }
    assert.throws(() => socket.close(1000, "é".repeat(62)), (e) => e instanceof DOMException && e.name === "SyntaxError");
    assert.equal(socket.readyState, FullDuplexSocket.OPEN);
    const closed = next(socket, "close");
    socket.close(4999, "é".repeat(61) + "a"); // 123 bytes: allowed
    const event = await closed;
    assert.equal(event.code, 4999);
    assert.equal(event.reason, "é".repeat(61) + "a");
    assert.throws(() => socket.close(1234), (e) => e.name === "InvalidAccessError"); // validated even when closed
  });

  test("close() after close() is a no-op; send() after close() discards", async () => {
    const s = await server();
    const socket = connect(s.url);
    await next(socket, "open");
    const closed = next(socket, "close");
    socket.close();
    socket.close(1000);
    socket.send("lost");
    assert.equal(socket.bufferedAmount, 0);
    assert.equal((await closed).code, 1005);
    assert.ok(!s.received.includes("lost"));
  });
});

// ------------------------------------------------------------------ send queue

describe("send queue", T, () => {
  test("messages sent while connecting go out in order on open; bufferedAmount counts them", async () => {
    const s = await server();
    const socket = connect(s.url);
    socket.send("é"); // 2 bytes in UTF-8
    socket.send("b");
    socket.send(new Uint8Array(5));
    socket.send("c");
    assert.equal(socket.bufferedAmount, 2 + 1 + 5 + 1);
    await next(socket, "open");
    await until(() => s.received.length === 3, 2000, "3 text frames");
    assert.deepEqual(s.received, ["é", "b", "c"]);
  });

  test("maxQueue is enforced: throw (default) or drop-oldest", async () => {
    const s = await server();
    const strict = connect(s.url, { maxQueue: 2 });
    strict.send("1");
    strict.send("2");
    assert.throws(() => strict.send("3"), (e) => e instanceof DOMException && e.name === "QuotaExceededError");

    const lossy = connect(s.url, { maxQueue: 2, queueOverflow: "drop-oldest" });
    for (const m of ["a", "b", "c", "d"]) lossy.send(m);
    assert.equal(lossy.bufferedAmount, 2);

    const standard = connect(s.url, { maxQueue: 0 });
    assert.throws(() => standard.send("x"), (e) => e instanceof DOMException && e.name === "InvalidStateError");

    await Promise.all([next(strict, "open"), next(lossy, "open"), next(standard, "open")]);
    await until(() => s.received.length === 4, 2000, "4 frames");
    assert.deepEqual(s.received.filter((m) => "abcd".includes(m)), ["c", "d"]);
    assert.deepEqual(s.received.filter((m) => "123".includes(m)), ["1", "2"]);
  });

  test("messages sent while reconnecting are kept and flushed in order", async () => {
    const s = await server();
    const socket = connect(s.url);
    await next(socket, "open");
    const reconnecting = next(socket, "reconnecting");
    s.kill();
    await reconnecting;
    assert.equal(socket.readyState, FullDuplexSocket.CONNECTING);
    for (let i = 0; i < 10; i++) socket.send(`m${i}`);
    await next(socket, "reconnect");
    await until(() => s.received.length === 10, 2000, "10 frames");
    assert.deepEqual(s.received, Array.from({ length: 10 }, (_, i) => `m${i}`));
  });
});

// ------------------------------------------------------------------ reconnect

describe("reconnect", T, () => {
  test("after the server kills the socket: reconnecting, then open and reconnect", async () => {
    const s = await server();
    const socket = connect(s.url);
    const events = [];
    for (const type of ["open", "reconnecting", "reconnect", "close"]) {
      socket.addEventListener(type, (e) => events.push(type === "reconnecting" ? `${type}:${e.detail.code}` : type));
    }
    await next(socket, "open");
    s.kill();
    const reconnecting = await next(socket, "reconnecting");
    assert.equal(reconnecting.detail.attempt, 1);
    assert.ok(reconnecting.detail.delay >= 0 && reconnecting.detail.delay < 10);
    const reconnect = await next(socket, "reconnect");
    assert.equal(reconnect.detail.attempt, 1);
    assert.equal(socket.readyState, FullDuplexSocket.OPEN);
    assert.deepEqual(events, ["open", "reconnecting:1006", "open", "reconnect"]);
    assert.equal(s.connections, 2);
  });

  test("backoff: the cap grows by factor up to maxDelay; the delay is random() times the cap", async () => {
    const port = await deadPort();
    const socket = connect(`ws://127.0.0.1:${port}/`, { minDelay: 10, maxDelay: 40, factor: 2, maxRetries: 5, random: () => 0.999 });
    const delays = collect(socket, "reconnecting", (e) => [e.detail.attempt, e.detail.delay]);
    const closed = await next(socket, "close", 3000);
    assert.deepEqual(delays, [[1, 9], [2, 19], [3, 39], [4, 39], [5, 39]]);
    assert.equal(closed.code, 1006);
    assert.equal(socket.readyState, FullDuplexSocket.CLOSED);
  });

  test("full jitter: every delay lies in [0, cap)", async () => {
    const port = await deadPort();
    const draws = [];
    const random = () => {
      const r = Math.random();
      draws.push(r);
      return r;
    };
    const socket = connect(`ws://127.0.0.1:${port}/`, { minDelay: 4, maxDelay: 32, maxRetries: 8, random });
    const delays = collect(socket, "reconnecting", (e) => e.detail);
    await next(socket, "close", 3000);
    assert.equal(delays.length, 8);
    delays.forEach(({ attempt, delay }, i) => {
      const cap = Math.min(32, 4 * 2 ** (attempt - 1));
      assert.equal(delay, Math.floor(draws[i] * cap));
      assert.ok(delay >= 0 && delay < cap);
    });
  });

  test("no reconnect after an explicit close()", async () => {
    const s = await server();
    const socket = connect(s.url);
    await next(socket, "open");
    const reconnecting = collect(socket, "reconnecting");
    socket.close();
    await next(socket, "close");
    await sleep(100);
    assert.equal(reconnecting.length, 0);
    assert.equal(s.connections, 1);
  });

  test("close() while waiting to reconnect stops for good", async () => {
    const s = await server();
    const socket = connect(s.url, { minDelay: 200, random: () => 0.99 });
    await next(socket, "open");
    s.kill();
    await next(socket, "reconnecting");
    const closed = next(socket, "close");
    socket.close();
    assert.equal(socket.readyState, FullDuplexSocket.CLOSING);
    assert.equal((await closed).code, 1006);
    await sleep(250);
    assert.equal(s.connections, 1);
    assert.equal(socket.readyState, FullDuplexSocket.CLOSED);
  });

  test("a server close with 1000 is final; 1001 is reconnected", async () => {
    const s = await server();
    const done = connect(s.url);
    await next(done, "open");
    done.send("close 1000");
    assert.equal((await next(done, "close")).code, 1000);

    const away = connect(s.url);
    await next(away, "open");
    away.send("close 1001");
    assert.equal((await next(away, "reconnecting")).detail.code, 1001);
    await next(away, "reconnect");
  });

  test("reconnect: false closes like a plain WebSocket", async () => {
    const s = await server();
    const socket = connect(s.url, { reconnect: false });
    await next(socket, "open");
    s.kill();
    const closed = await next(socket, "close");
    assert.equal(closed.code, 1006);
    assert.equal(closed.wasClean, false);
  });
});

// ---------------------------------------------------------------------- rooms

describe("rooms", T, () => {
  test("join -> joined with members and offset; publish -> message, not a raw socket message", async () => {
    const s = await server();
    s.publish("lobby", "old");
    const socket = connect(s.url);
    const raw = collect(socket, "message");
    const room = socket.join("lobby");
    assert.ok(room instanceof Room);
    assert.equal(socket.join("lobby"), room);
    assert.equal(room.joined, false);
    const joined = await next(room, "joined");
    assert.deepEqual(joined.detail.members, ["u1"]);
    assert.equal(joined.detail.offset, 1);
    assert.equal(joined.detail.gap, null);
    assert.equal(room.joined, true);
    assert.equal(room.lastOffset, 1);

    const got = next(room, "message");
    room.publish({ text: "hi" });
    const message = await got;
    assert.deepEqual(message.detail.data, { text: "hi" });
    assert.equal(message.detail.offset, 2);
    assert.equal(room.lastOffset, 2);
    assert.deepEqual(raw, []);
    assert.throws(() => room.publish(null), TypeError); // null: "drop this message" to the server
    assert.throws(() => room.publish(undefined), TypeError);
  });

  test("history is delivered on join; roomFramesAsMessages also surfaces frames raw", async () => {
    const s = await server();
    s.publish("lobby", "a");
    s.publish("lobby", "b");
    const socket = connect(s.url, { roomFramesAsMessages: true });
    const raw = collect(socket, "message", (e) => JSON.parse(e.data).op);
    const room = socket.join("lobby");
    const messages = collect(room, "message", (e) => [e.detail.offset, e.detail.data, e.detail.history]);
    await next(room, "joined");
    assert.deepEqual(messages, [[1, "a", true], [2, "b", true]]);
    assert.deepEqual(raw, ["joined"]);
  });

  test("an offset is never delivered twice, even when history overlaps live messages", async () => {
    const s = await server();
    const socket = connect(s.url);
    const room = socket.join("lobby");
    const offsets = collect(room, "message", (e) => e.detail.offset);
    await next(room, "joined");
    s.raw({ op: "message", room: "lobby", offset: 1, data: "x" });
    s.raw({ op: "message", room: "lobby", offset: 1, data: "x" });
    s.raw({ op: "message", room: "lobby", offset: 2, data: "y" });
    s.raw({ op: "joined", room: "lobby", offset: 3, members: [], history: [1, 2, 3].map((offset) => ({ offset, data: offset })), gap: null });
    s.raw({ op: "message", room: "lobby", offset: 3, data: "z" });
    s.raw({ op: "message", room: "lobby", offset: null, data: "typing" });
    s.raw({ op: "message", room: "lobby", offset: null, data: "typing" });
    await until(() => offsets.length >= 5, 2000, "5 messages");
    await sleep(20);
    assert.deepEqual(offsets, [1, 2, 3, null, null]);
  });

  test("after a reconnect, join is re-sent with since and only the missed messages arrive", async () => {
    const s = await server();
    const socket = connect(s.url);
    const room = socket.join("lobby");
    const seen = collect(room, "message", (e) => e.detail.data);
    await next(room, "joined");
    room.publish("m1");
    room.publish("m2");
    await until(() => seen.length === 2, 2000, "m1, m2");

    socket.addEventListener("reconnecting", () => {
      s.publish("lobby", "m3"); // published while the client is away
      s.publish("lobby", "m4");
    }, { once: true });
    s.kill();
    const rejoined = await next(room, "joined");
    assert.equal(rejoined.detail.resumed, true);
    assert.equal(rejoined.detail.gap, null);
    room.publish("m5");
    await until(() => seen.length === 5, 2000, "m5");
    assert.deepEqual(seen, ["m1", "m2", "m3", "m4", "m5"]);
    const joins = s.received.filter((m) => m.includes('"join"')).map((m) => JSON.parse(m));
    const epoch = s.rooms.get("lobby").epoch;
    assert.equal(room.epoch, epoch);
    assert.deepEqual(joins, [{ op: "join", room: "lobby" }, { op: "join", room: "lobby", since: 2, epoch }]);
  });

  test("publishes queued while reconnecting follow the re-join", async () => {
    const s = await server();
    const socket = connect(s.url);
    const room = socket.join("lobby");
    const seen = collect(room, "message", (e) => e.detail.data);
    await next(room, "joined");
    s.kill();
    await next(socket, "reconnecting");
    room.publish("queued");
    await until(() => seen.length === 1, 2000, "the queued publish");
    assert.deepEqual(seen, ["queued"]);
  });

  test("a gap the server cannot fill is surfaced", async () => {
    const s = await server({ historySize: 2 });
    const socket = connect(s.url);
    const room = socket.join("lobby");
    const seen = collect(room, "message", (e) => e.detail.offset);
    await next(room, "joined");
    s.publish("lobby", 1);
    await until(() => seen.length === 1, 2000, "offset 1");
    socket.addEventListener("reconnecting", () => {
      for (let i = 2; i <= 6; i++) s.publish("lobby", i); // history keeps 5 and 6
    }, { once: true });
    s.kill();
    const gap = await next(room, "gap");
    assert.deepEqual(gap.detail, { from: 2, to: 4 });
    await until(() => seen.length === 3, 2000, "offsets 5, 6");
    assert.deepEqual(seen, [1, 5, 6]);
    assert.equal(room.lastOffset, 6);
  });

  test("a reset room (server restarted) is replayed from the start", async () => {
    const s = await server();
    for (let i = 1; i <= 5; i++) s.publish("lobby", i);
    const socket = connect(s.url);
    const room = socket.join("lobby", { since: 5 });
    const seen = collect(room, "message", (e) => e.detail.offset);
    const first = await next(room, "joined");
    assert.equal(first.detail.resumed, true);
    assert.deepEqual(seen, []);
    s.rooms.clear(); // the restart: offsets count from 1 again
    s.publish("lobby", "new 1");
    s.publish("lobby", "new 2");
    s.kill();
    const rejoined = await next(room, "joined");
    assert.equal(rejoined.detail.reset, true);
    assert.deepEqual(seen, [1, 2]);
    assert.equal(room.lastOffset, 2);
  });

  test("a room that lost its data and overtook our offset is replayed whole (epochs)", async () => {
    const s = await server();
    const socket = connect(s.url);
    const room = socket.join("lobby");
    const seen = collect(room, "message", (e) => e.detail.data);
    await next(room, "joined");
    const oldEpoch = room.epoch;
    assert.equal(typeof oldEpoch, "string");
    for (let i = 1; i <= 3; i++) s.publish("lobby", `old ${i}`);
    await until(() => seen.length === 3, 2000, "3 old messages");
    socket.addEventListener("reconnecting", () => {
      s.rooms.clear(); // the room's data is lost; its new life goes beyond offset 3
      for (let i = 1; i <= 5; i++) s.publish("lobby", `new ${i}`);
    }, { once: true });
    s.kill();
    const rejoined = await next(room, "joined");
    assert.equal(rejoined.detail.reset, true);
    assert.notEqual(rejoined.detail.epoch, oldEpoch);
    assert.equal(room.epoch, rejoined.detail.epoch);
    await until(() => seen.length === 8, 2000, "5 new messages");
    assert.deepEqual(seen.slice(3), ["new 1", "new 2", "new 3", "new 4", "new 5"]);
    assert.equal(room.lastOffset, 5);
    const rejoin = JSON.parse(s.received.filter((m) => m.includes('"join"'))[1]);
    assert.deepEqual(rejoin, { op: "join", room: "lobby", since: 3, epoch: oldEpoch });
  });

  test("join() takes a stored since and epoch; a live message from a new epoch resets dedup", async () => {
    const s = await server();
    const socket = connect(s.url);
    const room = socket.join("lobby", { since: 7, epoch: "0123456789ab" });
    assert.equal(room.epoch, "0123456789ab");
    assert.throws(() => socket.join("other", { epoch: 5 }), TypeError);
    const offsets = collect(room, "message", (e) => e.detail.offset);
    const gaps = collect(room, "gap", (e) => e.detail);
    const joined = await next(room, "joined");
    assert.equal(joined.detail.reset, true); // the fake server's room has another epoch
    assert.equal(JSON.parse(s.received.find((m) => m.includes('"join"'))).epoch, "0123456789ab");
    const epoch = room.epoch;
    s.raw({ op: "message", room: "lobby", offset: 1, epoch, data: "a" });
    s.raw({ op: "message", room: "lobby", offset: 1, epoch, data: "a" }); // a duplicate
    s.raw({ op: "message", room: "lobby", offset: 1, epoch: "ffffffffffff", data: "b" }); // new life
    s.raw({ op: "message", room: "lobby", offset: 4, epoch: "eeeeeeeeeeee", data: "c" }); // and again
    await until(() => offsets.length === 3, 2000, "3 messages");
    assert.deepEqual(offsets, [1, 1, 4]);
    assert.deepEqual(gaps, [{ from: 1, to: 3 }]);
    assert.equal(room.epoch, "eeeeeeeeeeee");
    assert.equal(room.lastOffset, 4);
  });

  test("presence updates members; leave() stops events and re-joins", async () => {
    const s = await server();
    const a = connect(s.url);
    const lobby = a.join("lobby");
    await next(lobby, "joined");
    const b = connect(s.url);
    const joinedPresence = next(lobby, "presence");
    const other = b.join("lobby");
    await next(other, "joined");
    const presence = await joinedPresence;
    assert.deepEqual(presence.detail, { event: "join", user: "u2", members: ["u1", "u2"] });
    assert.deepEqual(lobby.members, ["u1", "u2"]);

    const left = next(lobby, "presence");
    other.leave();
    assert.deepEqual((await left).detail, { event: "leave", user: "u2", members: ["u1"] });
    assert.throws(() => other.publish("x"), (e) => e.name === "InvalidStateError");
    assert.equal(b.rooms.size, 0);
    const back = Promise.all([next(lobby, "joined"), next(b, "reconnect")]);
    s.kill();
    await back;
    await sleep(30);
    assert.equal(s.received.filter((m) => m.includes('"join"')).length, 3); // a twice, b once
  });

  test("the member list is kept from presence changes, sorted, each user once", async () => {
    const s = await server();
    const a = connect(s.url);
    const lobby = a.join("lobby");
    await next(lobby, "joined");
    assert.deepEqual(lobby.members, ["u1"]);
    const changes = [
      [{ event: "join", user: "zed" }, ["u1", "zed"]],
      [{ event: "join", user: "ann" }, ["ann", "u1", "zed"]],
      [{ event: "join", user: "ann" }, ["ann", "u1", "zed"]], // already listed
      [{ event: "leave", user: "nobody" }, ["ann", "u1", "zed"]], // not listed
      [{ event: "leave", user: "u1" }, ["ann", "zed"]],
      [{ event: "join", user: "bob", members: ["bob"] }, ["bob"]], // a full list replaces
    ];
    for (const [change, members] of changes) {
      const got = next(lobby, "presence");
      s.raw(Object.assign({ op: "presence", room: "lobby" }, change));
      const detail = (await got).detail;
      assert.deepEqual(detail, { event: change.event, user: change.user, members });
      assert.deepEqual(lobby.members, members);
    }
    lobby.members.push("mutation"); // a copy: the room's list is not changed
    assert.deepEqual(lobby.members, ["bob"]);
  });

  test("publish ids: acknowledged by published events; unknown outcome keeps the room", async () => {
    const s = await server();
    const socket = connect(s.url);
    const room = socket.join("lobby");
    await next(room, "joined");
    const acked = next(room, "published");
    room.publish({ text: "hi" }, { id: "m-1" });
    assert.deepEqual((await acked).detail, { id: "m-1", offset: 1 });
    assert.ok(s.received.some((m) => JSON.parse(m).id === "m-1"));
    const error = next(room, "error");
    room.publish("x", { id: "stall" });
    assert.deepEqual((await error).detail, { reason: "unknown outcome", code: "unknown_outcome", retryable: true, id: "stall" });
    assert.equal(room.joined, true);
    assert.throws(() => room.publish("x", { id: "" }), TypeError);
    assert.throws(() => room.publish("x", { id: "y".repeat(65) }), TypeError);
    assert.throws(() => room.publish("x", { id: 5 }), TypeError);
  });

  test("a refused join surfaces an error and the room is forgotten", async () => {
    const s = await server();
    const socket = connect(s.url);
    const room = socket.join("forbidden");
    const error = await next(room, "error");
    assert.equal(error.detail.reason, "not allowed to join");
    assert.equal(error.detail.code, "forbidden");
    assert.equal(error.detail.retryable, false);
    assert.equal(socket.rooms.has("forbidden"), false);
    const roomerror = next(socket, "roomerror");
    s.raw({ op: "error", code: "bad_request", retryable: false, reason: "invalid JSON" });
    assert.deepEqual((await roomerror).detail, { reason: "invalid JSON", code: "bad_request", retryable: false, room: null });
  });

  test("a retryable error while joining keeps the room, whatever its text says", async () => {
    const s = await server();
    const socket = connect(s.url);
    const room = socket.join("busy");
    const [error] = await Promise.all([next(room, "error"), next(room, "joined")]);
    assert.deepEqual(error.detail, { reason: "message not sent", code: "hub_unavailable", retryable: true });
    assert.equal(socket.rooms.has("busy"), true);
    assert.equal(room.joined, true);
  });

  test("a join error is final by its code, not its text", async () => {
    const s = await server();
    const socket = connect(s.url);
    const room = socket.join("lobby");
    await next(socket, "open");
    // A server that says "hub unavailable" in a non-retryable refusal: the code decides.
    const lobby = socket.join("other");
    const error = next(lobby, "error");
    s.raw({ op: "error", code: "forbidden", retryable: false, reason: "hub unavailable", room: "other", request: "join" });
    assert.equal((await error).detail.code, "forbidden");
    assert.equal(socket.rooms.has("other"), false);
    await next(room, "joined");
  });

  test("hub-wide messages (room null) arrive as broadcast events", async () => {
    const s = await server();
    const socket = connect(s.url);
    const room = socket.join("lobby");
    await next(room, "joined");
    const broadcast = next(socket, "broadcast");
    s.raw({ op: "message", room: null, offset: null, data: { notice: "restart at 5" } });
    assert.deepEqual((await broadcast).detail.data, { notice: "restart at 5" });
  });

  test("frames that merely look like rooms frames stay raw until join() is used", async () => {
    const s = await server();
    const socket = connect(s.url);
    await next(socket, "open");
    const got = next(socket, "message");
    s.raw({ op: "message", room: "lobby", offset: 1, data: 1 });
    assert.equal(JSON.parse((await got).data).op, "message");
  });
});

// ------------------------------------------------------------ HTTP fallbacks

/** A Map-backed sessionStorage for the duration of one test. */
function withTabStorage() {
  const items = new Map();
  globalThis.sessionStorage = {
    getItem: (k) => (items.has(k) ? items.get(k) : null),
    setItem: (k, v) => items.set(k, String(v)),
    removeItem: (k) => items.delete(k),
  };
  return items;
}

describe("HTTP fallback", { timeout: 15000 }, () => {
  afterEach(() => {
    delete globalThis.sessionStorage;
  });

  test("a refused upgrade (1006 before open) moves to streaming; text both ways", async () => {
    const s = await server({ fallback: { ws: "refuse" } });
    const socket = connect(s.url);
    const transports = collect(socket, "transport", (e) => e.detail.transport);
    const errors = collect(socket, "error");
    await next(socket, "open", 4000);
    assert.equal(socket.transport, "streaming");
    assert.deepEqual(transports, ["streaming"]);
    assert.equal(errors.length, 0); // the failed WebSocket attempt is not an error of the socket
    assert.deepEqual(s.http.stats.opens, ["streaming"]);
    const got = next(socket, "message");
    socket.send("héllo");
    assert.equal((await got).data, "héllo");
  });

  test("an upgrade left hanging: the next transport after openTimeout", async () => {
    const s = await server({ fallback: { ws: "hang", transports: ["polling"] } });
    const started = Date.now();
    const socket = connect(s.url, { openTimeout: 300 });
    await next(socket, "open", 4000);
    assert.ok(Date.now() - started >= 290);
    assert.equal(socket.transport, "polling");
  });

  test("404 for a transport not offered: the next one (sse needs EventSource: skipped in Node)", async () => {
    const s = await server({ fallback: { transports: ["polling"] } });
    const socket = connect(s.url);
    await next(socket, "open", 4000);
    assert.equal(socket.transport, "polling");
    assert.deepEqual(s.http.stats.opens, ["polling"]); // streaming answered 404 before a session existed
  });

  test("a buffering proxy (no first byte in time): the same session goes on with long polling", async () => {
    const storage = withTabStorage();
    const s = await server({ fallback: { buffer: true } });
    const socket = connect(s.url, { firstByteTimeout: 400, probeDelay: 60000 });
    const room = socket.join("lobby");
    s.publish("lobby", "before"); // sent while the proxy holds the stream back
    const joined = await next(room, "joined", 4000);
    assert.equal(joined.detail.offset, 1);
    assert.equal(socket.transport, "polling");
    assert.deepEqual(s.http.stats.opens, ["streaming"]); // no second session: the handler opened once
    assert.equal(s.http.stats.switches, 1);
    assert.equal([...s.http.sessions.values()][0].transport, "polling");
    assert.equal(storage.get("fullduplex.transport " + s.url), "polling");
    const got = next(socket, "message");
    socket.send("through");
    assert.equal((await got).data, "through");
  });

  test("a buffering proxy with polling not allowed: the session is given up", async () => {
    const s = await server({ fallback: { buffer: true } });
    const socket = connect(s.url, { firstByteTimeout: 300, transports: ["streaming"], maxRetries: 0 });
    const closed = await next(socket, "close", 4000);
    assert.equal(closed.code, 1006);
    assert.deepEqual(s.http.stats.opens, ["streaming"]);
    // The server is told: the client's close record ends the handler at once.
    const peer = [...s.http.sessions.values()][0];
    await until(() => peer.taken_messages.some((r) => r.close === 1001), 2000, "the close record");
  });

  test("a streaming response that goes silent (no heartbeat) is replaced by a new GET", async () => {
    const s = await server({ fallback: { stall: true, heartbeat: 0.2 } });
    const socket = connect(s.url, { transports: ["streaming"] });
    await next(socket, "open", 4000);
    const got = next(socket, "message", 4000);
    const started = Date.now();
    s.text("after the silence");
    assert.equal((await got).data, "after the silence");
    assert.ok(Date.now() - started >= 1000, "delivered by the stalled response?");
    assert.equal(s.http.stats.gets, 2);
    assert.equal(socket.transport, "streaming");
  });

  test("binary messages travel as base64 both ways", async () => {
    for (const transport of ["streaming", "polling"]) {
      const s = await server({ fallback: {} });
      const socket = connect(s.url, { transports: [transport] });
      socket.binaryType = "arraybuffer";
      await next(socket, "open", 4000);
      const got = next(socket, "message");
      const bytes = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) & 255);
      socket.send(bytes);
      const data = (await got).data;
      assert.ok(data instanceof ArrayBuffer, transport);
      assert.deepEqual([...new Uint8Array(data)], [...bytes], transport);
      const blob = next(socket, "message");
      socket.send(new Blob([new Uint8Array([1, 2, 3])]));
      assert.deepEqual([...new Uint8Array((await blob).data)], [1, 2, 3], transport);
      assert.equal(s.http.stats.upgrades, 0);
    }
  });

  test("cut poll answers and lost POST answers: every message exactly once, in order", async () => {
    const s = await server({ fallback: { cutEvery: 3 } });
    const socket = connect(s.url, { transports: ["polling"] });
    await next(socket, "open", 4000);
    const got = collect(socket, "message", (e) => e.data);
    const N = 60;
    for (let i = 0; i < N; i++) {
      socket.send(`c${i}`); // echoed by the server
      if (i % 4 === 0) s.text(`s${i}`);
      await sleep(10); // many small requests, so that several are cut
    }
    const expected = N + Math.ceil(N / 4);
    await until(() => got.length >= expected, 10000, `${expected} messages`);
    await sleep(200);
    assert.equal(got.length, expected);
    assert.deepEqual(got.filter((m) => m[0] === "c"), Array.from({ length: N }, (_, i) => `c${i}`));
    assert.deepEqual(got.filter((m) => m[0] === "s"), Array.from({ length: N / 4 }, (_, i) => `s${i * 4}`));
    const peer = [...s.http.sessions.values()][0];
    assert.deepEqual(peer.taken_messages.map((r) => r.text), Array.from({ length: N }, (_, i) => `c${i}`));
    assert.ok(s.http.stats.cuts >= 4, `only ${s.http.stats.cuts} cuts`);
  });

  test("the tab remembers the fallback: the next socket skips WebSocket", async () => {
    const storage = withTabStorage();
    const s = await server({ fallback: { ws: "refuse", transports: ["polling"] } });
    const first = connect(s.url, { probeDelay: 60000 });
    await next(first, "open", 4000);
    assert.equal(storage.get("fullduplex.transport " + s.url), "polling");
    first.close();
    s.http.mode.ws = "hang"; // would cost openTimeout if it were tried
    const started = Date.now();
    const second = connect(s.url, { probeDelay: 60000, openTimeout: 2000 });
    await next(second, "open", 4000);
    assert.ok(Date.now() - started < 1500);
    assert.equal(second.transport, "polling");
    const off = connect(s.url, { probeDelay: 60000, openTimeout: 200, remember: false });
    const opened = Date.now();
    await next(off, "open", 4000);
    assert.ok(Date.now() - opened >= 190); // tried WebSocket first
  });

  test("background probe: upgrade to WebSocket without losing or repeating a room message", async () => {
    const storage = withTabStorage();
    const s = await server({ fallback: { ws: "refuse" } });
    const socket = connect(s.url, { transports: ["websocket", "polling"], probeDelay: 300 });
    const room = socket.join("lobby");
    const offsets = collect(room, "message", (e) => e.detail.offset);
    const plain = collect(socket, "message", (e) => e.data);
    await next(room, "joined", 4000);
    assert.equal(socket.transport, "polling");
    s.http.mode.ws = "accept";
    const upgraded = next(socket, "transport", 4000);
    // Messages keep flowing, published from this socket and from the server, while it moves.
    let i = 0;
    const pump = setInterval(() => {
      if (i < 40) {
        s.publish("lobby", { n: i++ });
        room.publish({ mine: i });
        socket.send(`p${i}`);
      }
    }, 15);
    const event = await upgraded;
    assert.deepEqual(event.detail, { transport: "websocket", previous: "polling", upgrade: true });
    await until(() => i >= 40, 4000, "40 rounds");
    clearInterval(pump);
    await until(() => offsets.length >= 80, 4000, "80 room messages");
    await sleep(300);
    assert.deepEqual(offsets, Array.from({ length: 80 }, (_, k) => k + 1));
    // Echoes of what went over polling come before those of what went over WebSocket.
    assert.deepEqual(plain, Array.from({ length: 40 }, (_, k) => `p${k + 1}`));
    assert.equal(socket.transport, "websocket");
    assert.equal(storage.get("fullduplex.transport " + s.url), "websocket");
    await until(() => s.http.sessions.size === 0, 3000, "the polling session to end");
    assert.equal(s.http.stats.upgrades, 1);
  });

  test("410 (session lost, e.g. its node died) opens a new session and the rooms resume", async () => {
    const s = await server({ fallback: {} });
    const socket = connect(s.url, { transports: ["polling"] });
    const room = socket.join("lobby");
    const offsets = collect(room, "message", (e) => e.detail.offset);
    await next(room, "joined", 4000);
    s.publish("lobby", "a");
    await until(() => offsets.length === 1, 2000, "first message");
    for (const peer of [...s.http.sessions.values()]) peer.terminate(); // its id now answers 410
    s.publish("lobby", "b");
    const joined = await next(room, "joined", 4000);
    assert.equal(joined.detail.resumed, true);
    s.publish("lobby", "c");
    await until(() => offsets.length === 3, 2000, "three messages");
    assert.deepEqual(offsets, [1, 2, 3]);
    assert.deepEqual(s.http.stats.opens, ["polling", "polling"]);
  });

  test("close() ends a session cleanly with its code; a server close record closes the socket", async () => {
    const s = await server({ fallback: {} });
    const socket = connect(s.url, { transports: ["streaming"] });
    await next(socket, "open", 4000);
    const closed = next(socket, "close", 4000);
    socket.close(4001, "bye now");
    const event = await closed;
    assert.deepEqual([event.code, event.reason, event.wasClean], [4001, "bye now", true]);
    await until(() => s.http.sessions.size === 0, 3000, "the session to end");

    const other = connect(s.url, { transports: ["polling"] });
    await next(other, "open", 4000);
    const final = next(other, "close", 4000);
    other.send("close 1000");
    assert.equal((await final).code, 1000);
    assert.equal(other.readyState, FullDuplexSocket.CLOSED);
  });

  test("transports must be a non-empty list of known names", () => {
    for (const bad of [[], ["carrier-pigeon"], "polling"]) {
      assert.throws(() => new FullDuplexSocket("ws://127.0.0.1:1/", { transports: bad }), RangeError);
    }
  });
});
