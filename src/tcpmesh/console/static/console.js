// tcpmesh console: plain DOM, no libraries, no build step (the package ships this file).
"use strict";

const COLORS = ["#0a6ebd", "#d1242f", "#1a7f37", "#8250df", "#bf8700", "#57606a"];
const COLUMNS = {
  Deployment: [
    ["Name", (o) => o.metadata.name],
    ["Ready", (o) => `${(o.status || {}).readyReplicas || 0}/${(o.spec || {}).replicas ?? 1}`],
  ],
  Pod: [
    ["Name", (o) => o.metadata.name],
    ["Status", (o) => (o.status || {}).phase || "Pending"],
    ["IP", (o) => (o.status || {}).podIP || ""],
    ["Restarts", (o) => String(((o.status || {}).containerStatuses || [])
      .reduce((n, c) => n + (c.restartCount || 0), 0))],
  ],
  Service: [
    ["Name", (o) => o.metadata.name],
    ["Type", (o) => o.spec.type || "ClusterIP"],
    ["Cluster IP", (o) => o.spec.clusterIP || "<none>"],
    ["External IP", (o) => (((o.status || {}).loadBalancer || {}).ingress || [])
      .map((i) => i.ip || i.hostname).join(", ") || "<none>"],
    ["Ports", (o) => (o.spec.ports || []).map((p) => `${p.port}/${p.protocol || "TCP"}`).join(", ")],
  ],
  Gateway: [
    ["Name", (o) => o.metadata.name],
    ["Servers", (o) => ((o.spec || {}).servers || [])
      .map((s) => `${(s.port || {}).number}/${(s.port || {}).protocol}`).join(", ")],
  ],
  VirtualService: [
    ["Name", (o) => o.metadata.name],
    ["Hosts", (o) => ((o.spec || {}).hosts || []).join(", ")],
    ["Gateways", (o) => ((o.spec || {}).gateways || []).join(", ") || "mesh"],
  ],
  DestinationRule: [
    ["Name", (o) => o.metadata.name],
    ["Host", (o) => (o.spec || {}).host || ""],
    ["Subsets", (o) => ((o.spec || {}).subsets || []).map((s) => s.name).join(", ")],
  ],
  ServiceEntry: [
    ["Name", (o) => o.metadata.name],
    ["Hosts", (o) => ((o.spec || {}).hosts || []).join(", ")],
    ["Ports", (o) => ((o.spec || {}).ports || []).map((p) => `${p.number}/${p.protocol}`).join(", ")],
  ],
  Rollout: [
    ["Name", (o) => o.metadata.name],
    ["Phase", (o) => (o.status || {}).phase || "Pending"],
    ["Step", (o) => `${(o.status || {}).currentStepIndex || 0}/${((o.spec || {}).steps || []).length}`],
    ["Weights", (o) => `${(o.status || {}).stableWeight ?? 100}/${(o.status || {}).canaryWeight ?? 0}`],
  ],
};
const PLURAL = {
  Deployment: "Deployments", Pod: "Pods", Service: "Services", Gateway: "Gateways",
  VirtualService: "VirtualServices", DestinationRule: "DestinationRules",
  ServiceEntry: "ServiceEntries", Rollout: "Rollouts",
};
const HISTORY = 60;

const state = {
  csrf: null, namespace: "default", objects: {}, loaded: {}, source: null,
  editing: null, dirty: new Set(), previous: null, history: {}, since: {}, shape: {},
  timer: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) node.append(c);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function status(text) { $("status").textContent = text; }

async function call(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const resp = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let doc = {};
  try { doc = await resp.json(); } catch (e) { doc = { errors: [`HTTP ${resp.status}`] }; }
  if (!resp.ok) {
    const error = new Error((doc.errors || [`HTTP ${resp.status}`]).join("\n"));
    error.status = resp.status;
    error.messages = doc.errors || [error.message];
    throw error;
  }
  return doc;
}

