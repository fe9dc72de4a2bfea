// graphc explorer: renders the data in #graphc-data. Data is only ever put into the page
// through textContent, attributes and canvas text, never parsed as HTML.
"use strict";
(function () {
  const T0 = performance.now();
  const W = 170, H = 40, GX = 24, GY = 46, ROW = H + GY;

  function el(tag, props, parent) {
    const e = document.createElement(tag);
    for (const k in props || {}) {
      if (k === "text") e.textContent = props[k]; else e.setAttribute(k, props[k]);
    }
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
  const G = data.graph, nodes = G.nodes, scopes = G.scopes, views = G.views;
  const kernels = data.kernels ? data.kernels.items : [];

  // ---- page frame
  const bar = el("div", {id: "bar"}, document.body);
  el("h1", {text: data.title}, bar);
  el("span", {text: views[0].nodes.length + " nodes" + (data.backend ? ", backend " + data.backend : "")}, bar);
  const viewSelect = el("select", {id: "view", title: "which graph to show"}, bar);
  views.forEach(function (v, k) {
    const extra = v.removed ? " (\u2212" + v.removed.length + " +" + v.added.length +
      (v.rebuilt.length ? ", " + v.rebuilt.length + " rebuilt" : "") + ")" : "";
    el("option", {value: String(k), text: (k > 0 && v.removed ? "step " + k + ": " : "") + v.title + extra}, viewSelect);
  });
  const btnPrev = el("button", {text: "\u25c0 step", title: "the previous pass"}, bar);
  const btnNext = el("button", {text: "step \u25b6", title: "the next pass"}, bar);
  const btnExpand = el("button", {text: "expand all"}, bar);
  const btnCollapse = el("button", {text: "collapse all"}, bar);
  const btnFit = el("button", {text: "fit"}, bar);
  const timing = el("span", {id: "timing"}, bar);
  const main = el("div", {id: "main"}, document.body);
  const graphBox = el("div", {id: "graph"}, main);
  const canvas = el("canvas", {id: "graph-canvas"}, graphBox);
  const ctx = canvas.getContext("2d");
  const legend = el("div", {id: "legend"}, graphBox);
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
  const nodePane = tab("Node"), scopePane = tab("Scopes"), reportPane = tab("Passes"),
    kernelPane = tab("Kernels"), codePane = tab("Code");

  // ---- the node -> kernel links (a node fused into several kernels lists each)
  const kernelsOf = new Map();
  for (const k of kernels) for (const i of k.nodes) {
    if (!kernelsOf.has(i)) kernelsOf.set(i, []);
    kernelsOf.get(i).push(k.index);
  }
  // A node of the optimized graph and the node the kernels' (specialised) graph made of
  // it: either one names the kernel, and a kernel lights up both.
  const twinOf = new Map();
  for (const [a, b] of G.twins || []) {
    twinOf.set(a, b); twinOf.set(b, a);
    if (kernelsOf.has(b)) kernelsOf.set(a, kernelsOf.get(b));
  }

  // ---- the current view: which nodes, which are marked, which scopes are open
  let view = 0, inView = null, mark = null, outputs = null, scopeTotal = null;
  const expanded = new Set([0]);
  let selected = -1, selectedKernel = -1, lit = new Set();
  const scopeKids = scopes.map(function () { return []; });
  for (let s = 1; s < scopes.length; s++) scopeKids[scopes[s].parent].push(s);

  function setView(k) {
    view = k;
    const v = views[k];
    inView = new Uint8Array(nodes.length);
    for (const i of v.nodes) inView[i] = 1;
    mark = new Int8Array(nodes.length);  // -1 removed by the pass, +1 added, 2 rebuilt
    for (const i of v.removed || []) mark[i] = -1;
    for (const i of v.added || []) mark[i] = 1;
    for (const i of v.rebuilt || []) mark[i] = 2;
    for (const r of reportPane.querySelectorAll("tr.step"))
      r.classList.toggle("on", r.getAttribute("data-step") === String(k));
    outputs = new Set(v.outputs);
    scopeTotal = scopes.map(function () { return 0; });
    for (const i of v.nodes) {
      scopeTotal[nodes[i].scope]++;
    }
    for (let s = scopes.length - 1; s > 0; s--) {
      const p = scopes[s].parent;
      scopeTotal[p] += scopeTotal[s];
    }
    viewSelect.value = String(k);
    document.body.setAttribute("data-view", v.name);
    btnPrev.disabled = !(k > 0 && views[k - 1].removed);
    btnNext.disabled = !(k + 1 < views.length && views[k + 1].removed);
    legend.textContent = v.removed ? "red: removed by the pass \u00b7 green: added" +
      (v.rebuilt.length ? " \u00b7 blue: rebuilt over a changed input" : "") : "";
    legend.hidden = !v.removed;
  }
  // A small graph starts open; a large one opens single-child chains from the top, so a
  // one-model graph does not start as one box.
  const OPEN_BELOW = 200;
  function openChain() {
    if (views[view].nodes.length <= OPEN_BELOW) {
      for (let c = 1; c < scopes.length; c++) expanded.add(c);
      return;
    }
    let s = 0;
    for (;;) {
      const kids = scopeKids[s].filter(function (c) { return scopeTotal[c] > 0; });
      const own = scopeTotal[s] - kids.reduce(function (a, c) { return a + scopeTotal[c]; }, 0);
      if (kids.length !== 1 || own > 0) break;
      s = kids[0]; expanded.add(s);
    }
  }

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

  let items = [], itemOf = null, edges = [], layers = [], extent = {width: 1, height: 1};

  // ---- layout of the expanded level only: longest-path layers, barycentre ordering
  function layout() {
    const rep = representatives();
    itemOf = new Int32Array(nodes.length).fill(-1);
    const index = new Map();
    items = [];
    // A closed scope is two boxes, its forward nodes and its gradient nodes, so the
    // backward pass flows back up through the modules instead of tying them in cycles.
    for (const i of views[view].nodes) {
      const r = rep[nodes[i].scope], grad = nodes[i].kind === "grad";
      const key = r === null ? i : -1 - 2 * r - (grad ? 1 : 0);
      let k = index.get(key);
      if (k === undefined) {
        k = items.length; index.set(key, k);
        items.push({k: k, node: r === null ? i : -1, scope: r === null ? -1 : r, grad: grad,
                    count: 0, removed: 0, added: 0,
                    preds: [], succs: [], layer: 0, pos: 0, x: 0, y: 0, bary: 0});
      }
      const it = items[k];
      it.count++;
      if (mark[i] === -1) it.removed++; else if (mark[i] === 1) it.added++;
      itemOf[i] = k;
    }
    const seen = new Set();
    edges = [];
    const out = items.map(function () { return []; }), indeg = new Int32Array(items.length);
    for (const i of views[view].nodes) {
      const b = itemOf[i];
      for (const inp of nodes[i].inputs) {
        const a = itemOf[inp];
        if (a === b || a < 0) continue;
        const key = a * items.length + b;
        if (seen.has(key)) continue;
        seen.add(key); edges.push([a, b]); out[a].push(b); indeg[b]++;
      }
    }
    // Longest-path layers in topological order of the boxes (Kahn); folding can tie boxes
    // in a cycle, which is broken at the box that comes first in the graph's order.
    const done = new Uint8Array(items.length), ready = [];
    for (let k = 0; k < items.length; k++) if (!indeg[k]) ready.push(k);
    let next = 0, head = 0;
    layers = [];
    for (let n = 0; n < items.length; n++) {
      let k;
      if (head < ready.length) k = ready[head++];
      else { while (done[next]) next++; k = next; }
      if (done[k]) { n--; continue; }
      done[k] = 1;
      const it = items[k];
      (layers[it.layer] = layers[it.layer] || []).push(it);
      for (const b of out[k]) {
        if (done[b]) continue;
        items[b].layer = Math.max(items[b].layer, it.layer + 1);
        items[b].preds.push(k); it.succs.push(b);
        if (--indeg[b] === 0) ready.push(b);
      }
    }
    layers.forEach(function (L) { L.forEach(function (it, k) { it.pos = k; }); });
    function sweep(L, key) {
      if (L.length < 2) return;
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
      L.forEach(function (it, k) { it.x = off + k * (W + GX); it.y = l * ROW; });
    });
    extent = {width: width * (W + GX), height: layers.length * ROW};
  }

  // ---- drawing on one canvas: the browser lays out one element, not one per node
  const kindFill = {placeholder: "#cfe2ff", parameter: "#d1e7dd", constant: "#eeeeee",
                    grad: "#fff3cd", op: "#ffffff"};
  let cam = {x: 0, y: 0, s: 1}, box = {left: 0, top: 0, width: 800, height: 600}, queued = false;
  function clip(s, n) { return s.length > n ? s.slice(0, n - 1) + "\u2026" : s; }
  function scopeLabel(s) { return scopes[s].name || "(top)"; }

  function resize() {
    const r = graphBox.getBoundingClientRect();
    box = {left: r.left, top: r.top, width: r.width || 800, height: r.height || 600};
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(box.width * dpr); canvas.height = Math.round(box.height * dpr);
    canvas.style.width = box.width + "px"; canvas.style.height = box.height + "px";
  }
  function repaint() {
    if (queued) return;
    queued = true;
    requestAnimationFrame(function () { queued = false; paint(); });
  }
  function edgePath(a, b) {
    const A = items[a], B = items[b];
    const x1 = A.x + W / 2, y1 = A.y + H, x2 = B.x + W / 2, y2 = B.y;
    ctx.moveTo(x1, y1);
    if (y2 > y1) { const my = (y1 + y2) / 2; ctx.bezierCurveTo(x1, my, x2, my, x2, y2); }
    else ctx.lineTo(x2, y2);
  }
  function paint() {
    const dpr = window.devicePixelRatio || 1, s = cam.s;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, box.width, box.height);
    ctx.setTransform(dpr * s, 0, 0, dpr * s, -cam.x * s * dpr, -cam.y * s * dpr);
    const x0 = cam.x, y0 = cam.y, x1 = cam.x + box.width / s, y1 = cam.y + box.height / s;
    function visible(it) { return it.x + W >= x0 && it.x <= x1 && it.y + H >= y0 && it.y <= y1; }
    const selItem = selected >= 0 && inView[selected] ? itemOf[selected] : -1;
    ctx.lineWidth = 1.2 / Math.max(s, 0.3);
    ctx.strokeStyle = "#9ca3af";
    ctx.beginPath();
    const hot = [];
    for (const [a, b] of edges) {
      const A = items[a], B = items[b];
      if (Math.max(A.y, B.y) + H < y0 || Math.min(A.y, B.y) > y1 ||
          Math.max(A.x, B.x) + W < x0 || Math.min(A.x, B.x) > x1) continue;
      if (a === selItem || b === selItem) { hot.push([a, b]); continue; }
      edgePath(a, b);
    }
    ctx.stroke();
    if (hot.length) {
      ctx.strokeStyle = "#dc2626"; ctx.lineWidth = 2 / Math.max(s, 0.3);
      ctx.beginPath();
      for (const [a, b] of hot) edgePath(a, b);
      ctx.stroke();
    }
    const litItems = new Set();
    for (const i of lit) if (itemOf[i] >= 0) litItems.add(itemOf[i]);
    let drawn = 0;
    const labels = [];
    for (let k = 0; k < items.length; k++) {
      const it = items[k];
      if (!visible(it)) continue;
      drawn++;
      let fill, stroke = "#555", width = 1, l1, l2, short;
      if (it.node >= 0) {
        const n = nodes[it.node];
        fill = kindFill[n.kind] || "#fff";
        if (mark[it.node] < 0) { fill = "#fecaca"; stroke = "#b91c1c"; width = 2; }
        else if (mark[it.node] === 1) { fill = "#bbf7d0"; stroke = "#15803d"; width = 2; }
        else if (mark[it.node] === 2) { stroke = "#2563eb"; width = 2; }
        if (outputs.has(it.node)) width = 2.5;
        l1 = n.name + " " + n.op; l2 = n.type; short = n.op;
      } else {
        const changed = it.removed || it.added;
        fill = changed ? "#fde68a" : it.grad ? "#fdf0c2" : "#e0e7ff";
        stroke = it.grad ? "#b8860b" : "#4338ca";
        l1 = (it.grad ? "\u25b8 \u2207 " : "\u25b8 ") + scopeLabel(it.scope);
        l2 = it.count + (it.grad ? " gradient nodes" : " nodes") +
          (changed ? "  \u2212" + it.removed + " +" + it.added : "");
        short = l1;
      }
      if (k === selItem) { stroke = "#dc2626"; width = 3; }
      if (litItems.has(k)) { stroke = "#f59e0b"; width = 4; }
      ctx.fillStyle = fill;
      ctx.fillRect(it.x, it.y, W, H);
      ctx.strokeStyle = stroke; ctx.lineWidth = width / Math.max(s, 0.5);
      ctx.strokeRect(it.x, it.y, W, H);
      labels.push([it, l1, l2, short]);
    }
    // Labels in screen pixels: two lines where a box is tall enough, else the op alone in
    // a smaller font, none where even that cannot be read.
    const boxH = H * s, boxW = W * s;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#222";
    ctx.textBaseline = "middle";
    if (boxH >= 28 && boxW >= 90) {
      const size = Math.min(11 * s, 14);
      ctx.font = size.toFixed(1) + "px ui-monospace, monospace";
      const chars = Math.floor((boxW - 8) / (size * 0.62));
      for (const [it, l1, l2] of labels) {
        const sx = (it.x - cam.x) * s + 4, sy = (it.y - cam.y) * s;
        ctx.fillText(clip(l1, chars), sx, sy + boxH * 0.32);
        ctx.fillText(clip(l2, chars), sx, sy + boxH * 0.72);
      }
    } else if (boxH >= 9 && boxW >= 30) {
      const size = Math.min(boxH - 2, 10);
      ctx.font = size.toFixed(1) + "px ui-monospace, monospace";
      const chars = Math.floor((boxW - 4) / (size * 0.62));
      for (const [it, , , short] of labels) {
        ctx.fillText(clip(short, chars), (it.x - cam.x) * s + 2, (it.y - cam.y) * s + boxH / 2);
      }
    }
    canvas.setAttribute("data-drawn", String(drawn));
  }

  function draw() {
    const t = performance.now();
    layout();
    paint();
    const ms = performance.now() - t;
    timing.setAttribute("data-layout-ms", ms.toFixed(1));
    canvas.setAttribute("data-items", String(items.length));
    timing.textContent = items.length + " shown, laid out in " + ms.toFixed(0) + " ms";
  }

  // ---- pan and zoom
  function fit() {
    const w = box.width, h = box.height;
    cam.s = Math.min(1.5, w / (extent.width + 40), h / (extent.height + 40));
    cam.s = Math.max(cam.s, 0.02);
    cam.x = -20 - Math.max(0, (w / cam.s - extent.width - 40) / 2); cam.y = -20;
    repaint();
  }
  function centre(k) {  // bring item k into view, readable
    const it = items[k];
    cam.s = Math.max(cam.s, 0.8);
    cam.x = it.x + W / 2 - box.width / 2 / cam.s; cam.y = it.y + H / 2 - box.height / 2 / cam.s;
    repaint();
  }
  graphBox.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    const px = cam.x + (ev.clientX - box.left) / cam.s, py = cam.y + (ev.clientY - box.top) / cam.s;
    cam.s = Math.min(4, Math.max(0.02, cam.s * (ev.deltaY < 0 ? 1.15 : 1 / 1.15)));
    cam.x = px - (ev.clientX - box.left) / cam.s; cam.y = py - (ev.clientY - box.top) / cam.s;
    repaint();
  }, {passive: false});
  let drag = null;
  canvas.addEventListener("mousedown", function (ev) { drag = {x: ev.clientX, y: ev.clientY, moved: false}; });
  window.addEventListener("mouseup", function () { setTimeout(function () { drag = null; }, 0); });
  window.addEventListener("mousemove", function (ev) {
    if (!drag || !(ev.buttons & 1)) return;
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
    cam.x -= dx / cam.s; cam.y -= dy / cam.s; drag.x = ev.clientX; drag.y = ev.clientY;
    repaint();
  });

  // ---- hover and click: items sit in rows (layers), sorted by x
  function itemAt(ev) {
    const wx = cam.x + (ev.clientX - box.left) / cam.s, wy = cam.y + (ev.clientY - box.top) / cam.s;
    const l = Math.floor(wy / ROW);
    if (l < 0 || l >= layers.length || wy - l * ROW > H) return -1;
    const L = layers[l];
    let lo = 0, hi = L.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1, it = L[mid];
      if (wx < it.x) hi = mid - 1; else if (wx > it.x + W) lo = mid + 1;
      else return it.k;
    }
    return -1;
  }
  function nodeTip(i) {
    const n = nodes[i];
    const ks = kernelsOf.get(i);
    return [n.name + " = " + n.text, "type:   " + n.type, "shape:  [" +
            n.shape.map(function (d) { return d === null ? "?" : d; }).join(", ") + "]",
            "dtype:  " + n.dtype, "line:   " + (n.source || "-"),
            "origin: " + (n.origin || "-"), "scope:  " + scopeLabel(n.scope),
            "kernel: " + (ks ? ks.map(function (k) { return "k" + k; }).join(", ") : "-")]
      .concat(mark[i] ? [{"-1": "removed by this pass", "1": "added by this pass",
                          "2": "rebuilt by this pass over a changed input"}[mark[i]]] : [])
      .join("\n");
  }
  canvas.addEventListener("mousemove", function (ev) {
    if (drag && drag.moved) { tip.style.display = "none"; return; }
    const k = itemAt(ev);
    if (k < 0) { tip.style.display = "none"; return; }
    const it = items[k];
    tip.textContent = it.node >= 0 ? nodeTip(it.node) :
      (it.grad ? "\u2207 " : "") + scopeLabel(it.scope) + "\n" + it.count +
      (it.grad ? " gradient nodes" : " nodes") + " (" + scopeTotal[it.scope] +
      " in the scope): click to expand";
    tip.style.left = (ev.clientX - box.left + 14) + "px"; tip.style.top = (ev.clientY - box.top + 14) + "px";
    tip.style.display = "block";
  });
  canvas.addEventListener("mouseleave", function () { tip.style.display = "none"; });
  canvas.addEventListener("click", function (ev) {
    if (drag && drag.moved) return;
    const k = itemAt(ev);
    if (k < 0) return;
    const it = items[k];
    if (it.scope >= 0) { expanded.add(it.scope); draw(); renderScopes(); return; }
    select(it.node);
  });

  function highlightKernels() {
    for (const e of kernelPane.querySelectorAll(".kernel.hit")) e.classList.remove("hit");
    const ks = selected >= 0 ? kernelsOf.get(selected) || [] : [];
    for (const k of ks) { const e = kernelEls.get(k); if (e) e.classList.add("hit"); }
    document.body.setAttribute("data-selected", String(selected));
    document.body.setAttribute("data-node-kernels", ks.join(","));
  }
  function select(i) {
    selected = i;
    lit = new Set(); selectedKernel = -1;
    document.body.setAttribute("data-lit", "");
    nodePane.textContent = "";
    el("pre", {text: nodeTip(i)}, nodePane);
    const n = nodes[i];
    for (const k of kernelsOf.get(i) || []) {
      const a = el("a", {class: "link", text: "computed by kernel k" + k + " \u2192"}, nodePane);
      a.onclick = function () { selectKernel(k); };
      el("br", {}, nodePane);
    }
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
    highlightKernels();
    repaint();
    show("Node");
  }
  function open(i) { for (let s = nodes[i].scope; s > 0; s = scopes[s].parent) expanded.add(s); }
  function reveal(i) {  // open the scopes around node i, then select it
    open(i);
    draw(); renderScopes(); select(i); centre(itemOf[i]);
  }
  function selectKernel(k) {
    const kern = kernels[k];
    // in the view shown if it holds the kernel's nodes (or their twins), else the kernels'
    const here = kern.nodes.map(function (i) { return inView[i] ? i : twinOf.has(i) && inView[twinOf.get(i)] ? twinOf.get(i) : -1; });
    let shown = kern.nodes;
    if (kern.nodes.length && here.every(function (i) { return i >= 0; })) shown = here;
    else if (kern.nodes.length && data.kernels.view !== null) setView(data.kernels.view);
    selected = -1; selectedKernel = k;
    lit = new Set(shown);
    document.body.setAttribute("data-lit", shown.join(","));
    for (const e of kernelPane.querySelectorAll(".kernel.hit")) e.classList.remove("hit");
    const box = kernelEls.get(k);
    if (box) { box.classList.add("hit"); }
    draw(); renderScopes();
    if (shown.length && itemOf[shown[shown.length - 1]] >= 0)
      centre(itemOf[shown[shown.length - 1]]);
  }

  // ---- side panes
  // The scope tree, depth first; a closed scope hides its children.
  function renderScopes() {
    scopePane.textContent = "";
    const stack = [[0, 0]];
    while (stack.length) {
      const [s, depth] = stack.pop();
      if (s > 0 && !scopeTotal[s]) continue;
      const isOpen = expanded.has(s);
      const row = el("div", {class: "scope-row", "data-scope-row": s, text: "\u00a0".repeat(depth * 3) +
        (isOpen ? "\u25be " : "\u25b8 ") + scopeLabel(s) + "  (" + scopeTotal[s] + ")"}, scopePane);
      if (s > 0) row.onclick = function () {
        if (expanded.has(s)) expanded.delete(s); else expanded.add(s);
        draw(); renderScopes();
      };
      if (isOpen) for (let k = scopeKids[s].length - 1; k >= 0; k--) stack.push([scopeKids[s][k], depth + 1]);
    }
  }

  function gotoView(k) {
    if (k < 0 || k >= views.length) return;
    setView(k);
    for (let i = 0; i < nodes.length; i++) if (mark[i] === -1 || mark[i] === 1) open(i);  // show what changed
    draw(); renderScopes(); fit();
  }
  viewSelect.onchange = function () { gotoView(Number(viewSelect.value)); };
  btnPrev.onclick = function () { gotoView(view - 1); };
  btnNext.onclick = function () { gotoView(view + 1); };

  if (data.report) {
    el("p", {text: "Click a pass to see the graph before and after it."}, reportPane);
    const t = el("table", {class: "passes"}, reportPane);
    const hr = el("tr", {}, t);
    for (const h of ["pass", "nodes", "ms", "rules fired"]) el("th", {text: h}, hr);
    for (const p of data.report.passes) {
      const r = el("tr", {}, t);
      const step = views.findIndex(function (v) { return v.removed && v.name === p.name; });
      if (step > 0) {
        r.classList.add("step");
        r.setAttribute("data-step", String(step));
        r.onclick = function () { gotoView(step); };
      }
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
      const fbox = el("div", {class: "fn", "data-function": f.name}, codePane);
      const m = /^k(\d+)_/.exec(f.name);
      if (m) {
        const a = el("a", {class: "link", text: "\u2190 kernel k" + m[1]}, fbox);
        a.onclick = function () { jump(kernelEls.get(Number(m[1])), "Kernels"); selectKernel(Number(m[1])); };
      }
      el("pre", {text: f.text}, fbox);
      fnEls.set(f.name, fbox);
    }
    if (!data.code.functions.length) el("pre", {text: data.code.text}, codePane);
  } else el("p", {text: "A graph, not a compiled function: no generated code."}, codePane);

  function jump(e, pane) {
    if (!e) return;
    show(pane);
    for (const h of document.querySelectorAll(".fn.hit")) h.classList.remove("hit");
    e.classList.add("hit");
    e.scrollIntoView({block: "start"});
  }
  if (data.kernels) {
    if (data.kernels.note) el("p", {text: data.kernels.note}, kernelPane);
    if (data.kernels.shapes) el("p", {text: "input shapes: " + JSON.stringify(data.kernels.shapes) +
      ". Click a kernel to light up the nodes it computes."}, kernelPane);
    for (const k of kernels) {
      const kbox = el("div", {class: "kernel", "data-kernel": k.index}, kernelPane);
      kbox.onclick = function (ev) { if (ev.target.tagName !== "A") selectKernel(k.index); };
      el("span", {text: k.nodes.length + (k.nodes.length === 1 ? " node " : " nodes ")}, kbox);
      if (k.function) {
        const a = el("a", {class: "link", text: "code: " + k.function + " \u2192"}, kbox);
        a.onclick = function () { jump(fnEls.get(k.function), "Code"); };
      }
      el("pre", {text: k.text}, kbox);
      kernelEls.set(k.index, kbox);
    }
  } else el("p", {text: "A graph, not a compiled function: no kernels."}, kernelPane);

  btnExpand.onclick = function () { for (let s = 0; s < scopes.length; s++) expanded.add(s); draw(); renderScopes(); fit(); };
  btnCollapse.onclick = function () { expanded.clear(); expanded.add(0); draw(); renderScopes(); fit(); };
  btnFit.onclick = fit;
  window.addEventListener("resize", function () { resize(); repaint(); });

  el("p", {text: "Click a node for its details and kernel, a \u25b8 box to open a scope; drag to pan, wheel to zoom."}, nodePane);
  setView(0);
  openChain();
  resize();
  renderScopes();
  draw();
  fit();
  show(data.report ? "Passes" : "Scopes");
  // #view=NAME, #kernel=K, #node=I: open the page at a view, a kernel or a node (links,
  // tests); #expand: with every scope open
  for (const part of location.hash.slice(1).split("&")) {
    const [key, value] = part.split("=");
    if (key === "expand") { for (let s = 0; s < scopes.length; s++) expanded.add(s); draw(); renderScopes(); fit(); }
    if (key === "view") gotoView(views.findIndex(function (v) { return v.name === value; }));
    if (key === "kernel" && kernels[Number(value)]) { show("Kernels"); selectKernel(Number(value)); }
    if (key === "node" && Number(value) >= 0 && Number(value) < nodes.length) {
      if (!inView[Number(value)]) gotoView(views.findIndex(function (v) { return v.nodes.indexOf(Number(value)) >= 0; }));
      reveal(Number(value));
    }
  }
  paint();  // now, not on the next frame: the page is drawn when the script ends
  void document.body.offsetHeight;  // and laid out: the time below is the time to see it
  const total = performance.now();
  timing.setAttribute("data-total-ms", total.toFixed(1));
  timing.setAttribute("data-script-ms", (total - T0).toFixed(1));
  document.body.setAttribute("data-ready", "1");
})();
