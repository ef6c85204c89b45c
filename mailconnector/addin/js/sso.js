// Single sign-on in the Office dialog: OAuth 2.0 authorization code with PKCE (RFC 7636).
// The CRM's dialog pages end with messageParent(JSON) {type: "crm-sso", status, state, code |
// error, detail}; the pane checks `state` and trades the code with its verifier.

export function base64url(bytes) {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  const b64 = typeof btoa === "function" ? btoa(binary) : Buffer.from(bytes).toString("base64");
  return b64.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function randomToken(crypto, size = 32) {
  return base64url(crypto.getRandomValues(new Uint8Array(size)));
}

export async function challengeFor(verifier, crypto) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

export function authorizeUrl(crmUrl, { provider, challenge, state, origin, loginHint }) {
  const params = new URLSearchParams({
    provider,
    code_challenge: challenge,
    code_challenge_method: "S256",
    state,
  });
  if (origin) params.set("origin", origin);
  if (loginHint) params.set("login_hint", loginHint);
  return `${crmUrl}/api/addin/v1/auth/sso/authorize?${params}`;
}

// {ok: true, code} or {ok: false, detail}; anything not from our dialog is ignored (null).
export function readDialogMessage(raw, expectedState) {
  let message;
  try {
    message = JSON.parse(raw);
  } catch {
    return null;
  }
  if (!message || message.type !== "crm-sso") return null;
  if (message.state !== expectedState) {
    return { ok: false, detail: "The sign-in answer did not belong to this attempt. Try again." };
  }
  if (message.status === "ok" && message.code) return { ok: true, code: message.code };
  return { ok: false, detail: message.detail || "Sign-in failed.", error: message.error || "" };
}

// Office dialog errors (displayDialogAsync and DialogEventReceived) in words.
export function dialogErrorText(code) {
  switch (Number(code)) {
    case 12006:
      return "Sign-in was cancelled: the window was closed.";
    case 12007:
    case 12011:
      return "Outlook could not open the sign-in window (a pop-up blocker?). Try again.";
    case 12002:
    case 12003:
    case 12004:
    case 12005:
      return (
        "Outlook refused to open the sign-in page; ask your administrator to check the " +
        "add-in's manifest."
      );
    default:
      return `The sign-in window failed (${code}). Try again.`;
  }
}
