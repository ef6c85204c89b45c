// The manifest's function file: no commands run without the pane; Office only needs it loaded.
"use strict";
if (window.Office && typeof Office.onReady === "function") Office.onReady(function () {});
