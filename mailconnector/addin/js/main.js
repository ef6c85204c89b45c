// The task pane: log in, read the open email, suggest records, link. The decisions live in
// the pure modules next to this one; this file wires them to Office and to the page.

import { ApiClient } from "./api.js";
import {
  PARTIAL,
  WHOLE,
  addressesOf,
  buildForm,
  capture,
  chooseStrategy,
  formatAddress,
  listedAttachments,
  waitForMessageId,
} from "./capture.js";
import {
  ADDIN_VERSION,
  API_VERSION,
  MESSAGE_ID_ATTEMPTS,
  MESSAGE_ID_DELAY_MS,
  MIN_CRM_VERSION,
} from "./config.js";
import { $, el, setText, show, showScreen } from "./dom.js";
import { ApiError, describe, disposition } from "./errors.js";
import {
  formatBytes,
  linkOutcome,
  safeHref,
  sameMessageId,
  searchRows,
  suggestionRows,
} from "./model.js";
import * as outlook from "./outlook.js";
import {
  authorizeUrl,
  challengeFor,
  dialogErrorText,
  randomToken,
  readDialogMessage,
} from "./sso.js";
import { normaliseCrmUrl, preferences, tokenStore } from "./storage.js";
import { olderThan } from "./version.js";

const PARTIAL_KEY = "crmPartialCaptures"; // roaming: Message-IDs saved without attachments
const body = document.body;
// The CRM's address when the CRM serves the pane; a static copy elsewhere has none.
const servedAs = body.dataset.crmUrl || "";
const servedUrl = /^https?:\/\//i.test(servedAs) ? normaliseCrmUrl(servedAs) : "";
const prefs = preferences(window.localStorage);

const state = {
  Office: null,
  crmUrl: servedUrl,
  api: null,
  meta: null,
  modules: [],
  linked: [],
  suggestions: [],
  searchResults: [],
  searchCursor: null,
  messageId: "",
  strategy: PARTIAL,
  generation: 0,
  busy: false,
  mfaToken: "",
  sso: null,
  roaming: null,
};

// --- start -------------------------------------------------------------------------------

function boot() {
  wire();
  if (!window.Office || typeof window.Office.onReady !== "function") {
    blocked(
      "Office is not available",
      "The add-in could not load Office's script from Microsoft. Check the connection and " +
        "open the add-in again from Outlook.",
      { retry: false },
    );
    return;
  }
  window.Office.onReady(() => start(window.Office));
}

async function start(Office) {
  state.Office = Office;
  state.roaming = outlook.roaming(Office);
  outlook.onItemChanged(Office, () => {
    if (!$("main").hidden) loadItem();
  });
  const remembered = prefs.get();
  if (!state.crmUrl) {
    state.crmUrl = normaliseCrmUrl(remembered.crmUrl || state.roaming.get("crmUrl") || "");
  }
  const username = remembered.username || state.roaming.get("username") || "";
  $("username").value = username;
  if (!servedUrl) $("crm-url").value = state.crmUrl;
  if (!state.crmUrl) {
    toLogin("");
    return;
  }
  await connect();
}

// Ask the CRM who it is; stop with a plain sentence if this pane cannot work with it.
async function connect() {
  showScreen("boot");
  setText($("boot-text"), `Connecting to ${state.crmUrl}…`);
  state.api = new ApiClient({
    baseUrl: state.crmUrl,
    fetch: window.fetch.bind(window),
    tokens: tokenStore(window.localStorage, state.crmUrl),
    version: ADDIN_VERSION,
  });
  try {
    state.meta = await state.api.meta();
  } catch (error) {
    state.meta = null;
    fail(error, { where: "boot" });
    return false;
  }
  const meta = state.meta;
  if (olderThan(meta.crm_version, MIN_CRM_VERSION) || !meta.api_versions.includes(API_VERSION)) {
    blocked(
      "CRM not supported",
      `This CRM version (${meta.crm_version}) is not supported by the add-in; ask your CRM ` +
        "partner to update it.",
      { retry: true },
    );
    return false;
  }
  if (meta.min_addin_version && olderThan(ADDIN_VERSION, meta.min_addin_version)) {
    outdated(meta.min_addin_version);
    return false;
  }
  if (meta.license && !meta.license.active) {
    blocked("The connector is not active", meta.license.reason, { retry: true });
    return false;
  }
  renderSsoButtons(meta.login_methods && meta.login_methods.sso);
  if (state.api.isLoggedIn()) await enterMain();
  else toLogin("");
  return true;
}