function showMessages(target, messages, ok) {
  target.replaceChildren();
  if (!messages.length) return;
  const list = el("ul", { class: ok ? "" : "errors" });
  for (const m of messages) list.append(el("li", { class: ok ? "ok" : "", text: m }));
  target.append(list);
}

// ---------------------------------------------------------------- session

async function login(token) {
  const doc = await call("POST", "api/login", { token });
  state.csrf = doc.csrfToken;
}

async function init() {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("login-error").textContent = "";
    try {
      await login($("token").value);
      $("token").value = "";
      await start();
    } catch (e) {
      $("login-error").textContent = `Login failed: ${e.message}`;
    }
  });
  $("logout").addEventListener("click", async () => {
    await call("POST", "api/logout", {});
    location.reload();
  });
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    history.replaceState(null, "", location.pathname);  // the token leaves the address bar
    try { await login(decodeURIComponent(match[1])); } catch (e) {
      $("login-error").textContent = `Login failed: ${e.message}`;
    }
  }
  try {
    const doc = await call("GET", "api/session");
    state.csrf = doc.csrfToken;
    await start();
  } catch (e) {
    status("Not logged in");
    $("login").hidden = false;
  }
}

async function start() {
  $("login").hidden = true;
  $("workspace").hidden = false;
  $("session-controls").hidden = false;
  const select = $("namespace");
  const doc = await call("GET", "api/namespaces");
  select.replaceChildren(...doc.namespaces.map((n) => el("option", { value: n, text: n })));
  select.value = doc.namespaces.includes(state.namespace) ? state.namespace : doc.namespaces[0];
  select.onchange = () => switchNamespace(select.value);
  $("create-form").addEventListener("submit", createFromYaml);
  $("editor-form").addEventListener("submit", saveYaml);
  $("editor-close").addEventListener("click", () => { $("editor").hidden = true; state.editing = null; });
  switchNamespace(select.value);
}

function switchNamespace(namespace) {
  state.namespace = namespace;
  state.objects = {};
  state.loaded = {};
  state.previous = null;
  state.history = {};
  state.since = {};
  state.shape = {};
  state.dirty.clear();
  for (const kind of Object.keys(COLUMNS)) state.objects[kind] = new Map();
  renderTables();
  renderRollouts();
  watch();
  if (state.timer) clearInterval(state.timer);
  pollTraffic();
  state.timer = setInterval(pollTraffic, 1000);
}

// ---------------------------------------------------------------- live lists

function watch() {
  if (state.source) state.source.close();
  status(`Watching namespace ${state.namespace}…`);
  const source = new EventSource(`api/watch?namespace=${encodeURIComponent(state.namespace)}`);
  state.source = source;
  let pending = false;
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    const objects = state.objects[event.kind];
    if (!objects) return;
    if (event.type === "ERROR") { status(`Watch of ${event.kind} failed: ${event.message}`); return; }
    state.loaded[event.kind] = true;
    const obj = event.object;
    if (event.type === "DELETED") objects.delete(obj.metadata.name);
    else if (event.type === "ADDED" || event.type === "MODIFIED") objects.set(obj.metadata.name, obj);
    else if (event.type === "BOOKMARK") return;
    if (!pending) {
      pending = true;
      requestAnimationFrame(() => {
        pending = false; renderTables(); renderSplits(); renderRollouts();
      });
    }
  };
  source.onopen = () => {
    status(`Live: namespace ${state.namespace}`);
    // An empty kind sends no event: after the first burst, show it as empty, not loading.
    setTimeout(() => {
      for (const kind of Object.keys(COLUMNS)) state.loaded[kind] = true;
      renderTables();
    }, 1500);
  };
  source.onerror = () => status("Connection to the mesh lost; reconnecting…");
}

