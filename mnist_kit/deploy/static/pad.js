// The drawing pad of `mnist-kit serve`: draw with a mouse, a finger or a pen (Pointer Events), and the
// model's answer follows the drawing (debounced); or drop a photo. Talks only to this server's API.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
const DEBOUNCE_MS = 120; // after the last movement, the drawing is sent ...
const EVERY_MS = 400; // ... and during a long stroke, at least this often
const SIZE = 280; // the canvas's CSS size; its backing store follows the screen's pixel ratio

const state = {
  strokes: [], // each: {points: [[x, y, pressure]], width}
  current: null,
  ink: "light",
  sent: 0, // number of the last request; older answers are dropped
  lastSent: -Infinity, // when the drawing was last sent (performance.now())
  strokeStart: 0,
  timer: null,
  topk: 10,
};

function colors() {
  return state.ink === "light" ? { bg: "#000", fg: "#fff" } : { bg: "#fff", fg: "#000" };
}

function setupCanvas() {
  const ratio = Math.max(1, window.devicePixelRatio || 1);
  canvas.width = SIZE * ratio;
  canvas.height = SIZE * ratio;
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  redraw();
}

function redraw() {
  const { bg, fg } = colors();
  ctx.fillStyle = bg;
  ctx.fillRect(0, 0, SIZE, SIZE);
  ctx.strokeStyle = fg;
  ctx.fillStyle = fg;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  for (const s of state.strokes) drawStroke(s);
  if (state.current) drawStroke(state.current);
}

function drawStroke(s) {
  const pts = s.points;
  if (pts.length === 1) {
    ctx.beginPath();
    ctx.arc(pts[0][0], pts[0][1], widthAt(s, pts[0]) / 2, 0, 2 * Math.PI);
    ctx.fill();
    return;
  }
  for (let i = 1; i < pts.length; i++) {
    ctx.beginPath();
    ctx.lineWidth = widthAt(s, pts[i]);
    ctx.moveTo(pts[i - 1][0], pts[i - 1][1]);
    ctx.lineTo(pts[i][0], pts[i][1]);
    ctx.stroke();
  }
}

function widthAt(s, p) {
  // a pen's pressure thins and thickens the line; a mouse or a finger reports 0.5 and draws the set width
  return s.pen ? s.width * (0.5 + p[2]) : s.width;
}

function point(e) {
  const r = canvas.getBoundingClientRect();
  return [((e.clientX - r.left) * SIZE) / r.width, ((e.clientY - r.top) * SIZE) / r.height, e.pressure || 0.5];
}

canvas.addEventListener("pointerdown", (e) => {
  if (e.button !== 0 && e.pointerType === "mouse") return;
  e.preventDefault();
  canvas.setPointerCapture(e.pointerId);
  showDrawing();
  state.current = { points: [point(e)], width: +$("width").value, pen: e.pointerType === "pen" };
  state.strokeStart = performance.now();
  redraw();
});

canvas.addEventListener("pointermove", (e) => {
  if (!state.current) return;
  e.preventDefault();
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
  for (const c of events.length ? events : [e]) state.current.points.push(point(c));
  redraw();
  schedule();
});

function endStroke() {
  if (!state.current) return;
  state.strokes.push(state.current);
  state.current = null;
  redraw();
  predictDrawing(); // at once: the stroke is done
}
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);

function schedule() {
  clearTimeout(state.timer);
  if (performance.now() - Math.max(state.lastSent, state.strokeStart) > EVERY_MS) predictDrawing();
  else state.timer = setTimeout(predictDrawing, DEBOUNCE_MS);
}

function empty() {
  return state.strokes.length === 0 && !state.current;
}

function predictDrawing() {
  clearTimeout(state.timer);
  if (empty()) {
    next(); // an answer still on its way is for a drawing that is gone
    showAnswer(null);
    setStatus("Draw on the pad, or drop a photo.");
    return;
  }
  state.lastSent = performance.now();
  send(png(), "image/png", "your drawing");
}

function png() {
  // toDataURL, not toBlob: Chromium may run toBlob's encoding as an idle task, a second later
  const bytes = atob(canvas.toDataURL("image/png").split(",")[1]);
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) out[i] = bytes.charCodeAt(i);
  return new Blob([out], { type: "image/png" });
}

function next() {
  state.sent += 1;
  document.body.dataset.sent = String(state.sent);
  return state.sent;
}

async function send(blob, type, what) {
  const n = next();
  setStatus(`Reading ${what}…`);
  try {
    const response = await fetch(`api/predict?input=1&topk=${state.topk}`, {
      method: "POST",
      headers: { "Content-Type": type || "application/octet-stream" },
      body: blob,
    });
    const body = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
    if (n !== state.sent) return; // a newer drawing was sent meanwhile
    if (!response.ok) {
      showAnswer(null);
      setStatus(`Could not read ${what}: ${body.error}`, true);
      return;
    }
    showAnswer(body);
    setStatus(`Read ${what}.`);
  } catch (err) {
    if (n === state.sent) setStatus(`The server cannot be reached (${err.message}). Is mnist-kit serve still running?`, true);
  }
}

