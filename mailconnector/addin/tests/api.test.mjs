import assert from "node:assert/strict";
import { test } from "node:test";

import { ApiClient } from "../js/api.js";
import { ApiError, NetworkError, disposition } from "../js/errors.js";
import { tokenStore } from "../js/storage.js";
import { json, memoryStorage, problem, scriptedFetch } from "./helpers.mjs";

const BASE = "https://crm.example.com";
const TOKENS = (n) => ({
  access_token: `access-${n}`,
  refresh_token: `refresh-${n}`,
  token_type: "Bearer",
  expires_in: 300,
  session_id: 7,
  user: { id: 1, username: "alice", name: "Alice", email: "alice@crm.test" },
});

function client(fetch, { now = () => 1_000_000, loggedIn = true } = {}) {
  const tokens = tokenStore(memoryStorage(), BASE, now);
  if (loggedIn) tokens.set(TOKENS(1));
  return new ApiClient({ baseUrl: `${BASE}/`, fetch, tokens, version: "1.0.0", now });
}

test("every call names the add-in's version; data calls carry the access token", async () => {
  const fetch = scriptedFetch(
    () => json(200, { crm_version: "26.11.0" }),
    () => json(200, [{ name: "Contacts" }]),
  );
  const api = client(fetch);
  await api.meta();
  await api.modules();
  const [meta, modules] = fetch.calls;
  assert.equal(meta.url, `${BASE}/api/addin/v1/meta`);
  assert.equal(meta.headers["X-Addin-Version"], "1.0.0");
  assert.equal(meta.headers.Authorization, undefined);
  assert.equal(modules.headers.Authorization, "Bearer access-1");
});

test("a password login stores the tokens; an mfa answer stores none until the code", async () => {
  const fetch = scriptedFetch(
    () => json(200, { status: "mfa_required", mfa_token: "m", methods: ["totp"], expires_in: 300 }),
    (call) => {
      assert.deepEqual(JSON.parse(call.body), { mfa_token: "m", code: "123456" });
      return json(200, TOKENS(2));
    },
  );
  const api = client(fetch, { loggedIn: false });
  const answer = await api.login("alice", "pw");
  assert.equal(answer.status, "mfa_required");
  assert.equal(api.isLoggedIn(), false);
  await api.verifyMfa("m", "123456");
  assert.equal(api.tokens.get().access_token, "access-2");
});

test("an access token about to expire is refreshed before the call", async () => {
  let now = 1_000_000;
  const fetch = scriptedFetch(
    (call) => {
      assert.equal(call.url, `${BASE}/api/addin/v1/auth/refresh`);
      assert.deepEqual(JSON.parse(call.body), { refresh_token: "refresh-1" });
      return json(200, TOKENS(2));
    },
    (call) => {
      assert.equal(call.headers.Authorization, "Bearer access-2");
      return json(200, []);
    },
  );
  const api = client(fetch, { now: () => now });
  now += 290_000; // 10 s left: inside the early-refresh margin
  await api.modules();
  assert.equal(fetch.calls.length, 2);
});

test("a 401 token_expired is refreshed once and the call retried", async () => {
  const fetch = scriptedFetch(
    () => problem(401, "token_expired", "The access token expired; refresh it."),
    () => json(200, TOKENS(2)),
    () => json(200, { results: [], next_cursor: null }),
  );
  const api = client(fetch);
  const page = await api.search("Contacts", "doe");
  assert.deepEqual(page.results, []);
  assert.equal(fetch.calls[2].url, `${BASE}/api/addin/v1/modules/Contacts/records?q=doe`);
});

test("calls made together share one refresh: a refresh token works only once", async () => {
  let refreshes = 0;
  let now = 1_000_000;
  const fetch = async (url) => {
    if (url.endsWith("/auth/refresh")) {
      refreshes += 1;
      await new Promise((r) => setTimeout(r, 10));
      return json(200, TOKENS(2));
    }
    return json(200, []);
  };
  const api = client(fetch, { now: () => now });
  now += 600_000;
  await Promise.all([api.modules(), api.lookup("<a@b>"), api.modules()]);
  assert.equal(refreshes, 1);
});

test("a refused refresh ends the session: tokens gone, session_expired", async () => {
  const fetch = scriptedFetch(
    () => problem(401, "token_expired"),
    () => problem(401, "session_expired", "This session was unused for too long; log in again."),
  );
  const api = client(fetch);
  await assert.rejects(api.modules(), (error) => {
    assert.ok(error instanceof ApiError);
    assert.equal(error.code, "session_expired");
    assert.equal(error.detail, "This session was unused for too long; log in again.");
    assert.equal(disposition(error), "login");
    return true;
  });
  assert.equal(api.tokens.get(), null);
});

test("a session ended on the CRM clears the tokens", async () => {
  const api = client(scriptedFetch(() => problem(401, "session_expired", "ended")));
  await assert.rejects(api.modules(), { code: "session_expired" });
  assert.equal(api.isLoggedIn(), false);
});

test("problem+json becomes an ApiError with its code, detail and extra members", async () => {
  const api = client(
    scriptedFetch(() =>
      problem(426, "addin_outdated", "update it", { min_addin_version: "2.0.0" }),
    ),
  );
  await assert.rejects(api.modules(), (error) => {
    assert.equal(error.status, 426);
    assert.equal(error.code, "addin_outdated");
    assert.equal(error.extra.min_addin_version, "2.0.0");
    assert.equal(disposition(error), "outdated");
    return true;
  });
});

test("an HTML error page (a proxy's 502) still gives an ApiError", async () => {
  const api = client(
    scriptedFetch(
      () =>
        new Response("<h1>Bad gateway</h1>", {
          status: 502,
          statusText: "Bad Gateway",
          headers: { "Content-Type": "text/html" },
        }),
    ),
  );
  await assert.rejects(api.modules(), { status: 502, code: "http_502" });
});

test("no answer at all is a NetworkError naming the CRM", async () => {
  const api = client(async () => {
    throw new TypeError("Failed to fetch");
  });
  await assert.rejects(api.meta(), (error) => {
    assert.ok(error instanceof NetworkError);
    assert.equal(error.url, BASE);
    assert.equal(disposition(error), "unreachable");
    return true;
  });
});

test("linking posts the multipart body with the Message-ID as Idempotency-Key", async () => {
  const fetch = scriptedFetch(() => json(201, { created: true }));
  const api = client(fetch);
  const form = new FormData();
  form.append("links", "[]");
  await api.link(form, "<m@x>");
  const [call] = fetch.calls;
  assert.equal(call.method, "POST");
  assert.equal(call.headers["Idempotency-Key"], "<m@x>");
  assert.equal(call.headers["Content-Type"], undefined); // the boundary is the browser's
  assert.equal(call.body, form);
});

test("logout forgets the tokens even when the CRM cannot be reached", async () => {
  const api = client(async () => {
    throw new TypeError("offline");
  });
  await api.logout();
  assert.equal(api.isLoggedIn(), false);
});