function renderTables() {
  const tables = [];
  for (const [kind, columns] of Object.entries(COLUMNS)) {
    const table = el("table", { "aria-label": PLURAL[kind] });
    table.append(el("caption", { text: PLURAL[kind] }));
    const head = el("tr");
    for (const [name] of columns) head.append(el("th", { scope: "col", text: name }));
    head.append(el("th", { scope: "col", text: "Actions" }));
    table.append(el("thead", {}, head));
    const body = el("tbody");
    const objects = [...(state.objects[kind] || new Map()).values()]
      .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
    if (!state.loaded[kind] && !objects.length) {
      body.append(el("tr", {}, el("td", { colspan: columns.length + 1, class: "loading", text: "Loading…" })));
    } else if (!objects.length) {
      body.append(el("tr", {}, el("td", { colspan: columns.length + 1, text: `No ${PLURAL[kind]}` })));
    }
    for (const obj of objects) {
      const row = el("tr");
      for (const [, value] of columns) row.append(el("td", { text: value(obj) }));
      const button = el("button", {
        type: "button", text: "YAML", "aria-label": `YAML of ${kind} ${obj.metadata.name}`,
      });
      button.addEventListener("click", () => openYaml(kind, obj.metadata.name));
      row.append(el("td", {}, button));
      body.append(row);
    }
    table.append(body);
    tables.push(table);
  }
  $("tables").replaceChildren(...tables);
}

// ---------------------------------------------------------------- YAML

async function createFromYaml(event) {
  event.preventDefault();
  const target = $("create-result");
  showMessages(target, ["Creating…"], true);
  try {
    const doc = await call("POST", "api/apply", { yaml: $("create-yaml").value, namespace: state.namespace });
    const lines = doc.results.map((r) => `${r.kind.toLowerCase()}/${r.name} ${r.action}`);
    showMessages(target, [...lines, ...(doc.warnings || []).map((w) => `Warning: ${w}`)], true);
  } catch (e) {
    showMessages(target, e.messages || [e.message], false);
  }
}

async function openYaml(kind, name) {
  const editor = $("editor");
  editor.hidden = false;
  $("editor-title").textContent = `YAML of ${kind} ${state.namespace}/${name}`;
  $("editor-label").textContent = `Edit YAML of ${kind} ${name}`;
  $("editor-yaml").value = "";
  showMessages($("editor-result"), ["Loading…"], true);
  try {
    const path = `api/objects/${kind}/${encodeURIComponent(state.namespace)}/${encodeURIComponent(name)}`;
    const doc = await call("GET", path);
    state.editing = { kind, name, path, resourceVersion: doc.resourceVersion };
    $("editor-yaml").value = doc.yaml;
    showMessages($("editor-result"), [`Opened at resourceVersion ${doc.resourceVersion}`], true);
    $("editor-yaml").focus();
  } catch (e) {
    showMessages($("editor-result"), e.messages || [e.message], false);
  }
}

async function saveYaml(event) {
  event.preventDefault();
  const editing = state.editing;
  if (!editing) return;
  try {
    const doc = await call("PUT", editing.path, {
      yaml: $("editor-yaml").value, resourceVersion: editing.resourceVersion,
    });
    editing.resourceVersion = doc.resourceVersion;
    showMessages($("editor-result"), [`Saved: resourceVersion ${doc.resourceVersion}`], true);
  } catch (e) {
    const messages = e.messages || [e.message];
    if (e.status === 409) messages.unshift("Conflict: someone changed this object since you opened it. Reopen it to see the current version.");
    showMessages($("editor-result"), messages, false);
  }
}

// ---------------------------------------------------------------- split editor

function splitKey(name, rule) { return `${name}/tcp[${rule}]`; }

