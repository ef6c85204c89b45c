// Dotted versions ("26.11.0", "1.0.0-beta") compared part by part as numbers.

export function parseVersion(version) {
  const core = String(version ?? "").split("-")[0];
  const parts = (core.match(/\d+/g) || []).slice(0, 4).map(Number);
  while (parts.length < 3) parts.push(0);
  return parts;
}

export function compareVersions(a, b) {
  const x = parseVersion(a);
  const y = parseVersion(b);
  for (let i = 0; i < Math.max(x.length, y.length); i += 1) {
    const d = (x[i] || 0) - (y[i] || 0);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return 0;
}

export function olderThan(version, minimum) {
  return compareVersions(version, minimum) < 0;
}
