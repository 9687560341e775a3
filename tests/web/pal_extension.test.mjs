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

// Minimal DOM stand-in: enough for the DOM widget (createElement, textContent, style, children).
function fakeDocument() {
  const make = (tag) => {
    const el = {
      tagName: tag, children: [], style: {}, className: "", textContent: "",
      ownerDocument: null,
      appendChild(c) { this.children.push(c); this.textContent += (this.textContent ? "\n" : "") + c.textContent; return c; },
      replaceChildren(...cs) { this.children = []; this.textContent = ""; cs.forEach((c) => this.appendChild(c)); },
    };
    el.ownerDocument = doc;
    return el;
  };
  const doc = { createElement: make, querySelector: () => null };
  return doc;
}

class WidgetNode {
  constructor() { this.widgets = []; this.id = 3; }
  addDOMWidget(name, type, element, options) {
    const w = { name, type, element, options };
    Object.defineProperty(w, "value", {
      get() { return this.options.getValue?.() ?? ""; },
      set(v) { this.options.setValue?.(v); this.callback?.(this.value); },
    });
    this.widgets.push(w);
    return w;
  }
}

test("a read-only, never-serialised PAR widget shows the values in both frontend modes", async () => {
  globalThis.document = fakeDocument();
  try {
    const ext = await loadExtension(0.1);
    class Node extends WidgetNode {}
    await ext.beforeRegisterNodeDef(Node, { name: "PALAutoFix" });
    const n = new Node();
    n.onNodeCreated();
    const w = n.widgets.find((x) => x.name === "pal_par");
    assert.ok(w, "widget created at node creation, so Nodes 2.0 renders it");
    assert.equal(w.serialize, false);
    assert.equal(w.options.serialize, false);
    assert.equal(w.type, "markdown"); // the type Nodes 2.0 renders as a text view
    n.onExecuted({ pal_par: [0.01, 0.2] });
    assert.equal(w.__palEl.textContent, "#0 PAR 1.00%\n#1 PAR 20.00%");
    assert.deepEqual(w.__palEl.children.map((c) => c.style.color), ["#3fb950", "#f85149"]);
    assert.match(w.value, /PAR 1\.00%.*PAR 20\.00%/);
    w.value = "typed by a user or a loaded workflow";
    assert.match(w.value, /PAR 1\.00%/, "read-only");
    n.onNodeCreated();
    assert.equal(n.widgets.filter((x) => x.name === "pal_par").length, 1, "never two widgets");
  } finally {
    delete globalThis.document;
  }
});

test("frontends without DOM widgets get a plain text widget; none at all still works", async () => {
  const ext = await loadExtension(0.1);
  class TextNode {
    constructor() { this.widgets = []; }
    addWidget(type, name, value, cb, options) {
      const w = { type, name, value, callback: cb, options };
      this.widgets.push(w);
      return w;
    }
  }
  await ext.beforeRegisterNodeDef(TextNode, { name: "PALScore" });
  const n = new TextNode();
  n.onNodeCreated();
  n.onExecuted({ pal_par: [0.5] });
  const w = n.widgets[0];
  assert.equal(w.type, "text");
  assert.equal(w.serialize, false);
  assert.equal(w.value, "PAR 50.00%");
  w.value = "edited";
  w.callback();
  assert.equal(w.value, "PAR 50.00%", "edits snap back");
  class Bare {}
  await ext.beforeRegisterNodeDef(Bare, { name: "PALDetect" });
  const b = new Bare();
  b.onNodeCreated();
  b.onExecuted({ pal_par: [0.5] });
  const ctx = fakeCtx();
  b.onDrawForeground(ctx);
  assert.deepEqual(ctx.drawn.map((d) => d.text), ["PAR 50.00%"]);
});

test("Nodes 2.0: the rendered markdown view of the widget gets the coloured lines, and follows the setting", async () => {
  const doc = fakeDocument();
  const box = doc.createElement("div");
  let asked = "";
  doc.querySelector = (sel) => { asked = sel; return box; };
  globalThis.document = doc;
  try {
    let setting = 0.05;
    const ext = await loadExtension(undefined);
    globalThis.__palApp.extensionManager.setting.get = () => setting;
    class Node extends WidgetNode {}
    await ext.beforeRegisterNodeDef(Node, { name: "PALScore" });
    const n = new Node();
    n.onNodeCreated();
    n.onExecuted({ pal_par: [0.2] });
    assert.equal(asked, '[data-node-id="3"] .comfy-markdown-content');
    assert.equal(box.textContent, "PAR 20.00%");
    assert.equal(box.children[0].style.color, "#f85149");
    setting = 0.5;
    globalThis.__palApp.graph = { _nodes: [n] };
    ext.settings[0].onChange(0.5);
    assert.equal(box.children[0].style.color, "#3fb950", "recoloured when the threshold changes");
  } finally {
    delete globalThis.document;
    delete globalThis.__palApp.graph;
  }
});
