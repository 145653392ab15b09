// The clock page: Beijing time pushed by the server every second.
(function () {
  "use strict";

  const card = document.getElementById("clock-card");
  const status = document.getElementById("status");
  const face = document.getElementById("clock");
  const ticks = document.getElementById("ticks");
  let count = 0;

  function setStatus(state, label) {
    status.dataset.state = state;
    status.textContent = label || state;
  }

  const socket = new FullDuplexSocket(card.dataset.ws, { minDelay: 250, maxDelay: 5000 });
  socket.onopen = () => setStatus("online");
  socket.onmessage = (event) => {
    face.textContent = event.data;
    ticks.textContent = String(++count);
  };
  socket.addEventListener("reconnecting", (event) => setStatus("reconnecting", "reconnecting… (" + event.detail.attempt + ")"));
  socket.onclose = () => setStatus("offline", "offline");
})();
