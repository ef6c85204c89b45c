import assert from "node:assert/strict";
import { test } from "node:test";

import { ApiError, NetworkError, describe, disposition } from "../js/errors.js";
import { normaliseCrmUrl, preferences, tokenStore } from "../js/storage.js";
import { memoryStorage } from "./helpers.mjs";

const problem = (status, code, detail = "", extra = {}, fields = null) =>
  new ApiError({ status, code, detail, extra, fields });

test("errors are said in words, never as a code or a trace", () => {
  assert.equal(describe(problem(401, "invalid_credentials", "x")), "Wrong username or password.");
  assert.equal(
    describe(problem(429, "rate_limited", "", { retry_after: 1 })),
    "Too many attempts. Try again in 1 second.",
  );
  assert.equal(
    describe(problem(413, "email_too_large", "", { max_bytes: 41943040 })),
    "This email is too large for the CRM (it accepts up to 40 MB).",
  );
  assert.match(describe(problem(401, "mfa_invalid", "", { attempts_left: 2 })), /2 tries left\.$/);
  assert.match(describe(problem(403, "record_not_editable")), /read this record but not change it/);
  assert.equal(
    describe(
      problem(
        400,
        "validation_error",
        "Some fields are invalid.",
        {},
        { links: "Choose at least one record." },
      ),
    ),
    "Choose at least one record.",
  );
  assert.equal(
    describe(problem(500, "server_error")),
    "The CRM ran into an error; it was logged. Try again in a moment.",
  );
  assert.equal(
    describe(problem(502, "http_502")),
    "The CRM answered with an error (502). Try again.",
  );
  assert.match(
    describe(new NetworkError("https://crm.example.com"), { crmUrl: "https://crm.example.com" }),
    /^The CRM at https:\/\/crm\.example\.com cannot be reached\./,
  );
});

test("what the pane does about each kind of error", () => {
  assert.equal(disposition(problem(401, "session_expired")), "login");
  assert.equal(disposition(problem(401, "token_invalid")), "login");
  assert.equal(disposition(problem(401, "invalid_credentials")), "inline");
  assert.equal(disposition(problem(426, "addin_outdated")), "outdated");
  assert.equal(disposition(problem(403, "license_inactive")), "license");
  assert.equal(disposition(problem(403, "user_not_licensed")), "license");
  assert.equal(disposition(problem(403, "record_not_editable")), "inline");
  assert.equal(disposition(new NetworkError("x")), "unreachable");
});

test("what is remembered: tokens per CRM, address and username; never a password", () => {
  const storage = memoryStorage();
  const tokens = tokenStore(storage, "https://crm.example.com", () => 1000);
  const saved = tokens.set({
    access_token: "a",
    refresh_token: "r",
    expires_in: 60,
    user: { username: "alice" },
  });
  assert.equal(saved.expires_at, 61_000);
  assert.equal(tokenStore(storage, "https://other.example.com").get(), null);
  tokens.clear();
  assert.equal(tokens.get(), null);
  const prefs = preferences(storage);
  prefs.update({ crmUrl: "https://crm.example.com" });
  assert.deepEqual(prefs.update({ username: "alice" }), {
    crmUrl: "https://crm.example.com",
    username: "alice",
  });
});

test("a typed CRM address is normalised", () => {
  assert.equal(normaliseCrmUrl("crm.example.com/"), "https://crm.example.com");
  assert.equal(normaliseCrmUrl(" https://CRM.example.com/crm/ "), "https://crm.example.com/crm");
  assert.equal(normaliseCrmUrl("ftp://x"), "");
  assert.equal(normaliseCrmUrl(""), "");
});
