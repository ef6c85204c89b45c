// What the pane remembers, in its own (partitioned) storage: tokens per CRM, the CRM's address
// and the username. Passwords are never stored.

const PREFIX = "crm-addin:";

function read(storage, key) {
  try {
    const raw = storage.getItem(PREFIX + key);
    return raw ? JSON.parse(raw) : null;
  } catch {
    return null;
  }
}

function write(storage, key, value) {
  try {
    if (value === null || value === undefined) storage.removeItem(PREFIX + key);
    else storage.setItem(PREFIX + key, JSON.stringify(value));
  } catch {
    // Storage full or disabled: the pane still works, it only forgets.
  }
}

// Tokens of one CRM, from a login answer: {access_token, refresh_token, expires_in, user, ...}.
export function tokenStore(storage, crmUrl, now = () => Date.now()) {
  const key = `tokens:${crmUrl}`;
  return {
    get() {
      return read(storage, key);
    },
    set(answer) {
      const stored = {
        access_token: answer.access_token,
        refresh_token: answer.refresh_token,
        expires_at: now() + Number(answer.expires_in || 0) * 1000,
        session_id: answer.session_id ?? null,
        user: answer.user ?? null,
      };
      write(storage, key, stored);
      return stored;
    },
    clear() {
      write(storage, key, null);
    },
  };
}

export function preferences(storage) {
  return {
    get() {
      return read(storage, "prefs") || {};
    },
    update(values) {
      const merged = { ...(read(storage, "prefs") || {}), ...values };
      write(storage, "prefs", merged);
      return merged;
    },
  };
}

// Normalise what a user types as the CRM's address: https:// added, trailing slash dropped.
export function normaliseCrmUrl(text) {
  let value = String(text || "").trim();
  if (!value) return "";
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) value = `https://${value}`;
  let url;
  try {
    url = new URL(value);
  } catch {
    return "";
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return "";
  return `${url.origin}${url.pathname.replace(/\/+$/, "")}`;
}
