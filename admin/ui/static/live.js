// Live updates for the overview and the notifications list: on server
// events, fetch the page again and swap its <main>, at most once a
// second (events coming faster are folded into the next fetch). Without
// JavaScript the pages work as they are (reload for news).
(function () {
  "use strict";
  var main = document.getElementById("main");
  var status = document.getElementById("live-status");
  if (!main || !window.EventSource || !window.fetch || !window.DOMParser) { return; }
  var busy = false, pending = false, last = 0;
  function refresh() {
    if (busy) { pending = true; return; }
    var wait = 1000 - (Date.now() - last);
    if (wait > 0) { busy = true; setTimeout(function () { busy = false; refresh(); }, wait); return; }
    busy = true;
    last = Date.now();
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("main");
        var active = document.activeElement;
        // Do not swap under someone typing in a filter.
        if (fresh && !(active && main.contains(active) && /INPUT|SELECT|TEXTAREA/.test(active.tagName))) {
          var key = main.contains(active) ? focusKey(active) : null;
          main.innerHTML = fresh.innerHTML;
          main.setAttribute("data-updated", String(last));
          // A keyboard user keeps their place: the same link or button
          // has the focus again after the swap.
          var again = key && main.querySelector(key);
          if (again) { again.focus(); }
        }
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (pending) { pending = false; refresh(); }
      });
  }
  // focusKey is a selector for the focused element in the fresh page:
  // its id, a link's href, or a form's action and the control's name.
  function focusKey(el) {
    if (!el || el === main) { return null; }
    if (el.id) { return "#" + CSS.escape(el.id); }
    if (el.tagName === "A" && el.getAttribute("href")) { return "a[href=\"" + CSS.escape(el.getAttribute("href")) + "\"]"; }
    if (el.form && el.form.getAttribute("action")) {
      return "form[action=\"" + CSS.escape(el.form.getAttribute("action")) + "\"] " + el.tagName.toLowerCase();
    }
    return null;
  }
  var es = new EventSource("/events");
  es.addEventListener("open", function () { if (status) { status.textContent = "Live updates: on."; } });
  es.addEventListener("error", function () {
    if (status) { status.textContent = es.readyState === 2 ? "Live updates: off (signed out?); reload the page." : "Live updates: reconnecting…"; }
  });
  es.addEventListener("change", refresh);
}());
