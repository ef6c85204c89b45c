import assert from "node:assert/strict";
import { webcrypto } from "node:crypto";
import { test } from "node:test";

import {
  authorizeUrl,
  base64url,
  challengeFor,
  dialogErrorText,
  randomToken,
  readDialogMessage,
} from "../js/sso.js";

test("the S256 challenge is RFC 7636's own example", async () => {
  // RFC 7636 Appendix B.
  const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
  assert.equal(
    await challengeFor(verifier, webcrypto),
    "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
  );
});

test("verifiers are 43+ unreserved characters and differ", () => {
  const a = randomToken(webcrypto, 48);
  assert.match(a, /^[A-Za-z0-9_-]{64}$/);
  assert.notEqual(a, randomToken(webcrypto, 48));
  assert.equal(base64url(new Uint8Array([251, 255])), "-_8");
});

test("the authorize URL carries the provider, challenge, state and the pane's origin", () => {
  const url = new URL(
    authorizeUrl("https://crm.example.com", {
      provider: "entra",
      challenge: "c",
      state: "s",
      origin: "https://addin.example",
      loginHint: "alice",
    }),
  );
  assert.equal(url.pathname, "/api/addin/v1/auth/sso/authorize");
  assert.deepEqual(Object.fromEntries(url.searchParams), {
    provider: "entra",
    code_challenge: "c",
    code_challenge_method: "S256",
    state: "s",
    origin: "https://addin.example",
    login_hint: "alice",
  });
});

test("the dialog's message is trusted only with this attempt's state", () => {
  const ok = JSON.stringify({ type: "crm-sso", status: "ok", code: "abc", state: "s1" });
  assert.deepEqual(readDialogMessage(ok, "s1"), { ok: true, code: "abc" });
  assert.equal(readDialogMessage(ok, "s2").ok, false);
  const refused = JSON.stringify({
    type: "crm-sso",
    status: "error",
    error: "sso_unknown_user",
    detail: "No CRM account for you.",
    state: "s1",
  });
  assert.deepEqual(readDialogMessage(refused, "s1"), {
    ok: false,
    detail: "No CRM account for you.",
    error: "sso_unknown_user",
  });
  assert.equal(readDialogMessage("not json", "s1"), null);
  assert.equal(readDialogMessage(JSON.stringify({ type: "other" }), "s1"), null);
  assert.match(dialogErrorText(12006), /cancelled/);
});
