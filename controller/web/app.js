// evsed status page: polls /api/status every 2 s and renders it with textContent only
// (idTags come from cards and the network: nothing received is ever parsed as HTML).
"use strict";

(() => {
  const POLL_MS = 2000;
  const OFFLINE_POLL_MS = 5000;
  const HIDDEN_POLL_MS = 10000; // tab in the background
  const SESSIONS_EVERY_MS = 15000;
  const HISTORY_EVERY_MS = 5000; // the running session's chart
  const DAILY_EVERY_MS = 300000; // energy per day
  const SVG_NS = "http://www.w3.org/2000/svg";
  // Where a connector's limit comes from (limit_source in /api/status).
  const SOURCES = {
    Hardware: "hardware maximum",
    SiteShare: "site share",
    LocalLimit: "local limit",
    LocalLimitFallback: "local limit not refreshed: fallback",
    StationMax: "schedule: station maximum",
    ExternalConstraints: "schedule: external constraints",
    TxDefault: "schedule: default profile",
    Tx: "schedule: transaction profile",
  };
  const CONFIRM_MS = 4000;
  const TOKEN_KEY = "evsed.api.token";
  const MAX_SESSIONS = 10;
  const MAX_FAULTS = 20;
  const VEHICLE = {
    A: "not connected",
    B: "connected",
    C: "charging",
    D: "charging (ventilation)",
    E: "no pilot (error)",
    F: "EVSE error",
  };

  const $ = (id) => document.getElementById(id);
  const cards = new Map();
  let auth = null; // the last /api/auth answer
  let txSignature = null; // transaction keys last seen: a change reloads the sessions
  let sessionsAt = 0;
  let dailyAt = 0;
  const historyAt = new Map(); // connector -> when its chart was last fetched
  const historyTx = new Map(); // connector -> the transaction its chart shows
  let pollTimer = null;

  class AuthError extends Error {}

  // ------------------------------------------------------------------ token and requests

  // sessionStorage: the token lives as long as the tab, is never sent automatically
  // (no cookie, so no cross-site request can use it) and goes out only in the
  // Authorization header of this page's own requests.
  function getToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (_) {
      return "";
    }
  }

  function setToken(token) {
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      /* storage disabled: the login lasts until the next reload */
    }
  }

  function request(path, options = {}) {
    const headers = Object.assign({}, options.headers || {});
    const token = options.token !== undefined ? options.token : getToken();
    if (token) headers.Authorization = "Bearer " + token;
    return fetch(path, {
      method: options.method || "GET",
      headers,
      body: options.body,
      cache: "no-store",
      credentials: "omit",
    });
  }

  async function errorText(resp) {
    try {
      const body = await resp.json();
      if (body && typeof body.error === "string") return body.error;
    } catch (_) {
      /* not JSON */
    }
    return "HTTP " + resp.status;
  }

  async function getJson(path) {
    const resp = await request(path);
    if (resp.status === 401) throw new AuthError(await errorText(resp));
    if (!resp.ok) throw new Error(await errorText(resp));
    return resp.json();
  }

  // ------------------------------------------------------------------ formatting

  function number(value, digits) {
    return Number(value).toLocaleString(undefined, {
      minimumFractionDigits: digits,
      maximumFractionDigits: digits,
    });
  }

  function isNum(value) {
    return typeof value === "number" && isFinite(value);
  }

  const kw = (w) => (isNum(w) ? number(w / 1000, 2) + " kW" : "–");
  const kwh = (wh, digits) => (isNum(wh) ? number(wh / 1000, digits) + " kWh" : "–");

  function when(iso) {
    if (!iso) return "–";
    const d = new Date(String(iso));
    return isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
  }

  function ago(seconds) {
    if (!isNum(seconds)) return "";
    if (seconds < 60) return Math.round(seconds) + " s ago";
    if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
    return Math.round(seconds / 3600) + " h ago";
  }

  function duration(seconds) {
    if (!isNum(seconds)) return "–";
    const minutes = Math.round(seconds / 60);
    return minutes < 60 ? minutes + " min" : Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  // Security profile, the charger certificate, the firmware update and the latest security
  // event, on one line (text only: the values come from the CSMS and certificates).
  function securityText(security) {
    if (!security) return null;
    const parts = ["profile " + security.profile];
    if (security.certificate) parts.push("certificate until " + when(security.certificate.not_after));
    if (security.firmware && security.firmware !== "idle") parts.push("firmware " + security.firmware);
    const event = security.last_event;
    if (event) parts.push("last event " + event.kind + " (" + when(event.at) + ")");
    return parts.join(" · ");
  }

  // Text only, never markup; the raw value goes into data-value for scripts and tests.
  function put(node, value, raw) {
    node.textContent = value === null || value === undefined || value === "" ? "–" : String(value);
    if (raw !== undefined) node.dataset.value = raw === null ? "" : String(raw);
  }

  function cell(row, value) {
    const td = document.createElement("td");
    put(td, value);
    row.appendChild(td);
    return td;
  }

  // ------------------------------------------------------------------ connectors

  function field(node, name) {
    return node.querySelector('[data-field="' + name + '"]');
  }

  function card(id) {
    let node = cards.get(id);
    if (!node) {
      node = $("connector-template").content.firstElementChild.cloneNode(true);
      node.id = "connector-" + id;
      node.dataset.connector = String(id);
      for (const button of node.querySelectorAll("button[data-action]")) {
        button.dataset.label = button.textContent;
        button.addEventListener("click", () => act(id, button));
      }
      $("connectors").appendChild(node);
      cards.set(id, node);
    }
    return node;
  }

  function renderConnector(c) {
    const id = Number(c.connector);
    if (!Number.isInteger(id)) return;
    const node = card(id);
    put(field(node, "id"), id);
    const status = field(node, "status");
    put(status, c.status);
    status.dataset.status = String(c.status);
    const errorCode = field(node, "error_code");
    put(errorCode, c.error_code);
    errorCode.classList.toggle("error", c.error_code !== "NoError");
    const vehicle = VEHICLE[c.vehicle_state];
    put(field(node, "vehicle"), vehicle ? c.vehicle_state + " – " + vehicle : c.vehicle_state);
    put(field(node, "power"), kw(c.power_w), c.power_w);
    put(field(node, "energy"), kwh(c.energy_wh, 1), c.energy_wh);
    put(field(node, "offered"), isNum(c.offered_current_a) ? number(c.offered_current_a, 0) + " A" : "–", c.offered_current_a);
    const limit = field(node, "limit");
    const source = SOURCES[c.limit_source] || c.limit_source;
    put(limit, isNum(c.limit_a) ? number(c.limit_a, 1) + " A (" + source + ")" : null, c.limit_a);
    limit.dataset.source = c.limit_source ? String(c.limit_source) : "";
    const running = c.transaction_key !== null && c.transaction_key !== undefined;
    let tx = "–";
    if (running) tx = c.transaction_id !== null ? String(c.transaction_id) : "local " + c.transaction_key + " (CSMS id pending)";
    put(field(node, "transaction"), tx, running ? c.transaction_id : null);
    put(field(node, "id_tag"), running ? c.id_tag : null);
    put(field(node, "session_energy"), running ? kwh(c.session_energy_wh, 3) : null, c.session_energy_wh);

    field(node, "controls").hidden = !(auth && auth.control);
    node.querySelector('[data-action="stop"]').hidden = !running;
    const availability = node.querySelector('[data-action="availability"]');
    const unavailable = c.status === "Unavailable";
    availability.dataset.type = unavailable ? "Operative" : "Inoperative";
    availability.dataset.label = unavailable ? "Make available" : "Make unavailable";
    if (availability.dataset.armed !== "1") availability.textContent = availability.dataset.label;
  }

  // ------------------------------------------------------------------ charts (inline SVG)

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    return node;
  }

  function caption(text) {
    const p = document.createElement("p");
    p.className = "chart-caption";
    p.textContent = text;
    return p;
  }

  // The running session: measured power (solid) against the offered limit (dashed, a step
  // line: offered current x phases x nominal voltage), from its start until now.
  function renderHistory(id, data) {
    const box = field(card(id), "chart");
    const session = data && data.session;
    const points = session && Array.isArray(session.points) ? session.points.filter((p) => isNum(p.t_s)) : [];
    if (!points.length) {
      box.hidden = true;
      box.replaceChildren();
      return;
    }
    const W = 300;
    const H = 100;
    const tMax = Math.max(60, ...points.map((p) => p.t_s));
    const wMax = Math.max(1000, ...points.map((p) => Math.max(isNum(p.offered_w) ? p.offered_w : 0, isNum(p.power_w) ? p.power_w : 0)));
    const x = (t) => ((t / tMax) * W).toFixed(1);
    const y = (w) => (H - (w / wMax) * (H - 4)).toFixed(1);
    const offered = [];
    let last = null;
    for (const p of points) {
      if (!isNum(p.offered_w)) continue;
      if (last !== null) offered.push(x(p.t_s) + "," + y(last));
      offered.push(x(p.t_s) + "," + y(p.offered_w));
      last = p.offered_w;
    }
    if (last !== null) offered.push(W + "," + y(last));
    const power = points.filter((p) => isNum(p.power_w)).map((p) => x(p.t_s) + "," + y(p.power_w));
    const chart = svg("svg", {
      viewBox: "0 0 " + W + " " + H,
      preserveAspectRatio: "none",
      role: "img",
      "aria-label": "Power and offered limit of the running session",
    });
    chart.dataset.points = String(points.length);
    const line = (cls, pts) => svg("polyline", { class: cls, points: pts.join(" "), "vector-effect": "non-scaling-stroke" });
    if (offered.length) chart.appendChild(line("offered-line", offered));
    if (power.length) chart.appendChild(line("power-line", power));
    box.replaceChildren(chart, caption("Power (solid) and offered limit (dashed) over " + duration(tMax) + "; top " + kw(wMax)));
    box.hidden = false;
  }

  async function refreshHistories(connectors) {
    for (const c of connectors) {
      const id = Number(c.connector);
      if (!Number.isInteger(id)) continue;
      const tx = c.transaction_key;
      if (tx === null || tx === undefined) {
        historyTx.delete(id);
        renderHistory(id, null);
        continue;
      }
      if (historyTx.get(id) === tx && Date.now() - (historyAt.get(id) || 0) < HISTORY_EVERY_MS) continue;
      historyAt.set(id, Date.now());
      historyTx.set(id, tx);
      renderHistory(id, await getJson("/api/connectors/" + id + "/history"));
    }
  }

  // Energy per day of the last 30 days (sessions by their start day, UTC): one bar each.
  function renderDaily(data) {
    const days = data && Array.isArray(data.days) ? data.days.filter((d) => isNum(d.energy_wh)) : [];
    const W = 300;
    const H = 100;
    const max = Math.max(1000, ...days.map((d) => d.energy_wh));
    const width = days.length ? W / days.length : W;
    const chart = svg("svg", { viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none" });
    let total = 0;
    days.forEach((d, i) => {
      total += d.energy_wh;
      const h = (d.energy_wh / max) * (H - 4);
      const bar = svg("rect", {
        class: i === days.length - 1 ? "bar bar-today" : "bar",
        x: (i * width + 0.5).toFixed(2),
        y: (H - h).toFixed(2),
        width: Math.max(0.5, width - 1).toFixed(2),
        height: h.toFixed(2),
      });
      bar.dataset.date = String(d.date);
      bar.dataset.value = String(d.energy_wh);
      const title = svg("title");
      title.textContent = d.date + ": " + kwh(d.energy_wh, 2) + " (" + d.sessions + " sessions)";
      bar.appendChild(title);
      chart.appendChild(bar);
    });
    chart.dataset.days = String(days.length);
    $("daily-chart").replaceChildren(chart);
    const first = days.length ? days[0].date : "–";
    put($("daily-caption"), kwh(total, 1) + " since " + first + " (UTC days); top of the scale " + kwh(max, 1), total);
  }

  // Stop and unlock interrupt someone's charging: a second tap within 4 s confirms.
  function arm(button) {
    button.dataset.armed = "1";
    button.textContent = "Tap again to confirm";
    button.classList.add("armed");
    clearTimeout(button._disarm);
    button._disarm = setTimeout(() => disarm(button), CONFIRM_MS);
  }

  function disarm(button) {
    clearTimeout(button._disarm);
    button.dataset.armed = "";
    button.classList.remove("armed");
    button.textContent = button.dataset.label;
  }

  async function act(id, button) {
    const kind = button.dataset.action;
    if (button.dataset.armed !== "1") {
      arm(button);
      return;
    }
    disarm(button);
    const message = field(card(id), "message");
    const body = kind === "availability" ? { type: button.dataset.type } : {};
    button.disabled = true;
    put(message, "Sending…");
    try {
      const resp = await request("/api/connectors/" + id + "/" + kind, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      if (resp.status === 401) {
        put(message, "Not allowed: " + (await errorText(resp)));
        setToken("");
        auth = null;
      } else if (!resp.ok) {
        put(message, await errorText(resp));
      } else {
        const result = await resp.json();
        if (kind === "stop") put(message, "Session stop requested.");
        else if (kind === "unlock") put(message, "Unlock: " + result.status);
        else put(message, "Availability: " + result.status);
      }
    } catch (err) {
      put(message, "No answer from the charger (" + err.message + ")");
    } finally {
      button.disabled = false;
      schedule(100);
    }
  }

  // ------------------------------------------------------------------ other sections

  function renderCsms(status) {
    const csms = status.csms || {};
    put($("csms-state"), csms.state);
    $("csms-state").dataset.state = String(csms.state);
    put($("csms-last"), csms.last_message_at ? when(csms.last_message_at) + " (" + ago(csms.last_message_age_s) + ")" : null);
    put($("csms-queued"), csms.queued_messages, csms.queued_messages);
    put($("storage"), csms.storage === "ok" ? "ok" : "degraded (disk full or failing)");
    put($("security"), securityText(status.security));
    const clock = status.clock || {};
    put($("clock"), clock.trusted ? "trusted (" + clock.trust_source + ")" : "not confirmed yet");
    put($("station-id"), status.station_id);
    $("sim-badge").hidden = !status.simulated;
    renderBackends(status.backends || []);
  }

  // Several backends ([[csms]]): one row each; hidden for a charger with one backend.
  function renderBackends(backends) {
    $("backends").hidden = backends.length < 2;
    const body = $("backends-body");
    body.replaceChildren();
    for (const b of backends) {
      const tr = document.createElement("tr");
      tr.dataset.backend = String(b.name);
      cell(tr, b.name);
      cell(tr, b.role);
      cell(tr, b.ocpp_version);
      cell(tr, b.state).dataset.state = String(b.state);
      cell(tr, b.last_message_s_ago === null ? null : ago(b.last_message_s_ago));
      cell(tr, b.queued_messages);
      body.appendChild(tr);
    }
  }

  function renderSessions(rows) {
    const body = $("sessions-body");
    body.replaceChildren();
    for (const s of rows.slice(0, MAX_SESSIONS)) {
      const tr = document.createElement("tr");
      tr.dataset.transactionKey = String(s.transaction_key);
      cell(tr, when(s.started_at));
      cell(tr, s.connector);
      cell(tr, s.id_tag);
      cell(tr, kwh(s.energy_wh, 3)).dataset.value = String(s.energy_wh);
      cell(tr, duration(s.duration_s));
      cell(tr, s.stopped_at ? s.stop_reason : "running");
      body.appendChild(tr);
    }
    $("sessions-empty").hidden = rows.length > 0;
  }

  function renderFaults(faults) {
    const body = $("faults-body");
    body.replaceChildren();
    for (const f of faults.slice(0, MAX_FAULTS)) {
      const tr = document.createElement("tr");
      cell(tr, when(f.at));
      cell(tr, f.connector);
      cell(tr, f.error_code);
      cell(tr, f.source);
      cell(tr, f.cleared_at ? when(f.cleared_at) : "active");
      if (!f.cleared_at) tr.classList.add("active-fault");
      body.appendChild(tr);
    }
    $("faults-empty").hidden = faults.length > 0;
  }

  // ------------------------------------------------------------------ sign in

  async function checkAuth() {
    let resp = await request("/api/auth");
    let answer = await resp.json();
    if (answer.bad_credentials) {
      setToken(""); // a stale token (changed in the config): ask again
      resp = await request("/api/auth", { token: "" });
      answer = await resp.json();
    }
    auth = answer;
    applyAuth();
  }

  function applyAuth() {
    const needLogin = !auth.read || (auth.token_configured && !auth.authenticated);
    $("login").hidden = !needLogin;
    $("login-reason").textContent = auth.read
      ? "Read-only. Sign in with the API token to stop sessions or change availability."
      : "Enter the API token (api.token in the charger's configuration).";
    $("content").hidden = !auth.read;
    $("auth-bar").hidden = false;
    $("logout").hidden = !auth.authenticated;
    let state = "read-only";
    if (auth.authenticated) state = "signed in";
    else if (auth.control) state = "local access (no token configured)";
    $("auth-state").textContent = state;
    for (const node of cards.values()) field(node, "controls").hidden = !auth.control;
  }

  async function login(event) {
    event.preventDefault();
    const input = $("token");
    const token = input.value.trim();
    $("login-error").textContent = "";
    try {
      const resp = await request("/api/auth", { token });
      const answer = await resp.json();
      if (!answer.authenticated) {
        $("login-error").textContent = "Wrong token.";
        return;
      }
      setToken(token);
      input.value = "";
      $("login-error").textContent = "";
      auth = answer;
      applyAuth();
      schedule(0);
    } catch (err) {
      $("login-error").textContent = "No answer from the charger (" + err.message + ")";
    }
  }

  function logout() {
    setToken("");
    auth = null;
    schedule(0);
  }

  // ------------------------------------------------------------------ CSV export

  function csvPath() {
    const params = new URLSearchParams();
    if ($("export-from").value) params.set("from", $("export-from").value);
    if ($("export-to").value) params.set("to", $("export-to").value);
    const query = params.toString();
    return "/api/sessions.csv" + (query ? "?" + query : "");
  }

  // Fetched by script so that the token goes in the header (a plain link cannot send it)
  // and a bad date range shows a message instead of an error page.
  async function download(event) {
    event.preventDefault();
    const error = $("export-error");
    error.textContent = "";
    try {
      const resp = await request(csvPath());
      if (!resp.ok) {
        error.textContent = await errorText(resp);
        return;
      }
      const blob = await resp.blob();
      const match = /filename="([^"]+)"/.exec(resp.headers.get("Content-Disposition") || "");
      const url = URL.createObjectURL(blob);
      const a = document.createElement("a");
      a.href = url;
      a.download = match ? match[1] : "evsed-sessions.csv";
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      error.textContent = "No answer from the charger (" + err.message + ")";
    }
  }

  // ------------------------------------------------------------------ polling

  function schedule(delayMs) {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(poll, delayMs);
  }

  async function poll() {
    let delay = document.hidden ? HIDDEN_POLL_MS : POLL_MS;
    try {
      if (!auth) await checkAuth();
      if (auth.read) {
        const status = await getJson("/api/status");
        renderCsms(status);
        for (const c of status.connectors) renderConnector(c);
        renderFaults(status.faults || []);
        const signature = status.connectors.map((c) => c.transaction_key).join(",");
        const changed = signature !== txSignature;
        if (changed || Date.now() - sessionsAt > SESSIONS_EVERY_MS) {
          renderSessions(await getJson("/api/transactions"));
          txSignature = signature;
          sessionsAt = Date.now();
        }
        if (changed || Date.now() - dailyAt > DAILY_EVERY_MS) {
          dailyAt = Date.now();
          renderDaily(await getJson("/api/energy/daily"));
        }
        await refreshHistories(status.connectors);
        $("updated").textContent = "Updated " + new Date().toLocaleTimeString();
        document.body.dataset.loaded = "1";
      }
      $("offline-banner").hidden = true;
    } catch (err) {
      if (err instanceof AuthError) {
        setToken(""); // refused: ask /api/auth again what this client may do
        auth = null;
      } else {
        $("offline-banner").hidden = false;
        delay = OFFLINE_POLL_MS;
      }
    }
    schedule(delay);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    $("csv-link").addEventListener("click", download);
    for (const id of ["export-from", "export-to"]) {
      $(id).addEventListener("change", () => {
        $("csv-link").href = csvPath();
      });
    }
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) schedule(0);
    });
    schedule(0);
  });
})();
