// Echo server on Node's `ws`, the peer for our clients' interop tests.
//
//   node node_server.js [--no-compression] [--protocols a,b]
//
// Listens on 127.0.0.1, an ephemeral port, and prints one JSON line on stdout:
// {"port": N}. Every message is echoed with its type (text stays text, binary stays
// binary). A text message "!close CODE REASON..." makes the server close with that
// code and reason (server-initiated close); "!proto" is answered with the agreed
// subprotocol ("" for none). Each closed connection prints {"closed": CODE,
// "reason": REASON}: the close frame the server received. Exits when stdin closes (the test ended)
// or after 60 s at most, whichever comes first.
"use strict";

const { WebSocketServer } = require("ws");

const args = process.argv.slice(2);
const compression = !args.includes("--no-compression");
const protocolsAt = args.indexOf("--protocols");
const supported = protocolsAt >= 0 ? args[protocolsAt + 1].split(",") : [];

const wss = new WebSocketServer({
  host: "127.0.0.1",
  port: 0,
  perMessageDeflate: compression,
  maxPayload: 64 * 1024 * 1024,
  // RFC 6455 §4.2.2: the server picks one of the client's subprotocols, or none.
  handleProtocols: (offered) => {
    for (const name of supported) {
      if (offered.has(name)) return name;
    }
    return false;
  },
});

wss.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => {
    if (!isBinary) {
      const text = data.toString("utf8");
      if (text.startsWith("!close ")) {
        const rest = text.slice("!close ".length);
        const space = rest.indexOf(" ");
        const code = Number(space < 0 ? rest : rest.slice(0, space));
        const reason = space < 0 ? "" : rest.slice(space + 1);
        ws.close(code, reason);
        return;
      }
      if (text === "!proto") {
        ws.send(ws.protocol || "");
        return;
      }
    }
    ws.send(data, { binary: isBinary });
  });
  ws.on("close", (code, reason) => {
    process.stdout.write(JSON.stringify({ closed: code, reason: reason.toString("utf8") }) + "\n");
  });
  ws.on("error", () => {});
});

wss.on("listening", () => {
  process.stdout.write(JSON.stringify({ port: wss.address().port }) + "\n");
});

function stop() {
  for (const client of wss.clients) client.terminate();
  wss.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 500).unref();
}

process.stdin.on("end", stop);
process.stdin.on("close", stop);
process.stdin.resume();
setTimeout(stop, 60000).unref();
