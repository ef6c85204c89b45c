import assert from "node:assert/strict";
import { test } from "node:test";

import {
  FIELDS,
  PARTIAL,
  WHOLE,
  addressesOf,
  buildForm,
  capture,
  chooseStrategy,
  formatAddress,
  messageIdFromHeaders,
  waitForMessageId,
} from "../js/capture.js";

// Outlook's requirement-set check, for a host that has Mailbox up to `have`.
function host(have) {
  return (name, version) => {
    if (name !== "Mailbox") return false;
    const [a, b] = [have, version].map((v) => v.split(".").map(Number));
    return a[0] > b[0] || (a[0] === b[0] && a[1] >= b[1]);
  };
}

const EML = "From: Jane <jane@acme.test>\r\nMessage-ID: <m1@acme.test>\r\n\r\nHi\r\n";
const ITEM = {
  subject: "Order 4711",
  from: { displayName: "Jane Doe", emailAddress: "jane@acme.test" },
  sender: { displayName: "Jane Doe", emailAddress: "jane@acme.test" },
  to: [{ displayName: "Alice", emailAddress: "alice@crm.test" }],
  cc: [{ displayName: "Doe, John", emailAddress: "john@acme.test" }],
  dateTimeCreated: new Date("2026-11-23T08:15:00Z"),
  attachments: [
    { id: "a1", name: "order.pdf", contentType: "application/pdf", isInline: false },
    { id: "a2", name: "logo.png", contentType: "image/png", isInline: true },
    { id: "a3", name: "Forwarded", contentType: "message/rfc822", isInline: false },
    { id: "a4", name: "big.zip", contentType: "application/zip", isInline: false },
  ],
};

function fakeOutlook() {
  const asked = [];
  return {
    asked,
    getAsFile: async () => {
      asked.push("file");
      return Buffer.from(EML).toString("base64");
    },
    bodyText: async () => "Hi",
    bodyHtml: async () => "<p>Hi</p>",
    attachmentContent: async (id) => {
      asked.push(id);
      if (id === "a1") return { format: "base64", content: Buffer.from("%PDF").toString("base64") };
      if (id === "a3") return { format: "eml", content: "Subject: fwd\r\n\r\nx" };
      return { format: "url", content: "https://onedrive.example/big.zip" };
    },
  };
}

test("the capture follows the host's Mailbox requirement set", () => {
  assert.equal(chooseStrategy(host("1.14")), WHOLE);
  assert.equal(chooseStrategy(host("1.15")), WHOLE);
  assert.equal(chooseStrategy(host("1.13")), FIELDS);
  assert.equal(chooseStrategy(host("1.8")), FIELDS);
  assert.equal(chooseStrategy(host("1.7")), PARTIAL);
  assert.equal(chooseStrategy(host("1.5")), PARTIAL);
  assert.equal(
    chooseStrategy(() => {
      throw new Error("no requirements API");
    }),
    PARTIAL,
  );
});

test("Mailbox 1.14: the whole message, byte for byte, and nothing else", async () => {
  const outlook = fakeOutlook();
  const captured = await capture(WHOLE, ITEM, outlook);
  assert.deepEqual(outlook.asked, ["file"]);
  assert.equal(Buffer.from(captured.eml).toString(), EML);
  const form = buildForm(
    captured,
    { messageId: "<m1@acme.test>", links: [{ module: "Companies", id: 3 }] },
    { FormData, Blob },
  );
  assert.deepEqual(JSON.parse(form.get("links")), [{ module: "Companies", id: 3 }]);
  const eml = form.get("eml");
  assert.equal(eml.name, "message.eml");
  assert.equal(eml.type, "message/rfc822");
  assert.equal(Buffer.from(await eml.arrayBuffer()).toString(), EML);
  assert.equal(form.get("message_id"), null);
});

