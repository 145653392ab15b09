// The echo page: the browser's native WebSocket against /echo/ws (S7).
(function () {
  "use strict";

  const card = document.getElementById("echo");
  const status = document.getElementById("status");
  const log = document.getElementById("log");
  const composer = document.getElementById("composer");
  const input = document.getElementById("message");
  const url = new URL(card.dataset.ws, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  let ws = null;

  function setStatus(state, label) {
    status.dataset.state = state;
    status.textContent = label || state;
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
    ws = new WebSocket(url.href);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      setStatus("online");
      line("note", "connected" + (ws.extensions ? " (" + ws.extensions + ")" : ""));
    };
    ws.onmessage = (event) => line("in", "← " + describe(event.data));
    ws.onclose = (event) => {
      setStatus("offline", "closed");
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
