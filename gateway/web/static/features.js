// Which parts of the HTTP API this gateway offers, read once from its own
// OpenAPI document (GET /openapi.json, generated from the routes it serves).
//
// The web app is served by the gateway it talks to, so the two normally
// match; this lets a screen ship in the same app before or after the route it
// needs, and be left out quietly (no link, no request, no console error)
// where the route is not there. Each name below is one route or field of
// SPEC §5; a screen asks `has("account")`, never for a path.

const WANTED = {
  // name: (document) → bool
  account: (doc) => Boolean(op(doc, "get", "/account") && op(doc, "patch", "/account")),
  notifications: (doc) => Boolean(op(doc, "get", "/notifications")),
  search: (doc) => queryNames(doc, "get", "/books").includes("q"),
  mypagePaging: (doc) => queryNames(doc, "get", "/mypage").includes("limit"),
  trace: (doc) => Boolean(op(doc, "get", /^\/reservations\/\{[^}]+\}\/events$/)),
  renew: (doc) => Boolean(op(doc, "post", /^\/reservations\/\{[^}]+\}\/renew$/)),
  logout: (doc) => Boolean(op(doc, "post", "/auth/logout")),
  signupEmail: (doc) => bodyFields(doc, "post", "/auth/register").includes("email"),
  signupAddress: (doc) => bodyFields(doc, "post", "/auth/register").includes("address"),
};

let known = {};

function op(doc, method, path) {
  const paths = (doc && doc.paths) || {};
  const key = typeof path === "string" ? path : Object.keys(paths).find((p) => path.test(p));
  return key && paths[key] ? paths[key][method] || null : null;
}

function resolve(doc, schema) {
  let out = schema || {};
  for (let hops = 0; out.$ref && hops < 5; hops += 1) {
    out = out.$ref.replace(/^#\//, "").split("/").reduce((node, part) => (node || {})[part], doc) || {};
  }
  return out;
}

function queryNames(doc, method, path) {
  const operation = op(doc, method, path);
  return ((operation && operation.parameters) || []).filter((p) => p.in === "query").map((p) => p.name);
}

function bodyFields(doc, method, path) {
  const operation = op(doc, method, path);
  const content = operation && operation.requestBody && operation.requestBody.content;
  const schema = content && content["application/json"] && resolve(doc, content["application/json"].schema);
  return Object.keys((schema && schema.properties) || {});
}

/** Read the gateway's OpenAPI document once; without it, every optional part is off. */
export async function loadFeatures() {
  let doc = null;
  try {
    const response = await fetch("/openapi.json", { headers: { Accept: "application/json" }, credentials: "omit" });
    if (response.ok) doc = await response.json();
  } catch {
    doc = null;
  }
  known = Object.fromEntries(Object.entries(WANTED).map(([name, test]) => [name, Boolean(doc && test(doc))]));
  document.documentElement.dataset.features = Object.keys(known).filter((name) => known[name]).join(" ");
  return known;
}

/** Whether the gateway offers ``name`` (a key of WANTED above). */
export function has(name) {
  return Boolean(known[name]);
}
