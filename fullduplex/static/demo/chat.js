// The chat page: one FullDuplexSocket (reconnects by itself), one room.
// Messages arrive rendered and escaped by the server (templates/demo/message.html).
(function () {
  "use strict";

  const chat = document.getElementById("chat");
  const roomName = chat.dataset.room;
  const me = chat.dataset.user;
  const status = document.getElementById("status");
  const messages = document.getElementById("messages");
  const empty = document.getElementById("empty");
  const online = document.getElementById("online");
  const onlineCount = document.getElementById("online-count");
  const activity = document.getElementById("activity");
  const composer = document.getElementById("composer");
  const input = document.getElementById("message");
  const MAX_MESSAGES = 500;
  const MAX_ACTIVITY = 20;

  function setStatus(state, label) {
    status.dataset.state = state;
    status.textContent = label || state;
  }

  // HH:MM:SS in Beijing time (UTC+8), the zone of the server's message stamps.
  function clock() {
    return new Date(Date.now() + 8 * 3600 * 1000).toISOString().slice(11, 19);
  }

  function note(kind, user, what) {
    const item = document.createElement("li");
    item.className = kind;
    const who = document.createElement("strong");
    who.textContent = user;
    item.append(who, " " + what + " · " + clock());
    activity.prepend(item);
    while (activity.children.length > MAX_ACTIVITY) activity.lastElementChild.remove();
  }

  function showMembers(members) {
    const items = members.map((name) => {
      const item = document.createElement("li");
      item.dataset.user = name;
      const avatar = document.createElement("span");
      avatar.className = "avatar";
      avatar.setAttribute("aria-hidden", "true");
      avatar.textContent = Array.from(name)[0].toUpperCase();
      const label = document.createElement("span");
      label.className = "person";
      label.textContent = name;
      item.append(avatar, label);
      if (name === me) {
        const you = document.createElement("span");
        you.className = "you";
        you.textContent = "(you)";
        item.append(you);
      }
      return item;
    });
    online.replaceChildren(...items);
    onlineCount.textContent = String(members.length);
  }

  // The server sends the message as an escaped HTML fragment from its template.
  const parser = document.createElement("template");
  function showMessage(data, offset, fromHistory) {
    if (!data || typeof data.html !== "string") return;
    parser.innerHTML = data.html;
    const item = parser.content.firstElementChild;
    if (!item) return;
    if (typeof offset === "number") item.dataset.offset = String(offset);
    if (data.user === me) item.classList.add("mine");
    item.classList.add(fromHistory ? "history" : "new");
    const atBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 80;
    messages.append(item);
    while (messages.children.length > MAX_MESSAGES) messages.firstElementChild.remove();
    empty.hidden = true;
    if (atBottom || data.user === me) messages.scrollTop = messages.scrollHeight;
  }

  setStatus("connecting", "connecting…");
  const socket = new FullDuplexSocket(chat.dataset.ws, { minDelay: 250, maxDelay: 5000 });
  const room = socket.join(roomName);
  window.fullduplexDemo = { socket: socket, room: room }; // for the console and the tests

  socket.addEventListener("open", () => setStatus("online"));
  socket.addEventListener("reconnecting", (event) => {
    setStatus("reconnecting", "reconnecting… (" + event.detail.attempt + ")");
    online.classList.add("stale"); // who is online is unknown until we are back
  });
  socket.addEventListener("close", (event) => {
    if (event.code === 1008 && event.reason === "login required") {
      window.location.assign("/?next=" + encodeURIComponent(window.location.pathname));
      return;
    }
    setStatus("offline", "offline");
  });

  room.addEventListener("joined", (event) => {
    const d = event.detail;
    online.classList.remove("stale");
    showMembers(d.members);
    if (d.reset) {
      note("info", "The server", "restarted");
      if (messages.querySelector(".message")) {
        // The room starts again empty: say so where the conversation is, not only in
        // the activity list (which phones do not show).
        const divider = document.createElement("li");
        divider.className = "divider";
        divider.setAttribute("role", "status");
        divider.textContent = "The server restarted: the room's earlier history is gone";
        messages.append(divider);
        messages.scrollTop = messages.scrollHeight;
      }
    }
    else if (d.resumed) note("info", "You", "are back");
    if (d.gap) note("gap", "Some messages", "were missed");
  });
  room.addEventListener("presence", (event) => {
    const d = event.detail;
    showMembers(d.members);
    if (d.user !== me) note(d.event, d.user, d.event === "join" ? "joined" : "left");
  });
  room.addEventListener("message", (event) => {
    showMessage(event.detail.data, event.detail.offset, event.detail.history);
  });
  room.addEventListener("error", (event) => note("error", "Server", "said: " + event.detail.reason));

  // The form submits on the Send button and on Enter in the input.
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    room.publish({ text: text });
    input.value = "";
    input.focus();
  });

  document.getElementById("new-room").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = document.getElementById("room-name").value.trim();
    if (/^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$/.test(name)) {
      window.location.assign("/room/" + encodeURIComponent(name));
    }
  });
})();
