// clipforge serve: the page. Plain JavaScript, no build step, no CDN; talks to /api only.
// Text from the server is put in with textContent (never innerHTML). With a token, every /api call
// sends "Authorization: Bearer ..." and thumbnails are fetched as blobs (an <img src> cannot send it).
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "clipforge-serve-token";
const state = { token: sessionStorage.getItem(TOKEN_KEY) || "", image: null, objectUrls: [], generation: 0 };

// A token handed over in the address (#token=...) is kept for this tab and taken out of the address bar.
if (location.hash.startsWith("#token=")) {
  state.token = decodeURIComponent(location.hash.slice("#token=".length));
  sessionStorage.setItem(TOKEN_KEY, state.token);
  history.replaceState(null, "", location.pathname + location.search);
}

class ApiError extends Error {}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.token) headers.set("Authorization", "Bearer " + state.token);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    $("token-form").hidden = false;
    $("token").focus();
  }
  return response;
}

async function apiJson(path, options) {
  const response = await api(path, options);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    throw new ApiError((body && body.error) || `HTTP ${response.status} ${response.statusText}`);
  }
  return body;
}

function say(text, isError = false) {
  $("message").textContent = text;
  $("message").classList.toggle("error", isError);
}

function forgetObjectUrls() {
  for (const url of state.objectUrls) URL.revokeObjectURL(url);
  state.objectUrls = [];
}

async function setThumb(img, src) {
  if (!state.token) { img.src = src; return; }
  const response = await api(src);
  if (!response.ok) return;
  const url = URL.createObjectURL(await response.blob());
  state.objectUrls.push(url);
  img.src = url;
}

function basename(path) {
  const parts = String(path).split(/[\\/]|::/);
  return parts[parts.length - 1];
}

function showResults(results) {
  forgetObjectUrls();
  const grid = $("results");
  grid.replaceChildren();
  for (const [rank, hit] of results.entries()) {
    const card = document.createElement("figure");
    card.className = "card";
    card.tabIndex = 0;
    card.dataset.id = hit.id;
    card.title = `${hit.path}\nclick: items most like this one`;
    const frame = document.createElement("div");
    frame.className = "thumb";
    const img = document.createElement("img");
    img.alt = hit.caption || basename(hit.path);
    img.loading = "lazy";
    frame.append(img);
    const caption = document.createElement("figcaption");
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `#${rank + 1} · ${hit.score.toFixed(4)}`;
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("div");
    fill.style.width = `${Math.max(0, Math.min(1, hit.score)) * 100}%`;
    bar.append(fill);
    caption.append(score, bar);
    if (hit.caption) {
      const text = document.createElement("span");
      text.className = "caption";
      text.textContent = hit.caption;
      caption.append(text);
    }
    const path = document.createElement("span");
    path.className = "path";
    path.textContent = basename(hit.path);
    caption.append(path);
    card.append(frame, caption);
    card.addEventListener("click", () => moreLike(hit));
    card.addEventListener("keydown", (e) => { if (e.key === "Enter") moreLike(hit); });
    grid.append(card);
    setThumb(img, hit.thumb);
  }
}

async function run(description, request) {
  const generation = ++state.generation;
  say(`${description}…`);
  const started = performance.now();
  try {
    const body = await request();
    if (generation !== state.generation) return null;  // a newer request has taken over
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    return { body, seconds };
  } catch (e) {
    if (generation === state.generation) say(e.message, true);
    return null;
  }
}

function k() { return $("k").value; }

async function searchText(event) {
  event.preventDefault();
  const q = $("q").value.trim();
  if (!q) return;
  $("focus").hidden = true;
  const done = await run(`searching for “${q}”`, () => apiJson(`/api/search?q=${encodeURIComponent(q)}&k=${k()}`));
  if (!done) return;
  showResults(done.body.results);
  say(`${done.body.results.length} results for “${q}” (${done.seconds} s)`);
}

async function moreLike(hit) {
  const done = await run("finding similar items", () => apiJson(`/api/search?id=${hit.id}&k=${k()}`));
  if (!done) return;
  $("focus").hidden = false;
  $("focus-caption").textContent = hit.caption || basename(hit.path);
  $("focus-path").textContent = hit.path;
  setThumb($("focus-img"), hit.thumb);
  $("focus-img").alt = hit.caption || basename(hit.path);
  showResults(done.body.results);
  say(`${done.body.results.length} items most like ${basename(hit.path)} (${done.seconds} s)`);
  $("focus").scrollIntoView({ block: "start" });
}

function setImage(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    say(`${file.name} is not an image (${file.type})`, true);
    return;
  }
  state.image = file;
  const preview = $("preview");
  if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  $("drop-text").firstChild.textContent = `${file.name || "pasted image"} · drop or paste another, or `;
  $("similar").disabled = false;
  $("classify").disabled = false;
  say(`image ready: ${file.name || "pasted image"} (${Math.round(file.size / 1024)} KB)`);
}

function imageForm() {
  const form = new FormData();
  form.append("image", state.image, state.image.name || "image");
  return form;
}

async function searchImage() {
  if (!state.image) return;
  $("focus").hidden = true;
  const form = imageForm();
  form.append("k", k());
  const done = await run("searching by image", () => apiJson("/api/search", { method: "POST", body: form }));
  if (!done) return;
  showResults(done.body.results);
  say(`${done.body.results.length} images most like ${state.image.name || "the image"} (${done.seconds} s)`);
}

async function classify(event) {
  event.preventDefault();
  if (!state.image) return;
  const form = imageForm();
  form.append("labels", $("labels").value);
  const done = await run("classifying", () => apiJson("/api/classify", { method: "POST", body: form }));
  if (!done) return;
  const list = $("probs");
  list.replaceChildren();
  for (const { label, prob, score } of done.body.labels) {
    const row = document.createElement("li");
    row.title = `${label}: probability ${prob.toFixed(4)}, cosine ${score.toFixed(4)}`;
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = `${prob * 100}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = `${(prob * 100).toFixed(1)}%`;
    row.append(name, track, value);
    list.append(row);
  }
  const best = done.body.labels[0];
  say(`most likely: ${best.label} (${(best.prob * 100).toFixed(1)}%) among ${done.body.labels.length} labels (${done.seconds} s)`);
}

async function health() {
  try {
    const h = await apiJson("/api/health");
    $("status").textContent = `${h.items} items · model ${h.model}`;
    $("token-form").hidden = true;
  } catch (e) {
    $("status").textContent = e.message;
  }
}

function wire() {
  $("search-form").addEventListener("submit", searchText);
  $("classify-form").addEventListener("submit", classify);
  $("similar").addEventListener("click", searchImage);
  $("file").addEventListener("change", (e) => setImage(e.target.files[0]));
  $("focus-close").addEventListener("click", () => { $("focus").hidden = true; });
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    health();
  });
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    document.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "dragend"]) {
    document.addEventListener(name, () => drop.classList.remove("over"));
  }
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer && e.dataTransfer.files.length) setImage(e.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (e) => {
    const items = e.clipboardData ? [...e.clipboardData.files] : [];
    if (items.length) setImage(items[0]);
  });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
  health();
}

wire();
