// Live pages: when the node's records change (server-sent events from /api/events), fetch this
// page again and swap its <main>. The fetched HTML is parsed by DOMParser, which runs no script;
// the page works the same without this file, on reload.
"use strict";
(function () {
  if (!window.EventSource || !window.fetch) return;
  let pending = false;
  let again = false;
  async function refresh() {
    if (pending) { again = true; return; }
    pending = true;
    try {
      const res = await fetch(location.href, { headers: { "Accept": "text/html" }, cache: "no-store" });
      if (res.ok) {
        const doc = new DOMParser().parseFromString(await res.text(), "text/html");
        const fresh = doc.querySelector("main");
        const old = document.querySelector("main");
        if (fresh && old) {
          old.replaceWith(document.importNode(fresh, true));
          document.title = doc.title;
          document.documentElement.dataset.refreshed = String(Number(document.documentElement.dataset.refreshed || 0) + 1);
        }
      }
    } catch (e) {
      // The node went away; the stream reconnects by itself.
    } finally {
      pending = false;
      if (again) { again = false; refresh(); }
    }
  }
  const events = new EventSource("/api/events");
  events.addEventListener("change", refresh);
  // A browser keeps few connections per host over HTTP/1.1: the stream must not outlive the
  // page (nor keep it in the back-forward cache).
  window.addEventListener("pagehide", function () { events.close(); });
  events.addEventListener("open", function () { document.documentElement.dataset.live = "1"; });
})();
