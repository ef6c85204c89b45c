import assert from "node:assert/strict";
import { test } from "node:test";

import {
  formatBytes,
  linkOutcome,
  safeHref,
  sameMessageId,
  searchRows,
  suggestionRows,
} from "../js/model.js";

const MODULES = [
  { name: "Contacts", singular: "Contact", plural: "Contacts" },
  { name: "Companies", singular: "Company", plural: "Companies" },
];
const jane = {
  module: "Contacts",
  id: 1,
  number: "CON1",
  label: "Jane Doe",
  url: "/c/1",
  reason: "from address",
  already_linked: false,
};
const acme = {
  module: "Companies",
  id: 2,
  number: "CMP2",
  label: "ACME Ltd",
  url: "/m/2",
  reason: "sender's company domain",
  already_linked: false,
};

test("suggestion rows keep the CRM's order and say why in words", () => {
  const rows = suggestionRows([jane, acme], { modules: MODULES });
  assert.deepEqual(
    rows.map((r) => [r.label, r.moduleLabel, r.number, r.reason, r.linked]),
    [
      ["Jane Doe", "Contact", "CON1", "Sender", false],
      ["ACME Ltd", "Company", "CMP2", "Sender's company, by domain", false],
    ],
  );
});

test("a record the email is on is marked linked, by the CRM's flag or by the look-up", () => {
  const flagged = suggestionRows([{ ...jane, already_linked: true }, acme], { modules: MODULES });
  assert.deepEqual(
    flagged.map((r) => r.linked),
    [true, false],
  );
  const looked = suggestionRows([jane, acme], {
    modules: MODULES,
    linked: [{ module: "Companies", id: 2 }],
  });
  assert.deepEqual(
    looked.map((r) => r.linked),
    [false, true],
  );
});

test("rows of modules the user may not link to are left out, duplicates once", () => {
  const rows = suggestionRows([jane, acme, jane], { modules: [MODULES[0]] });
  assert.deepEqual(
    rows.map((r) => r.label),
    ["Jane Doe"],
  );
  assert.deepEqual(searchRows([jane], { modules: MODULES })[0].reason, "");
});

test("the outcome of a link says where and what was saved", () => {
  const records = [
    { module: "Companies", id: 2, label: "ACME Ltd", url: "/m/2", newly_linked: true },
  ];
  assert.equal(
    linkOutcome({ records, attachments_saved: 3, completeness: "full", created: true }).text,
    "Linked to ACME Ltd — 3 attachments saved to Documents.",
  );
  assert.equal(
    linkOutcome({ records, attachments_saved: 1, completeness: "full" }).text,
    "Linked to ACME Ltd — 1 attachment saved to Documents.",
  );
  assert.equal(
    linkOutcome({ records, attachments_saved: 0, completeness: "full" }).text,
    "Linked to ACME Ltd.",
  );
  const partial = linkOutcome(
    { records, attachments_saved: 0, completeness: "partial" },
    { pending: ["a.pdf", "b.pdf"] },
  );
  assert.equal(
    partial.text,
    "Linked to ACME Ltd — 2 attachments follow when you open this email in Outlook on a " +
      "computer and add them.",
  );
  assert.equal(partial.partial, true);
  assert.equal(
    linkOutcome({
      records: [{ ...records[0], newly_linked: false }],
      completed: true,
      attachments_saved: 2,
      completeness: "full",
    }).text,
    "The attachments were added to ACME Ltd — 2 attachments saved to Documents.",
  );
  assert.equal(
    linkOutcome({
      records: [{ ...records[0], newly_linked: false }],
      completed: false,
      attachments_saved: 2,
    }).text,
    "Already linked to ACME Ltd.",
  );
  const two = [...records, { module: "Contacts", id: 1, label: "Jane Doe", newly_linked: true }];
  assert.match(
    linkOutcome({ records: two, attachments_saved: 0 }).text,
    /^Linked to ACME Ltd and Jane Doe\./,
  );
});

test("sizes and Message-IDs", () => {
  assert.equal(formatBytes(900), "900 bytes");
  assert.equal(formatBytes(2048), "2 KB");
  assert.equal(formatBytes(5 * 1048576 + 200000), "5.2 MB");
  assert.ok(sameMessageId("<A@B.test>", "a@b.TEST"));
  assert.ok(!sameMessageId("", ""));
});

test("only web addresses become links", () => {
  assert.equal(
    safeHref("https://crm.example.com/Companies/2/"),
    "https://crm.example.com/Companies/2/",
  );
  assert.equal(safeHref("/Companies/2/"), "/Companies/2/");
  assert.equal(safeHref("javascript:alert(1)"), "#");
  assert.equal(safeHref(" JavaScript:alert(1)"), "#");
});
