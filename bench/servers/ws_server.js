// Echo + broadcast server on Node's `ws` package (no compression, 16 MiB limit).
// Usage: node ws_server.js --port N [--loop ignored]
'use strict';
const path = require('path');
const { WebSocketServer } = require(path.join(__dirname, '..', 'node_modules', 'ws'));

const args = process.argv.slice(2);
let port = 0;
let host = '127.0.0.1';
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--port') port = parseInt(args[++i], 10);
  else if (args[i] === '--host') host = args[++i];
  else if (args[i] === '--loop') i++; // not applicable to Node
}

const wss = new WebSocketServer({
  host,
  port,
  backlog: 1024,
  perMessageDeflate: false,
  maxPayload: 16 * 1024 * 1024,
  clientTracking: true,
});

function payloadFor(trigger) {
  return trigger.padEnd(64, '.').slice(0, 64);
}

wss.on('connection', (ws) => {
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => {
    if (!isBinary && data.length >= 6 && data.toString('latin1', 0, 6) === 'bcast:') {
      const payload = payloadFor(data.toString());
      for (const c of wss.clients) {
        if (c.readyState === 1) c.send(payload);
      }
    } else {
      ws.send(data, { binary: isBinary });
    }
  });
});

function stop() { process.exit(0); }
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
