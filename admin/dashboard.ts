/**
 * The dashboard page: one self-contained HTML document (inline CSS and script, nothing
 * fetched but the JSON API next to it). The script builds every element with
 * createElement and textContent, so message fields (topic, key, destination, payload,
 * lastError, headers) are only ever text, never markup; the page's CSP allows nothing
 * but the nonce'd script and style as a second line of defence.
 *
 * Destinations (fan-out) appear once the outbox has rows for a `publishers` name: a
 * table of counts, a column and a filter in the messages list. An outbox with one
 * `publisher` (every row's destination `""`) shows none of it.
 */

const STYLE = String.raw`
:root { color-scheme: light dark; --bg: #f6f7f9; --fg: #1c2430; --muted: #5d6b7c; --card: #fff; --line: #dde2e8;
  --accent: #2f6fdf; --dead: #c0392b; --pending: #b7791f; --processing: #2f6fdf; --published: #2e8b57; }
@media (prefers-color-scheme: dark) { :root { --bg: #14181e; --fg: #e4e8ee; --muted: #93a1b2; --card: #1c222b;
  --line: #2c3440; --accent: #6ea1ff; } }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background: var(--bg); color: var(--fg); }
header { display: flex; align-items: center; gap: 12px; padding: 14px 24px; border-bottom: 1px solid var(--line); background: var(--card); }
h1 { font-size: 18px; margin: 0; }
h2 { font-size: 15px; margin: 0 0 10px; }
main { padding: 18px 24px 40px; max-width: 1400px; }
section { margin-bottom: 22px; }
.badge { font-size: 12px; padding: 2px 8px; border-radius: 10px; border: 1px solid var(--line); color: var(--muted); }
.badge.rw { color: var(--dead); border-color: var(--dead); }
.grow { flex: 1; }
.muted { color: var(--muted); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 12px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.card .n { font-size: 26px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .l { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card.dead .n { color: var(--dead); }
.card.pending .n { color: var(--pending); }
.card.published .n { color: var(--published); }
table { width: 100%; border-collapse: collapse; background: var(--card); border: 1px solid var(--line); border-radius: 8px; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.mono, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
td.err { color: var(--dead); max-width: 320px; overflow-wrap: anywhere; }
td.wrap { overflow-wrap: anywhere; max-width: 260px; }
pre { margin: 6px 0 0; white-space: pre-wrap; overflow-wrap: anywhere; max-height: 240px; overflow: auto; max-width: 420px;
  background: var(--bg); padding: 6px 8px; border-radius: 4px; }
.status { font-size: 12px; padding: 1px 6px; border-radius: 8px; border: 1px solid currentColor; }
.status.dead { color: var(--dead); } .status.pending { color: var(--pending); }
.status.processing { color: var(--processing); } .status.published { color: var(--published); }
form, .bar { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin-bottom: 10px; }
input, select, button { font: inherit; padding: 4px 8px; border-radius: 6px; border: 1px solid var(--line); background: var(--card); color: var(--fg); }
button { cursor: pointer; }
button:hover { border-color: var(--accent); }
button.danger { color: var(--dead); }
button[data-armed] { background: var(--dead); color: #fff; }
button:disabled { opacity: .5; cursor: default; }
.notice { min-height: 20px; margin: 6px 0; }
.notice.error { color: var(--dead); }
.empty { padding: 14px; color: var(--muted); text-align: center; }
main:not(.fan-out) .dest { display: none; }
`;

