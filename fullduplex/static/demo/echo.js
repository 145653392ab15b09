// The echo page: the browser's native WebSocket against /echo/ws.
(function () {
  "use strict";

  const card = document.getElementById("echo");
  const status = document.getElementById("status");
  const log = document.getElementById("log");
  const composer = document.getElementById("composer");
  const input = document.getElementById("message");
  const send = document.getElementById("send");
  const url = new URL(card.dataset.ws, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  let ws = null;

  function setStatus(state, label) {
    status.dataset.state = state;
    status.textContent = label || state;
  }

  // Typing is possible only while the connection is open; after "over" (or any
  // close) the input says how to start again.
  function setOpen(open) {
    input.disabled = !open;
    send.disabled = !open;
    input.placeholder = open ? "Type something, or over" : "Closed: press Reconnect";
    if (open) input.focus();
  }

  function line(kind, text) {
    const item = document.createElement("li");
    item.className = kind;
    item.textContent = text;
    log.append(item);
    log.scrollTop = log.scrollHeight;
  }

  function describe(data) {
    if (typeof data === "string") return data.length > 200 ? data.slice(0, 200) + "… (" + data.length + " chars)" : data;
    return "<" + (data.byteLength !== undefined ? data.byteLength : data.size) + " bytes>";
  }

  function connect() {
    setStatus("connecting", "connecting…");
    setOpen(false);
    const socket = new WebSocket(url.href);
    socket.binaryType = "arraybuffer";
    ws = socket;
    // Events of a socket replaced by Reconnect no longer concern the page.
    socket.onopen = () => {
      if (ws !== socket) return;
      setStatus("online");
      setOpen(true);
      line("note", "connected" + (socket.extensions ? " (" + socket.extensions + ")" : ""));
    };
    socket.onmessage = (event) => {
      if (ws === socket) line("in", "← " + describe(event.data));
    };
    socket.onclose = (event) => {
      if (ws !== socket) return;
      setStatus("offline", "closed");
      setOpen(false);
      line("note", "closed: " + event.code + (event.reason ? " " + event.reason : ""));
    };
  }

  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const text = input.value;
    ws.send(text);
    line("out", "→ " + describe(text));
    input.value = "";
  });
  document.getElementById("reconnect").addEventListener("click", () => {
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close();
    connect();
  });
  connect();
})();