test("Mailbox 1.8: fields, bodies and files; inline images stay out, cloud files follow", async () => {
  const outlook = fakeOutlook();
  const steps = [];
  const captured = await capture(FIELDS, ITEM, outlook, {
    onStep: (s, i) => steps.push(i?.name || s),
  });
  assert.deepEqual(outlook.asked, ["a1", "a3", "a4"]);
  assert.deepEqual(steps, ["reading", "order.pdf", "Forwarded", "big.zip"]);
  assert.deepEqual(captured.pending, ["big.zip"]);
  const form = buildForm(captured, { messageId: "<m1@acme.test>", links: [] }, { FormData, Blob });
  assert.equal(form.get("message_id"), "<m1@acme.test>");
  assert.equal(form.get("sender"), "Jane Doe <jane@acme.test>");
  assert.deepEqual(form.getAll("to"), ["Alice <alice@crm.test>"]);
  assert.deepEqual(form.getAll("cc"), ['"Doe, John" <john@acme.test>']);
  assert.equal(form.get("date"), "2026-11-23T08:15:00.000Z");
  assert.equal(form.get("html_body"), "<p>Hi</p>");
  const files = form.getAll("attachments");
  assert.deepEqual(
    files.map((f) => [f.name, f.type]),
    [
      ["order.pdf", "application/pdf"],
      ["Forwarded.eml", "message/rfc822"],
    ],
  );
  assert.equal(Buffer.from(await files[0].arrayBuffer()).toString(), "%PDF");
  assert.deepEqual(form.getAll("attachments_pending"), ["big.zip"]);
  assert.equal(form.get("eml"), null);
});

test("older hosts (phones): fields and bodies, every attachment named as pending", async () => {
  const outlook = fakeOutlook();
  const captured = await capture(PARTIAL, ITEM, outlook);
  assert.deepEqual(outlook.asked, []);
  assert.deepEqual(captured.pending, ["order.pdf", "Forwarded", "big.zip"]);
  const form = buildForm(captured, { messageId: "<m1@acme.test>", links: [] }, { FormData, Blob });
  assert.deepEqual(form.getAll("attachments"), []);
  assert.equal(form.get("text_body"), "Hi");
});

test("suggestions are asked for the sender first, then recipients", () => {
  assert.deepEqual(addressesOf(ITEM), [
    { email: "jane@acme.test", role: "from" },
    { email: "alice@crm.test", role: "to" },
    { email: "john@acme.test", role: "cc" },
  ]);
  const onBehalf = { ...ITEM, sender: { emailAddress: "assistant@acme.test" } };
  assert.deepEqual(addressesOf(onBehalf)[1], { email: "assistant@acme.test", role: "sender" });
});

test("addresses are written the way RFC 5322 wants them", () => {
  assert.equal(
    formatAddress({ displayName: "Jane Doe", emailAddress: "j@x.test" }),
    "Jane Doe <j@x.test>",
  );
  assert.equal(formatAddress({ displayName: "j@x.test", emailAddress: "j@x.test" }), "j@x.test");
  assert.equal(
    formatAddress({ displayName: 'A "B" C', emailAddress: "a@x.test" }),
    '"A \\"B\\" C" <a@x.test>',
  );
  assert.equal(
    formatAddress({ displayName: "Müller", emailAddress: "m@x.test" }),
    '"Müller" <m@x.test>',
  );
  assert.equal(formatAddress(null), "");
});

test("a just-sent email's Message-ID is asked for again, then given up on", async () => {
  const waits = [];
  let reads = 0;
  const later = await waitForMessageId(async () => (++reads < 3 ? "" : "<sent@crm.test>"), {
    attempts: 4,
    delayMs: 100,
    sleep: async (ms) => waits.push(ms),
  });
  assert.equal(later, "<sent@crm.test>");
  assert.deepEqual(waits, [100, 200]);

  waits.length = 0;
  const never = await waitForMessageId(async () => "", {
    attempts: 4,
    delayMs: 100,
    sleep: async (ms) => waits.push(ms),
  });
  assert.equal(never, "");
  assert.deepEqual(waits, [100, 200, 300]);
});

test("the Message-ID is found in raw internet headers", () => {
  const headers = "Received: x\r\nMessage-Id:\r\n <abc@mail.test>\r\nSubject: y\r\n";
  assert.equal(
    messageIdFromHeaders("Subject: y\r\nMessage-ID: <abc@mail.test>\r\n"),
    "<abc@mail.test>",
  );
  assert.equal(messageIdFromHeaders("Subject: y\r\n"), "");
  assert.equal(messageIdFromHeaders(headers), "<abc@mail.test>"); // folded (RFC 5322 2.2.3)
});
