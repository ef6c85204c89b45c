/*
 * A small rich-text editor for the compose page: bold, italic, lists and links.
 *
 * The page works without it: the body is a textarea whose text is sent as HTML. With it, the
 * textarea is hidden and kept equal to the editable area's HTML on every change, so the form
 * posts the same field either way. The server sanitises what it receives (nh3) regardless.
 */
(function () {
  "use strict";

  function sync(area, textarea) {
    textarea.value = area.innerHTML;
  }

  function safeLink(url) {
    var trimmed = (url || "").trim();
    if (/^(https?:|mailto:)/i.test(trimmed)) {
      return trimmed;
    }
    if (/^[^\s:/]+\.[^\s:]+/.test(trimmed)) {
      return "https://" + trimmed;
    }
    return "";
  }

  function run(command, area) {
    area.focus();
    if (command === "createLink") {
      var url = safeLink(window.prompt("Link address (https://…)", "https://"));
      if (!url) {
        return;
      }
      document.execCommand("createLink", false, url);
      return;
    }
    document.execCommand(command, false, null);
  }

  function start(editor) {
    var textarea = document.getElementById(editor.getAttribute("data-editor-for"));
    var area = editor.querySelector(".editor-area");
    if (!textarea || !area) {
      return;
    }
    editor.hidden = false;
    textarea.hidden = true;
    textarea.setAttribute("aria-hidden", "true");
    sync(area, textarea);
    area.addEventListener("input", function () {
      sync(area, textarea);
    });
    editor.querySelectorAll("[data-command]").forEach(function (button) {
      // Keep the selection in the text when the button is pressed.
      button.addEventListener("mousedown", function (event) {
        event.preventDefault();
      });
      button.addEventListener("click", function () {
        run(button.getAttribute("data-command"), area);
        sync(area, textarea);
      });
    });
    var form = textarea.form;
    if (form) {
      form.addEventListener("submit", function () {
        sync(area, textarea);
      });
    }
  }

  document.querySelectorAll("[data-editor-for]").forEach(start);
})();
