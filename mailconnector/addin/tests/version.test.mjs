import assert from "node:assert/strict";
import { test } from "node:test";

import { compareVersions, olderThan, parseVersion } from "../js/version.js";

test("versions compare part by part as numbers", () => {
  assert.equal(compareVersions("26.11.0", "26.9.9"), 1);
  assert.equal(compareVersions("1.10", "1.9.3"), 1);
  assert.equal(compareVersions("1.0", "1.0.0"), 0);
  assert.equal(compareVersions("1.0.0.1", "1.0.0"), 1);
  assert.ok(olderThan("26.10.0", "26.11.0"));
  assert.ok(!olderThan("26.11.0", "26.11.0"));
});

test("a pre-release suffix and odd input do not throw", () => {
  assert.deepEqual(parseVersion("2.1.0-beta.3"), [2, 1, 0]);
  assert.deepEqual(parseVersion(""), [0, 0, 0]);
  assert.deepEqual(parseVersion(undefined), [0, 0, 0]);
  assert.ok(olderThan("garbage", "0.0.1"));
});
