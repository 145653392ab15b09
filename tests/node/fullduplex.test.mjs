// Tests of the browser client fullduplex/static/fullduplex.js, in Node with the `ws`
// package as the WebSocket implementation and, as the peer, a small in-test server
// speaking the rooms protocol of fullduplex.hub.RoomHandler. Run: npm test (in tests/node).
import { afterEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { once as onceEmitter } from "node:events";
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
async function startServer({ historySize = 100, port = 0 } = {}) {
  const wss = new WebSocketServer({ host: "127.0.0.1", port, handleProtocols: (set) => [...set][0] ?? false });
  await onceEmitter(wss, "listening");
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

  const { port: bound } = wss.address();
  return {
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
      for (const ws of wss.clients) send(ws, obj);
    },
    /** Drop every connection without a closing handshake (the client sees 1006). */
    kill() {
      for (const ws of wss.clients) ws.terminate();
    },
    async close() {
      for (const ws of wss.clients) ws.terminate();
      await new Promise((r) => wss.close(r));
    },
  };
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
