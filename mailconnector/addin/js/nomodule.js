// Runs only where ES modules do not (Outlook 2016/2019 on Windows with Internet Explorer's
// engine): say so instead of showing an empty pane.
(function () {
  var text = document.getElementById("boot-text");
  if (text) {
    text.innerHTML = "";
    text.appendChild(
      document.createTextNode(
        "This version of Outlook is too old for the CRM Mail Connector. Use Outlook on the " +
          "web, or a Microsoft 365 version of Outlook.",
      ),
    );
  }
})();