// --- screens -----------------------------------------------------------------------------

function blocked(title, text, { retry = true, logout = false } = {}) {
  setText($("blocked-title"), title);
  setText($("blocked-text"), text);
  show($("blocked-retry"), retry);
  show($("blocked-logout"), logout);
  show($("blocked-change"), !servedUrl);
  showScreen("blocked");
}

function outdated(minimum) {
  blocked(
    "Update the add-in",
    `This add-in (${ADDIN_VERSION}) is older than this CRM supports` +
      (minimum ? ` (${minimum} or later)` : "") +
      ". Close and reopen it to load the new version; if that does not help, ask your " +
      "Microsoft 365 administrator to update it.",
    { retry: true },
  );
}

function toLogin(message, { tone = "error" } = {}) {
  state.mfaToken = "";
  setText($("login-title"), "Log in to your CRM");
  show($("login-form"), true);
  show($("mfa-form"), false);
  $("password").value = "";
  const note = $("login-message");
  setText(note, message);
  note.dataset.tone = tone;
  show(note, Boolean(message));
  show($("crm-url-field"), !servedUrl);
  show($("crm-fixed"), Boolean(servedUrl));
  setText($("crm-fixed-url"), servedUrl);
  showScreen("login");
  const first =
    !servedUrl && !$("crm-url").value ? "crm-url" : !$("username").value ? "username" : "password";
  $(first).focus();
}

function loginError(message) {
  const note = $("login-message");
  setText(note, message);
  note.dataset.tone = "error";
  show(note, true);
}

// What to do with an error, wherever it happened.
function fail(error, { where = "inline" } = {}) {
  const kind = disposition(error);
  if (kind === "login") {
    state.api && state.api.tokens.clear();
    const detail = error.detail ? ` ${error.detail}` : "";
    toLogin(`Your CRM session has ended.${detail}`.trim());
    return;
  }
  if (kind === "outdated") {
    outdated(error.extra && error.extra.min_addin_version);
    return;
  }
  if (kind === "license") {
    blocked("The connector is not available", error.detail || describe(error), {
      retry: true,
      logout: error.code === "user_not_licensed",
    });
    return;
  }
  if (kind === "unreachable" && where === "boot") {
    blocked("CRM unreachable", describe(error, { crmUrl: state.crmUrl }), { retry: true });
    return;
  }
  if (where === "boot") {
    // Something answered, but not as this CRM's add-in API does (a proxy, another site).
    blocked(
      "Unexpected answer",
      `${state.crmUrl} did not answer as a CRM with the Mail Connector: ${describe(error)}`,
      { retry: true },
    );
    return;
  }
  if (where === "login") {
    loginError(describe(error, { crmUrl: state.crmUrl }));
    return;
  }
  result({ error: describe(error, { crmUrl: state.crmUrl }) });
}

// --- login -------------------------------------------------------------------------------

async function ensureConnected() {
  if (servedUrl) return state.meta ? true : connect();
  const url = normaliseCrmUrl($("crm-url").value);
  if (!url) {
    loginError("Enter the CRM's address, for example https://crm.example.com.");
    $("crm-url").focus();
    return false;
  }
  if (url !== state.crmUrl || !state.meta) {
    state.crmUrl = url;
    const ok = await connect();
    if (!ok || !$("main").hidden) return false;
  }
  return true;
}

