// Fakes shared by the unit tests: a Storage, a fetch that answers from a script, a clock.

export function memoryStorage() {
  const data = new Map();
  return {
    getItem: (k) => (data.has(k) ? data.get(k) : null),
    setItem: (k, v) => data.set(k, String(v)),
    removeItem: (k) => data.delete(k),
    get size() {
      return data.size;
    },
  };
}

export function json(status, body, type = "application/json") {
  return new Response(body === null ? null : JSON.stringify(body), {
    status,
    headers: { "Content-Type": type },
  });
}

export function problem(status, code, detail = "", extra = {}) {
  return json(
    status,
    { type: `https://x/${code}`, title: code, status, detail, code, ...extra },
    "application/problem+json",
  );
}

// fetch that answers each call with the next handler's response; records the calls.
export function scriptedFetch(...handlers) {
  const calls = [];
  const fetch = async (url, init = {}) => {
    const call = { url, method: init.method, headers: init.headers || {}, body: init.body };
    calls.push(call);
    const handler = handlers.shift();
    if (!handler) throw new Error(`unexpected call ${init.method} ${url}`);
    return handler(call);
  };
  fetch.calls = calls;
  return fetch;
}
