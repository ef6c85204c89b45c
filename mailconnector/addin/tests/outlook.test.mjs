import assert from "node:assert/strict";
import { test } from "node:test";

import { OfficeError, adapter, openDialog, readMessageId, roaming } from "../js/outlook.js";

// The shapes office.js gives: callbacks with {status, value, error}.
const ok = (value) => ({ status: "succeeded", value });
const failed = (code, message) => ({ status: "failed", error: { code, message } });

function office(item, extra = {}) {
  return {
    CoercionType: { Text: "text", Html: "html" },
    EventType: {
      DialogMessageReceived: "dialogMessageReceived",
      DialogEventReceived: "dialogEventReceived",
    },
    context: { mailbox: { item }, ...extra },
  };
}

test("Outlook's callbacks become promises, and its failures OfficeErrors", async () => {
  const item = {
    getAsFileAsync: (done) => done(ok("QUJD")),
    body: { getAsync: (type, done) => done(ok(type === "html" ? "<p>x</p>" : "x")) },
    getAttachmentContentAsync: (id, done) => done(failed(9043, `no ${id}`)),
  };
  const outlook = adapter(office(item), item);
  assert.equal(await outlook.getAsFile(), "QUJD");
  assert.equal(await outlook.bodyHtml(), "<p>x</p>");
  assert.equal(await outlook.bodyText(), "x");
  await assert.rejects(
    outlook.attachmentContent("a1"),
    (e) => e instanceof OfficeError && e.code === 9043,
  );
});

test("the Message-ID comes from the item, else from its internet headers", async () => {
  assert.equal(await readMessageId(office({ internetMessageId: "<a@b>" })), "<a@b>");
  const sent = {
    internetMessageId: "",
    getAllInternetHeadersAsync: (done) => done(ok("Message-ID: <sent@crm.test>\r\n")),
  };
  assert.equal(await readMessageId(office(sent)), "<sent@crm.test>");
  assert.equal(await readMessageId(office({ internetMessageId: "" })), "");
  assert.equal(await readMessageId(office(null)), "");
});

test("the dialog hands its messages and its closing to the pane", async () => {
  const handlers = {};
  let opened;
  const ui = {
    displayDialogAsync: (url, options, done) => {
      opened = { url, options };
      done(ok({ addEventHandler: (type, h) => (handlers[type] = h), close() {} }));
    },
  };
  const seen = [];
  await openDialog(office(null, { ui }), "https://crm/sso", {
    onMessage: (m) => seen.push(["message", m]),
    onEvent: (code) => seen.push(["event", code]),
  });
  assert.equal(opened.url, "https://crm/sso");
  assert.equal(opened.options.promptBeforeOpen, false);
  handlers.dialogMessageReceived({ message: "{}" });
  handlers.dialogEventReceived({ error: 12006 });
  assert.deepEqual(seen, [
    ["message", "{}"],
    ["event", 12006],
  ]);
  await assert.rejects(openDialog(office(null), "x", {}), OfficeError);
});

test("roaming settings are saved after each change", () => {
  const values = {};
  let saves = 0;
  const settings = {
    get: (k) => values[k],
    set: (k, v) => (values[k] = v),
    remove: (k) => delete values[k],
    saveAsync: () => (saves += 1),
  };
  const r = roaming(office(null, { roamingSettings: settings }));
  r.set("crmUrl", "https://crm.example.com");
  assert.equal(r.get("crmUrl"), "https://crm.example.com");
  r.set("crmUrl", null);
  assert.equal(r.get("crmUrl"), undefined);
  assert.equal(saves, 2);
  assert.equal(roaming(office(null)).get("x"), undefined);
});
