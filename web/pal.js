// ComfyUI frontend extension: shows PAR values on PAL nodes after execution, coloured by the
// threshold set in Settings -> PAL. Every hook is defensive so an older or newer frontend
// (or backend without `pal_par` in its UI output) never breaks the UI; nothing requires it.
import { app } from "../../scripts/app.js";
import {
  DEFAULT_THRESHOLD,
  SETTING_ID,
  badgeLines,
  clampThreshold,
  extractPars,
  isPalNode,
} from "./par_display.js";

const SETTING = {
  id: SETTING_ID,
  category: ["PAL", "Display", "PAR threshold"],
  name: "PAR threshold (above = red, above half = amber)",
  type: "number",
  defaultValue: DEFAULT_THRESHOLD,
  attrs: { min: 0, max: 1, step: 0.005 },
  tooltip: "PAR = share of the image flagged as artifact by PAL.",
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
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const r = onExecuted?.apply(this, arguments);
      try {
        const pars = extractPars(output);
        this.__palPars = pars;
        this.__palLines = badgeLines(pars, threshold());
        this.setDirtyCanvas?.(true, true);
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
