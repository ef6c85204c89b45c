// What the pane shows, computed from the CRM's answers: record rows, their reasons, the
// result of a link. Pure: no DOM.

const REASONS = {
  "from address": "Sender",
  "sender address": "Sender",
  "reply_to address": "Reply-to address",
  "to address": "Recipient",
  "cc address": "In copy",
  "sender's company domain": "Sender's company, by domain",
  "contact's company": "Company of a contact",
  "company's contact": "Contact at the company",
};

export function reasonText(reason) {
  return REASONS[reason] || (reason ? reason.charAt(0).toUpperCase() + reason.slice(1) : "");
}

export function recordKey(record) {
  return `${record.module}:${record.id}`;
}

// Module name -> its singular label, from GET modules.
export function moduleLabels(modules) {
  const labels = {};
  for (const m of modules || []) labels[m.name] = m.singular || m.name;
  return labels;
}

// Suggestions first, in the CRM's order, marked linked when the email is already on them
// (the CRM's flag, or the look-up's list); only modules the user may link to.
export function suggestionRows(suggestions, { linked = [], modules = [] } = {}) {
  const linkedKeys = new Set(linked.map(recordKey));
  const labels = moduleLabels(modules);
  const allowed = modules.length ? new Set(modules.map((m) => m.name)) : null;
  const seen = new Set();
  const rows = [];
  for (const s of suggestions || []) {
    const key = recordKey(s);
    if (seen.has(key) || (allowed && !allowed.has(s.module))) continue;
    seen.add(key);
    rows.push({
      key,
      module: s.module,
      moduleLabel: labels[s.module] || s.module,
      id: s.id,
      number: s.number || "",
      label: s.label,
      url: s.url,
      reason: reasonText(s.reason),
      linked: Boolean(s.already_linked) || linkedKeys.has(key),
    });
  }
  return rows;
}

export function searchRows(records, { linked = [], modules = [] } = {}) {
  return suggestionRows(
    (records || []).map((r) => ({ ...r, reason: "" })),
    { linked, modules },
  );
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

function names(records) {
  const labels = records.map((r) => r.label);
  if (labels.length <= 1) return labels.join("");
  return `${labels.slice(0, -1).join(", ")} and ${labels[labels.length - 1]}`;
}

// The sentence after POST emails: {message, subject, completeness, created, completed,
// attachments_saved, records: [{label, url, newly_linked, ...}]}, and the capture's pending
// attachment names.
export function linkOutcome(result, { pending = [] } = {}) {
  const records = result.records || [];
  const fresh = records.filter((r) => r.newly_linked);
  const target = names(records);
  const saved = result.attachments_saved || 0;
  let text;
  if (!fresh.length && !result.completed) {
    text = `Already linked to ${target}.`;
  } else if (!fresh.length && result.completed) {
    text = `The attachments were added to ${target}`;
  } else {
    text = `Linked to ${target}`;
  }
  if (fresh.length || result.completed) {
    if (result.completeness === "partial" && pending.length) {
      const follow = plural(pending.length, "attachment follows", "attachments follow");
      const them = pending.length === 1 ? "it" : "them";
      text += ` — ${follow} when you open this email in Outlook on a computer and add ${them}.`;
    } else if (saved > 0) {
      text += ` — ${plural(saved, "attachment", "attachments")} saved to Documents.`;
    } else {
      text += ".";
    }
  }
  return {
    text,
    records: records.map((r) => ({ label: r.label, url: r.url, module: r.module, id: r.id })),
    partial: result.completeness === "partial",
  };
}

export function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1048576) return `${Math.round(bytes / 1024)} KB`;
  return `${Math.round((bytes / 1048576) * 10) / 10} MB`;
}

// Message-IDs compared as the CRM does: angle brackets and case of the domain aside.
export function sameMessageId(a, b) {
  const norm = (v) =>
    String(v || "")
      .trim()
      .replace(/^<|>$/g, "")
      .toLowerCase();
  return Boolean(norm(a)) && norm(a) === norm(b);
}

// Only web addresses become links (a record's URL comes from the CRM; be strict anyway).
export function safeHref(url) {
  try {
    const parsed = new URL(url, "https://invalid.example/");
    return parsed.protocol === "https:" || parsed.protocol === "http:" ? String(url) : "#";
  } catch {
    return "#";
  }
}
