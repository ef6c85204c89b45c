// The add-in's own version and what it needs from the CRM. ADDIN_VERSION is also the manifest's
// <Version> (mailconnector/manifest.py ADDIN_VERSION; a test keeps the two in step).
export const ADDIN_VERSION = "1.0.0";
// The oldest CRM this pane works with: older ones lack endpoints or answers it relies on.
export const MIN_CRM_VERSION = "26.11.0";
export const API_VERSION = "v1";
export const API_PREFIX = "/api/addin/v1/";
// A just-sent email may have no internetMessageId for a few seconds (Exchange assigns it when
// the copy lands in Sent Items): ask again this many times, this far apart.
export const MESSAGE_ID_ATTEMPTS = 4;
export const MESSAGE_ID_DELAY_MS = 1000;
// Refresh the access token this long before it expires, rather than after a 401.
export const REFRESH_EARLY_MS = 30_000;
