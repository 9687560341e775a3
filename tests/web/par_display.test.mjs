// Run with: node --test tests/web/
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  COLORS,
  DEFAULT_THRESHOLD,
  badgeLines,
  clampThreshold,
  extractPars,
  formatPar,
  isPalNode,
  parColor,
  parLevel,
} from "../../web/par_display.js";

test("clampThreshold accepts numbers and numeric strings, falls back otherwise", () => {
  assert.equal(clampThreshold(0.1), 0.1);
  assert.equal(clampThreshold("0.2"), 0.2);
  assert.equal(clampThreshold(5), 1);
  assert.equal(clampThreshold(-1), 0);
  assert.equal(clampThreshold(undefined), DEFAULT_THRESHOLD);
  assert.equal(clampThreshold("abc"), DEFAULT_THRESHOLD);
  assert.equal(clampThreshold(Number.NaN), DEFAULT_THRESHOLD);
});

test("parLevel splits at half the threshold and at the threshold", () => {
  assert.equal(parLevel(0.0, 0.1), "good");
  assert.equal(parLevel(0.05, 0.1), "good");
  assert.equal(parLevel(0.051, 0.1), "warn");
  assert.equal(parLevel(0.1, 0.1), "warn");
  assert.equal(parLevel(0.1001, 0.1), "bad");
  assert.equal(parLevel(null, 0.1), "unknown");
  assert.equal(parColor(0.9, 0.1), COLORS.bad);
});

test("formatPar prints a percentage", () => {
  assert.equal(formatPar(0.01234), "1.23%");
  assert.equal(formatPar(1), "100.00%");
  assert.equal(formatPar(undefined), "n/a");
});

test("extractPars tolerates old/new backend shapes", () => {
  assert.deepEqual(extractPars({ pal_par: [0.1, 0.2] }), [0.1, 0.2]);
  assert.deepEqual(extractPars({ pal_par: [[0.1], ["0.3"], null, "x"] }), [0.1, 0.3]);
  assert.deepEqual(extractPars({ pal_par: 0.5 }), [0.5]);
  assert.deepEqual(extractPars({ text: ["PAR 0.1"] }), []);
  assert.deepEqual(extractPars(null), []);
  assert.deepEqual(extractPars("nope"), []);
});

test("badgeLines labels batches and caps long lists", () => {
  assert.deepEqual(badgeLines([0.01], 0.05), [{ text: "PAR 1.00%", color: COLORS.good }]);
  const many = badgeLines(Array.from({ length: 12 }, () => 0.5), 0.05, 8);
  assert.equal(many.length, 9);
  assert.equal(many[0].text, "#0 PAR 50.00%");
  assert.equal(many[0].color, COLORS.bad);
  assert.equal(many[8].text, "+4 more");
});

test("isPalNode matches the PAR-reporting node types only", () => {
  assert.equal(isPalNode({ name: "PALDetect" }), true);
  assert.equal(isPalNode({ name: "PALZoomCrop" }), false);
  assert.equal(isPalNode({ name: "KSampler" }), false);
  assert.equal(isPalNode(undefined), false);
});

test("parText and worstLevel", async () => {
  const { parText, worstLevel } = await import("../../web/par_display.js");
  assert.equal(parText([]), "");
  assert.equal(parText([0.01]), "PAR 1.00%");
  assert.equal(parText([0.01, 0.02]), "#0 PAR 1.00% · #1 PAR 2.00%");
  assert.equal(worstLevel([0.01, 0.2], 0.1), "bad");
  assert.equal(worstLevel([0.01], 0.1), "good");
  assert.equal(worstLevel([], 0.1), "unknown");
});
