// The security console (/ui/console): live security alerts, the event log with its filters,
// one event's causation chain, user lookup with unlocks, and JSON-lines exports. Every call
// is the public GraphQL API with the admin API key the operator pasted in; the key is kept in
// sessionStorage only (gone when the tab closes) and sent in the Authorization header.

import { describeError, gql as post } from "./gql.js";
import { connect } from "./graphql-ws.js";

const KEY_STORAGE = "tessera.console.apiKey";
const PAGE_SIZES = [10, 25, 50, 100, 200];
const EXPORT_PAGE = 500;
const EXPORT_MAX = 1000000;

const $ = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text: nothing is parsed as HTML). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

let apiKey = sessionStorage.getItem(KEY_STORAGE);
let socket = null;

class GqlError extends Error {
  constructor(errors) {
    const first = errors[0] || {};
    super(first.message || "request failed");
    this.first = first;
    this.code = first.extensions?.code;
    this.reason = first.extensions?.reason;
  }
}

/** One GraphQL call with the operator's key; its data, or a thrown GqlError. */
async function gql(query, variables = {}) {
  const { data, errors } = await post(query, variables, apiKey);
  if (errors && errors.length) throw new GqlError(errors);
  return data;
}

function describe(error) {
  if (!(error instanceof GqlError)) return error.message;
  if (error.code === "UNAUTHENTICATED") return "The key was not accepted (revoked, expired or mistyped).";
  if (error.code === "FORBIDDEN") return "This key may not do that: the console needs an admin API key.";
  const text = describeError(error.first);
  return error.reason && !text.includes(error.reason) ? `${text} (${error.reason})` : text;
}

function say(el, text, kind = "info") {
  el.textContent = text;
  el.dataset.kind = kind;
}