function renderSplits() {
  const blocks = [];
  const services = [...state.objects.VirtualService.values()]
    .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  for (const vs of services) {
    ((vs.spec || {}).tcp || []).forEach((rule, index) => {
      const key = splitKey(vs.metadata.name, index);
      const existing = document.querySelector(`[data-split="${CSS.escape(key)}"]`);
      if (existing && (state.dirty.has(key) || existing.dataset.version === vs.metadata.resourceVersion)) {
        blocks.push(existing);
        return;
      }
      blocks.push(splitEditor(vs, rule, index, key));
    });
  }
  $("splits").replaceChildren(...blocks);
}

function splitEditor(vs, rule, index, key) {
  const name = vs.metadata.name;
  const block = el("form", { class: "split", "data-split": key, "data-version": vs.metadata.resourceVersion });
  block.append(el("h3", { text: `Traffic split: VirtualService ${name}, tcp[${index}]` }));
  const routes = rule.route || [];
  const inputs = [];
  const outputs = [];
  const update = () => {
    const weights = inputs.map((i) => Math.max(0, Number(i.value) || 0));
    const total = weights.reduce((a, b) => a + b, 0);
    outputs.forEach((out, i) => {
      out.value = total ? `${(100 * weights[i] / total).toFixed(1)}%` : "0%";
    });
  };
  routes.forEach((route, i) => {
    const dest = route.destination || {};
    const label = `${dest.host}${dest.subset ? " " + dest.subset : ""}`;
    const id = `w-${key}-${i}`.replace(/[^A-Za-z0-9_-]/g, "_");
    const input = el("input", {
      id, type: "number", min: "0", max: "1000", step: "1",
      value: String(route.weight ?? (routes.length === 1 ? 100 : 0)),
    });
    const range = el("input", {
      type: "range", min: "0", max: "100", step: "1", value: input.value,
      "aria-label": `Weight slider of ${label}`,
    });
    const out = el("output", { for: id, "aria-label": `Effective share of ${label}` });
    input.addEventListener("input", () => { range.value = input.value; state.dirty.add(key); update(); });
    range.addEventListener("input", () => { input.value = range.value; state.dirty.add(key); update(); });
    inputs.push(input);
    outputs.push(out);
    block.append(el("div", { class: "row" }, el("label", { for: id, text: `Weight of ${label}` }), input, range, out));
  });
  const apply = el("button", { type: "submit", text: `Apply split of ${name}` });
  const result = el("div", { role: "alert" });
  block.append(apply, result);
  block.addEventListener("submit", async (event) => {
    event.preventDefault();
    showMessages(result, ["Applying…"], true);
    try {
      const path = `api/split/${encodeURIComponent(state.namespace)}/${encodeURIComponent(name)}`;
      const doc = await call("PUT", path, {
        route: index, weights: inputs.map((i) => Number(i.value)),
        resourceVersion: vs.metadata.resourceVersion,
      });
      state.dirty.delete(key);
      block.dataset.version = doc.resourceVersion;
      showMessages(result, [`Applied: resourceVersion ${doc.resourceVersion}`], true);
    } catch (e) {
      showMessages(result, e.messages || [e.message], false);
    }
  });
  update();
  return block;
}

// ---------------------------------------------------------------- Rollouts
// The Rollout's own status, as the controller writes it (the same reading as
// `tcpmesh rollout status`): phase, step, current weights, each step's last gates.

function stepText(step) {
  if ("setWeight" in step) return `setWeight ${step.setWeight}`;
  if ("pause" in step) {
    const duration = (step.pause || {}).duration;
    return duration ? `pause ${duration}` : "pause (until promoted)";
  }
  return "analysis";
}

function gateText(measurement) {
  if (!measurement) return "-";
  const values = Object.entries(measurement.values || {}).map(([name, value]) =>
    `${name} ${typeof value === "number" ? Number(value.toPrecision(3)) : "-"}`);
  return `${measurement.verdict}: ${values.join(", ") || "no gates"}`;
}

