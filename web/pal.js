// ComfyUI frontend extension: shows PAR values on PAL nodes after execution, coloured by the
// threshold set in Settings -> PAL. Two displays, so it works in both frontend modes:
//  * a read-only widget "pal_par" (a DOM widget with coloured lines where the frontend has
//    addDOMWidget, else a plain text widget): updated after each run, rendered in the classic canvas
//    and in Nodes 2.0 (Vue) mode, where onDrawForeground is never called;
//  * the classic canvas badge above the title (onDrawForeground).
// Every hook is defensive so an older or newer frontend (or a backend without `pal_par` in its UI
// output) never breaks the UI; the widget is never serialised into the workflow or the prompt.
import { app } from "../../scripts/app.js";
import {
  COLORS,
  DEFAULT_THRESHOLD,
  SETTING_ID,
  WIDGET_NAME,
  badgeLines,
  clampThreshold,
  extractPars,
  isPalNode,
  parText,
  worstLevel,
} from "./par_display.js";

const SETTING = {
  id: SETTING_ID,
  category: ["PAL", "Display", "PAR threshold"],
  name: "PAR threshold (above = red, above half = amber)",
  type: "number",
  defaultValue: DEFAULT_THRESHOLD,
  attrs: { min: 0, max: 1, step: 0.005 },
  tooltip: "PAR = share of the image flagged as artifact by PAL.",
  onChange: (value) => {
    try {
      const t = clampThreshold(value);
      for (const n of app.graph?._nodes ?? app.graph?.nodes ?? []) if (n.__palPars) showPars(n, n.__palPars, t);
    } catch {
      /* a settings change must never throw */
    }
  },
};

function threshold() {
  try {
    const s = app.extensionManager?.setting ?? app.ui?.settings;
    const v = s?.get ? s.get(SETTING_ID) : s?.getSettingValue?.(SETTING_ID);
    return clampThreshold(v);
  } catch {
    return DEFAULT_THRESHOLD;
  }
}

function drawBadges(node, ctx) {
  const lines = node.__palLines;
  if (!lines || !lines.length || !ctx) return;
  ctx.save();
  ctx.font = "12px sans-serif";
  const lineH = 15;
  const y0 = -lineH * lines.length - 28; // above the title bar
  lines.forEach((l, i) => {
    ctx.fillStyle = l.color;
    ctx.fillText(l.text, 6, y0 + lineH * (i + 1));
  });
  ctx.restore();
}

/** Markdown (with inline HTML colour) for frontends that render the widget as a markdown view. */
function markdownOf(lines) {
  return lines.map((l) => `<span style="color:${l.color}">${l.text}</span>`).join("<br>");
}

/**
 * Nodes 2.0 in frontend 1.27 keeps the first value a markdown widget had (its view never watches
 * later values), and a markdown view may drop inline colours, so after Vue has
 * rendered we write the coloured lines into that view directly (again after a slow re-render).
 */
function patchVueNode(node, lines) {
  const doc = globalThis.document;
  if (!doc?.querySelector || !lines.length) return;
  const apply = () => {
    try {
      const box = doc.querySelector(`[data-node-id="${node.id}"] .comfy-markdown-content`);
      if (!box) return;
      box.replaceChildren(...lines.map((l) => {
        const line = doc.createElement("div");
        line.textContent = l.text;
        line.style.color = l.color;
        return line;
      }));
    } catch {
      /* best effort: never break the UI */
    }
  };
  globalThis.requestAnimationFrame ? globalThis.requestAnimationFrame(() => setTimeout(apply, 0)) : apply();
  setTimeout(apply, 250); // after a slow re-render
}

/**
 * Create the read-only PAR widget once per node; null where the frontend has no widget API.
 * A DOM widget of type "markdown": the classic canvas shows our element (coloured lines); Nodes 2.0
 * renders "markdown" widgets as a markdown view of the widget's value (1.27 does not mount other DOM
 * widgets there at all), so the value is the same lines as markdown with inline colour.
 */
export function ensureWidget(node) {
  const existing = node.widgets?.find?.((w) => w.name === WIDGET_NAME);
  if (existing) return existing;
  const doc = globalThis.document;
  if (typeof node.addDOMWidget === "function" && doc?.createElement) {
    const el = doc.createElement("div");
    el.className = "pal-par-display";
    el.style.cssText = "font: 12px sans-serif; padding: 2px 6px; pointer-events: none;";
    let current = "";
    const w = node.addDOMWidget(WIDGET_NAME, "markdown", el, {
      serialize: false,
      hideOnZoom: false,
      read_only: true,
      getValue: () => current,
      setValue: (v) => {
        if (w.__palWriting) current = String(v ?? ""); // read-only: only showPars writes
      },
      getMinHeight: () => 20,
      getMaxHeight: () => 140,
    });
    w.serialize = false;
    w.__palEl = el;
    return w;
  }
  if (typeof node.addWidget === "function") {
    const w = node.addWidget("text", WIDGET_NAME, "", () => {
      w.value = w.__palText ?? ""; // read-only: edits snap back
    }, { serialize: false });
    w.serialize = false;
    w.label = "PAR";
    return w;
  }
  return null;
}

/** Update both displays from a list of PAR values. */
export function showPars(node, pars, t = threshold()) {
  node.__palPars = pars;
  node.__palLines = badgeLines(pars, t);
  const w = ensureWidget(node);
  if (w?.__palEl) {
    const el = w.__palEl;
    el.replaceChildren?.();
    for (const l of node.__palLines) {
      const line = el.ownerDocument.createElement("div");
      line.textContent = l.text;
      line.style.color = l.color;
      el.appendChild(line);
    }
    w.__palWriting = true;
    try {
      w.value = markdownOf(node.__palLines); // through the setter, so Nodes 2.0 re-renders
    } finally {
      w.__palWriting = false;
    }
    patchVueNode(node, node.__palLines);
  } else if (w) {
    w.__palText = parText(pars);
    w.value = w.__palText;
    w.color = COLORS[worstLevel(pars, t)]; // honoured by frontends that colour widget text
  }
  node.setDirtyCanvas?.(true, true);
}

const ext = {
  name: "comfyui-pal.par-display",
  settings: [SETTING], // new frontends read this; old ones get addSetting below
  setup() {
    try {
      if (!app.extensionManager?.setting && app.ui?.settings?.addSetting) {
        app.ui.settings.addSetting({ ...SETTING, name: `PAL: ${SETTING.name}`, type: "number" });
      }
    } catch (e) {
      console.warn("[PAL] settings unavailable", e);
    }
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!isPalNode(nodeData)) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      try {
        ensureWidget(this); // exists from the start, so Nodes 2.0 renders it
      } catch (e) {
        console.warn("[PAL] no PAR widget", e);
      }
      return r;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const r = onExecuted?.apply(this, arguments);
      try {
        const pars = extractPars(output);
        if (pars.length) showPars(this, pars);
      } catch (e) {
        console.warn("[PAL] could not show PAR", e);
      }
      return r;
    };
    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      const r = onDrawForeground?.apply(this, arguments);
      try {
        if (this.__palPars) this.__palLines = badgeLines(this.__palPars, threshold());
        drawBadges(this, ctx);
      } catch {
        /* drawing must never throw into the canvas loop */
      }
      return r;
    };
  },
};

try {
  app.registerExtension(ext);
} catch (e) {
  console.warn("[PAL] extension not registered", e);
}
