// The CRM's add-in API (/api/addin/v1/): JSON in and out, multipart for the email itself,
// problem+json errors, bearer tokens refreshed before they expire and once after a 401.
//
// Pure: fetch, the token store and the clock are handed in, so node's test runner drives it.

import { API_PREFIX, REFRESH_EARLY_MS } from "./config.js";
import { ApiError, NetworkError } from "./errors.js";

export class ApiClient {
  constructor({ baseUrl, fetch, tokens, version, now = () => Date.now() }) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.fetch = fetch;
    this.tokens = tokens;
    this.version = version;
    this.now = now;
    this.refreshing = null;
  }

  url(path, query) {
    const url = `${this.baseUrl}${API_PREFIX}${path}`;
    if (!query) return url;
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null && v !== "") params.set(k, v);
    }
    const text = params.toString();
    return text ? `${url}?${text}` : url;
  }

  // --- calls -------------------------------------------------------------------------------

  meta() {
    return this.request("GET", "meta", { auth: false });
  }

  async login(username, password) {
    const answer = await this.request("POST", "auth/login", {
      auth: false,
      json: { username, password },
    });
    if (answer.status !== "mfa_required") this.tokens.set(answer);
    return answer;
  }

  async verifyMfa(mfaToken, code) {
    const answer = await this.request("POST", "auth/mfa", {
      auth: false,
      json: { mfa_token: mfaToken, code },
    });
    this.tokens.set(answer);
    return answer;
  }

  async redeemSso(code, codeVerifier) {
    const answer = await this.request("POST", "auth/sso/token", {
      auth: false,
      json: { code, code_verifier: codeVerifier },
    });
    this.tokens.set(answer);
    return answer;
  }

  async logout() {
    const stored = this.tokens.get();
    this.tokens.clear();
    if (!stored) return;
    // The refresh token ends the session even when the access token has expired.
    try {
      await this.request("POST", "auth/logout", {
        auth: false,
        json: { refresh_token: stored.refresh_token },
      });
    } catch {
      // Logged out here whatever the CRM says; its session ends on its own.
    }
  }

  modules() {
    return this.request("GET", "modules");
  }

  suggestions({ addresses, mailboxOwner, messageId }) {
    return this.request("POST", "suggestions", {
      json: { addresses, mailbox_owner: mailboxOwner || "", message_id: messageId || "" },
    });
  }

  search(module, q, cursor) {
    return this.request("GET", `modules/${encodeURIComponent(module)}/records`, {
      query: { q, cursor },
    });
  }

  lookup(messageId) {
    return this.request("GET", "emails/lookup", { query: { message_id: messageId } });
  }

  link(form, messageId) {
    const headers = messageId ? { "Idempotency-Key": messageId } : {};
    return this.request("POST", "emails", { form, headers });
  }

  // --- plumbing ----------------------------------------------------------------------------

  isLoggedIn() {
    return Boolean(this.tokens.get());
  }

  async request(method, path, { auth = true, json, form, query, headers = {} } = {}) {
    if (auth) await this.freshToken();
    try {
      return await this.send(method, path, { auth, json, form, query, headers });
    } catch (error) {
      // An access token can expire between the check above and the CRM's clock: refresh once.
      if (auth && error instanceof ApiError && error.code === "token_expired") {
        await this.refresh();
        return this.send(method, path, { auth, json, form, query, headers });
      }
      throw error;
    }
  }

  async send(method, path, { auth, json, form, query, headers }) {
    const url = this.url(path, query);
    const init = {
      method,
      headers: { Accept: "application/json", "X-Addin-Version": this.version, ...headers },
      credentials: "omit",
      cache: "no-store",
    };
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    } else if (form !== undefined) {
      init.body = form; // the browser writes the multipart boundary
    }
    if (auth) {
      const stored = this.tokens.get();
      if (!stored) throw new ApiError({ status: 401, code: "not_authenticated", detail: "" });
      init.headers.Authorization = `Bearer ${stored.access_token}`;
    }
    let response;
    try {
      response = await this.fetch(url, init);
    } catch (cause) {
      throw new NetworkError(this.baseUrl, cause);
    }
    return readAnswer(response, auth ? this.tokens : null);
  }

  async freshToken() {
    const stored = this.tokens.get();
    if (!stored) throw new ApiError({ status: 401, code: "not_authenticated", detail: "" });
    if (stored.expires_at - REFRESH_EARLY_MS <= this.now()) await this.refresh();
  }

  // One refresh at a time: a refresh token works once, and sending it twice ends the session.
  refresh() {
    if (!this.refreshing) {
      this.refreshing = this.doRefresh().finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  async doRefresh() {
    const stored = this.tokens.get();
    if (!stored) throw new ApiError({ status: 401, code: "not_authenticated", detail: "" });
    let answer;
    try {
      answer = await this.send("POST", "auth/refresh", {
        auth: false,
        json: { refresh_token: stored.refresh_token },
        headers: {},
      });
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        this.tokens.clear();
        // However the refresh failed, for the user the session is over.
        throw new ApiError({ ...error, status: 401, code: "session_expired", extra: error.extra });
      }
      throw error;
    }
    this.tokens.set(answer);
    return answer;
  }
}

async function readAnswer(response, tokens) {
  if (response.status === 204) return null;
  const type = (response.headers.get("Content-Type") || "").toLowerCase();
  let body = null;
  if (type.includes("json")) {
    try {
      body = await response.json();
    } catch {
      body = null;
    }
  }
  if (response.ok) return body;
  const problem = body && typeof body === "object" && body.code ? body : null;
  const { type: _t, title, status: _s, detail, code, fields, ...extra } = problem || {};
  const error = new ApiError({
    status: response.status,
    code: code || `http_${response.status}`,
    title: title || response.statusText || "",
    detail: detail || "",
    fields: fields || null,
    extra,
  });
  if (tokens && response.status === 401 && error.code !== "token_expired") tokens.clear();
  return Promise.reject(error);
}