function renderRollouts() {
  const rollouts = [...((state.objects.Rollout || new Map()).values())]
    .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  $("rollouts-status").textContent = rollouts.length
    ? "Live: each change of a Rollout's status shows here as the controller writes it"
    : "No Rollouts in this namespace";
  $("rollout-views").replaceChildren(...rollouts.map(rolloutView));
}

function rolloutView(obj) {
  const name = obj.metadata.name;
  const spec = obj.spec || {}, status = obj.status || {};
  const steps = spec.steps || [];
  const index = status.currentStepIndex || 0;
  const phase = status.phase || "Pending";
  const view = el("article", { class: "rollout", "aria-label": `Rollout ${name}`, "data-rollout": name });
  view.append(el("h3", { text: `Rollout ${name}` }));
  const facts = [
    ["Phase", phase, "phase"],
    ["Message", status.message || "-", "message"],
    ["Step", `${index} of ${steps.length}`, "step"],
    ["Current weight", `stable ${(spec.stable || {}).subset} ${status.stableWeight ?? 100}%, `
      + `canary ${(spec.canary || {}).subset} ${status.canaryWeight ?? 0}%`, "weights"],
  ];
  const list = el("dl");
  for (const [term, value, field] of facts) {
    list.append(el("dt", { text: term }), el("dd", { "data-field": field, text: value }));
  }
  view.append(list);
  const measured = new Map((status.steps || []).map((s) => [s.index, s.measurements || []]));
  const table = el("table", { "aria-label": `Steps of Rollout ${name}` });
  table.append(el("caption", { text: `Steps of Rollout ${name}` }));
  const head = el("tr");
  for (const h of ["#", "Step", "State", "Gates (last measurement)"]) head.append(el("th", { scope: "col", text: h }));
  table.append(el("thead", {}, head));
  const body = el("tbody");
  steps.forEach((step, i) => {
    const done = i < index || phase === "Healthy";
    const where = done ? "done" : (i === index ? "current" : "pending");
    const last = (measured.get(i) || []).slice(-1)[0];
    body.append(el("tr", { "data-step": String(i), class: where },
      el("td", { text: String(i) }), el("th", { scope: "row", text: stepText(step) }),
      el("td", { text: where }), el("td", { class: "gates", text: gateText(last) })));
  });
  table.append(body);
  view.append(table);
  return view;
}

// ---------------------------------------------------------------- live chart

async function pollTraffic() {
  const namespace = state.namespace;
  let doc;
  try {
    doc = await call("GET", `api/traffic?namespace=${encodeURIComponent(namespace)}`);
  } catch (e) {
    $("traffic-status").textContent = `Cannot read traffic: ${e.message}`;
    return;
  }
  if (namespace !== state.namespace) return;
  $("traffic-status").textContent = doc.routes.length
    ? `New connections per destination, refreshed every second (${new Date().toLocaleTimeString()})`
    : "No tcp routes served in this namespace";
  const previous = state.previous;
  state.previous = {};
  for (const route of doc.routes) {
    const key = splitKey(route.name, route.rule);
    const counts = route.destinations.map((d) => d.opened);
    state.previous[key] = counts;
    const shape = route.destinations.map((d) => `${d.service} ${d.subset}`).join(",");
    if (state.shape[key] !== shape) {
      // Destinations changed: start this route's chart and counts afresh.
      state.shape[key] = shape;
      state.since[key] = counts.slice();
      state.history[key] = [];
    }
    const before = previous && previous[key] && previous[key].length === counts.length
      ? previous[key] : null;
    const series = state.history[key] || (state.history[key] = []);
    if (before) {
      series.push(counts.map((n, i) => Math.max(0, n - before[i])));
      while (series.length > HISTORY) series.shift();
    }
  }
  renderCharts(doc.routes);
}

