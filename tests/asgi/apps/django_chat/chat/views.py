"""The tutorial's room page: a log, an input and a button, talking to the consumer."""

import json

from django.http import HttpRequest, HttpResponse

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Chat room</title></head>
<body>
<textarea id="chat-log" cols="80" rows="20" readonly></textarea><br>
<input id="chat-message-input" type="text" size="80"><br>
<input id="chat-message-submit" type="button" value="Send">
<script>
const roomName = ROOM;
const socket = new WebSocket("ws://" + location.host + "/ws/chat/" + roomName + "/");
socket.onopen = () => { document.body.dataset.open = "yes"; };
socket.onmessage = (e) => {
  document.querySelector("#chat-log").value += JSON.parse(e.data).message + "\\n";
};
document.querySelector("#chat-message-submit").onclick = () => {
  const input = document.querySelector("#chat-message-input");
  socket.send(JSON.stringify({message: input.value}));
  input.value = "";
};
</script>
</body></html>"""


def room(request: HttpRequest, room_name: str) -> HttpResponse:
    return HttpResponse(PAGE.replace("ROOM", json.dumps(room_name)))
