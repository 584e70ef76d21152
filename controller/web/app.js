// evsed status page: polls /api/status every 2 s and renders it with textContent only
// (idTags come from cards and the network: nothing received is ever parsed as HTML).
"use strict";

(() => {
  const POLL_MS = 2000;
  const OFFLINE_POLL_MS = 5000;
  const HIDDEN_POLL_MS = 10000; // tab in the background
  const SESSIONS_EVERY_MS = 15000;
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
    const clock = status.clock || {};
    put($("clock"), clock.trusted ? "trusted (" + clock.trust_source + ")" : "not confirmed yet");
    put($("station-id"), status.station_id);
    $("sim-badge").hidden = !status.simulated;
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
        if (signature !== txSignature || Date.now() - sessionsAt > SESSIONS_EVERY_MS) {
          renderSessions(await getJson("/api/transactions"));
          txSignature = signature;
          sessionsAt = Date.now();
        }
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