/** A DateTime from the API as "2026-12-02 04:25:35 UTC". */
function time(iso) {
  if (!iso) return "–";
  const at = new Date(iso);
  return Number.isNaN(at.getTime()) ? iso : at.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

// ---------------------------------------------------------------- sign-in

async function signIn(event) {
  event.preventDefault();
  const field = $("api-key");
  const error = $("api-key-error");
  const candidate = field.value.trim();
  if (!candidate) {
    say(error, "Paste an admin API key.", "error");
    field.setAttribute("aria-invalid", "true");
    field.focus();
    return;
  }
  apiKey = candidate;
  try {
    // Admin-only: a user token or a read:audit key is told so here, not later.
    await gql("{ users(first: 1) { totalCount } }");
  } catch (e) {
    apiKey = null;
    say(error, describe(e), "error");
    field.setAttribute("aria-invalid", "true");
    field.focus();
    return;
  }
  sessionStorage.setItem(KEY_STORAGE, candidate);
  field.value = "";
  field.removeAttribute("aria-invalid");
  say(error, "");
  open();
}

function signOut() {
  sessionStorage.removeItem(KEY_STORAGE);
  apiKey = null;
  if (socket) socket.close();
  socket = null;
  $("console").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("alert-list").replaceChildren();
  $("api-key").focus();
}

function open() {
  $("sign-in").hidden = true;
  $("console").hidden = false;
  $("sign-out").hidden = false;
  startAlerts();
  loadEvents(0);
}

// ---------------------------------------------------------------- alerts

const ALERT_FIELDS = "id userId kind reason raisedAt acknowledgedAt causedBy";
const alerts = new Map();

function alertItem(a) {
  const acked = Boolean(a.acknowledgedAt);
  const status = acked
    ? h("span", { class: "badge ok" }, `Acknowledged ${time(a.acknowledgedAt)}`)
    : h("span", { class: "badge warn" }, "Open");
  return h(
    "li",
    { class: acked ? "alert acked" : "alert", "data-alert-id": a.id, "data-kind": a.kind },
    h("div", { class: "alert-head" }, h("strong", {}, a.kind), " ", status),
    h("p", {}, a.reason),
    h("p", { class: "muted" }, `Raised ${time(a.raisedAt)} · user `, h("code", {}, a.userId)),
    h(
      "div",
      { class: "actions" },
      acked
        ? null
        : h("button", { type: "button", class: "ack", onclick: () => acknowledge(a.id) }, "Acknowledge"),
      h("button", { type: "button", class: "trace", onclick: () => showEvent("Alert", a.id, 1) }, "Trace"),
      h("button", { type: "button", onclick: () => lookUp(a.userId) }, "User"),
    ),
  );
}

function renderAlerts() {
  const list = [...alerts.values()].sort((x, y) =>
    x.raisedAt === y.raisedAt ? (x.id < y.id ? 1 : -1) : x.raisedAt < y.raisedAt ? 1 : -1,
  );
  const open = list.filter((a) => !a.acknowledgedAt).length;
  $("alert-count").textContent = `${open} open, ${list.length} shown`;
  // A live update must not take a keyboard user's focus away: put it back on the same
  // action of the same alert (or the next one, once Acknowledge is gone).
  const focused = document.activeElement;
  const li = focused?.closest?.("#alert-list li");
  const place = li && { id: li.dataset.alertId, index: [...li.querySelectorAll("button")].indexOf(focused) };
  $("alert-list").replaceChildren(...list.map(alertItem));
  if (place) {
    const again = $("alert-list").querySelector(`[data-alert-id="${CSS.escape(place.id)}"]`);
    const buttons = again ? [...again.querySelectorAll("button")] : [];
    buttons[Math.min(place.index, buttons.length - 1)]?.focus();
  }
}

async function loadAlerts() {
  try {
    let after = null;
    // Oldest first: read to the end, so the newest are shown.
    for (let page = 0; page < 25; page++) {
      const data = await gql(
        `query($a: String) { securityAlerts(first: 200, after: $a) { edges { node { ${ALERT_FIELDS} } } pageInfo { hasNextPage endCursor } } }`,
        { a: after },
      );
      for (const e of data.securityAlerts.edges) alerts.set(e.node.id, e.node);
      if (!data.securityAlerts.pageInfo.hasNextPage) break;
      after = data.securityAlerts.pageInfo.endCursor;
    }
    renderAlerts();
  } catch (e) {
    say($("alerts-status"), describe(e), "error");
  }
}

function startAlerts() {
  alerts.clear();
  socket = connect("/graphql/ws", () => ({ Authorization: `Bearer ${apiKey}` }), {
    onState: (state, detail) => {
      const el = $("live-status");
      if (state === "open") {
        say(el, "Live", "ok");
        // Whatever was raised while the socket was down.
        loadAlerts();
      } else if (state === "connecting") say(el, "Connecting…");
      else if (state === "refused") say(el, `Live updates refused: ${detail}`, "error");
      else say(el, "Reconnecting…", "warn");
    },
  });
  socket.subscribe(`subscription { securityAlerts { ${ALERT_FIELDS} } }`, {}, {
    next: (data) => {
      const a = data.securityAlerts;
      const isNew = !alerts.has(a.id);
      alerts.set(a.id, a);
      renderAlerts();
      if (isNew) say($("alerts-status"), `New alert: ${a.kind} for user ${a.userId}`);
    },
    error: (errors) => say($("alerts-status"), describe(new GqlError(errors)), "error"),
  });
}

async function acknowledge(id) {
  try {
    const data = await gql(
      `mutation($i: ID!) { acknowledgeSecurityAlertV2(input: {alertId: $i}) { securityAlert { ${ALERT_FIELDS} } } }`,
      { i: id },
    );
    const a = data.acknowledgeSecurityAlertV2.securityAlert;
    alerts.set(a.id, a);
    renderAlerts();
    say($("alerts-status"), `Alert ${a.kind} acknowledged.`);
    $("alert-list").querySelector(`[data-alert-id="${CSS.escape(a.id)}"] .trace`)?.focus();
  } catch (e) {
    say($("alerts-status"), describe(e), "error");
  }
}

// ---------------------------------------------------------------- the event log

const EVENT_FIELDS = "position aggregateType aggregateId sequence eventType eventVersion payload metadata recordedAt";
const EVENTS_QUERY = `query($f: EventFilter, $n: Int, $a: String) { events(filter: $f, first: $n, after: $a) {
  totalCount edges { node { ${EVENT_FIELDS} } } pageInfo { hasNextPage endCursor } } }`;
// Cursors of the pages seen: pages[i] is the `after` of page i.
let pages = [null];
let pageIndex = 0;
let currentFilter = null;

function readFilter() {
  const f = {};
  const text = (id) => $(id).value.trim();
  if (text("f-type")) f.aggregateType = text("f-type");
  if (text("f-id")) f.aggregateId = text("f-id");
  if (text("f-user")) f.userId = text("f-user");
  const types = text("f-events").split(/[\s,]+/).filter(Boolean);
  if (types.length) f.eventTypes = types;
  for (const [id, key] of [["f-from", "from"], ["f-to", "to"]]) {
    const v = $(id).value;
    if (v) {
      const at = new Date(v);
      if (Number.isNaN(at.getTime())) throw new Error(`${key}: not a date`);
      f[key] = at.toISOString();
    }
  }
  return f;
}

function eventRow(e) {
  const m = e.metadata || {};
  return h(
    "tr",
    { "data-event": `${e.aggregateType}/${e.aggregateId}/${e.sequence}` },
    h("td", {}, time(e.recordedAt)),
    h("td", {}, h("button", { type: "button", class: "link open-event", onclick: () => showEvent(e.aggregateType, e.aggregateId, e.sequence) }, e.eventType)),
    h("td", {}, `${e.aggregateType} `, h("code", {}, e.aggregateId), ` #${e.sequence}`),
    h("td", {}, m.actor || "–"),
    h("td", { class: "muted" }, m.command || ""),
  );
}

async function loadEvents(index) {
  const status = $("events-status");
  try {
    if (index === 0) {
      currentFilter = readFilter();
      pages = [null];
    }
    const size = Number($("f-size").value) || 50;
    const data = await gql(EVENTS_QUERY, { f: currentFilter, n: size, a: pages[index] });
    const conn = data.events;
    pageIndex = index;
    pages[index + 1] = conn.pageInfo.hasNextPage ? conn.pageInfo.endCursor : undefined;
    $("event-rows").replaceChildren(...conn.edges.map((e) => eventRow(e.node)));
    const totalPages = Math.max(1, Math.ceil(conn.totalCount / size));
    $("page-label").textContent = `Page ${index + 1} of ${totalPages}`;
    $("prev-page").disabled = index === 0;
    $("next-page").disabled = !conn.pageInfo.hasNextPage;
    say(status, `${conn.totalCount} event${conn.totalCount === 1 ? "" : "s"} match.`);
  } catch (e) {
    say(status, describe(e), "error");
  }
}

async function exportEvents() {
  const status = $("export-status");
  let filter;
  try {
    filter = readFilter();
  } catch (e) {
    say(status, e.message, "error");
    return;
  }
  const button = $("export");
  button.disabled = true;
  const lines = [];
  try {
    let after = null;
    for (;;) {
      const data = await gql(EVENTS_QUERY, { f: filter, n: EXPORT_PAGE, a: after });
      for (const e of data.events.edges) lines.push(JSON.stringify(e.node));
      say(status, `Exporting… ${lines.length} of ${data.events.totalCount} events`);
      if (!data.events.pageInfo.hasNextPage || lines.length >= EXPORT_MAX) break;
      after = data.events.pageInfo.endCursor;
    }
    const blob = new Blob(lines.map((l) => `${l}\n`), { type: "application/x-ndjson" });
    const url = URL.createObjectURL(blob);
    const stamp = new Date().toISOString().replace(/[:.]/g, "-");
    const link = h("a", { href: url, download: `tessera-events-${stamp}.jsonl` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    say(status, `Exported ${lines.length} event${lines.length === 1 ? "" : "s"} as JSON lines.`, "ok");
  } catch (e) {
    say(status, describe(e), "error");
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- one event and its chain

const TRACE_QUERY = `query($t: String!, $i: ID!, $s: Int!) { auditEvent(aggregateType: $t, aggregateId: $i, sequence: $s) {
  event { ${EVENT_FIELDS} } causes { ${EVENT_FIELDS} } siblings { ${EVENT_FIELDS} } effects { ${EVENT_FIELDS} } } }`;

function chainList(id, events, empty) {
  const list = $(id);
  if (!events.length) {
    list.replaceChildren(h("li", { class: "muted" }, empty));
    return;
  }
  list.replaceChildren(
    ...events.map((e) =>
      h(
        "li",
        { "data-event": `${e.aggregateType}/${e.aggregateId}/${e.sequence}` },
        h("button", { type: "button", class: "link", onclick: () => showEvent(e.aggregateType, e.aggregateId, e.sequence) }, e.eventType),
        ` ${e.aggregateType} `,
        h("code", {}, e.aggregateId),
        ` #${e.sequence} · ${time(e.recordedAt)}`,
      ),
    ),
  );
}

async function showEvent(type, id, sequence) {
  const panel = $("event-detail");
  const status = $("detail-status");
  panel.hidden = false;
  try {
    const data = await gql(TRACE_QUERY, { t: type, i: id, s: sequence });
    const t = data.auditEvent;
    if (!t) {
      say(status, `No event ${type}/${id}/${sequence} (yet).`, "error");
      return;
    }
    const e = t.event;
    const m = e.metadata || {};
    say(status, "");
    $("detail-title").textContent = `${e.eventType} · ${e.aggregateType} #${e.sequence}`;
    panel.dataset.event = `${e.aggregateType}/${e.aggregateId}/${e.sequence}`;
    const facts = [
      ["Stream", `${e.aggregateType} ${e.aggregateId}`],
      ["Sequence", e.sequence],
      ["Position", e.position],
      ["Recorded", time(e.recordedAt)],
      ["Version", e.eventVersion],
      ["Actor", m.actor],
      ["Command", m.command],
      ["Route", m.route],
      ["Request", m.request_id],
      ["Correlation", m.correlation_id],
      ["Causation", m.causation_id],
      ["Client IP", m.client_ip],
      ["User agent", m.user_agent],
    ].filter(([, v]) => v !== undefined && v !== null && v !== "");
    $("detail-facts").replaceChildren(...facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]));
    $("detail-payload").textContent = JSON.stringify(e.payload, null, 2);
    $("detail-metadata").textContent = JSON.stringify(e.metadata, null, 2);
    chainList("detail-causes", t.causes, "None: a command wrote it.");
    chainList("detail-siblings", t.siblings, "None.");
    chainList("detail-effects", t.effects, "None.");
    $("detail-title").focus();
  } catch (e) {
    say(status, describe(e), "error");
  }
}

// ---------------------------------------------------------------- users

const USER_FIELDS = `id login email phoneNumber displayName status createdAt secondFactorLocked recoveryCodesRemaining
  factors { id type label status failedAttempts lockedUntil lastVerifiedAt createdAt phoneNumber email }`;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

async function lookUp(query) {
  const field = $("user-query");
  if (query !== undefined) field.value = query;
  const q = field.value.trim();
  const status = $("user-status");
  const out = $("user-result");
  if (!q) {
    say(status, "Type a login or a user id.", "error");
    field.setAttribute("aria-invalid", "true");
    return;
  }
  field.removeAttribute("aria-invalid");
  try {
    const data = UUID.test(q)
      ? await gql(`query($i: ID!) { found: user(id: $i) { ${USER_FIELDS} } }`, { i: q })
      : await gql(`query($l: String!) { found: userByLogin(login: $l) { ${USER_FIELDS} } }`, { l: q });
    if (!data.found) {
      out.replaceChildren();
      say(status, `No user ${q}.`, "error");
      return;
    }
    say(status, "");
    renderUser(data.found);
    if (query !== undefined) $("users-h").scrollIntoView();
  } catch (e) {
    say(status, describe(e), "error");
  }
}

function renderUser(u) {
  const lock = u.secondFactorLocked
    ? h("span", { class: "badge warn", id: "user-lock" }, "Second factor hard-locked")
    : h("span", { class: "badge ok", id: "user-lock" }, "Not locked");
  const rows = u.factors.map((f) =>
    h(
      "tr",
      { "data-factor-id": f.id, "data-status": f.status },
      h("td", {}, f.type),
      h("td", {}, f.label || f.phoneNumber || f.email || "–"),
      h("td", { class: "factor-status" }, f.status),
      h("td", {}, String(f.failedAttempts)),
      h("td", {}, f.lockedUntil ? time(f.lockedUntil) : "–"),
      h("td", {}, time(f.lastVerifiedAt)),
      h(
        "td",
        {},
        f.status === "LOCKED_OUT"
          ? h("button", { type: "button", class: "unlock-factor", onclick: () => unlockFactor(u.id, f.id) }, "Unlock factor")
          : null,
      ),
    ),
  );
  $("user-result").replaceChildren(
    h("h3", { id: "user-title", tabindex: "-1" }, u.login),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Id"), h("dd", {}, h("code", {}, u.id)),
      h("dt", {}, "Status"), h("dd", {}, u.status),
      h("dt", {}, "Lock"), h("dd", {}, lock),
      h("dt", {}, "Recovery codes left"), h("dd", {}, String(u.recoveryCodesRemaining)),
      h("dt", {}, "Created"), h("dd", {}, time(u.createdAt)),
      u.email ? [h("dt", {}, "E-mail"), h("dd", {}, u.email)] : null,
      u.phoneNumber ? [h("dt", {}, "Phone"), h("dd", {}, u.phoneNumber)] : null,
    ),
    h(
      "div",
      { class: "actions" },
      u.secondFactorLocked
        ? h("button", { type: "button", id: "unlock-user", onclick: () => unlockUser(u.id) }, "Unlock user")
        : null,
      h("button", { type: "button", onclick: () => userEvents(u.id) }, "Show this user's events"),
    ),
    h(
      "div",
      { class: "scroll" },
      h(
        "table",
        { id: "factor-table" },
        h("caption", {}, "Factors (removed ones included)"),
        h("thead", {}, h("tr", {}, ["Type", "Label", "Status", "Failures", "Locked until", "Last verified", ""].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: "7", class: "muted" }, "No factors."))),
      ),
    ),
  );
}