// Plain ES2017 without template literals: this text sits inside one.
const SCRIPT = String.raw`
"use strict";
(function () {
  var api = location.pathname.replace(/\/+$/, "") + "/api/";
  // destination: null for any, "" for the default (the one publisher's rows), else a name.
  var state = { readOnly: true, status: "dead", topic: "", key: "", destination: null, limit: 50, after: null,
    history: [], next: null };
  // The "any" choice of the destination filter: not a destination name, and not "" (the default).
  var ANY = "*";
  function destinationLabel(d) { return d === "" ? "(default)" : d; }
  var $ = function (id) { return document.getElementById(id); };

  // Every piece of data goes in as textContent or a data-/title attribute: never markup.
  function el(tag, props, children) {
    var node = document.createElement(tag);
    if (props) {
      for (var name in props) {
        var value = props[name];
        if (value === undefined || value === null) continue;
        if (name === "text") node.textContent = String(value);
        else if (name === "className") node.className = value;
        else if (name === "onclick") node.addEventListener("click", value);
        else node.setAttribute(name, String(value));
      }
    }
    (children || []).forEach(function (child) { if (child) node.appendChild(child); });
    return node;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function age(ms) {
    if (!(ms > 0)) return "none";
    var s = Math.floor(ms / 1000);
    if (s < 60) return s + " s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + " min " + (s % 60) + " s";
    var h = Math.floor(m / 60);
    if (h < 48) return h + " h " + (m % 60) + " min";
    return Math.floor(h / 24) + " d " + (h % 24) + " h";
  }
  function when(iso) { return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : ""; }

  function notice(text, isError) {
    var node = $("notice");
    node.textContent = text;
    node.className = isError ? "notice error" : "notice";
  }

  function request(path, body) {
    var init = { credentials: "same-origin", cache: "no-store", headers: { accept: "application/json" } };
    if (body) {
      init.method = "POST";
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(api + path, init).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) throw new Error((data && data.error) || "HTTP " + response.status);
        return data;
      });
    });
  }

  function renderStats(s) {
    state.readOnly = s.readOnly !== false;
    var mode = $("mode");
    mode.textContent = state.readOnly ? "read-only" : "requeue and purge allowed";
    mode.className = state.readOnly ? "badge" : "badge rw";
    $("bulk").hidden = state.readOnly;
    var cards = $("cards");
    clear(cards);
    [["pending", s.pending], ["processing", s.processing], ["published", s.published], ["dead", s.dead],
      ["oldest pending", age(s.oldestPendingAgeMs)], ["blocked keys", s.blockedKeys]].forEach(function (c) {
      cards.appendChild(el("div", { className: "card " + c[0].replace(" ", "-"), "data-stat": c[0] }, [
        el("div", { className: "n", text: c[1] }),
        el("div", { className: "l", text: c[0] }),
      ]));
    });
    var body = $("topics-body");
    var list = $("topic-list");
    clear(body);
    clear(list);
    var names = Object.keys(s.topics || {}).sort();
    names.forEach(function (topic) {
      var t = s.topics[topic];
      body.appendChild(el("tr", { "data-topic": topic }, [
        el("td", { className: "wrap mono", text: topic }),
        el("td", { className: "num", text: t.pending }),
        el("td", { className: "num", text: t.processing }),
        el("td", { className: "num", text: t.published }),
        el("td", { className: "num", text: t.dead }),
      ]));
      list.appendChild(el("option", { value: topic }));
    });
    if (names.length === 0) body.appendChild(el("tr", null, [el("td", { colspan: 5, className: "empty", text: "No messages" })]));
    renderDestinations(s.destinations || {});
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  }

  function renderDestinations(destinations) {
    var names = Object.keys(destinations).sort();
    var fanOut = names.some(function (d) { return d !== ""; });
    document.querySelector("main").className = fanOut ? "fan-out" : "";
    $("destinations-section").hidden = !fanOut;
    var body = $("destinations-body");
    clear(body);
    names.forEach(function (d) {
      var t = destinations[d];
      body.appendChild(el("tr", { "data-destination": d }, [
        el("td", { className: "wrap mono", text: destinationLabel(d) }),
        el("td", { className: "num", text: t.pending }),
        el("td", { className: "num", text: t.processing }),
        el("td", { className: "num", text: t.published }),
        el("td", { className: "num", text: t.dead }),
      ]));
    });
    // The filter's choices, keeping the one picked (applied or not) when its rows are gone.
    var select = $("f-destination");
    var picked = select.value;
    clear(select);
    select.appendChild(el("option", { value: ANY, text: "any" }));
    if (picked !== ANY && names.indexOf(picked) === -1) names.push(picked);
    names.forEach(function (d) { select.appendChild(el("option", { value: d, text: destinationLabel(d) })); });
    select.value = picked;
  }

  function loadStats() {
    return request("outbox").then(renderStats).catch(function (e) { notice(e.message, true); });
  }

  // A destructive button asks for a second click instead of a dialog.
  function armed(button, label, action) {
    var original = button.textContent;
    button.addEventListener("click", function () {
      if (!button.hasAttribute("data-armed")) {
        button.setAttribute("data-armed", "");
        button.textContent = label;
        setTimeout(function () { button.removeAttribute("data-armed"); button.textContent = original; }, 4000);
        return;
      }
      button.removeAttribute("data-armed");
      button.textContent = original;
      action();
    });
    return button;
  }

  function mutate(kind, body) {
    var buttons = document.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    return request(kind, body).then(function (data) {
      var n = kind === "requeue" ? data.requeued : data.purged;
      notice((kind === "requeue" ? "Requeued " : "Purged ") + n + " message" + (n === 1 ? "" : "s"));
    }).catch(function (e) { notice(e.message, true); }).then(function () {
      buttons.forEach(function (b) { b.disabled = false; });
      return Promise.all([loadStats(), loadMessages()]);
    });
  }

  function payloadCell(m) {
    var parts = [];
    if (m.payload) {
      var p = m.payload;
      var summary = p.size + " B " + (p.encoding === "base64" ? "bytes (base64)" : "JSON") + (p.truncated ? ", cut" : "");
      parts.push(el("details", null, [el("summary", { text: summary }), el("pre", { className: "payload", text: p.preview })]));
    }
    if (m.headers) {
      var text = typeof m.headers === "string" ? m.headers : JSON.stringify(m.headers, null, 1);
      parts.push(el("details", null, [el("summary", { text: "headers" }), el("pre", { className: "headers", text: text })]));
    }
    return el("td", null, parts);
  }

  function actionsCell(m) {
    if (state.readOnly || (m.status !== "dead" && m.status !== "published")) return el("td");
    var requeue = el("button", { type: "button", "data-action": "requeue", text: "Requeue" });
    // With fan-out an id names a row per destination: act on this row's only.
    var one = { status: m.status, ids: [m.id], destination: m.destination };
    requeue.addEventListener("click", function () { mutate("requeue", one); });
    var purge = armed(el("button", { type: "button", className: "danger", "data-action": "purge", text: "Purge" }),
      "Confirm purge", function () { mutate("purge", one); });
    return el("td", null, [el("div", { className: "bar" }, [requeue, purge])]);
  }

  function renderMessages(data) {
    var body = $("messages-body");
    clear(body);
    data.messages.forEach(function (m) {
      body.appendChild(el("tr", { "data-id": m.id, "data-destination": m.destination, "data-status": m.status }, [
        el("td", { className: "num", text: m.seq }),
        el("td", { className: "mono wrap" }, [
          el("div", { text: m.id }),
          m.key === null ? null : el("div", { className: "muted key", text: "key " + m.key }),
        ]),
        el("td", { className: "mono wrap dest", text: destinationLabel(m.destination || "") }),
        el("td", { className: "mono wrap topic", text: m.topic }),
        el("td", null, [el("span", { className: "status " + m.status, text: m.status })]),
        el("td", { className: "num", text: m.attempts }),
        el("td", { className: "mono", title: m.createdAt }, [
          el("div", { text: when(m.createdAt) }),
          m.settledAt ? el("div", { className: "muted", text: "settled " + when(m.settledAt) }) : null,
          m.status === "pending" && m.availableAt ? el("div", { className: "muted", text: "due " + when(m.availableAt) }) : null,
        ]),
        el("td", { className: "err", text: m.lastError || "" }),
        payloadCell(m),
        actionsCell(m),
      ]));
    });
    if (data.messages.length === 0) {
      body.appendChild(el("tr", null, [el("td", { colspan: 10, className: "empty", text: "No messages match" })]));
    }
    state.next = data.next;
    $("next").disabled = data.next === null;
    $("first").disabled = state.history.length === 0;
    $("page").textContent = "page " + (state.history.length + 1);
  }

  function loadMessages() {
    var q = new URLSearchParams();
    if (state.status) q.set("status", state.status);
    if (state.topic) q.set("topic", state.topic);
    if (state.key) q.set("key", state.key);
    // destination= (empty) asks for the default destination; no parameter, for any.
    if (state.destination !== null) q.set("destination", state.destination);
    q.set("limit", String(state.limit));
    if (state.after !== null) q.set("after", String(state.after));
    return request("messages?" + q.toString()).then(renderMessages).catch(function (e) { notice(e.message, true); });
  }

  function bulkScope() {
    var body = { status: "dead" };
    if (state.topic) body.topic = state.topic;
    if (state.destination !== null) body.destination = state.destination;
    return body;
  }

  $("filters").addEventListener("submit", function (event) {
    event.preventDefault();
    state.status = $("f-status").value;
    state.topic = $("f-topic").value.trim();
    state.key = $("f-key").value.trim();
    var destination = $("f-destination").value;
    state.destination = destination === ANY ? null : destination;
    state.limit = Number($("f-limit").value);
    state.after = null;
    state.history = [];
    var scope = (state.topic ? " in this topic" : "") + (state.destination !== null ? " for this destination" : "");
    $("requeue-all").textContent = "Requeue all dead" + scope;
    $("purge-all").textContent = "Purge all dead" + scope;
    loadMessages();
  });
  $("next").addEventListener("click", function () {
    if (state.next === null) return;
    state.history.push(state.after);
    state.after = state.next;
    loadMessages();
  });
  $("first").addEventListener("click", function () {
    state.after = null;
    state.history = [];
    loadMessages();
  });
  $("refresh").addEventListener("click", function () { loadStats(); loadMessages(); });
  $("requeue-all").addEventListener("click", function () { mutate("requeue", bulkScope()); });
  armed($("purge-all"), "Confirm: purge all dead", function () { mutate("purge", bulkScope()); });

  loadStats().then(loadMessages);
  setInterval(function () { if (!document.hidden) loadStats(); }, 5000);
})();
`;