function remember(username) {
  prefs.update({ crmUrl: state.crmUrl, username });
  if (state.roaming) {
    state.roaming.set("crmUrl", state.crmUrl);
    state.roaming.set("username", username);
  }
}

async function submitLogin(event) {
  event.preventDefault();
  const button = $("login-submit");
  const username = $("username").value.trim();
  const password = $("password").value;
  if (!username || !password) {
    loginError("Enter your username and password.");
    $(username ? "password" : "username").focus();
    return;
  }
  button.disabled = true;
  try {
    if (!(await ensureConnected())) return;
    const answer = await state.api.login(username, password);
    remember(username);
    $("password").value = "";
    if (answer.status === "mfa_required") {
      state.mfaToken = answer.mfa_token;
      setText($("login-title"), "Two-step verification");
      show($("login-form"), false);
      show($("mfa-form"), true);
      show($("login-message"), false);
      $("mfa-code").value = "";
      $("mfa-code").focus();
      return;
    }
    await enterMain();
  } catch (error) {
    fail(error, { where: "login" });
  } finally {
    button.disabled = false;
  }
}

async function submitMfa(event) {
  event.preventDefault();
  const code = $("mfa-code").value.replace(/\s+/g, "");
  if (!/^\d{6,8}$/.test(code)) {
    loginError("Enter the six digits shown by your authenticator app.");
    $("mfa-code").focus();
    return;
  }
  const button = $("mfa-submit");
  button.disabled = true;
  try {
    await state.api.verifyMfa(state.mfaToken, code);
    await enterMain();
  } catch (error) {
    if (
      error instanceof ApiError &&
      error.code === "mfa_invalid" &&
      error.extra.attempts_left === 0
    ) {
      toLogin(describe(error));
      return;
    }
    fail(error, { where: "login" });
    $("mfa-code").select();
  } finally {
    button.disabled = false;
  }
}

function renderSsoButtons(providers) {
  const box = $("sso");
  box.replaceChildren();
  for (const provider of providers || []) {
    box.append(
      el("button", {
        type: "button",
        className: "button secondary",
        text: `Sign in with ${provider.name}`,
        onclick: () => startSso(provider),
      }),
    );
  }
  show($("sso-section"), Boolean(providers && providers.length));
}

async function startSso(provider) {
  if (!(await ensureConnected())) return;
  const crypto = window.crypto;
  const verifier = randomToken(crypto, 48);
  const attempt = { verifier, state: randomToken(crypto, 16), dialog: null, done: false };
  state.sso = attempt;
  const crmOrigin = new URL(state.crmUrl).origin;
  const url = authorizeUrl(state.crmUrl, {
    provider: provider.id,
    challenge: await challengeFor(verifier, crypto),
    state: attempt.state,
    origin: window.location.origin !== crmOrigin ? window.location.origin : "",
    loginHint: $("username").value.trim(),
  });
  loginError("");
  show($("login-message"), false);
  setText($("sso-status"), `Signing in with ${provider.name} in a separate window…`);
  try {
    attempt.dialog = await outlook.openDialog(state.Office, url, {
      onMessage: (message) => ssoMessage(attempt, message),
      onEvent: (code) => {
        if (attempt.done) return;
        attempt.done = true;
        setText($("sso-status"), "");
        loginError(dialogErrorText(code));
      },
    });
  } catch (error) {
    setText($("sso-status"), "");
    loginError(dialogErrorText(error.code));
  }
}

async function ssoMessage(attempt, raw) {
  const answer = readDialogMessage(raw, attempt.state);
  if (!answer || attempt.done) return;
  attempt.done = true;
  try {
    attempt.dialog && attempt.dialog.close();
  } catch {
    // already closed
  }
  setText($("sso-status"), "");
  if (!answer.ok) {
    loginError(answer.detail);
    return;
  }
  try {
    const tokens = await state.api.redeemSso(answer.code, attempt.verifier);
    remember(tokens.user ? tokens.user.username : $("username").value.trim());
    await enterMain();
  } catch (error) {
    fail(error, { where: "login" });
  }
}

