/* entropylens-hf: the logit-lens view of a trace, in a notebook output or a static page.
 *
 * Reads the JSON block next to the script (entropylens_hf/display/payload.py writes it) and
 * draws: the trace's overview (every sequence's mean profile), a layers x tokens heatmap
 * (hover: the layer's top-k and the target's rank and probability; click: the token's profile
 * with expansion and pruning marked), the text, and a slider that replays the top-1 prediction
 * layer by layer. Plain DOM and canvas, no libraries, nothing fetched from the network.
 */
(function () {
  "use strict";
  if (window.EntropyLensView && window.EntropyLensView.version === 1) return;

  var VIRIDIS = ["#440154", "#482878", "#3e4a89", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#fde725"];
  var LUT = (function () {
    var stops = VIRIDIS.map(function (h) { return [1, 3, 5].map(function (i) { return parseInt(h.substr(i, 2), 16); }); });
    var lut = new Uint8Array(256 * 3);
    for (var i = 0; i < 256; i++) {
      var t = i / 255 * (stops.length - 1), j = Math.min(Math.floor(t), stops.length - 2), f = t - j;
      for (var c = 0; c < 3; c++) lut[i * 3 + c] = Math.round(stops[j][c] * (1 - f) + stops[j + 1][c] * f);
    }
    return lut;
  })();
  var RISE = "#d62728", FALL = "#1f77b4", SVGNS = "http://www.w3.org/2000/svg";
  var KIND_COLOURS = { attn: "#f28e2b", mlp: "#59a14f" };

  function bytes(text) {
    var bin = atob(text), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }
  function floats(text) { return text ? new Float32Array(bytes(text)) : null; }
  function ids(block) { return new (block.dtype === "u4" ? Uint32Array : Uint16Array)(bytes(block.data)); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  function fmt(x, digits) { return x === null || isNaN(x) ? "n/a" : x.toFixed(digits === undefined ? 3 : digits); }
  function pct(p) { return isNaN(p) ? "n/a" : p >= 0.001 ? (100 * p).toFixed(1) + "%" : p.toExponential(1); }
  function shown(text) { return JSON.stringify(text).slice(1, -1); }

  function decode(p) {
    var s = Object.assign({}, p);
    s.entropy = floats(p.entropy);
    s.targetProb = floats(p.targetProb);
    s.targetRank = new Int32Array(bytes(p.targetRank));
    s.target = ids(p.target);
    s.kl = floats(p.kl);
    s.topkIds = ids(p.topkIds);
    s.topkProbs = new Uint16Array(bytes(p.topkProbs));
    return s;
  }

  /* Values of one metric, [rows x layers], and the range the colours span. */
  function metric(seq, name, maxEntropy) {
    var n = seq.rows * seq.layers, v = new Float32Array(n), lo = 0, hi = 0, i;
    if (name === "kl") for (i = 0; i < n; i++) v[i] = seq.kl[i];
    else if (name === "prob") { for (i = 0; i < n; i++) v[i] = seq.targetProb[i]; hi = 1; }
    else if (name === "rank") { for (i = 0; i < n; i++) v[i] = Math.log10(1 + Math.max(0, seq.targetRank[i])); }
    else for (i = 0; i < n; i++) v[i] = seq.entropy[i];
    if (name !== "prob") {
      var sorted = Array.prototype.filter.call(v, function (x) { return isFinite(x); }).sort(function (a, b) { return a - b; });
      hi = sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(0.995 * sorted.length))] : 1;
      if (name === "entropy" && maxEntropy) hi = Math.min(Math.max(hi, 1e-6), maxEntropy);
    }
    return { values: v, lo: lo, hi: hi > lo ? hi : lo + 1 };
  }

  function paint(ctx, values, cols, rows, lo, hi, cw, ch, at) {
    /* at(col, row) -> index into values; row 0 is drawn at the bottom. */
    var w = cols * cw, h = rows * ch, img = ctx.createImageData(w, h), d = img.data;
    for (var c = 0; c < cols; c++) for (var r = 0; r < rows; r++) {
      var x = values[at(c, r)], k = isFinite(x) ? Math.max(0, Math.min(255, Math.round((x - lo) / (hi - lo) * 255))) : -1;
      var y0 = (rows - 1 - r) * ch;
      for (var yy = y0; yy < y0 + ch; yy++) for (var xx = c * cw; xx < (c + 1) * cw; xx++) {
        var o = (yy * w + xx) * 4;
        if (k < 0) { d[o] = d[o + 1] = d[o + 2] = 200; } else { d[o] = LUT[k * 3]; d[o + 1] = LUT[k * 3 + 1]; d[o + 2] = LUT[k * 3 + 2]; }
        d[o + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
    return img;
  }

  function View(root, data) {
    this.root = root;
    this.summary = data.summary;
    this.sequences = data.sequences.map(decode);
    this.current = 0;
    this.metricName = "entropy";
    this.selected = -1;
    this.build();
    if (this.sequences.length) this.show(0);
    else this.message.textContent = "This trace has no sequences yet.";
  }

  View.prototype.build = function () {
    var s = this.summary, self = this, r = this.root;
    var head = el("div", "elens-head");
    head.appendChild(el("b", "", s.model || "entropylens trace"));
    head.appendChild(document.createTextNode(
      " \u00b7 " + (s.lens === "tuned" ? "tuned lens" + (s.lensName ? " " + s.lensName : "") : "logit lens") +
      " \u00b7 " + s.layers + " lens rows" + (s.sublayers ? " (attention and MLP outputs of every layer)" : "") +
      (s.vocabSize ? " \u00b7 vocabulary " + s.vocabSize : "") + " \u00b7 " + s.sequences + " sequence" + (s.sequences === 1 ? "" : "s") +
      " in " + s.name));
    r.appendChild(head);
    var bar = el("div", "elens-controls");
    this.picker = el("select", "elens-picker");
    this.sequences.forEach(function (q, i) {
      var label = "#" + q.index + (q.key ? " " + q.key : "") + ": " + (q.promptText || q.tokens.slice(0, q.promptLength).join("")).slice(0, 60);
      self.picker.appendChild(new Option(label + (q.complete ? "" : " (being written)"), String(i)));
    });
    this.picker.addEventListener("change", function () { self.show(+self.picker.value); });
    this.metricPicker = el("select", "elens-metric");
    bar.appendChild(el("label", "", "sequence ")).appendChild(this.picker);
    bar.appendChild(el("label", "", " colour ")).appendChild(this.metricPicker);
    this.scale = el("span", "elens-scale");
    bar.appendChild(this.scale);
    r.appendChild(bar);
    if (s.profileRows > 1) this.buildOverview();
    this.message = el("div", "elens-message");
    r.appendChild(this.message);
    var map = el("div", "elens-map");
    this.labels = el("canvas", "elens-labels");
    this.scroller = el("div", "elens-scroll");
    this.strip = el("canvas", "elens-strip");
    this.canvas = el("canvas", "elens-heatmap");
    this.scroller.appendChild(this.strip);
    this.scroller.appendChild(this.canvas);
    map.appendChild(this.labels);
    map.appendChild(this.scroller);
    r.appendChild(map);
    this.tooltip = el("div", "elens-tooltip");
    r.appendChild(this.tooltip);
    this.text = el("div", "elens-text");
    r.appendChild(el("div", "elens-caption", "Generated text (prompt in grey); hover or click a token:"));
    r.appendChild(this.text);
    this.detail = el("div", "elens-detail");
    r.appendChild(this.detail);
    var replay = el("div", "elens-replay");
    this.slider = el("input", "elens-slider");
    this.slider.type = "range";
    this.sliderLabel = el("span", "elens-slider-label");
    replay.appendChild(el("span", "", "Replay the top-1 prediction layer by layer: "));
    replay.appendChild(this.slider);
    replay.appendChild(this.sliderLabel);
    r.appendChild(replay);
    this.replayText = el("div", "elens-text elens-replay-text");
    r.appendChild(this.replayText);
    this.slider.addEventListener("input", function () { self.replay(+self.slider.value); });
    this.metricPicker.addEventListener("change", function () { self.metricName = self.metricPicker.value; self.draw(); });
    this.canvas.addEventListener("mousemove", function (e) { self.hover(e); });
    this.canvas.addEventListener("mouseleave", function () { self.tooltip.style.display = "none"; self.mark(-1); });
    this.canvas.addEventListener("click", function (e) { var c = self.cellAt(e); if (c) self.select(c.row); });
    r.tabIndex = 0;
    r.addEventListener("keydown", function (e) {
      var q = self.seq;
      if (!q || (e.key !== "ArrowLeft" && e.key !== "ArrowRight")) return;
      self.select(Math.max(0, Math.min(q.rows - 1, self.selected + (e.key === "ArrowLeft" ? -1 : 1))));
      e.preventDefault();
    });
  };

  View.prototype.buildOverview = function () {
    var s = this.summary, self = this, box = el("div", "elens-overview");
    box.appendChild(el("div", "elens-caption", "Mean entropy profile of every sequence (x: sequence" +
      (s.profileRows < s.sequences ? ", averaged in " + s.profileRows + " bins" : "") + ", y: layer); click one shown in the picker to open it."));
    var c = el("canvas", "elens-overview-map"), cw = Math.max(1, Math.min(12, Math.floor(900 / s.profileRows))), ch = 3;
    c.width = s.profileRows * cw; c.height = s.layers * ch;
    var profiles = floats(s.profiles), hi = 0;
    for (var i = 0; i < profiles.length; i++) if (isFinite(profiles[i])) hi = Math.max(hi, profiles[i]);
    paint(c.getContext("2d"), profiles, s.profileRows, s.layers, 0, hi || 1, cw, ch, function (col, row) { return col * s.layers + row; });
    c.addEventListener("click", function (e) {
      var col = Math.floor((e.clientX - c.getBoundingClientRect().left) / cw), first = s.profileStarts[col];
      var at = self.sequences.findIndex(function (q) { return q.index === first; });
      if (at >= 0) { self.picker.value = String(at); self.show(at); }
      else self.message.textContent = "Sequence " + first + " is not in this view: display view(trace, sequences=[" + first +
        "]) or run entropylens html TRACE --sequences " + first + ".";
    });
    box.appendChild(c);
    this.root.appendChild(box);
  };

  View.prototype.show = function (i) {
    var q = this.sequences[i], self = this;
    this.current = i;
    this.seq = q;
    this.selected = -1;
    this.message.textContent = q.complete ? "" : "This sequence was still being written when the view was made.";
    var options = [["entropy", "entropy (nats)"], ["prob", "probability of the next token"], ["rank", "rank of the next token (log10)"]];
    if (q.kl) options.splice(1, 0, ["kl", "KL to the final layer (nats)"]);
    this.metricPicker.innerHTML = "";
    options.forEach(function (o) { self.metricPicker.appendChild(new Option(o[1], o[0])); });
    if (!options.some(function (o) { return o[0] === self.metricName; })) this.metricName = "entropy";
    this.metricPicker.value = this.metricName;
    this.cw = Math.max(3, Math.min(14, Math.floor(900 / q.rows)));
    this.ch = Math.max(5, Math.min(14, Math.floor(320 / q.layers)));
    this.drawLabels();
    this.draw();
    this.buildText();
    this.slider.min = 0; this.slider.max = q.layers - 1; this.slider.value = q.layers - 1;
    this.replay(q.layers - 1);
    this.select(q.rows - 1);
  };

  View.prototype.drawLabels = function () {
    var q = this.seq, c = this.labels, ctx, step = Math.max(1, Math.ceil(11 / this.ch));
    c.width = 110; c.height = q.layers * this.ch + 6;
    ctx = c.getContext("2d");
    ctx.font = Math.min(11, this.ch * step - 1) + "px sans-serif";
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    var sublayers = q.layerKinds.indexOf("attn") >= 0;
    for (var l = 0; l < q.layers; l++) {
      var y = 6 + (q.layers - 1 - l) * this.ch;
      if (sublayers && KIND_COLOURS[q.layerKinds[l]]) {  /* as in the desktop viewer: attention orange, MLP green */
        ctx.fillStyle = KIND_COLOURS[q.layerKinds[l]];
        ctx.fillRect(104, y, 5, this.ch - (q.layerKinds[l] === "mlp" ? 1 : 0));
      }
      if (l % step) continue;
      ctx.fillStyle = q.layerKinds[l] === "attn" ? "#888" : "#222";
      ctx.fillText(q.layerNames[l], sublayers ? 100 : 106, y + 0.5 * this.ch);
    }
  };

  View.prototype.draw = function () {
    var q = this.seq, m = metric(q, this.metricName, this.summary.maxEntropy), L = q.layers;
    this.canvas.width = q.rows * this.cw; this.canvas.height = L * this.ch;
    this.canvas.dataset.rows = q.rows; this.canvas.dataset.layers = L;
    this.canvas.dataset.cellWidth = this.cw; this.canvas.dataset.cellHeight = this.ch;
    this.image = paint(this.canvas.getContext("2d"), m.values, q.rows, L, m.lo, m.hi, this.cw, this.ch, function (c, r) { return c * L + r; });
    this.strip.width = q.rows * this.cw; this.strip.height = 6;
    var sctx = this.strip.getContext("2d");
    for (var r = 0; r < q.rows; r++) {
      sctx.fillStyle = q.firstTarget + r < q.promptLength ? "#ccc" : "#333";
      sctx.fillRect(r * this.cw, 0, this.cw, 4);
    }
    this.scale.innerHTML = "";
    var g = el("span", "elens-gradient");
    g.style.background = "linear-gradient(to right," + VIRIDIS.join(",") + ")";
    var unit = this.metricName === "rank" ? function (x) { return Math.round(Math.pow(10, x) - 1); } : function (x) { return fmt(x, 2); };
    this.scale.appendChild(el("span", "", " " + unit(m.lo) + " "));
    this.scale.appendChild(g);
    this.scale.appendChild(el("span", "", " " + unit(m.hi) + (this.metricName === "entropy" || this.metricName === "kl" ? " nats" : "")));
    this.mark(-1);
  };

  View.prototype.mark = function (hovered) {
    var ctx = this.canvas.getContext("2d"), H = this.canvas.height;
    ctx.putImageData(this.image, 0, 0);
    ctx.lineWidth = 2;
    if (this.selected >= 0) { ctx.strokeStyle = "#ff2d7a"; ctx.strokeRect(this.selected * this.cw + 1, 1, this.cw - 2, H - 2); }
    if (hovered >= 0 && hovered !== this.selected) { ctx.strokeStyle = "#fff"; ctx.strokeRect(hovered * this.cw + 1, 1, this.cw - 2, H - 2); }
  };

  View.prototype.cellAt = function (e) {
    var box = this.canvas.getBoundingClientRect(), q = this.seq;
    var row = Math.floor((e.clientX - box.left) / this.cw), up = Math.floor((e.clientY - box.top) / this.ch);
    if (row < 0 || row >= q.rows || up < 0 || up >= q.layers) return null;
    return { row: row, layer: q.layers - 1 - up };
  };

  /* What one cell says: the layer, the token it predicted, its statistics and the top-k. */
  View.prototype.describe = function (row, layer) {
    var q = this.seq, i = row * q.layers + layer, k = q.topK, target = q.target[row], box = el("div");
    var token = q.tokens[q.firstTarget + row];
    box.appendChild(el("div", "elens-tip-title", q.layerNames[layer] + " \u2192 \u201c" + shown(token) + "\u201d"));
    box.appendChild(el("div", "", "token " + (q.firstTarget + row) + (q.firstTarget + row < q.promptLength ? " (prompt)" : " (generated)") +
      " \u00b7 entropy " + fmt(q.entropy[i]) + " nats" + (q.kl ? " \u00b7 KL to final " + fmt(q.kl[i]) : "")));
    box.appendChild(el("div", "elens-tip-target", "next token: rank " + (q.targetRank[i] + 1) + ", p = " + pct(q.targetProb[i])));
    var table = el("table", "elens-topk");
    for (var j = 0; j < k; j++) {
      var id = q.topkIds[i * k + j], tr = el("tr", id === target ? "elens-hit" : "");
      tr.appendChild(el("td", "", String(j + 1)));
      tr.appendChild(el("td", "elens-tok", "\u201c" + shown(q.table[id]) + "\u201d"));
      tr.appendChild(el("td", "", pct(q.topkProbs[i * k + j] / q.probScale)));
      table.appendChild(tr);
    }
    box.appendChild(table);
    return box;
  };

  View.prototype.hover = function (e) {
    var c = this.cellAt(e), t = this.tooltip;
    if (!c) { t.style.display = "none"; return; }
    t.innerHTML = "";
    t.appendChild(this.describe(c.row, c.layer));
    t.dataset.row = c.row; t.dataset.layer = c.layer;
    var rootBox = this.root.getBoundingClientRect();
    t.style.display = "block";
    var x = e.clientX - rootBox.left + 14, y = e.clientY - rootBox.top + 14;
    if (x + t.offsetWidth > rootBox.width) x = Math.max(0, x - t.offsetWidth - 28);
    t.style.left = x + "px"; t.style.top = y + "px";
    this.mark(c.row);
    this.highlightToken(c.row);
  };

  View.prototype.buildText = function () {
    var q = this.seq, self = this, frag = document.createDocumentFragment(), replay = document.createDocumentFragment();
    this.tokenSpans = []; this.replaySpans = [];
    var lead = q.tokens.slice(0, q.firstTarget).join("");
    if (lead) { frag.appendChild(el("span", "elens-prompt", lead)); replay.appendChild(el("span", "elens-prompt", lead)); }
    for (var r = 0; r < q.rows; r++) {
      var pos = q.firstTarget + r, cls = pos < q.promptLength ? "elens-token elens-prompt" : "elens-token";
      var span = el("span", cls, q.tokens[pos]);
      span.dataset.row = r;
      frag.appendChild(span);
      this.tokenSpans.push(span);
      var again = el("span", "elens-token");
      again.dataset.row = r;
      replay.appendChild(again);
      this.replaySpans.push(again);
    }
    this.text.innerHTML = ""; this.text.appendChild(frag);
    this.replayText.innerHTML = ""; this.replayText.appendChild(replay);
    [this.text, this.replayText].forEach(function (box) {
      box.onclick = function (e) { if (e.target.dataset.row !== undefined) self.select(+e.target.dataset.row); };
      box.onmouseover = function (e) { if (e.target.dataset.row !== undefined) { self.mark(+e.target.dataset.row); self.highlightToken(+e.target.dataset.row); } };
    });
  };

  View.prototype.highlightToken = function (row) {
    if (this.hot !== undefined && this.tokenSpans[this.hot]) this.tokenSpans[this.hot].classList.remove("elens-hot");
    this.hot = row;
    if (this.tokenSpans[row]) this.tokenSpans[row].classList.add("elens-hot");
  };

  /* The replay: every token's top-1 prediction at one layer; green where it is already the token that came. */
  View.prototype.replay = function (layer) {
    var q = this.seq, k = q.topK, hits = 0;
    for (var r = 0; r < q.rows; r++) {
      var i = r * q.layers + layer, span = this.replaySpans[r];
      var top = k ? q.topkIds[i * k] : -1, hit = top === q.target[r];
      span.textContent = k ? q.table[top] : "?";
      span.classList.toggle("elens-hit", hit);
      span.classList.toggle("elens-prompt", q.firstTarget + r < q.promptLength);
      if (hit) hits++;
    }
    this.sliderLabel.textContent = " after " + q.layerNames[layer] + ": " + hits + " of " + q.rows + " tokens already top-1";
    this.replayLayer = layer;
  };

  /* The drill-down: the token's profile, rises (expansion) red, falls (pruning) blue. */
  View.prototype.select = function (row) {
    var q = this.seq;
    if (row < 0 || row >= q.rows) return;
    if (this.selected >= 0 && this.tokenSpans[this.selected]) this.tokenSpans[this.selected].classList.remove("elens-selected");
    this.selected = row;
    this.tokenSpans[row].classList.add("elens-selected");
    this.mark(-1);
    this.detail.innerHTML = "";
    this.detail.appendChild(this.profile(row));
  };

  View.prototype.profile = function (row) {
    var q = this.seq, L = q.layers, W = 560, H = 190, left = 42, bottom = 28, top = 10, right = 10, box = el("div");
    var ys = [], kl = [], hi = 0, klHi = 0, l;
    right = q.kl ? 42 : right;
    for (l = 0; l < L; l++) { ys.push(q.entropy[row * L + l]); if (q.kl) kl.push(q.kl[row * L + l]); }
    ys.forEach(function (v) { if (isFinite(v)) hi = Math.max(hi, v); });
    kl.forEach(function (v) { if (isFinite(v)) klHi = Math.max(klHi, v); });
    hi = hi || 1; klHi = klHi || 1;
    var X = function (i) { return left + (L > 1 ? i / (L - 1) : 0) * (W - left - right); };
    var Y = function (v) { return top + (1 - v / hi) * (H - top - bottom); };
    var YK = function (v) { return top + (1 - v / klHi) * (H - top - bottom); };
    var s = svg("svg", { width: W, height: H, "class": "elens-profile" });
    s.appendChild(svg("line", { x1: left, y1: Y(0), x2: W - right, y2: Y(0), stroke: "#999" }));
    s.appendChild(svg("line", { x1: left, y1: top, x2: left, y2: Y(0), stroke: "#999" }));
    [0, hi / 2, hi].forEach(function (v) {
      var t = svg("text", { x: left - 4, y: Y(v) + 4, "text-anchor": "end", "font-size": 10 }); t.textContent = v.toFixed(1); s.appendChild(t);
    });
    var xl = svg("text", { x: (left + W) / 2, y: H - 6, "text-anchor": "middle", "font-size": 10 });
    xl.textContent = "lens row (" + q.layerNames[0] + " \u2192 " + q.layerNames[L - 1] + ")";
    s.appendChild(xl);
    var rise = { d: 0, at: -1 }, fall = { d: 0, at: -1 };
    for (l = 1; l < L; l++) {
      var d = ys[l] - ys[l - 1];
      s.appendChild(svg("line", { x1: X(l - 1), y1: Y(ys[l - 1]), x2: X(l), y2: Y(ys[l]), stroke: d >= 0 ? RISE : FALL, "stroke-width": 2.5 }));
      if (d > rise.d) rise = { d: d, at: l };
      if (d < fall.d) fall = { d: d, at: l };
    }
    if (q.kl) {  /* KL on its own axis (right): near the embeddings it is often ten times the entropy */
      s.appendChild(svg("polyline", { points: kl.map(function (v, i) { return X(i) + "," + YK(isFinite(v) ? v : 0); }).join(" "),
        fill: "none", stroke: "#777", "stroke-dasharray": "4 3" }));
      [0, klHi / 2, klHi].forEach(function (v) {
        var t = svg("text", { x: W - right + 4, y: YK(v) + 4, "font-size": 10, fill: "#777" }); t.textContent = v.toFixed(1); s.appendChild(t);
      });
    }
    [[rise, RISE], [fall, FALL]].forEach(function (m) {
      if (m[0].at > 0) s.appendChild(svg("circle", { cx: X(m[0].at), cy: Y(ys[m[0].at]), r: 5, fill: "none", stroke: m[1], "stroke-width": 2 }));
    });
    var i = row * L + L - 1, k = q.topK;
    box.appendChild(el("div", "elens-tip-title", "Token " + (q.firstTarget + row) + " \u201c" + shown(q.tokens[q.firstTarget + row]) +
      "\u201d: entropy by layer, nats (left axis)" + (q.kl ? "; dashed: KL to the final layer, nats (right axis)" : "")));
    box.appendChild(s);
    var note = [];
    if (rise.at > 0) note.push("largest expansion " + q.layerNames[rise.at - 1] + " \u2192 " + q.layerNames[rise.at] + " (+" + fmt(rise.d, 2) + " nats)");
    if (fall.at > 0) note.push("largest pruning " + q.layerNames[fall.at - 1] + " \u2192 " + q.layerNames[fall.at] + " (" + fmt(fall.d, 2) + " nats)");
    if (k) note.push("last row's top-1 \u201c" + shown(q.table[q.topkIds[i * k]]) + "\u201d; the token that came: rank " + (q.targetRank[i] + 1));
    box.appendChild(el("div", "elens-note", note.join("; ")));
    box.dataset.row = row;
    return box;
  };

  function mount(root) {
    if (!root || root.dataset.mounted) return;
    var data = JSON.parse(root.querySelector("script.elens-data").textContent);
    var fallback = root.querySelector(".elens-fallback");
    if (fallback) fallback.style.display = "none";
    root.dataset.mounted = "1";
    root.elensView = new View(root, data);
  }

  window.EntropyLensView = { version: 1, mount: mount };
})();
