// What can go wrong talking to the CRM, and how to say it to a user in words.

// A problem+json answer (RFC 9457) from the CRM, or an HTTP error without one.
export class ApiError extends Error {
  constructor({ status, code, title = "", detail = "", fields = null, extra = {} }) {
    super(detail || title || code);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.title = title;
    this.detail = detail;
    this.fields = fields;
    this.extra = extra;
  }
}

// The CRM did not answer at all (down, wrong address, offline, blocked).
export class NetworkError extends Error {
  constructor(url, cause) {
    super(`No answer from ${url}`);
    this.name = "NetworkError";
    this.url = url;
    this.cause = cause;
  }
}

// Codes after which the user must log in again.
export const SESSION_CODES = new Set([
  "session_expired",
  "token_invalid",
  "token_expired",
  "not_authenticated",
]);
export const LICENSE_CODES = new Set(["license_inactive", "user_not_licensed"]);

// What the pane does about an error: "login" (back to the login form), "outdated" (stop: the
// add-in must be updated), "license" (stop: the reason), "unreachable", or "inline" (say it
// where the user acted, and let him try again).
export function disposition(error) {
  if (error instanceof NetworkError) return "unreachable";
  if (!(error instanceof ApiError)) return "inline";
  if (error.status === 401 && SESSION_CODES.has(error.code)) return "login";
  if (error.status === 426 || error.code === "addin_outdated") return "outdated";
  if (LICENSE_CODES.has(error.code)) return "license";
  return "inline";
}

function megabytes(bytes) {
  return `${Math.round((bytes / 1048576) * 10) / 10} MB`;
}

export function describe(error, { crmUrl = "the CRM" } = {}) {
  if (error instanceof NetworkError) {
    return (
      `The CRM at ${crmUrl} cannot be reached. Check your connection, or ask your ` +
      "administrator whether the CRM is running. Nothing was saved."
    );
  }
  if (!(error instanceof ApiError)) {
    return error && error.message ? error.message : "Something went wrong.";
  }
  switch (error.code) {
    case "invalid_credentials":
      return "Wrong username or password.";
    case "mfa_invalid": {
      const left = error.extra.attempts_left;
      if (left === 0) return "Too many wrong codes. Log in with your password again.";
      const more = typeof left === "number" ? ` ${left} ${left === 1 ? "try" : "tries"} left.` : "";
      return `That code is wrong or expired; enter the current one from your app.${more}`;
    }
    case "rate_limited":
    case "locked_out": {
      const wait = error.extra.retry_after;
      return wait
        ? `Too many attempts. Try again in ${wait} second${wait === 1 ? "" : "s"}.`
        : error.detail;
    }
    case "email_too_large": {
      const cap = error.extra.max_bytes;
      return cap
        ? `This email is too large for the CRM (it accepts up to ${megabytes(cap)}).`
        : error.detail;
    }
    case "record_not_editable":
      return "You may read this record but not change it, so the email cannot be linked to it.";
    case "not_found":
      return "That record no longer exists, or you may no longer see it.";
    case "validation_error": {
      const fields = error.fields ? Object.values(error.fields).join(" ") : "";
      return fields || error.detail || "The CRM refused the request.";
    }
    case "server_error":
      return "The CRM ran into an error; it was logged. Try again in a moment.";
    default:
      break;
  }
  if (error.detail) return error.detail;
  if (error.status >= 500) return `The CRM answered with an error (${error.status}). Try again.`;
  return error.title || `The CRM refused the request (${error.status}).`;
}
