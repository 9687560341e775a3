// Pure logic for the PAL frontend extension: no DOM, no ComfyUI imports, so `node --test` can
// unit-test it (tests/web/par_display.test.mjs). pal.js does the ComfyUI wiring.

export const SETTING_ID = "PAL.ParThreshold";
export const DEFAULT_THRESHOLD = 0.05;

// Node types that report PAR in their UI output (key "pal_par").
export const PAL_NODE_TYPES = new Set([
  "PALDetect",
  "PALScore",
  "PALSortByPAR",
  "PALAutoFix",
]);

// Name of the read-only PAR widget (shown in classic and in Nodes 2.0 / Vue mode; never serialised).
export const WIDGET_NAME = "pal_par";

export const COLORS = Object.freeze({
  good: "#3fb950", // PAR at most half the threshold
  warn: "#d29922", // up to the threshold
  bad: "#f85149", // above the threshold
  unknown: "#8b949e",
});

/** A usable threshold in [0, 1] from whatever the settings store returns (else the default). */
export function clampThreshold(value, fallback = DEFAULT_THRESHOLD) {
  const v = typeof value === "string" ? Number.parseFloat(value) : value;
  if (typeof v !== "number" || !Number.isFinite(v)) return fallback;
  return Math.min(1, Math.max(0, v));
}

/** "good" | "warn" | "bad" | "unknown" for one PAR value against the user's threshold. */
export function parLevel(par, threshold = DEFAULT_THRESHOLD) {
  if (typeof par !== "number" || !Number.isFinite(par)) return "unknown";
  const t = clampThreshold(threshold);
  if (par > t) return "bad";
  if (par > t / 2) return "warn";
  return "good";
}

export function parColor(par, threshold = DEFAULT_THRESHOLD) {
  return COLORS[parLevel(par, threshold)];
}

/** 0.01234 -> "1.23%" (PAR is a fraction of the image area). */
export function formatPar(par) {
  if (typeof par !== "number" || !Number.isFinite(par)) return "n/a";
  return `${(par * 100).toFixed(2)}%`;
}

function toNumber(x) {
  if (typeof x === "number") return x;
  if (typeof x === "string" && x.trim() !== "") {
    const v = Number(x);
    return Number.isFinite(v) ? v : null;
  }
  return null;
}

/**
 * PAR values from an `executed` message's output. Tolerates older/newer backends: a missing
 * key, nested lists, strings, or nulls give fewer values, never an exception.
 */
export function extractPars(output) {
  if (!output || typeof output !== "object") return [];
  const raw = output.pal_par;
  if (raw === undefined || raw === null) return [];
  const flat = Array.isArray(raw) ? raw.flat(Infinity) : [raw];
  return flat.map(toNumber).filter((v) => v !== null && Number.isFinite(v));
}

/** Badge lines to draw on a node: [{text, color}], capped with a "+N more" line. */
export function badgeLines(pars, threshold = DEFAULT_THRESHOLD, max = 8) {
  const lines = pars.slice(0, max).map((p, i) => ({
    text: `${pars.length > 1 ? `#${i} ` : ""}PAR ${formatPar(p)}`,
    color: parColor(p, threshold),
  }));
  if (pars.length > max) lines.push({ text: `+${pars.length - max} more`, color: COLORS.unknown });
  return lines;
}

/** Should this node (by its registered type name) get the PAR display? */
export function isPalNode(nodeData) {
  const name = nodeData && (nodeData.name || nodeData.type || nodeData.comfyClass);
  return typeof name === "string" && PAL_NODE_TYPES.has(name);
}

/** One-line text for a plain text widget: "PAR 1.23%" or "#0 PAR 1.23% · #1 PAR 4.00%" (capped). */
export function parText(pars, max = 8) {
  if (!Array.isArray(pars) || !pars.length) return "";
  return badgeLines(pars, DEFAULT_THRESHOLD, max).map((l) => l.text).join(" · ");
}

/** The worst level among the values (what a single-colour display shows). */
export function worstLevel(pars, threshold = DEFAULT_THRESHOLD) {
  const order = ["unknown", "good", "warn", "bad"];
  let worst = "unknown";
  for (const p of pars || []) {
    const l = parLevel(p, threshold);
    if (order.indexOf(l) > order.indexOf(worst)) worst = l;
  }
  return worst;
}