function renderCharts(routes) {
  const blocks = routes.map((route) => {
    const key = splitKey(route.name, route.rule);
    const series = state.history[key] || [];
    const since = state.since[key] || route.destinations.map(() => 0);
    const names = route.destinations.map((d) => `${d.service.split(".")[0]} ${d.subset || "(all)"}`);
    const block = el("div", { class: "chart" });
    block.append(el("h3", { text: `New connections: VirtualService ${route.name}, tcp[${route.rule}]` }));
    block.append(chart(series, route.destinations, names, route.name));
    const legend = el("p", { class: "legend" });
    names.forEach((n, i) => {
      const swatch = el("span", { class: "swatch" });
      swatch.style.background = COLORS[i % COLORS.length];
      legend.append(el("span", {}, swatch, `${n} (solid: observed, dashed: weight ${route.destinations[i].weightPercent}%)`));
    });
    block.append(legend);
    const table = el("table", { "aria-label": `New connections per destination of ${route.name} tcp[${route.rule}]` });
    table.append(el("caption", { text: `New connections per destination of ${route.name} tcp[${route.rule}] (table)` }));
    const head = el("tr");
    for (const h of ["Destination", "Weight", "New since opened", "Last second", "Observed share", "Active"]) {
      head.append(el("th", { scope: "col", text: h }));
    }
    table.append(el("thead", {}, head));
    const body = el("tbody");
    const grown = route.destinations.map((d, i) => d.opened - since[i]);
    const total = grown.reduce((a, b) => a + b, 0);
    const last = series.length ? series[series.length - 1] : route.destinations.map(() => 0);
    route.destinations.forEach((d, i) => {
      body.append(el("tr", { "data-destination": d.subset || "(all)" },
        el("th", { scope: "row", text: names[i] }),
        el("td", { text: `${d.weightPercent}%` }),
        el("td", { class: "grown", text: String(grown[i]) }),
        el("td", { text: String(last[i] || 0) }),
        el("td", { text: total ? `${(100 * grown[i] / total).toFixed(1)}%` : "-" }),
        el("td", { text: String(d.active) })));
    });
    table.append(body);
    block.append(table);
    return block;
  });
  $("charts").replaceChildren(...blocks);
}

function chart(series, destinations, names, name) {
  const width = 760, height = 220, pad = 30;
  const totals = series.map((p) => p.reduce((a, b) => a + b, 0));
  const top = Math.max(1, ...series.flat(), ...totals.map((t) => t));
  const x = (i) => pad + (i * (width - 2 * pad)) / Math.max(1, HISTORY - 1);
  const y = (v) => height - pad - (v * (height - 2 * pad)) / top;
  const summary = names.map((n, i) => {
    const sum = series.reduce((a, p) => a + (p[i] || 0), 0);
    return `${n}: ${sum} new connections over ${series.length} s, weight ${destinations[i].weightPercent}%`;
  }).join("; ");
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `Chart of new connections per second for ${name}. ${summary || "No data yet"}. The table below has the numbers.`,
  });
  root.append(svg("line", { x1: pad, y1: height - pad, x2: width - pad, y2: height - pad, stroke: "#8c959f" }));
  root.append(svg("line", { x1: pad, y1: pad, x2: pad, y2: height - pad, stroke: "#8c959f" }));
  const label = svg("text", { x: 2, y: pad - 8, "font-size": "11" });
  label.textContent = `${top} /s`;
  root.append(label);
  destinations.forEach((d, i) => {
    const color = COLORS[i % COLORS.length];
    const observed = series.map((p, t) => `${x(t)},${y(p[i] || 0)}`).join(" ");
    const expected = series.map((p, t) => `${x(t)},${y((totals[t] * d.weightPercent) / 100)}`).join(" ");
    if (series.length) {
      root.append(svg("polyline", { points: observed, fill: "none", stroke: color, "stroke-width": "2" }));
      root.append(svg("polyline", {
        points: expected, fill: "none", stroke: color, "stroke-width": "1", "stroke-dasharray": "5 4",
      }));
    }
  });
  return root;
}

document.addEventListener("DOMContentLoaded", init);
