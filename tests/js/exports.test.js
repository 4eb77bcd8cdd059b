// realtime.js, the one module pages import, exports exactly what realtime.d.ts declares,
// and each export is the implementation check.ts checks against its declaration.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import * as realtime from "../../realtime/static/realtime/realtime.js";
import * as client from "../../realtime/static/realtime/client/client.js";
import * as codes from "../../realtime/static/realtime/client/codes.js";
import * as encoding from "../../realtime/static/realtime/client/encoding.js";
import * as options from "../../realtime/static/realtime/client/options.js";
import * as policy from "../../realtime/static/realtime/client/policy.js";
import * as presence from "../../realtime/static/realtime/client/presence.js";
import * as subscription from "../../realtime/static/realtime/client/subscription.js";

const declarations = readFileSync(
  new URL("../../realtime/static/realtime/realtime.d.ts", import.meta.url),
  "utf8",
);

test("realtime.js exports the values realtime.d.ts declares, no more, no fewer", () => {
  const declared = [...declarations.matchAll(/^export declare (?:const|function|class) (\w+)/gm)];
  assert.deepEqual(Object.keys(realtime).sort(), declared.map((match) => match[1]).sort());
});

test("each export of realtime.js is the implementation in client/", () => {
  const modules = [client, codes, encoding, options, policy, presence, subscription];
  for (const [name, value] of Object.entries(realtime)) {
    const homes = modules.filter((module) => module[name] === value);
    assert.equal(homes.length, 1, `${name}: not (only) from the modules check.ts checks`);
  }
});
