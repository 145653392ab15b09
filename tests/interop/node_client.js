// Client on Node's `ws`, the peer for our server's interop tests.
//
//   node node_client.js '{"url": "ws://127.0.0.1:PORT/echo", "compression": true,
//                         "protocols": ["chat"], "messages": [["text", 125], ["binary", 65536]],
//                         "close": [4999, "bye"], "serverClose": null, "ca": null}'
//
// Connects, sends each message in turn and waits for its echo (compared byte for
// byte and by type), then either closes with "close" or sends "!close CODE REASON"
// (serverClose) and waits for the server to close. Prints one JSON summary line:
// {"protocol", "extensions", "echoes": [{"kind", "size", "ok"}], "closeCode",
//  "closeReason", "error"}. Never runs longer than 30 s.
"use strict";

const crypto = require("crypto");
const WebSocket = require("ws");

const config = JSON.parse(process.argv[2]);
const summary = {
  protocol: null,
  extensions: null,
  echoes: [],
  closeCode: null,
  closeReason: null,
  error: null,
};

function finish() {
  process.stdout.write(JSON.stringify(summary) + "\n");
  process.exit(0);
}

setTimeout(() => {
  summary.error = summary.error || "timeout";
  finish();
}, 30000).unref();

// Characters of every UTF-8 width, so frames and deflate blocks split sequences.
const ALPHABET = Array.from("abcdefgh ijklmn\n0123456789éßñü€中文字𝄞😀");

function randomText(budget) {
  const parts = [];
  let used = 0;
  for (;;) {
    const ch = ALPHABET[crypto.randomInt(ALPHABET.length)];
    const width = Buffer.byteLength(ch);
    if (used + width > budget) break;
    parts.push(ch);
    used += width;
  }
  return parts.join("") + "a".repeat(budget - used);
}

function makePayload(kind, size) {
  const tile = 997;
  if (kind === "binary") {
    if (size <= 1 << 20) return crypto.randomBytes(size);
    const unit = crypto.randomBytes(tile);
    const out = Buffer.alloc(size);
    for (let pos = 0; pos < size; pos += tile) unit.copy(out, pos, 0, Math.min(tile, size - pos));
    return out;
  }
  if (size <= 1 << 16) return randomText(size);
  const unit = randomText(tile); // larger: a random unit repeated (cheap to build)
  return unit.repeat(Math.floor(size / tile)) + "a".repeat(size % tile);
}

const options = {
  perMessageDeflate: config.compression !== false,
  maxPayload: 64 * 1024 * 1024,
};
if (config.ca) options.ca = require("fs").readFileSync(config.ca); // wss:// with our test CA
const ws = new WebSocket(config.url, config.protocols || [], options);

let index = 0;
let expected = null;

function sendNext() {
  if (index < config.messages.length) {
    const [kind, size] = config.messages[index];
    expected = { kind, size, data: makePayload(kind, size) };
    ws.send(expected.data, { binary: kind === "binary" });
    return;
  }
  if (config.serverClose) {
    const [code, reason] = config.serverClose;
    ws.send(`!close ${code} ${reason}`);
  } else if (config.close) {
    const [code, reason] = config.close;
    ws.close(code, reason);
  } else {
    ws.close();
  }
}

ws.on("open", () => {
  summary.protocol = ws.protocol || null;
  summary.extensions = ws.extensions || null;
  sendNext();
});

ws.on("message", (data, isBinary) => {
  const { kind, size } = expected;
  let ok;
  if (kind === "binary") {
    ok = isBinary && Buffer.compare(Buffer.from(data), expected.data) === 0;
  } else {
    ok = !isBinary && data.toString("utf8") === expected.data;
  }
  summary.echoes.push({ kind, size, ok });
  index += 1;
  sendNext();
});

ws.on("close", (code, reason) => {
  summary.closeCode = code;
  summary.closeReason = reason.toString("utf8");
  finish();
});

ws.on("error", (err) => {
  summary.error = String(err && err.message ? err.message : err);
});
