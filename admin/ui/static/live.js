// Live updates for the overview and the notifications list: on each
// server event, fetch the page again and swap its <main>. Without
// JavaScript the pages work as they are (reload for news).
(function () {
  "use strict";
  var main = document.getElementById("main");
  var status = document.getElementById("live-status");
  if (!main || !window.EventSource) { return; }
  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("main");
        var active = document.activeElement;
        // Do not swap under a user who is typing in a filter.
        if (fresh && !(active && main.contains(active) && /INPUT|SELECT|TEXTAREA/.test(active.tagName))) {
          main.innerHTML = fresh.innerHTML;
          main.setAttribute("data-updated", String(Date.now()));
        }
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }
  var es = new EventSource("/events");
  es.addEventListener("open", function () { if (status) { status.textContent = "Live updates: on."; } });
  es.addEventListener("error", function () { if (status) { status.textContent = "Live updates: reconnecting…"; } });
  es.addEventListener("change", refresh);
}());
