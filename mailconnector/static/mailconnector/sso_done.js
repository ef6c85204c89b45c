// The last page of the add-in's sign-in dialog: hand the result to the task pane.
//
// Office.context.ui.messageParent takes a string; the task pane parses it, checks `state`
// against the one it sent to auth/sso/authorize, and trades `code` at auth/sso/token with its
// code_verifier. Outside an Office dialog (office.js missing, or no dialog API) the page only
// says that the window can be closed.
"use strict";

(function () {
  var status = document.getElementById("sso-status");
  var result = JSON.parse(document.getElementById("sso-result").textContent);
  var done = false;

  function standalone() {
    if (!done) {
      status.textContent = "You can close this window.";
    }
  }

  function send() {
    var ui = window.Office && Office.context && Office.context.ui;
    if (!ui || typeof ui.messageParent !== "function") {
      standalone();
      return;
    }
    var message = JSON.stringify(result.message);
    try {
      if (result.target_origin) {
        // DialogOrigin 1.1: a task pane on another origin than this page.
        ui.messageParent(message, { targetOrigin: result.target_origin });
      } else {
        ui.messageParent(message);
      }
      done = true;
      if (result.message.status === "ok") {
        status.textContent = "Signed in. Returning to Outlook…";
      }
    } catch (error) {
      standalone();
    }
  }

  if (!window.Office || typeof Office.onReady !== "function") {
    standalone();
    return;
  }
  // office.js may never become ready outside Office: say so after a while, keep listening.
  window.setTimeout(standalone, 5000);
  Office.onReady(send);
})();
