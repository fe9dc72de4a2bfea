// graphc explorer: renders the data in #graphc-data. Data is only ever put into the page
// through textContent and attributes, never parsed as HTML.
"use strict";
(function () {
  const T0 = performance.now();
  const SVG = "http://www.w3.org/2000/svg";
  const W = 170, H = 40, GX = 24, GY = 46;

  function el(tag, props, parent) {
    const e = document.createElement(tag);
    for (const k in props || {}) {
      if (k === "text") e.textContent = props[k]; else e.setAttribute(k, props[k]);
    }
    if (parent) parent.appendChild(e);
    return e;
  }
  function sv(tag, attrs, parent) {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }

  // Errors go into a visible element, which tests read from the rendered page.
  const errors = el("div", {id: "errors", "data-errors": "0"}, document.body);
  errors.hidden = true;
  function report(message) {
    errors.hidden = false;
    errors.textContent += message + "\n";
    errors.setAttribute("data-errors", String(Number(errors.getAttribute("data-errors")) + 1));
  }
  window.onerror = function (msg, src, line, col) {
    report("error: " + msg + " (line " + line + ":" + col + ")");
  };

  const data = JSON.parse(document.getElementById("graphc-data").textContent);
  const G = data.graph, nodes = G.nodes, scopes = G.scopes;
  const outputs = new Set(G.outputs);

  // ---- page frame
  const bar = el("div", {id: "bar"}, document.body);
  el("h1", {text: data.title}, bar);
  el("span", {text: nodes.length + " nodes" + (data.backend ? ", backend " + data.backend : "")}, bar);
  const btnExpand = el("button", {text: "expand all"}, bar);
  const btnCollapse = el("button", {text: "collapse all"}, bar);
  const btnFit = el("button", {text: "fit"}, bar);
  const timing = el("span", {id: "timing"}, bar);
  const main = el("div", {id: "main"}, document.body);
  const graphBox = el("div", {id: "graph"}, main);
  const svg = sv("svg", {id: "graph-svg"}, graphBox);
  const viewport = sv("g", {}, svg);
  const tip = el("div", {id: "tip"}, graphBox);
  const side = el("div", {id: "side"}, main);
  const tabs = el("div", {id: "tabs"}, side);
  const panes = {};
  function tab(name) {
    const b = el("button", {text: name, "data-tab": name}, tabs);
    panes[name] = el("div", {class: "pane", id: "pane-" + name.toLowerCase()}, side);
    b.onclick = function () { show(name); };
    return panes[name];
  }
  function show(name) {
    for (const k in panes) panes[k].classList.toggle("on", k === name);
    for (const b of tabs.children) b.classList.toggle("on", b.getAttribute("data-tab") === name);
  }
  const nodePane = tab("Node"), scopePane = tab("Scopes"), reportPane = tab("Report"),
    kernelPane = tab("Kernels"), codePane = tab("Code");

  // ---- scopes: children, sizes, expansion
  const scopeNodes = scopes.map(function () { return 0; });
  for (const n of nodes) scopeNodes[n.scope]++;
  const scopeTotal = scopeNodes.slice();
  for (let s = scopes.length - 1; s > 0; s--) scopeTotal[scopes[s].parent] += scopeTotal[s];
  const expanded = new Set([0]);
  // Open single-child chains from the top so a one-model graph does not start as one box.
  (function () {
    let s = 0;
    for (;;) {
      const kids = [];
      for (let c = 1; c < scopes.length; c++) if (scopes[c].parent === s) kids.push(c);
      if (kids.length !== 1 || scopeNodes[s] > 0) break;
      s = kids[0]; expanded.add(s);
    }
  })();

  // The visible item for each scope: null when it and its ancestors are open, else the
  // outermost closed one. Scopes come parents first.
  function representatives() {
    const rep = new Array(scopes.length).fill(null);
    for (let s = 1; s < scopes.length; s++) {
      const p = rep[scopes[s].parent];
      rep[s] = p !== null ? p : (expanded.has(s) ? null : s);
    }
    return rep;
  }

  let selected = -1, items = [], itemOf = null;

  // ---- layout: longest-path layers, then barycentre ordering within layers
  function layout() {
    const rep = representatives();
    itemOf = new Int32Array(nodes.length);
    const index = new Map();
    items = [];
    for (let i = 0; i < nodes.length; i++) {
      const r = rep[nodes[i].scope];
      const key = r === null ? "n" + i : "s" + r;
      let k = index.get(key);
      if (k === undefined) {
        k = items.length; index.set(key, k);
        items.push({key: key, node: r === null ? i : -1, scope: r === null ? -1 : r,
                    preds: [], succs: [], layer: 0, pos: 0, x: 0, y: 0});
      }
      itemOf[i] = k;
    }
    const seen = new Set(), edges = [];
    for (let i = 0; i < nodes.length; i++) {
      const b = itemOf[i];
      for (const inp of nodes[i].inputs) {
        const a = itemOf[inp];
        if (a === b) continue;
        const key = a * items.length + b;
        if (seen.has(key)) continue;
        seen.add(key); edges.push([a, b]);
        if (a < b) { items[b].preds.push(a); items[a].succs.push(b); }
      }
    }
    // Items are numbered by their first node, inputs first: a < b for every forward edge.
    const layers = [];
    for (const it of items) {
      for (const p of it.preds) it.layer = Math.max(it.layer, items[p].layer + 1);
      (layers[it.layer] = layers[it.layer] || []).push(it);
    }
    layers.forEach(function (L) { L.forEach(function (it, k) { it.pos = k; }); });
    function sweep(L, key) {
      for (const it of L) {
        const nb = it[key];
        if (nb.length) {
          let s = 0;
          for (const j of nb) s += items[j].pos;
          it.bary = s / nb.length;
        } else it.bary = it.pos;
      }
      L.sort(function (a, b) { return a.bary - b.bary; });
      L.forEach(function (it, k) { it.pos = k; });
    }
    for (let round = 0; round < 4; round++) {
      for (let l = 1; l < layers.length; l++) sweep(layers[l], "preds");
      for (let l = layers.length - 2; l >= 0; l--) sweep(layers[l], "succs");
    }
    let width = 0;
    for (const L of layers) width = Math.max(width, L.length);
    layers.forEach(function (L, l) {
      const off = (width - L.length) * (W + GX) / 2;
      L.forEach(function (it, k) { it.x = off + k * (W + GX); it.y = l * (H + GY); });
    });
    return {edges: edges, width: width * (W + GX), height: layers.length * (H + GY)};
  }

  // ---- drawing
  const kindFill = {placeholder: "#cfe2ff", parameter: "#d1e7dd", constant: "#eeeeee",
                    grad: "#fff3cd", op: "#ffffff"};
  let extent = {width: 1, height: 1}, edgeEls = [];
  function clip(s, n) { return s.length > n ? s.slice(0, n - 1) + "\u2026" : s; }
  function scopeLabel(s) { return scopes[s].name || "(top)"; }

  function draw() {
    const t = performance.now();
    const lay = layout();
    extent = lay;
    viewport.textContent = "";
    const eg = sv("g", {}, viewport), ng = sv("g", {}, viewport);
    edgeEls = [];
    for (const [a, b] of lay.edges) {
      const A = items[a], B = items[b];
      const x1 = A.x + W / 2, y1 = A.y + H, x2 = B.x + W / 2, y2 = B.y;
      const my = (y1 + y2) / 2;
      const d = y2 > y1 ? "M" + x1 + "," + y1 + "C" + x1 + "," + my + " " + x2 + "," + my +
        " " + x2 + "," + y2 : "M" + x1 + "," + y1 + "L" + x2 + "," + y2;
      edgeEls.push([a, b, sv("path", {class: "e", d: d}, eg)]);
    }
    items.forEach(function (it, k) {
      const g = sv("g", {transform: "translate(" + it.x + "," + it.y + ")", "data-item": k}, ng);
      const r = sv("rect", {width: W, height: H}, g);
      let l1, l2;
      if (it.node >= 0) {
        const n = nodes[it.node];
        g.setAttribute("class", "n" + (outputs.has(it.node) ? " out" : "") +
                       (it.node === selected ? " sel" : ""));
        g.setAttribute("data-node", it.node);
        r.setAttribute("fill", kindFill[n.kind] || "#fff");
        l1 = n.name + " " + n.op; l2 = n.type;
      } else {
        g.setAttribute("class", "n scope");
        g.setAttribute("data-scope", it.scope);
        l1 = "\u25b8 " + scopeLabel(it.scope); l2 = scopeTotal[it.scope] + " nodes";
      }
      sv("text", {x: 6, y: 16}, g).textContent = clip(l1, 24);
      sv("text", {x: 6, y: 31}, g).textContent = clip(l2, 24);
    });
    if (selected >= 0) highlight();
    const ms = performance.now() - t;
    timing.setAttribute("data-layout-ms", ms.toFixed(1));
    timing.textContent = items.length + " shown, laid out in " + ms.toFixed(0) + " ms";
  }

  // ---- pan and zoom through the viewBox
  let view = {x: 0, y: 0, s: 1};
  // Measured once, before the drawing exists, and on resize: measuring after drawing a
  // large graph would force the browser to lay out every SVG element first.
  let box = graphBox.getBoundingClientRect();
  function applyView() {
    const r = box;
    svg.setAttribute("viewBox", view.x + " " + view.y + " " + (r.width || 800) / view.s + " " +
                     (r.height || 600) / view.s);
  }
  function fit() {
    const r = box;
    const w = r.width || 800, h = r.height || 600;
    view.s = Math.min(1.5, w / (extent.width + 40), h / (extent.height + 40));
    view.s = Math.max(view.s, 0.05);
    view.x = -20 - Math.max(0, (w / view.s - extent.width - 40) / 2); view.y = -20;
    applyView();
  }
  graphBox.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    const r = box;
    const px = view.x + (ev.clientX - r.left) / view.s, py = view.y + (ev.clientY - r.top) / view.s;
    view.s = Math.min(4, Math.max(0.02, view.s * (ev.deltaY < 0 ? 1.15 : 1 / 1.15)));
    view.x = px - (ev.clientX - r.left) / view.s; view.y = py - (ev.clientY - r.top) / view.s;
    applyView();
  }, {passive: false});
  let drag = null;
  graphBox.addEventListener("mousedown", function (ev) { drag = {x: ev.clientX, y: ev.clientY, moved: false}; });
  window.addEventListener("mouseup", function () { setTimeout(function () { drag = null; }, 0); });
  window.addEventListener("mousemove", function (ev) {
    if (!drag || !(ev.buttons & 1)) return;
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
    view.x -= dx / view.s; view.y -= dy / view.s; drag.x = ev.clientX; drag.y = ev.clientY;
    applyView();
  });

  // ---- hover and click
  function target(ev) {
    let e = ev.target;
    while (e && e !== svg && !(e.getAttribute && e.getAttribute("data-item") !== null)) e = e.parentNode;
    return e && e !== svg ? e : null;
  }
  function nodeTip(i) {
    const n = nodes[i];
    return [n.name + " = " + n.text, "type:   " + n.type, "shape:  [" +
            n.shape.map(function (d) { return d === null ? "?" : d; }).join(", ") + "]",
            "dtype:  " + n.dtype, "line:   " + (n.source || "-"),
            "origin: " + (n.origin || "-"), "scope:  " + scopeLabel(n.scope)].join("\n");
  }
  svg.addEventListener("mousemove", function (ev) {
    const t = target(ev);
    if (!t) { tip.style.display = "none"; return; }
    const n = t.getAttribute("data-node"), s = t.getAttribute("data-scope");
    tip.textContent = n !== null ? nodeTip(Number(n)) :
      scopeLabel(Number(s)) + "\n" + scopeTotal[Number(s)] + " nodes: click to expand";
    const r = graphBox.getBoundingClientRect();
    tip.style.left = (ev.clientX - r.left + 14) + "px"; tip.style.top = (ev.clientY - r.top + 14) + "px";
    tip.style.display = "block";
  });
  svg.addEventListener("mouseleave", function () { tip.style.display = "none"; });
  svg.addEventListener("click", function (ev) {
    if (drag && drag.moved) return;
    const t = target(ev);
    if (!t) return;
    const s = t.getAttribute("data-scope");
    if (s !== null) { expanded.add(Number(s)); draw(); renderScopes(); return; }
    select(Number(t.getAttribute("data-node")));
  });

  function highlight() {
    const k = items.length && selected >= 0 ? itemOf[selected] : -1;
    for (const [a, b, p] of edgeEls) p.classList.toggle("hl", a === k || b === k);
  }
  function select(i) {
    selected = i;
    for (const g of viewport.querySelectorAll(".n.sel")) g.classList.remove("sel");
    const g = viewport.querySelector('[data-node="' + i + '"]');
    if (g) g.classList.add("sel");
    highlight();
    nodePane.textContent = "";
    el("pre", {text: nodeTip(i)}, nodePane);
    const n = nodes[i];
    el("div", {text: "inputs:"}, nodePane);
    for (const j of n.inputs) {
      const a = el("a", {class: "link", text: nodes[j].name + " " + nodes[j].op + " " + nodes[j].type}, nodePane);
      a.onclick = function () { reveal(j); };
      el("br", {}, nodePane);
    }
    for (let s = n.scope; s > 0; s = scopes[s].parent) {
      const c = el("button", {text: "collapse " + scopeLabel(s)}, nodePane);
      c.onclick = (function (s) { return function () { expanded.delete(s); draw(); renderScopes(); }; })(s);
    }
    show("Node");
  }
  function reveal(i) {  // open the scopes around node i, then select it
    for (let s = nodes[i].scope; s > 0; s = scopes[s].parent) expanded.add(s);
    draw(); renderScopes(); select(i);
  }

  // ---- side panes
  const scopeKids = scopes.map(function () { return []; });
  for (let s = 1; s < scopes.length; s++) scopeKids[scopes[s].parent].push(s);
  // The scope tree, depth first; a closed scope hides its children.
  function renderScopes() {
    scopePane.textContent = "";
    const stack = [[0, 0]];
    while (stack.length) {
      const [s, depth] = stack.pop();
      const open = expanded.has(s);
      const row = el("div", {class: "scope-row", "data-scope-row": s, text: "\u00a0".repeat(depth * 3) +
        (open ? "\u25be " : "\u25b8 ") + scopeLabel(s) + "  (" + scopeTotal[s] + ")"}, scopePane);
      if (s > 0) row.onclick = function () {
        if (expanded.has(s)) expanded.delete(s); else expanded.add(s);
        draw(); renderScopes();
      };
      if (open) for (let k = scopeKids[s].length - 1; k >= 0; k--) stack.push([scopeKids[s][k], depth + 1]);
    }
  }

  if (data.report) {
    const t = el("table", {class: "passes"}, reportPane);
    const hr = el("tr", {}, t);
    for (const h of ["pass", "nodes", "ms", "rules fired"]) el("th", {text: h}, hr);
    for (const p of data.report.passes) {
      const r = el("tr", {}, t);
      el("td", {text: p.name}, r);
      el("td", {text: p.before + " \u2192 " + p.after}, r);
      el("td", {text: String(p.ms)}, r);
      el("td", {text: p.fired.map(function (f) { return f[0] + " \u00d7" + f[1]; }).join(", ") || "nothing fired"}, r);
    }
    el("pre", {text: data.report.text}, reportPane);
  } else el("p", {text: "A graph, not a compiled function: no optimizer report."}, reportPane);

  const fnEls = new Map(), kernelEls = new Map();
  if (data.code) {
    for (const f of data.code.functions) {
      const box = el("div", {class: "fn", "data-function": f.name}, codePane);
      const m = /^k(\d+)_/.exec(f.name);
      if (m) {
        const a = el("a", {class: "link", text: "\u2190 kernel k" + m[1]}, box);
        a.onclick = function () { jump(kernelEls.get(Number(m[1])), "Kernels"); };
      }
      el("pre", {text: f.text}, box);
      fnEls.set(f.name, box);
    }
    if (!data.code.functions.length) el("pre", {text: data.code.text}, codePane);
  } else el("p", {text: "A graph, not a compiled function: no generated code."}, codePane);

  function jump(e, pane) {
    if (!e) return;
    show(pane);
    for (const h of document.querySelectorAll(".hit")) h.classList.remove("hit");
    e.classList.add("hit");
    e.scrollIntoView({block: "start"});
  }
  if (data.kernels) {
    if (data.kernels.note) el("p", {text: data.kernels.note}, kernelPane);
    if (data.kernels.shapes) el("p", {text: "input shapes: " + JSON.stringify(data.kernels.shapes)}, kernelPane);
    for (const k of data.kernels.items) {
      const box = el("div", {class: "kernel", "data-kernel": k.index}, kernelPane);
      if (k.function) {
        const a = el("a", {class: "link", text: "code: " + k.function + " \u2192"}, box);
        a.onclick = function () { jump(fnEls.get(k.function), "Code"); };
      }
      el("pre", {text: k.text}, box);
      kernelEls.set(k.index, box);
    }
  } else el("p", {text: "A graph, not a compiled function: no kernels."}, kernelPane);

  btnExpand.onclick = function () { for (let s = 0; s < scopes.length; s++) expanded.add(s); draw(); renderScopes(); fit(); };
  btnCollapse.onclick = function () { expanded.clear(); expanded.add(0); draw(); renderScopes(); fit(); };
  btnFit.onclick = fit;
  window.addEventListener("resize", function () { box = graphBox.getBoundingClientRect(); applyView(); });

  el("p", {text: "Click a node for its details, a \u25b8 box to open a scope; drag to pan, wheel to zoom."}, nodePane);
  renderScopes();
  draw();
  fit();
  show(data.report ? "Report" : "Scopes");
  const total = performance.now();
  timing.setAttribute("data-total-ms", total.toFixed(1));
  timing.setAttribute("data-script-ms", (total - T0).toFixed(1));
  document.body.setAttribute("data-ready", "1");
})();
