// forja's web chat: talks to the server's own OpenAI-compatible API (/v1/models,
// /v1/chat/completions with server-sent events, /v1/rag/collections for documents), keeps conversations and settings in this
// browser's localStorage, and renders answers as a safe subset of Markdown built from DOM nodes
// (model output never becomes HTML).
"use strict";

const $ = (id) => document.getElementById(id);

const storage = {
  get(key, fallback) {
    try {
      const v = localStorage.getItem(key);
      return v === null ? fallback : JSON.parse(v);
    } catch {
      return fallback;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(key, JSON.stringify(value));
    } catch (e) {
      showStatus(`could not save in this browser: ${e.message}`);
    }
  },
};

const SETTINGS = ["api-key", "system", "temperature", "top-p", "max-tokens", "seed"];
// How many chunks a question with documents retrieves.
const RETRIEVE_K = 5;
let conversations = storage.get("forja.conversations", []);
let currentId = storage.get("forja.current", null);
let busy = null; // {controller, conversation} while a reply streams

function newId() {
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

function current() {
  return conversations.find((c) => c.id === currentId) || null;
}

function save() {
  storage.set("forja.conversations", conversations);
  storage.set("forja.current", currentId);
}

function showStatus(text) {
  $("server-status").textContent = text;
}

// A problem the user must act on (no key, no models), shown until it is solved.
function showNotice(text) {
  $("notice").textContent = text;
  $("notice").hidden = !text;
}

// ---------- Markdown (a safe subset: fences, lists, headings, emphasis, inline code, links) ----

function inline(text, parent) {
  const re = /(`[^`\n]+`|\*\*[^*\n]+\*\*|\*[^*\s][^*\n]*\*|\[[^\]\n]+\]\(https?:\/\/[^)\s]+\))/g;
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > last) parent.append(text.slice(last, m.index));
    const t = m[0];
    let node;
    if (t.startsWith("`")) {
      node = document.createElement("code");
      node.textContent = t.slice(1, -1);
    } else if (t.startsWith("**")) {
      node = document.createElement("strong");
      node.textContent = t.slice(2, -2);
    } else if (t.startsWith("*")) {
      node = document.createElement("em");
      node.textContent = t.slice(1, -1);
    } else {
      const split = t.indexOf("](");
      node = document.createElement("a");
      node.textContent = t.slice(1, split);
      node.href = t.slice(split + 2, -1);
      node.rel = "noopener noreferrer";
      node.target = "_blank";
    }
    parent.append(node);
    last = m.index + t.length;
  }
  if (last < text.length) parent.append(text.slice(last));
}

function blocks(text, parent) {
  for (const chunk of text.split(/\n{2,}/)) {
    const lines = chunk.split("\n").filter((l) => l.trim() !== "");
    if (lines.length === 0) continue;
    const heading = /^(#{1,6})\s+(.*)$/.exec(lines[0]);
    if (heading && lines.length === 1) {
      const h = document.createElement(`h${Math.min(heading[1].length + 2, 6)}`);
      inline(heading[2], h);
      parent.append(h);
      continue;
    }
    const bullet = /^\s*[-*+]\s+/;
    const number = /^\s*\d+[.)]\s+/;
    const kind = lines.every((l) => bullet.test(l)) ? "ul" : lines.every((l) => number.test(l)) ? "ol" : null;
    if (kind) {
      const list = document.createElement(kind);
      for (const l of lines) {
        const li = document.createElement("li");
        inline(l.replace(kind === "ul" ? bullet : number, ""), li);
        list.append(li);
      }
      parent.append(list);
      continue;
    }
    const p = document.createElement("p");
    lines.forEach((l, i) => {
      if (i > 0) p.append(document.createElement("br"));
      inline(l, p);
    });
    parent.append(p);
  }
}

