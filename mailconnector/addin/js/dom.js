// Small DOM helpers: no HTML strings, so nothing from an email or the CRM is ever parsed.

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "className") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
  }
  return node;
}

export function show(node, visible = true) {
  node.hidden = !visible;
}

export function setText(node, text) {
  node.textContent = text || "";
}

// One screen at a time; the new screen's heading takes the focus so that a screen reader
// announces where the user is.
export function showScreen(id) {
  for (const screen of document.querySelectorAll("[data-screen]")) {
    screen.hidden = screen.id !== id;
  }
  const heading = document.querySelector(`#${id} [data-focus]`);
  if (heading) heading.focus();
}
