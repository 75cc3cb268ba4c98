// Calls to this server only (same origin). A 401 asks for the API key, kept in sessionStorage.

const KEY = "wordformer-api-key";
let askForKey = null;

export function onKeyNeeded(fn) { askForKey = fn; }
export function setKey(key) { if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY); }

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = sessionStorage.getItem(KEY);
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.param = body && body.error ? body.error.param : null;
  }
}

async function check(response) {
  if (response.ok) return response;
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (response.status === 401 && askForKey) askForKey();
  throw new ApiError(response.status, body);
}

export async function get(path) {
  const r = await check(await fetch(path, { headers: headers() }));
  return r.json();
}

export async function post(path, body, signal) {
  const r = await check(await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body), signal }));
  return r.json();
}

// Server-sent events over a POST: calls onEvent(object) for each `data: {...}` until `data: [DONE]`.
export async function stream(path, body, onEvent, signal) {
  const r = await check(await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body), signal }));
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const chunk = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of chunk.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        const event = JSON.parse(data);
        if (event.error) throw new ApiError(400, event);
        onEvent(event);
      }
    }
  }
}
