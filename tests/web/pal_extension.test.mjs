// Loads web/pal.js with a stand-in for ComfyUI's `app` (the real one is served by ComfyUI at
// /scripts/app.js) and drives the hooks the frontend calls.
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";

const web = fileURLToPath(new URL("../../web/", import.meta.url));

async function loadExtension(settingValue) {
  const dir = mkdtempSync(join(tmpdir(), "palweb-"));
  copyFileSync(join(web, "par_display.js"), join(dir, "par_display.js"));
  const src = readFileSync(join(web, "pal.js"), "utf8");
  assert.match(src, /from "\.\.\/\.\.\/scripts\/app\.js"/);
  writeFileSync(join(dir, "pal.mjs"), src.replace('"../../scripts/app.js"', '"./app_stub.mjs"'));
  writeFileSync(
    join(dir, "app_stub.mjs"),
    `export const app = globalThis.__palApp;`,
  );
  const registered = [];
  globalThis.__palApp = {
    registerExtension: (e) => registered.push(e),
    extensionManager: { setting: { get: () => settingValue } },
  };
  await import(pathToFileURL(join(dir, "pal.mjs")).href);
  assert.equal(registered.length, 1);
  return registered[0];
}

function fakeCtx() {
  const drawn = [];
  return {
    drawn,
    save() {}, restore() {},
    fillText(text) { drawn.push({ text, color: this.fillStyle }); },
  };
}

test("PAL nodes get PAR badges after execution, coloured by the setting", async () => {
  const ext = await loadExtension(0.1);
  assert.equal(ext.settings[0].id, "PAL.ParThreshold");
  class Node { onExecuted() { this.base = true; } }
  await ext.beforeRegisterNodeDef(Node, { name: "PALDetect" });
  const n = new Node();
  n.onExecuted({ pal_par: [0.01, 0.5], images: [] });
  assert.equal(n.base, true, "the original onExecuted still runs");
  const ctx = fakeCtx();
  n.onDrawForeground(ctx);
  assert.deepEqual(ctx.drawn.map((d) => d.text), ["#0 PAR 1.00%", "#1 PAR 50.00%"]);
  assert.notEqual(ctx.drawn[0].color, ctx.drawn[1].color);
});

test("other nodes are untouched and odd outputs do not throw", async () => {
  const ext = await loadExtension(undefined);
  class Other {}
  await ext.beforeRegisterNodeDef(Other, { name: "KSampler" });
  assert.equal(Other.prototype.onExecuted, undefined);
  class Node {}
  await ext.beforeRegisterNodeDef(Node, { name: "PALScore" });
  const n = new Node();
  n.onExecuted(undefined);
  n.onExecuted({ text: ["no pal_par from an older backend"] });
  const ctx = fakeCtx();
  n.onDrawForeground(ctx);
  assert.deepEqual(ctx.drawn, []);
  ext.setup();
});
