// How the email open in Outlook travels to the CRM, by what the host can do:
//   Mailbox 1.14: the whole message (getAsFileAsync), byte for byte: "whole";
//   Mailbox 1.8: its fields, bodies and attachments (getAttachmentContentAsync): "fields";
//   older hosts (phones): fields and bodies, attachments named but left for later: "partial".
//
// Pure: the Outlook calls come through an adapter (outlook.js in the pane, fakes in tests).

export const WHOLE = "whole";
export const FIELDS = "fields";
export const PARTIAL = "partial";

export function chooseStrategy(isSetSupported) {
  const supports = (version) => {
    try {
      return Boolean(isSetSupported("Mailbox", version));
    } catch {
      return false;
    }
  };
  if (supports("1.14")) return WHOLE;
  if (supports("1.8")) return FIELDS;
  return PARTIAL;
}

// "Jane Doe <jane@acme.test>", quoting a display name that needs it (RFC 5322 3.4).
export function formatAddress(address) {
  if (!address) return "";
  const email = String(address.emailAddress || "").trim();
  const name = String(address.displayName || "").trim();
  if (!name || name.toLowerCase() === email.toLowerCase()) return email;
  const safe = /^[\w !#$%&'*+\-/=?^`{|}~.]+$/.test(name) && !/^\.|\.$/.test(name);
  const shown = safe ? name : `"${name.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
  return `${shown} <${email}>`;
}

// The addresses the CRM ranks suggestions by: sender first, then recipients.
export function addressesOf(item) {
  const out = [];
  const add = (address, role) => {
    if (address && address.emailAddress) out.push({ email: address.emailAddress, role });
  };
  add(item.from, "from");
  if (item.sender && item.from && item.sender.emailAddress !== item.from.emailAddress) {
    add(item.sender, "sender");
  }
  for (const a of item.to || []) add(a, "to");
  for (const a of item.cc || []) add(a, "cc");
  return out.slice(0, 200);
}

// Attachments the user sees as files: inline images (signatures, logos) are left out of field
// captures; the whole message keeps them where they belong.
export function listedAttachments(item) {
  return (item.attachments || []).filter((a) => !a.isInline);
}

export function base64ToBytes(text) {
  const clean = String(text || "").replace(/\s+/g, "");
  if (typeof atob === "function") {
    const binary = atob(clean);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }
  return Uint8Array.from(Buffer.from(clean, "base64"));
}

// The Message-ID of the email: Outlook gives none for a few seconds after a message was sent;
// ask again a few times, then give up (the caller explains). `read` returns "" while missing.
export async function waitForMessageId(read, { attempts, delayMs, sleep, onWait = () => {} }) {
  for (let attempt = 1; attempt <= attempts; attempt += 1) {
    const value = String((await read()) || "").trim();
    if (value) return value;
    if (attempt < attempts) {
      onWait(attempt);
      await sleep(delayMs * attempt);
    }
  }
  return "";
}

// A Message-ID from raw headers (getAllInternetHeadersAsync), or "".
export function messageIdFromHeaders(headers) {
  // The value may be folded onto the next line (RFC 5322 section 2.2.3).
  const match = /^message-id:[ \t]*(?:\r?\n[ \t]+)?(<[^>\r\n]+>)/im.exec(String(headers || ""));
  return match ? match[1] : "";
}

// What `capture` returns, for `buildForm`: {strategy, eml?, fields?, files, pending, bytes}.
export async function capture(strategy, item, outlook, { onStep = () => {} } = {}) {
  if (strategy === WHOLE) {
    onStep("reading");
    const eml = base64ToBytes(await outlook.getAsFile());
    return { strategy, eml, files: [], pending: [], bytes: eml.length };
  }
  onStep("reading");
  const [text, html] = await Promise.all([outlook.bodyText(), outlook.bodyHtml()]);
  const fields = {
    subject: item.subject || "",
    sender: formatAddress(item.from || item.sender),
    to: (item.to || []).map(formatAddress).filter(Boolean),
    cc: (item.cc || []).map(formatAddress).filter(Boolean),
    date: item.dateTimeCreated ? new Date(item.dateTimeCreated).toISOString() : "",
    text_body: text || "",
    html_body: html || "",
  };
  const files = [];
  const pending = [];
  const attachments = listedAttachments(item);
  if (strategy === FIELDS) {
    for (const [index, a] of attachments.entries()) {
      onStep("attachment", { index: index + 1, count: attachments.length, name: a.name });
      const file = await attachmentFile(a, outlook);
      if (file) files.push(file);
      else pending.push(a.name);
    }
  } else {
    for (const a of attachments) pending.push(a.name);
  }
  const bytes =
    files.reduce((n, f) => n + f.bytes.length, 0) +
    fields.text_body.length +
    fields.html_body.length;
  return { strategy, fields, files, pending, bytes };
}

async function attachmentFile(attachment, outlook) {
  let content;
  try {
    content = await outlook.attachmentContent(attachment.id);
  } catch {
    return null; // a cloud file or a host refusal: named, sent later
  }
  const format = String(content.format || "").toLowerCase();
  if (format === "base64") {
    return {
      name: attachment.name,
      type: attachment.contentType || "application/octet-stream",
      bytes: base64ToBytes(content.content),
    };
  }
  if (format === "eml" || format === "icalendar") {
    const bytes = new TextEncoder().encode(content.content || "");
    const isMail = format === "eml";
    const name =
      isMail && !/\.eml$/i.test(attachment.name) ? `${attachment.name}.eml` : attachment.name;
    return { name, type: isMail ? "message/rfc822" : "text/calendar", bytes };
  }
  return null; // "url": a link to a cloud file, not its bytes
}

// The multipart body of POST emails. FormData and Blob come from the caller (browser or node).
export function buildForm(captured, { messageId, links }, { FormData, Blob }) {
  const form = new FormData();
  form.append("links", JSON.stringify(links));
  if (captured.strategy === WHOLE) {
    form.append("eml", new Blob([captured.eml], { type: "message/rfc822" }), "message.eml");
    return form;
  }
  const f = captured.fields;
  form.append("message_id", messageId);
  form.append("sender", f.sender);
  form.append("subject", f.subject);
  for (const a of f.to) form.append("to", a);
  for (const a of f.cc) form.append("cc", a);
  if (f.date) form.append("date", f.date);
  form.append("text_body", f.text_body);
  if (f.html_body) form.append("html_body", f.html_body);
  for (const file of captured.files) {
    form.append("attachments", new Blob([file.bytes], { type: file.type }), file.name);
  }
  for (const name of captured.pending) form.append("attachments_pending", name);
  return form;
}
