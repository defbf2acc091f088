// The counter page's client: the number comes from a WebSocket to /counter/socket (a JSON
// {"count": N} for every increment, from any visitor); the button posts to /counter.
"use strict";

(function () {
  const output = document.getElementById("count");
  const form = document.getElementById("counter-form");
  const status = document.getElementById("counter-status");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  let shown = Number(output.textContent);
  let retry = 1000;

  // The counter only grows: a value older than the one shown (the POST's answer arriving
  // after the broadcast of a later click) is ignored.
  function update(count) {
    if (count > shown) {
      shown = count;
      output.textContent = String(count);
    }
  }

  function connect() {
    const socket = new WebSocket(scheme + "//" + location.host + "/counter/socket");
    socket.addEventListener("open", function () {
      status.textContent = "Live.";
      retry = 1000;
    });
    socket.addEventListener("message", function (event) {
      update(JSON.parse(event.data).count);
    });
    socket.addEventListener("close", function () {
      status.textContent = "Disconnected; trying again…";
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 30000);
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    fetch("/counter", {method: "POST", headers: {"Accept": "application/json"}})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) { if (data) { update(data.count); } })
      .catch(function () { status.textContent = "Could not reach the server."; });
  });

  connect();
})();
