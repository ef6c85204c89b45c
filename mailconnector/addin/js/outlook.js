// Office.js, promised: the few Outlook calls the pane makes. Thin on purpose; the decisions
// live in capture.js and main.js.

import { messageIdFromHeaders } from "./capture.js";

export class OfficeError extends Error {
  constructor(error) {
    super(error && error.message ? error.message : "Outlook refused the request.");
    this.name = "OfficeError";
    this.code = error && error.code;
  }
}

function call(start) {
  return new Promise((resolve, reject) => {
    try {
      start((result) => {
        if (result && result.status === "failed") reject(new OfficeError(result.error));
        else resolve(result ? result.value : undefined);
      });
    } catch (error) {
      reject(new OfficeError(error));
    }
  });
}

export function mailbox(Office) {
  return (Office && Office.context && Office.context.mailbox) || null;
}

export function currentItem(Office) {
  const box = mailbox(Office);
  return box ? box.item || null : null;
}

export function isSetSupported(Office) {
  return (name, version) => {
    const req = Office && Office.context && Office.context.requirements;
    return Boolean(req && req.isSetSupported(name, version));
  };
}

export function adapter(Office, item) {
  const coercion = Office.CoercionType || { Text: "text", Html: "html" };
  return {
    getAsFile: () => call((done) => item.getAsFileAsync(done)),
    bodyText: () => call((done) => item.body.getAsync(coercion.Text, done)),
    bodyHtml: () => call((done) => item.body.getAsync(coercion.Html, done)),
    attachmentContent: (id) => call((done) => item.getAttachmentContentAsync(id, done)),
  };
}

// The open email's Message-ID, read afresh: the item's property, else (Mailbox 1.8) its
// internet headers. "" while Outlook has none (just-sent mail).
export async function readMessageId(Office) {
  const item = currentItem(Office);
  if (!item) return "";
  if (item.internetMessageId) return item.internetMessageId;
  if (typeof item.getAllInternetHeadersAsync === "function") {
    try {
      return messageIdFromHeaders(await call((done) => item.getAllInternetHeadersAsync(done)));
    } catch {
      return "";
    }
  }
  return "";
}

export function onItemChanged(Office, handler) {
  const box = mailbox(Office);
  if (!box || typeof box.addHandlerAsync !== "function") return;
  const type = (Office.EventType && Office.EventType.ItemChanged) || "olkItemSelectedChanged";
  box.addHandlerAsync(type, handler, () => {});
}

// Roaming settings follow the user to his other devices (Outlook stores them in the mailbox).
export function roaming(Office) {
  const settings = Office && Office.context && Office.context.roamingSettings;
  return {
    get(name) {
      try {
        return settings ? settings.get(name) : undefined;
      } catch {
        return undefined;
      }
    },
    set(name, value) {
      if (!settings) return;
      try {
        if (value === undefined || value === null) settings.remove(name);
        else settings.set(name, value);
        settings.saveAsync(() => {});
      } catch {
        // Not fatal: they are a convenience.
      }
    },
  };
}

export function openDialog(Office, url, { onMessage, onEvent }) {
  const ui = Office && Office.context && Office.context.ui;
  if (!ui || typeof ui.displayDialogAsync !== "function") {
    return Promise.reject(new OfficeError({ code: 0, message: "no dialog API" }));
  }
  const types = Office.EventType || {};
  return call((done) =>
    ui.displayDialogAsync(url, { height: 60, width: 30, promptBeforeOpen: false }, done),
  ).then((dialog) => {
    dialog.addEventHandler(types.DialogMessageReceived || "dialogMessageReceived", (arg) =>
      onMessage(arg.message, arg.origin),
    );
    dialog.addEventHandler(types.DialogEventReceived || "dialogEventReceived", (arg) =>
      onEvent(arg.error),
    );
    return dialog;
  });
}