async function unlockUser(userId) {
  try {
    await gql("mutation($u: ID!) { unlockUserV2(input: {userId: $u}) { user { id } } }", { u: userId });
    say($("user-status"), "User unlocked.", "ok");
    await lookUp(userId);
    $("user-title")?.focus();
  } catch (e) {
    say($("user-status"), describe(e), "error");
  }
}

async function unlockFactor(userId, factorId) {
  try {
    await gql("mutation($f: ID!) { unlockFactorV2(input: {factorId: $f}) { factor { id status } } }", { f: factorId });
    await lookUp(userId);
    say($("user-status"), "Factor unlocked.", "ok");
    $("user-title")?.focus();
  } catch (e) {
    say($("user-status"), describe(e), "error");
  }
}

function userEvents(userId) {
  for (const id of ["f-type", "f-id", "f-events", "f-from", "f-to"]) $(id).value = "";
  $("f-user").value = userId;
  loadEvents(0);
  $("events-h").scrollIntoView();
}

// ---------------------------------------------------------------- wiring

function init() {
  for (const n of PAGE_SIZES) $("f-size").append(h("option", { value: n, selected: n === 50 }, String(n)));
  $("key-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("event-filter").addEventListener("submit", (e) => {
    e.preventDefault();
    loadEvents(0);
  });
  $("export").addEventListener("click", exportEvents);
  $("prev-page").addEventListener("click", () => loadEvents(Math.max(0, pageIndex - 1)));
  $("next-page").addEventListener("click", () => pages[pageIndex + 1] !== undefined && loadEvents(pageIndex + 1));
  $("close-detail").addEventListener("click", () => {
    $("event-detail").hidden = true;
    $("events-h").focus();
  });
  $("user-lookup").addEventListener("submit", (e) => {
    e.preventDefault();
    lookUp();
  });
  if (!apiKey) {
    $("api-key").focus();
    return;
  }
  // A key kept from earlier in this tab may have been revoked or expired meanwhile.
  gql("{ users(first: 1) { totalCount } }").then(open, (e) => {
    sessionStorage.removeItem(KEY_STORAGE);
    apiKey = null;
    say($("api-key-error"), describe(e), "error");
    $("api-key").focus();
  });
}

init();