async function logout() {
  if (state.api) await state.api.logout();
  toLogin("You are logged out.", { tone: "info" });
}

// --- the email ---------------------------------------------------------------------------

async function enterMain() {
  const stored = state.api.tokens.get();
  const user = stored && stored.user;
  setText($("user-name"), user ? user.name || user.username : "");
  showScreen("main");
  try {
    state.modules = await state.api.modules();
  } catch (error) {
    fail(error);
    return;
  }
  renderModules();
  await loadItem();
}

function renderModules() {
  const select = $("module");
  const previous = select.value;
  select.replaceChildren(
    ...state.modules.map((m) => el("option", { value: m.name, text: m.plural || m.name })),
  );
  if (state.modules.some((m) => m.name === previous)) select.value = previous;
  show($("search-section"), state.modules.length > 0);
  show($("no-modules"), state.modules.length === 0);
}

async function loadItem() {
  const generation = ++state.generation;
  const Office = state.Office;
  const item = outlook.currentItem(Office);
  result(null);
  state.linked = [];
  state.suggestions = [];
  state.messageId = "";
  renderLinked();
  renderRows("suggestion-list", []);
  clearSearch();
  if (!item) {
    show($("email"), false);
    show($("work"), false);
    setText($("email-empty"), "Select an email to link it to the CRM.");
    show($("email-empty"), true);
    return;
  }
  show($("email-empty"), false);
  show($("email"), true);
  show($("work"), true);
  const from = item.from || item.sender;
  setText($("email-from"), from ? formatAddress(from) : "(no sender)");
  setText($("email-subject"), item.subject || "(no subject)");
  state.strategy = chooseStrategy(outlook.isSetSupported(Office));
  const files = listedAttachments(item);
  setText(
    $("email-attachments"),
    files.length ? `${files.length} attachment${files.length === 1 ? "" : "s"}` : "",
  );
  notice(
    state.strategy === PARTIAL && files.length
      ? "Outlook on this device cannot hand over attachments: the email is saved without " +
          "them, and they follow when you open it in Outlook on a computer."
      : "",
  );
  setLoading(true, "Looking for records…");
  const messageId = await waitForMessageId(() => outlook.readMessageId(Office), {
    attempts: MESSAGE_ID_ATTEMPTS,
    delayMs: MESSAGE_ID_DELAY_MS,
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    onWait: () => setLoading(true, "Waiting for Outlook to finish sending this email…"),
  });
  if (generation !== state.generation) return;
  state.messageId = messageId;
  if (!messageId) {
    notice(
      "Outlook has not given this email its Internet message ID yet, so it cannot be linked " +
        "now. This happens just after sending: open the email again from Sent Items in a minute.",
    );
  }
  try {
    const [lookup, suggested] = await Promise.all([
      messageId ? state.api.lookup(messageId) : Promise.resolve({ records: [] }),
      state.api.suggestions({
        addresses: addressesOf(item),
        mailboxOwner: Office.context.mailbox.userProfile
          ? Office.context.mailbox.userProfile.emailAddress
          : "",
        messageId,
      }),
    ]);
    if (generation !== state.generation) return;
    state.linked = lookup.records || [];
    state.suggestions = suggested.results || [];
  } catch (error) {
    if (generation !== state.generation) return;
    setLoading(false);
    fail(error);
    return;
  }
  setLoading(false);
  renderLinked();
  renderSuggestions();
  offerCompletion();
}

function notice(text) {
  setText($("email-notice"), text);
  show($("email-notice"), Boolean(text));
}

function setLoading(on, text = "") {
  setText($("loading"), on ? text : "");
  show($("loading"), on);
}

