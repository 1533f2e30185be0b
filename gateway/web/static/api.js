// The HTTP API of SPEC §5, and the sign-in it needs.
//
// Signing in (POST /auth/token, JSON) starts a session: the answer holds an
// access token (a bearer JWT, good for an hour) and a refresh token (good
// once). A minute before the access token expires, or when a call finds it
// (nearly) expired, the refresh token is traded for a new pair (the OAuth 2
// refresh grant, form-encoded); signing out (POST /auth/logout, app.js) ends
// the session on the gateway, for every replica.
//
// The tokens are kept in sessionStorage: they survive a reload of the tab,
// but not closing it, and no other tab or site sees them. They are never put
// in a cookie (so no request can be forged with them from another site) nor
// in a URL (so they never reach a log or the history). The page's CSP allows
// scripts from the gateway only, which keeps other scripts away from them.

const SESSION_KEY = "bookrental.session";
const CLIENT_ID = "bookrental-web";
const REFRESH_BEFORE_S = 60; // refresh this long before the access token expires

export class ApiError extends Error {
  constructor(status, code, message, details = {}, retryAfter = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details || {};
    this.retryAfter = retryAfter;
  }
}

// -- the session ------------------------------------------------------------

function decodeClaims(token) {
  const part = token.split(".")[1] || "";
  const base64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
  return JSON.parse(atob(base64));
}

function stored() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
  } catch {
    return null;
  }
}

let refreshTimer = null;

export const session = {
  /** The session, while its access token is good or it can be refreshed. */
  get() {
    const saved = stored();
    if (!saved || !saved.token) return null;
    if (saved.expiresAt * 1000 <= Date.now() && !saved.refreshToken) return null;
    return saved;
  },
  /** True when this tab keeps a sign-in, valid or not. */
  kept() {
    return sessionStorage.getItem(SESSION_KEY) !== null;
  },
  /** True when a sign-in was kept in this tab but has run out (and cannot be refreshed). */
  expired() {
    return this.kept() && this.get() === null;
  },
  /** Keep the tokens of POST /auth/token; who and what role are read from
   *  the access token for display only: the gateway checks them on every call. */
  set(tokenResponse) {
    const claims = decodeClaims(tokenResponse.access_token);
    const saved = {
      token: tokenResponse.access_token,
      refreshToken: tokenResponse.refresh_token || null,
      username: claims.sub,
      role: claims.role,
      expiresAt: claims.exp || Math.floor(Date.now() / 1000) + (tokenResponse.expires_in || 0),
    };
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(saved));
    scheduleRefresh(saved);
    return saved;
  },
  clear() {
    clearTimeout(refreshTimer);
    sessionStorage.removeItem(SESSION_KEY);
  },
};

let onSignedOut = () => {};

/** Called with a sentence when the gateway no longer accepts the token. */
export function whenSignedOut(callback) {
  onSignedOut = callback;
}

// -- errors in words -------------------------------------------------------

function sentence(text) {
  const trimmed = String(text || "").trim();
  if (!trimmed) return "";
  const capital = trimmed[0].toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(capital) ? capital : `${capital}.`;
}

function seconds(retryAfter, fallback = 5) {
  const n = Number.parseInt(retryAfter, 10);
  return Number.isFinite(n) && n > 0 ? n : fallback;
}

/** What to tell a person about a failed call. */
export function describe(status, message, retryAfter) {
  const said = sentence(message);
  switch (status) {
    case 0:
      return "The library cannot be reached. Check your connection and try again.";
    case 400:
      return said && said !== "The request is not valid." ? said : "Please check what you entered.";
    case 401:
      return said || "Please sign in.";
    case 403:
      return `You are not allowed to do this. ${said}`.trim();
    case 404:
      return said || "This no longer exists.";
    case 409:
      return said || "This is not possible right now.";
    case 413:
      return "That is too much text to send.";
    case 429: {
      const n = seconds(retryAfter);
      return `Too many requests. Please wait ${n} second${n === 1 ? "" : "s"} and try again.`;
    }
    case 503: {
      const n = seconds(retryAfter);
      return `${said || "A service is unavailable."} Nothing was changed. Please try again in ${n} second${n === 1 ? "" : "s"}.`;
    }
    default:
      return status >= 500
        ? "Something went wrong on our side. Please try again in a moment."
        : said || `The request failed (${status}).`;
  }
}

/** The sentences found anywhere in a detail (a string, a list, nested objects). */
function sentences(value) {
  if (value === null || value === undefined) return [];
  if (Array.isArray(value)) return value.flatMap(sentences);
  if (typeof value === "object") return Object.values(value).flatMap(sentences);
  return [sentence(String(value))];
}

/** Field-level details of a 400, flattened: {field: "Message. Message."}, words only. */
export function fieldErrors(details) {
  const out = {};
  for (const [name, value] of Object.entries(details || {})) {
    const text = sentences(value).filter(Boolean).join(" ");
    if (text) out[name] = text;
  }
  return out;
}

// -- the OAuth 2 token endpoint ----------------------------------------------

/** POST /auth/token with a form (RFC 6749): the token answer, or an ApiError
 *  whose code is the OAuth 2 error ("invalid_grant": a refresh token that is
 *  no longer good). */