function showAnswer(a) {
  const label = $("label");
  const bars = $("bars");
  bars.textContent = "";
  if (!a) {
    label.textContent = "–";
    label.dataset.class = "";
    $("probability").textContent = "";
    $("low").hidden = true;
    $("input").removeAttribute("src");
    document.body.dataset.answered = "";
    return;
  }
  label.textContent = a.label;
  label.dataset.class = String(a.class);
  $("probability").textContent = `${(100 * a.probability).toFixed(1)}%`;
  $("low").hidden = !a.low_confidence;
  for (const t of a.top) {
    const li = document.createElement("li");
    li.dataset.class = String(t.class);
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = t.label;
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `${(100 * t.probability).toFixed(1)}%`;
    bar.appendChild(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = `${(100 * t.probability).toFixed(1)}%`;
    li.append(name, bar, value);
    bars.appendChild(li);
  }
  if (a.input) $("input").src = a.input;
  document.body.dataset.answered = String(state.sent);
}

function setStatus(text, error) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", !!error);
}

function showDrawing() {
  $("photo").hidden = true;
  $("photo-note").hidden = true;
  canvas.hidden = false;
}

function undo() {
  showDrawing();
  state.strokes.pop();
  redraw();
  predictDrawing();
}

function clear() {
  showDrawing();
  state.strokes = [];
  state.current = null;
  redraw();
  predictDrawing();
}

$("undo").addEventListener("click", undo);
$("clear").addEventListener("click", clear);
$("ink").addEventListener("change", (e) => {
  state.ink = e.target.value;
  redraw();
  if (!empty()) predictDrawing();
});
document.addEventListener("keydown", (e) => {
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") {
    e.preventDefault();
    undo();
  } else if (e.key === "Escape") {
    clear();
  }
});

// a photo: chosen, or dropped anywhere on the page
function readPhoto(file) {
  if (!file) return;
  const photo = $("photo");
  if (photo.src.startsWith("blob:")) URL.revokeObjectURL(photo.src);
  photo.onerror = () => { // a file the browser cannot show (TIFF, or not an image): its name instead
    photo.hidden = true;
    $("photo-note").textContent = `${file.name || "the photo"} (your browser cannot show it)`;
    $("photo-note").hidden = false;
  };
  photo.src = URL.createObjectURL(file);
  photo.hidden = false;
  $("photo-note").hidden = true;
  canvas.hidden = true;
  send(file, file.type, file.name || "the photo");
}
$("file").addEventListener("change", (e) => {
  readPhoto(e.target.files[0]);
  e.target.value = "";
});
let dragDepth = 0;
document.addEventListener("dragenter", (e) => {
  e.preventDefault();
  dragDepth++;
  $("drop-hint").hidden = false;
});
document.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) $("drop-hint").hidden = true;
});
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => {
  e.preventDefault();
  dragDepth = 0;
  $("drop-hint").hidden = true;
  const file = [...(e.dataTransfer?.files || [])][0];
  if (file) readPhoto(file);
});

// what the page says about the model
const NOUN = { mnist: "a digit", "fashion-mnist": "a piece of clothing" };

function percent(x) {
  return typeof x === "number" ? `${(100 * x).toFixed(2)}%` : "–";
}

async function loadModel() {
  try {
    const response = await fetch("api/model");
    const m = await response.json();
    if (!response.ok) throw new Error(m.error || response.status);
    const noun = NOUN[m.dataset] || "something";
    $("title").textContent = `Draw ${noun}`;
    document.title = `mnist-kit · draw ${noun}`;
    state.topk = Math.min(10, m.classes.length);
    const checks = m.checks || {};
    const split = checks.split || "validation";
    const facts = [
      ["Data set", m.dataset],
      ["Classes", m.classes.length <= 12 ? m.classes.join(", ") : `${m.classes.length}: ${m.classes.slice(0, 8).join(", ")}, …`],
      [`${split[0].toUpperCase()}${split.slice(1)} accuracy`, `${percent(checks.val_accuracy)} on ${checks.val_images ?? "?"} images`],
      ["Network", m.model && m.model.name],
      ["Run", `${m.source.run} · ${m.source.checkpoint} (epoch ${m.source.epoch})`],
      ["Exported", typeof m.exported_at === "string" ? m.exported_at.slice(0, 16).replace("T", " ") : null],
      ["Runs on", m.runtime],
    ];
    const dl = $("facts");
    dl.textContent = "";
    for (const [k, v] of facts) {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v ?? "–";
      dl.append(dt, dd);
    }
    document.body.dataset.ready = "1";
    setStatus("Draw on the pad, or drop a photo.");
  } catch (err) {
    setStatus(`The model's facts could not be loaded (${err.message}).`, true);
  }
}

setupCanvas();
loadModel();