function renderLinked() {
  const list = $("linked-list");
  list.replaceChildren(
    ...state.linked.map((r) =>
      el(
        "li",
        {},
        el("a", { href: safeHref(r.url), target: "_blank", rel: "noopener", text: r.label }),
        el("span", {
          className: "record-meta",
          text: ` ${moduleLabel(r.module)} ${r.number || ""}`,
        }),
      ),
    ),
  );
  show($("linked-section"), state.linked.length > 0);
}

function moduleLabel(name) {
  const m = state.modules.find((x) => x.name === name);
  return m ? m.singular || m.name : name;
}

function renderSuggestions() {
  const rows = suggestionRows(state.suggestions, { linked: state.linked, modules: state.modules });
  renderRows("suggestion-list", rows);
  show($("suggestion-empty"), rows.length === 0);
}

function renderRows(listId, rows) {
  const list = $(listId);
  const canLink = Boolean(state.messageId) && !state.busy;
  list.replaceChildren(
    ...rows.map((row) => {
      const meta = [row.moduleLabel, row.number, row.reason].filter(Boolean).join(" · ");
      const action = row.linked
        ? el("span", { className: "badge", text: "Linked" })
        : el("button", {
            type: "button",
            className: "button link-button",
            text: "Link",
            "aria-label": `Link this email to ${row.label} (${row.moduleLabel})`,
            disabled: !canLink,
            onclick: () => linkTo(row),
          });
      return el(
        "li",
        { className: "record", "data-key": row.key },
        el(
          "div",
          { className: "record-text" },
          el("a", { href: safeHref(row.url), target: "_blank", rel: "noopener", text: row.label }),
          el("span", { className: "record-meta", text: meta }),
        ),
        action,
      );
    }),
  );
}

// --- search ------------------------------------------------------------------------------

let searchTimer = null;

function clearSearch() {
  state.searchResults = [];
  state.searchCursor = null;
  renderRows("search-list", []);
  show($("search-more"), false);
  setText($("search-status"), "");
}

function scheduleSearch() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => runSearch(false), 350);
}

async function runSearch(more) {
  clearTimeout(searchTimer);
  const module = $("module").value;
  const q = $("q").value.trim();
  if (!module) return;
  const generation = state.generation;
  setText($("search-status"), "Searching…");
  try {
    const page = await state.api.search(module, q, more ? state.searchCursor : null);
    if (generation !== state.generation || module !== $("module").value) return;
    state.searchResults = more ? [...state.searchResults, ...page.results] : page.results;
    state.searchCursor = page.next_cursor;
  } catch (error) {
    setText($("search-status"), "");
    fail(error);
    return;
  }
  renderSearch();
  const n = state.searchResults.length;
  setText(
    $("search-status"),
    n
      ? `${n}${state.searchCursor ? "+" : ""} record${n === 1 ? "" : "s"} found.`
      : "No records found.",
  );
}

function renderSearch() {
  const rows = searchRows(state.searchResults, { linked: state.linked, modules: state.modules });
  renderRows("search-list", rows);
  show($("search-more"), Boolean(state.searchCursor));
}

// --- linking -----------------------------------------------------------------------------

function setBusy(busy) {
  state.busy = busy;
  renderSuggestions();
  renderSearch();
  $("complete-button").disabled = busy;
}

function progress(text) {
  setText($("progress-text"), text || "");
  show($("progress"), Boolean(text));
}

function result(outcome) {
  const box = $("result");
  box.replaceChildren();
  if (!outcome) {
    show(box, false);
    return;
  }
  if (outcome.error) {
    box.dataset.tone = "error";
    box.append(el("p", { text: outcome.error }));
  } else {
    box.dataset.tone = outcome.partial ? "info" : "success";
    box.append(el("p", { text: outcome.text }));
    const links = outcome.records.map((r) =>
      el(
        "li",
        {},
        el("a", {
          href: safeHref(r.url),
          target: "_blank",
          rel: "noopener",
          text: `Open ${r.label} in the CRM`,
        }),
      ),
    );
    if (links.length) box.append(el("ul", { className: "result-links" }, ...links));
  }
  show(box, true);
}

