// The chat page's client: a WebSocket to /chat/socket, JSON messages both ways.
// Served from C like any static file, with long-term cache headers (see .py/init.py).
"use strict";

(function () {
  const log = document.getElementById("chat-log");
  const form = document.getElementById("chat-form");
  const nameInput = document.getElementById("chat-name");
  const textInput = document.getElementById("chat-text");
  const status = document.getElementById("chat-status");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  let socket = null;
  let retry = 1000;
  // Lines already shown, by id: the history sent on (re)connection and the live lines may
  // overlap, and a live line may arrive before the history around it.
  const seen = new Set();

  nameInput.value = localStorage.getItem("chat-name") || "";

  function show(message) {
    const item = document.createElement("li");
    const time = document.createElement("span");
    const who = document.createElement("span");
    const text = document.createElement("span");
    time.className = "time";
    who.className = "who";
    text.className = "text";
    // textContent, never innerHTML: whatever people type is shown as text.
    time.textContent = message.time || "";
    who.textContent = message.name + ":";
    text.textContent = message.text;
    item.append(time, " ", who, " ", text);
    item.dataset.id = message.id;
    // In id order: after the last line with a smaller id.
    let before = null;
    for (let other = log.lastElementChild; other && Number(other.dataset.id) > message.id;
         other = other.previousElementSibling) {
      before = other;
    }
    log.insertBefore(item, before);
    log.scrollTop = log.scrollHeight;
  }

  function connect() {
    socket = new WebSocket(scheme + "//" + location.host + "/chat/socket");
    socket.addEventListener("open", function () {
      status.textContent = "Connected.";
      retry = 1000;
    });
    socket.addEventListener("message", function (event) {
      const message = JSON.parse(event.data);
      if (message.type === "message" && !seen.has(message.id)) {
        seen.add(message.id);
        show(message);
      } else if (message.type === "error") {
        status.textContent = message.text;
      }
    });
    socket.addEventListener("close", function () {
      status.textContent = "Disconnected; trying again…";
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 30000);
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const text = textInput.value.trim();
    if (!text || !socket || socket.readyState !== WebSocket.OPEN) {
      return;
    }
    const name = nameInput.value.trim() || "anonymous";
    localStorage.setItem("chat-name", name);
    socket.send(JSON.stringify({name: name, text: text}));
    textInput.value = "";
    textInput.focus();
  });

  connect();
})();