async function tokenRequest(params) {
  let response;
  try {
    response = await fetch("/auth/token", {
      method: "POST",
      headers: { Accept: "application/json", "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ ...params, client_id: CLIENT_ID }).toString(),
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
    });
  } catch {
    throw new ApiError(0, "network", describe(0));
  }
  const payload = await response.json().catch(() => null);
  if (response.ok && payload) return payload;
  const retryAfter = response.headers.get("Retry-After");
  if (payload && typeof payload.error === "string") {
    const message = sentence(payload.error_description) || describe(response.status);
    throw new ApiError(response.status, payload.error, message, {}, retryAfter);
  }
  const error = (payload && payload.error) || {};
  throw new ApiError(response.status, error.code || "error", describe(response.status, error.message, retryAfter),
    error.details, retryAfter);
}

let refreshing = null;

/** Trade the refresh token for a new pair (once at a time); the session, or
 *  null when it has ended (the person is told, and signed out). */
function refreshSession() {
  if (!refreshing) {
    const saved = stored();
    refreshing = (async () => {
      if (!saved || !saved.refreshToken) return null;
      try {
        return session.set(await tokenRequest({ grant_type: "refresh_token", refresh_token: saved.refreshToken }));
      } catch (error) {
        if (error.code === "invalid_grant") {
          session.clear();
          onSignedOut("Your sign-in has expired. Please sign in again.");
          return null;
        }
        return stored(); // the network or the gateway failed: keep what we have, try again later
      }
    })().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

function scheduleRefresh(saved) {
  clearTimeout(refreshTimer);
  if (!saved || !saved.refreshToken) return;
  const inMs = Math.max(5, saved.expiresAt - REFRESH_BEFORE_S - Date.now() / 1000) * 1000;
  refreshTimer = setTimeout(async () => {
    const now = await refreshSession();
    if (now && now.token === saved.token) refreshTimer = setTimeout(() => scheduleRefresh(stored()), 15000);
  }, Math.min(inMs, 2 ** 31 - 1));
}

/** The session with an access token good for a while yet, refreshed if need be. */
async function freshSession() {
  const saved = session.get();
  if (!saved) return null;
  if (saved.expiresAt - Date.now() / 1000 > 30) return saved;
  return refreshSession();
}

scheduleRefresh(stored()); // a reloaded tab keeps refreshing its session

// -- calls ------------------------------------------------------------------

/**
 * request("POST", "/books", {body: {...}}) → the parsed JSON answer, or
 * throws an ApiError whose message is a sentence for a person.
 */
export async function request(method, path, { body, headers = {}, auth = true } = {}) {
  const sending = { Accept: "application/json", ...headers };
  if (body !== undefined) sending["Content-Type"] = "application/json";
  const current = auth ? await freshSession() : null;
  const signedIn = auth && session.kept(); // even if it has expired
  if (auth && current) sending.Authorization = `Bearer ${current.token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: sending,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
    });
  } catch {
    throw new ApiError(0, "network", describe(0));
  }
  const text = await response.text().catch(() => "");
  let payload = null;
  try {
    payload = text ? JSON.parse(text) : null;
  } catch {
    payload = null;
  }
  if (response.ok) return payload;
  // SPEC §5's {"error": {code, message, details}}; or RFC 6749's {"error": "invalid_grant", ...}
  // from the token endpoint; or anything else (a proxy's HTML page): never shown as it is.
  const error = payload && typeof payload.error === "object" && payload.error ? payload.error
    : { code: payload && typeof payload.error === "string" ? payload.error : "error",
        message: payload && typeof payload.error_description === "string" ? payload.error_description : "" };
  const retryAfter = response.headers.get("Retry-After");
  const failure = new ApiError(response.status, error.code || "error",
    describe(response.status, error.message, retryAfter), error.details, retryAfter);
  if (response.status === 401 && signedIn) {
    session.clear();
    onSignedOut("Your sign-in has expired. Please sign in again.");
  }
  throw failure;
}

export const get = (path, options = {}) => request("GET", path, options);
export const post = (path, body, options = {}) => request("POST", path, { ...options, body });
export const patch = (path, body, options = {}) => request("PATCH", path, { ...options, body });

/** ``path`` with ``?name=value`` (or ``&``) for each given (not null) parameter. */
export function withQuery(path, params) {
  const query = Object.entries(params)
    .filter(([, value]) => value !== null && value !== undefined && value !== "")
    .map(([name, value]) => `${encodeURIComponent(name)}=${encodeURIComponent(value)}`).join("&");
  if (!query) return path;
  return `${path}${path.includes("?") ? "&" : "?"}${query}`;
}

/** Every page of a list (SPEC §5: {items, next}), up to ``maxPages``. */
export async function allPages(path, maxPages = 20) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < maxPages; page += 1) {
    const answer = await get(withQuery(path, { cursor }));
    items.push(...answer.items);
    cursor = answer.next;
    if (!cursor) return { items, next: null };
  }
  return { items, next: cursor };
}

/** A fresh Idempotency-Key. */
export function newKey() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID();
  return `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}