async function send(links) {
  const Office = state.Office;
  const item = outlook.currentItem(Office);
  const generation = state.generation;
  const messageId = state.messageId;
  if (!item || !messageId) return null;
  setBusy(true);
  result(null);
  progress("Reading the email from Outlook…");
  try {
    const captured = await capture(state.strategy, item, outlook.adapter(Office, item), {
      onStep: (step, info) => {
        if (step === "attachment") {
          progress(`Reading attachment ${info.index} of ${info.count} (${info.name})…`);
        }
      },
    });
    const limit = state.meta && state.meta.limits && state.meta.limits.max_email_bytes;
    if (limit && captured.bytes > limit) {
      throw new ApiError({ status: 413, code: "email_too_large", extra: { max_bytes: limit } });
    }
    progress(`Uploading ${formatBytes(captured.bytes)} to the CRM…`);
    const form = buildForm(captured, { messageId, links }, { FormData, Blob });
    const answer = await state.api.link(form, messageId);
    // Only attachments left behind make a capture worth completing from a computer.
    rememberPartial(messageId, answer.completeness === "partial" && captured.pending.length > 0);
    if (generation !== state.generation) return null; // another email is open now
    const outcome = linkOutcome(answer, { pending: captured.pending });
    result(outcome);
    // The records it is on now: the look-up answers only those this user may see.
    const lookup = await state.api.lookup(messageId);
    if (generation === state.generation) state.linked = lookup.records || [];
    renderLinked();
    offerCompletion();
    return answer;
  } catch (error) {
    fail(error);
    return null;
  } finally {
    progress("");
    setBusy(false);
    // The button that was pressed is gone or disabled: the outcome takes the focus.
    if (!$("result").hidden) $("result").focus();
  }
}

function linkTo(row) {
  if (state.busy) return;
  return send([{ module: row.module, id: row.id }]);
}

// --- a partial capture, completed from a computer -----------------------------------------

function partialIds() {
  const ids = state.roaming ? state.roaming.get(PARTIAL_KEY) : null;
  return Array.isArray(ids) ? ids : [];
}

function rememberPartial(messageId, partial) {
  if (!state.roaming) return;
  const ids = partialIds().filter((id) => !sameMessageId(id, messageId));
  if (partial) ids.push(messageId);
  state.roaming.set(PARTIAL_KEY, ids.slice(-50));
}

function offerCompletion() {
  const pending =
    state.strategy === WHOLE &&
    state.linked.length > 0 &&
    partialIds().some((id) => sameMessageId(id, state.messageId));
  show($("complete-section"), pending);
}

async function complete() {
  if (state.busy) return;
  const links = state.linked.map((r) => ({ module: r.module, id: r.id }));
  if (links.length) await send(links);
}

// --- wiring ------------------------------------------------------------------------------

function wire() {
  $("login-form").addEventListener("submit", submitLogin);
  $("mfa-form").addEventListener("submit", submitMfa);
  $("mfa-cancel").addEventListener("click", () => toLogin(""));
  $("logout").addEventListener("click", logout);
  $("blocked-logout").addEventListener("click", logout);
  $("blocked-retry").addEventListener("click", () => connect());
  $("blocked-change").addEventListener("click", () => toLogin(""));
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    runSearch(false);
  });
  $("q").addEventListener("input", scheduleSearch);
  $("module").addEventListener("change", () => runSearch(false));
  $("search-more").addEventListener("click", () => runSearch(true));
  $("complete-button").addEventListener("click", complete);
}

body.dataset.addinVersion = ADDIN_VERSION;
boot();