const BODY = String.raw`
<header>
  <h1>Outbox</h1>
  <span id="mode" class="badge">read-only</span>
  <span class="grow"></span>
  <span id="updated" class="muted"></span>
  <button id="refresh" type="button">Refresh</button>
</header>
<main>
  <section>
    <div id="cards" class="cards" aria-live="polite"></div>
  </section>
  <section>
    <h2>Topics</h2>
    <table id="topics">
      <thead><tr><th>topic</th><th class="num">pending</th><th class="num">processing</th><th class="num">published</th><th class="num">dead</th></tr></thead>
      <tbody id="topics-body"></tbody>
    </table>
  </section>
  <section id="destinations-section" hidden>
    <h2>Destinations</h2>
    <table id="destinations">
      <thead><tr><th>destination</th><th class="num">pending</th><th class="num">processing</th><th class="num">published</th><th class="num">dead</th></tr></thead>
      <tbody id="destinations-body"></tbody>
    </table>
  </section>
  <section>
    <h2>Messages</h2>
    <form id="filters">
      <label>status <select id="f-status">
        <option value="">any</option><option value="pending">pending</option><option value="processing">processing</option>
        <option value="published">published</option><option value="dead" selected>dead</option>
      </select></label>
      <label>topic <input id="f-topic" list="topic-list" maxlength="1024" autocomplete="off"></label>
      <datalist id="topic-list"></datalist>
      <label>key <input id="f-key" maxlength="1024" autocomplete="off"></label>
      <label class="dest">destination <select id="f-destination"><option value="*" selected>any</option></select></label>
      <label>per page <select id="f-limit"><option>20</option><option selected>50</option><option>100</option><option>500</option></select></label>
      <button type="submit">Apply</button>
    </form>
    <div id="bulk" class="bar" hidden>
      <button id="requeue-all" type="button">Requeue all dead</button>
      <button id="purge-all" type="button" class="danger">Purge all dead</button>
    </div>
    <div id="notice" class="notice" role="status"></div>
    <table id="messages">
      <thead><tr><th class="num">seq</th><th>id / key</th><th class="dest">destination</th><th>topic</th><th>status</th><th class="num">attempts</th>
        <th>created</th><th>last error</th><th>payload</th><th></th></tr></thead>
      <tbody id="messages-body"></tbody>
    </table>
    <div class="bar">
      <button id="first" type="button" disabled>First page</button>
      <button id="next" type="button" disabled>Next page</button>
      <span id="page" class="muted"></span>
    </div>
  </section>
</main>
`;

/**
 * The dashboard document, with `nonce` on its one style and one script element (the
 * CSP of the response allows those and nothing else inline).
 */
export function dashboardHtml(nonce: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Outbox</title>
<link rel="icon" href="data:,">
<style nonce="${nonce}">${STYLE}</style>
</head>
<body>${BODY}<script nonce="${nonce}">${SCRIPT}</script>
</body>
</html>
`;
}
