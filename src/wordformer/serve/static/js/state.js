// The page's state, mirrored in the address bar's hash so a view can be shared (copy the URL).
//   m model id · p prompt · eos 1/0 (unset: the model's default) · g generated ids (comma separated)
//   l layer · h head · t token position · T temperature · k top-k (0 off) · tp top-p (1 off)
//   s seed · n tokens per run · off heads switched off ("layer.head,layer.head")

export const DEFAULTS = { m: "", p: "", eos: "", g: "", l: 0, h: 0, t: -1, T: 1, k: 0, tp: 1, s: 0, n: 12, off: "" };
const NUMERIC = new Set(["l", "h", "t", "T", "k", "tp", "s", "n"]);

export function readState() {
  const params = new URLSearchParams(location.hash.slice(1));
  const state = { ...DEFAULTS };
  for (const key of Object.keys(DEFAULTS)) {
    if (!params.has(key)) continue;
    const raw = params.get(key);
    if (NUMERIC.has(key)) {
      const x = Number(raw);
      if (Number.isFinite(x)) state[key] = x;
    } else state[key] = raw;
  }
  return state;
}

export function writeState(state) {
  const params = new URLSearchParams();
  for (const key of Object.keys(DEFAULTS)) {
    const v = state[key];
    if (v === DEFAULTS[key] && key !== "m" && key !== "p") continue;
    if (v === "" || v == null) continue;
    params.set(key, String(v));
  }
  const hash = "#" + params.toString().replace(/\+/g, "%20");
  if (hash !== location.hash) history.replaceState(null, "", hash);
}

export function generatedIds(state) {
  return state.g ? state.g.split(",").map(Number).filter((x) => Number.isInteger(x) && x >= 0) : [];
}

export function ablatedHeads(state) {
  return state.off ? state.off.split(",").map((s) => s.split(".").map(Number))
    .filter((p) => p.length === 2 && p.every(Number.isInteger)) : [];
}
