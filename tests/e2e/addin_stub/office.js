// A stand-in for Microsoft's office.js, for the add-in's browser tests (the tests run offline;
// Playwright answers https://appsforoffice.microsoft.com/lib/1/hosted/office.js with this file).
//
// It provides what the CRM's task pane and its sign-in dialog use, with the shapes office.js
// has: Office.onReady, context.requirements.isSetSupported, context.mailbox (item, userProfile,
// addHandlerAsync for ItemChanged), item methods that exist only from their requirement set
// on (getAsFileAsync 1.14, getAttachmentContentAsync and getAllInternetHeadersAsync 1.8),
// roamingSettings, and the dialog API (displayDialogAsync opens a real pop-up; the dialog's
// messageParent reaches the pane over a BroadcastChannel, as both are on the CRM's origin).
//
// A test configures it before the page loads: window.__officeStubConfig = {
//   platform, sets: {Mailbox: "1.14"}, item: {...} | null, userProfile, roaming,
//   messageIdAfterReads }. window.__officeStub lets the test act as Outlook: selectItem(item)
// (the ItemChanged event of a pinned pane), roaming(), calls (what the pane asked for).
(function () {
  "use strict";
  var config = window.__officeStubConfig || {};
  var CHANNEL = "office-stub-dialog";
  var calls = [];
  var itemChangedHandlers = [];
  var roamingValues = Object.assign({}, config.roaming || {});

  function succeeded(value) {
    return { status: "succeeded", value: value, error: null };
  }
  function failed(code, message) {
    return {
      status: "failed",
      value: undefined,
      error: { code: code, name: "Error", message: message },
    };
  }
  function later(callback, result) {
    if (typeof callback === "function")
      setTimeout(function () {
        callback(result);
      }, 5);
  }
  // office.js methods take (…, [options], callback).
  function callbackOf(args) {
    for (var i = args.length - 1; i >= 0; i -= 1) if (typeof args[i] === "function") return args[i];
    return null;
  }
  function versionAtLeast(have, want) {
    var a = String(have).split(".").map(Number);
    var b = String(want).split(".").map(Number);
    for (var i = 0; i < Math.max(a.length, b.length); i += 1) {
      var d = (a[i] || 0) - (b[i] || 0);
      if (d !== 0) return d > 0;
    }
    return true;
  }
  var sets = config.sets || { Mailbox: "1.14" };
  function supports(name, version) {
    var have = sets[name];
    return have !== undefined && versionAtLeast(have, version || "1.1");
  }

  function address(a) {
    return a
      ? { displayName: a.displayName || "", emailAddress: a.emailAddress, recipientType: "other" }
      : null;
  }

  function makeItem(data) {
    if (!data) return null;
    var reads = 0;
    var item = {
      itemType: "message",
      itemId: data.itemId || "AAMkAD-stub",
      subject: data.subject || "",
      from: address(data.from),
      sender: address(data.sender || data.from),
      to: (data.to || []).map(address),
      cc: (data.cc || []).map(address),
      dateTimeCreated: data.dateTimeCreated ? new Date(data.dateTimeCreated) : new Date(),
      attachments: (data.attachments || []).map(function (a) {
        return {
          id: a.id,
          name: a.name,
          contentType: a.contentType,
          size: a.size,
          isInline: Boolean(a.isInline),
          attachmentType: a.attachmentType || "file",
        };
      }),
      body: {
        getAsync: function (coercionType) {
          calls.push("body.getAsync:" + coercionType);
          var text = coercionType === "html" ? data.bodyHtml || "" : data.bodyText || "";
          later(callbackOf(arguments), succeeded(text));
        },
      },
    };
    // A just-sent email has no internetMessageId for a while.
    Object.defineProperty(item, "internetMessageId", {
      enumerable: true,
      get: function () {
        reads += 1;
        var after = config.messageIdAfterReads;
        if (after === -1 || (after && reads <= after)) return "";
        return data.internetMessageId || "";
      },
    });
    if (supports("Mailbox", "1.14")) {
      item.getAsFileAsync = function () {
        calls.push("getAsFileAsync");
        later(callbackOf(arguments), succeeded(data.emlBase64));
      };
    }
    if (supports("Mailbox", "1.8")) {
      item.getAttachmentContentAsync = function (id) {
        calls.push("getAttachmentContentAsync:" + id);
        var found = (data.attachments || []).filter(function (a) {
          return a.id === id;
        })[0];
        if (!found) return later(callbackOf(arguments), failed(9043, "Attachment not found"));
        if (found.attachmentType === "cloud") {
          return later(
            callbackOf(arguments),
            succeeded({ format: "url", content: "https://files.example/" + found.name }),
          );
        }
        later(
          callbackOf(arguments),
          succeeded({ format: found.format || "base64", content: found.content }),
        );
      };
      item.getAllInternetHeadersAsync = function () {
        calls.push("getAllInternetHeadersAsync");
        later(callbackOf(arguments), succeeded(""));
      };
    }
    return item;
  }

  var mailbox = {
    item: makeItem(config.item === undefined ? null : config.item),
    userProfile: Object.assign(
      { displayName: "Alice", emailAddress: "alice@crm.test", timeZone: "UTC" },
      config.userProfile || {},
    ),
    diagnostics: { hostName: "Outlook", hostVersion: "16.0.0.0" },
    addHandlerAsync: function (type, handler) {
      if (type === "olkItemSelectedChanged") itemChangedHandlers.push(handler);
      later(callbackOf(Array.prototype.slice.call(arguments, 2)), succeeded(undefined));
    },
    removeHandlerAsync: function (type) {
      if (type === "olkItemSelectedChanged") itemChangedHandlers = [];
      later(callbackOf(arguments), succeeded(undefined));
    },
  };

  var roamingSettings = {
    get: function (name) {
      return roamingValues[name];
    },
    set: function (name, value) {
      roamingValues[name] = JSON.parse(JSON.stringify(value));
    },
    remove: function (name) {
      delete roamingValues[name];
    },
    saveAsync: function () {
      later(callbackOf(arguments), succeeded(undefined));
    },
  };

  // --- the dialog API ------------------------------------------------------------------
  function displayDialogAsync(url, options, callback) {
    callback = callbackOf(arguments);
    calls.push("displayDialogAsync:" + url);
    var popup = window.open(url, "office-dialog", "popup,width=500,height=650");
    if (!popup)
      return later(callback, failed(12007, "A dialog box is already opened from this add-in."));
    var handlers = {};
    var channel = new BroadcastChannel(CHANNEL);
    var watch = setInterval(function () {
      if (popup.closed) {
        clearInterval(watch);
        channel.close();
        if (!dialog.closedByPane && handlers.dialogEventReceived) {
          handlers.dialogEventReceived({ type: "dialogEventReceived", error: 12006 });
        }
      }
    }, 200);
    channel.onmessage = function (event) {
      if (handlers.dialogMessageReceived) {
        handlers.dialogMessageReceived({
          type: "dialogMessageReceived",
          message: event.data.message,
          origin: event.data.origin,
        });
      }
    };
    var dialog = {
      closedByPane: false,
      addEventHandler: function (type, handler) {
        handlers[type] = handler;
      },
      close: function () {
        dialog.closedByPane = true;
        try {
          popup.close();
        } catch (e) {
          /* gone */
        }
      },
      messageChild: function () {},
    };
    later(callback, succeeded(dialog));
  }

  function messageParent(message, options) {
    window.__messages = window.__messages || [];
    window.__messages.push({ message: message, options: options || null });
    var channel = new BroadcastChannel(CHANNEL);
    channel.postMessage({ message: message, origin: window.location.origin });
    channel.close();
  }

  var Office = {
    HostType: { Outlook: "Outlook" },
    PlatformType: {
      PC: "PC",
      OfficeOnline: "OfficeOnline",
      Mac: "Mac",
      iOS: "iOS",
      Android: "Android",
    },
    CoercionType: { Text: "text", Html: "html" },
    AsyncResultStatus: { Succeeded: "succeeded", Failed: "failed" },
    EventType: {
      ItemChanged: "olkItemSelectedChanged",
      DialogMessageReceived: "dialogMessageReceived",
      DialogEventReceived: "dialogEventReceived",
    },
    MailboxEnums: {
      AttachmentType: { File: "file", Item: "item", Cloud: "cloud" },
      AttachmentContentFormat: { Base64: "base64", Url: "url", Eml: "eml", ICalendar: "iCalendar" },
      ItemType: { Message: "message", Appointment: "appointment" },
    },
    context: {
      host: "Outlook",
      platform: config.platform || "PC",
      requirements: { isSetSupported: supports },
      mailbox: mailbox,
      roamingSettings: roamingSettings,
      ui: { displayDialogAsync: displayDialogAsync, messageParent: messageParent },
    },
    onReady: function (callback) {
      var info = { host: "Outlook", platform: config.platform || "PC" };
      return new Promise(function (resolve) {
        setTimeout(function () {
          if (typeof callback === "function") callback(info);
          resolve(info);
        }, 10);
      });
    },
  };

  window.Office = Office;
  window.__officeStub = {
    calls: calls,
    roaming: function () {
      return JSON.parse(JSON.stringify(roamingValues));
    },
    selectItem: function (data) {
      mailbox.item = makeItem(data);
      itemChangedHandlers.forEach(function (handler) {
        handler({ type: "olkItemSelectedChanged" });
      });
    },
  };
})();