function renderMarkdown(text, parent) {
  parent.replaceChildren();
  const fence = /```([^\n`]*)\n?([\s\S]*?)(?:```|$)/g;
  let last = 0;
  for (const m of text.matchAll(fence)) {
    blocks(text.slice(last, m.index), parent);
    const pre = document.createElement("pre");
    const code = document.createElement("code");
    code.textContent = m[2];
    if (m[1].trim()) code.dataset.lang = m[1].trim();
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy";
    copy.textContent = "Copy";
    copy.addEventListener("click", () => navigator.clipboard?.writeText(m[2]));
    pre.append(copy, code);
    parent.append(pre);
    last = m.index + m[0].length;
  }
  blocks(text.slice(last), parent);
}

// ---------- Rendering ----------

function describe(stats) {
  if (!stats) return "";
  const parts = [];
  if (stats.tokens !== undefined) parts.push(`${stats.tokens} tokens`);
  if (stats.tokensPerSecond) parts.push(`${stats.tokensPerSecond.toFixed(1)} tok/s`);
  if (stats.firstTokenMs !== undefined) parts.push(`first token ${Math.round(stats.firstTokenMs)} ms`);
  if (stats.finish === "length") parts.push("stopped at the token limit");
  if (stats.finish === "stopped") parts.push("stopped");
  return parts.join(" · ");
}

function messageNode(msg) {
  const div = document.createElement("div");
  div.className = `message ${msg.error ? "error" : msg.role}`;
  div.dataset.role = msg.role;
  div.dataset.state = msg.error ? "error" : msg.state || "done";
  const content = document.createElement("div");
  content.className = "content";
  if (msg.error) content.textContent = msg.error;
  else if (msg.role === "assistant") renderMarkdown(msg.content, content);
  else content.textContent = msg.content;
  div.append(content);
  if (msg.citations?.length) div.append(citationsNode(msg.citations));
  const meta = describe(msg.stats);
  if (meta) {
    const m = document.createElement("div");
    m.className = "meta";
    m.textContent = meta;
    div.append(m);
  }
  return div;
}

// The sources an answer cites, as text: `[n] file, section, page` and the chunk's start.
function citationsNode(citations) {
  const list = document.createElement("ol");
  list.className = "citations";
  for (const c of citations) {
    const li = document.createElement("li");
    li.value = c.index;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = c.label;
    const excerpt = document.createElement("div");
    excerpt.className = "excerpt";
    const text = String(c.text ?? "").trim();
    excerpt.textContent = text.length > 240 ? `${text.slice(0, 240)}…` : text;
    li.append(label, excerpt);
    list.append(li);
  }
  return list;
}

function renderConversations() {
  const list = $("conversations");
  list.replaceChildren();
  for (const c of [...conversations].reverse()) {
    const li = document.createElement("li");
    if (c.id === currentId) li.className = "active";
    const open = document.createElement("button");
    open.type = "button";
    open.className = "open";
    open.textContent = c.title || "New chat";
    open.title = c.title || "";
    open.addEventListener("click", () => {
      currentId = c.id;
      save();
      render();
    });
    const del = document.createElement("button");
    del.type = "button";
    del.className = "delete";
    del.textContent = "×";
    del.setAttribute("aria-label", `Delete ${c.title || "chat"}`);
    del.addEventListener("click", () => {
      if (busy && busy.conversation === c) busy.controller.abort();
      conversations = conversations.filter((x) => x !== c);
      if (currentId === c.id) currentId = conversations.at(-1)?.id ?? null;
      save();
      render();
    });
    li.append(open, del);
    list.append(li);
  }
}

function renderMessages() {
  const box = $("messages");
  const conv = current();
  box.replaceChildren(...(conv ? conv.messages.map(messageNode) : []));
  box.scrollTop = box.scrollHeight;
  const last = conv?.messages.at(-1);
  $("regenerate").hidden = !!busy || !last || last.role !== "assistant";
}

function render() {
  renderConversations();
  renderMessages();
  $("send").hidden = !!busy;
  $("stop").hidden = !busy;
}

let frame = 0;
function renderSoon() {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    renderMessages();
  });
}

// ---------- Talking to the server ----------

function headers() {
  const h = { "content-type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.authorization = `Bearer ${key}`;
  return h;
}

async function errorText(resp) {
  let message = `${resp.status} ${resp.statusText}`;
  try {
    const body = await resp.json();
    if (body?.error?.message) message = body.error.message;
  } catch {
    // not JSON: keep the status line
  }
  if (resp.status === 401) {
    message += " — open Settings and enter the API key the server was started with.";
  }
  return message;
}

async function loadModels() {
  const select = $("model");
  try {
    const resp = await fetch("/v1/models", { headers: headers() });
    if (!resp.ok) throw new Error(await errorText(resp));
    const body = await resp.json();
    const wanted = storage.get("forja.model", null);
    // Embedding models make vectors, not answers: the chat lists the others.
    const chat = body.data.filter((m) => !(m.capabilities || ["completion"]).every((c) => c === "embedding"));
    select.replaceChildren(
      ...chat.map((m) => {
        const o = document.createElement("option");
        o.value = m.id;
        o.textContent = m.id;
        return o;
      }),
    );
    if (wanted && chat.some((m) => m.id === wanted)) select.value = wanted;
    select.dataset.loaded = "true";
    showNotice(chat.length ? "" : "The server lists no chat model.");
  } catch (e) {
    showNotice(`Cannot list the models: ${e.message}`);
  }
}

async function pollHealth() {
  try {
    const resp = await fetch("/health");
    const body = await resp.json();
    const loaded = body.loaded.map((m) => m.model);
    const text = [`${body.status}`, loaded.length ? `loaded: ${loaded.join(", ")}` : "no model loaded"];
    if (body.loading.length) text.push(`loading: ${body.loading.join(", ")}`);
    showStatus(text.join(" · "));
  } catch {
    showStatus("server unreachable");
  }
}

function requestBody(conv) {
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  for (const m of conv.messages) {
    if (m.error || m.state === "streaming") continue;
    messages.push({ role: m.role, content: m.content });
  }
  const body = {
    model: $("model").value,
    messages,
    stream: true,
    stream_options: { include_usage: true },
  };
  const number = (id) => {
    const v = $(id).value.trim();
    return v === "" ? undefined : Number(v);
  };
  body.temperature = number("temperature");
  body.top_p = number("top-p");
  body.max_tokens = number("max-tokens");
  body.seed = number("seed");
  const collection = $("collection").value;
  if ($("use-documents").checked && collection) {
    body.retrieval = { collection, k: RETRIEVE_K };
  }
  return body;
}

// Parses a server-sent event stream, calling `onData` with each event's data.
async function readEvents(resp, onData) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event
        .split("\n")
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, ""))
        .join("\n");
      if (data && onData(data) === false) return;
    }
  }
}

async function reply(conv) {
  const msg = { role: "assistant", content: "", state: "streaming" };
  const body = requestBody(conv);
  conv.messages.push(msg);
  const controller = new AbortController();
  busy = { controller, conversation: conv };
  render();
  const started = performance.now();
  let firstAt;
  let finish;
  let usage;
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!resp.ok) throw new Error(await errorText(resp));
    await readEvents(resp, (data) => {
      if (data === "[DONE]") return false;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message || "the server reported an error");
      if (chunk.usage) usage = chunk.usage;
      if (chunk.citations) msg.citations = chunk.citations;
      const choice = chunk.choices?.[0];
      const delta = choice?.delta?.content;
      if (delta) {
        firstAt ??= performance.now();
        msg.content += delta;
        if (conv === current()) renderSoon();
      }
      if (choice?.finish_reason) finish = choice.finish_reason;
      return true;
    });
    msg.state = "done";
  } catch (e) {
    if (e.name === "AbortError") {
      msg.state = "stopped";
      finish = "stopped";
    } else {
      msg.error = e.message;
      msg.state = "error";
    }
  }
  const ended = performance.now();
  if (!msg.error) {
    const tokens = usage?.completion_tokens;
    msg.stats = { finish };
    if (tokens !== undefined) msg.stats.tokens = tokens;
    if (firstAt !== undefined) {
      msg.stats.firstTokenMs = firstAt - started;
      if (tokens > 1 && ended > firstAt) msg.stats.tokensPerSecond = ((tokens - 1) * 1000) / (ended - firstAt);
    }
    $("stats").textContent = describe(msg.stats);
  }
  busy = null;
  save();
  render();
}

function send(event) {
  event.preventDefault();
  if (busy) return;
  const text = $("prompt").value.trim();
  if (!text) return;
  if (!$("model").value) {
    showNotice("No model to talk to: the server lists none yet.");
    return;
  }
  let conv = current();
  if (!conv) {
    conv = { id: newId(), title: "", messages: [] };
    conversations.push(conv);
    currentId = conv.id;
  }
  if (!conv.title) conv.title = text.slice(0, 48);
  conv.messages.push({ role: "user", content: text });
  $("prompt").value = "";
  save();
  reply(conv);
}

function regenerate() {
  const conv = current();
  if (busy || !conv || conv.messages.at(-1)?.role !== "assistant") return;
  conv.messages.pop();
  reply(conv);
}

// ---------- Documents (the server's collections) ----------

const collectionPath = (name) => `/v1/rag/collections/${encodeURIComponent(name)}`;

async function loadCollections(select) {
  const box = $("collection");
  try {
    const resp = await fetch("/v1/rag/collections", { headers: headers() });
    if (!resp.ok) throw new Error(await errorText(resp));
    const body = await resp.json();
    const wanted = select ?? storage.get("forja.collection", null);
    box.replaceChildren(
      ...body.data.map((c) => {
        const o = document.createElement("option");
        o.value = c.name;
        o.textContent = c.name;
        o.dataset.info = `${c.documents} documents · ${c.chunks} chunks · ${c.embedding_model} (${c.dimension})`;
        return o;
      }),
    );
    if (wanted && body.data.some((c) => c.name === wanted)) box.value = wanted;
    box.dataset.loaded = "true";
    showCollection();
  } catch (e) {
    $("collection-info").textContent = `Cannot list the collections: ${e.message}`;
  }
}

function showCollection() {
  const option = $("collection").selectedOptions[0];
  $("collection-info").textContent = option ? option.dataset.info : "no collection yet: create one";
  if (option) storage.set("forja.collection", option.value);
}

async function createCollection(event) {
  event.preventDefault();
  const name = $("new-collection").value.trim();
  if (!name) return;
  const resp = await fetch("/v1/rag/collections", {
    method: "POST",
    headers: headers(),
    body: JSON.stringify({ name }),
  });
  if (!resp.ok) {
    $("collection-info").textContent = await errorText(resp);
    return;
  }
  $("new-collection").value = "";
  await loadCollections(name);
}

function resultLine(text, failed) {
  const li = document.createElement("li");
  li.textContent = text;
  if (failed) li.className = "failed";
  return li;
}

async function uploadFiles(event) {
  event.preventDefault();
  const collection = $("collection").value;
  const files = [...$("files").files];
  const results = $("upload-results");
  if (!collection) {
    results.replaceChildren(resultLine("Create or pick a collection first.", true));
    return;
  }
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("file", f, f.name);
  const h = headers();
  delete h["content-type"]; // the browser sets the multipart boundary
  $("upload").disabled = true;
  results.replaceChildren(resultLine(`Uploading ${files.length} file(s)…`, false));
  results.dataset.state = "uploading";
  try {
    const resp = await fetch(`${collectionPath(collection)}/files`, { method: "POST", headers: h, body: form });
    if (!resp.ok) throw new Error(await errorText(resp));
    const body = await resp.json();
    results.replaceChildren(
      ...body.files.map((f) =>
        f.error
          ? resultLine(`${f.name}: failed — ${f.error.replace(`${f.name}: `, "")}`, true)
          : resultLine(`${f.name}: ${f.status} (${f.chunks} chunks)`, false),
      ),
    );
    $("files").value = "";
    await loadCollections(collection);
  } catch (e) {
    results.replaceChildren(resultLine(e.message, true));
  }
  results.dataset.state = "done";
  $("upload").disabled = false;
}

// ---------- Wiring ----------

function restoreSettings() {
  const saved = storage.get("forja.settings", {});
  for (const id of SETTINGS) {
    const el = $(id);
    if (saved[id] !== undefined) el.value = saved[id];
    el.addEventListener("change", () => {
      const all = storage.get("forja.settings", {});
      all[id] = el.value;
      storage.set("forja.settings", all);
      if (id === "api-key") loadModels();
    });
  }
}

function init() {
  restoreSettings();
  $("composer").addEventListener("submit", send);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) send(e);
  });
  $("stop").addEventListener("click", () => busy?.controller.abort());
  $("regenerate").addEventListener("click", regenerate);
  $("new-chat").addEventListener("click", () => {
    currentId = null;
    save();
    render();
    $("prompt").focus();
  });
  $("settings-toggle").addEventListener("click", () => {
    const panel = $("settings");
    panel.hidden = !panel.hidden;
    $("settings-toggle").setAttribute("aria-expanded", String(!panel.hidden));
  });
  $("model").addEventListener("change", () => storage.set("forja.model", $("model").value));
  $("documents-toggle").addEventListener("click", () => {
    const panel = $("documents");
    panel.hidden = !panel.hidden;
    $("documents-toggle").setAttribute("aria-expanded", String(!panel.hidden));
    if (!panel.hidden) loadCollections();
  });
  $("collection").addEventListener("change", showCollection);
  $("create-collection").addEventListener("submit", createCollection);
  $("upload-form").addEventListener("submit", uploadFiles);
  $("use-documents").checked = storage.get("forja.use-documents", false);
  $("use-documents").addEventListener("change", () => {
    storage.set("forja.use-documents", $("use-documents").checked);
    if ($("use-documents").checked) loadCollections();
  });
  // A reply cut off by a closed tab is kept as stopped.
  for (const c of conversations) {
    for (const m of c.messages) if (m.state === "streaming") m.state = "stopped";
  }
  render();
  loadModels();
  if ($("use-documents").checked) loadCollections();
  pollHealth();
  setInterval(pollHealth, 5000);
}

init();
