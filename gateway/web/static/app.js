// Book Rental's web app: sign in, then the pages of your role.
// Routes live in the URL's fragment (#/mypage), so the gateway serves one
// page and every asset from /static; no build step, no third party.
//
// Every page is a module with render({session}) → {el, dispose()}; el is a
// <section class="view"> whose first heading is its <h1>. A page whose API
// route is not offered by this gateway (features.js) is left out of the
// menu and cannot be opened.

import { describe, fieldErrors, post, request, session, whenSignedOut } from "./api.js";
import { busy, field, focusOn, h, messageArea, say, showError } from "./dom.js";
import { has, loadFeatures } from "./features.js";
import * as catalogue from "./catalogue.js";
import * as courier from "./courier.js";
import * as librarian from "./librarian.js";
import * as mypage from "./mypage.js";
import * as notices from "./notices.js";
import * as profile from "./profile.js";
import * as trace from "./trace.js";

const ROUTES = {
  catalogue: { label: "Catalogue", roles: ["customer", "librarian", null], view: catalogue },
  mypage: { label: "MyPage", roles: ["customer"], view: mypage },
  notices: { label: "Notices", roles: ["customer"], view: notices, needs: "notifications" },
  profile: { label: "Profile", roles: ["customer"], view: profile, needs: "account" },
  stock: { label: "Stock", roles: ["librarian"], view: librarian },
  trace: { label: "Trace", roles: ["librarian"], view: trace, needs: "trace" },
  deliveries: { label: "Deliveries", roles: ["courier"], view: courier },
  signin: { label: "Sign in", roles: [null], view: null },
};
const HOME = { customer: "catalogue", librarian: "stock", courier: "deliveries" };
const EXPIRED = "Your sign-in has expired. Please sign in again.";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const whoName = document.getElementById("who-name");
let current = null; // the view on screen: {el, dispose}
let shownName = null;
let notice = ""; // said once on the sign-in page (e.g. "your sign-in expired")
let returnTo = null; // the page to go back to after signing in again
let expiryTimer = null;

function role() {
  const saved = session.get();
  return saved ? saved.role : null;
}

function allowed(name, r) {
  const route = ROUTES[name];
  return Boolean(route && route.roles.includes(r) && (!route.needs || has(route.needs)));
}

function wantedName() {
  return (location.hash.replace(/^#\/?/, "").split(/[/?]/)[0] || "").toLowerCase();
}

function routeName() {
  const wanted = wantedName();
  const r = role();
  if (allowed(wanted, r)) return wanted;
  return r ? HOME[r] || "catalogue" : "signin";
}

function renderChrome(active) {
  const saved = session.get();
  const r = saved ? saved.role : null;
  nav.replaceChildren(...Object.keys(ROUTES)
    .filter((name) => allowed(name, r) && !(name === "signin" && active === "signin"))
    .map((name) => h("a", { href: `#/${name}`, text: ROUTES[name].label, "aria-current": name === active ? "page" : false })));
  nav.hidden = nav.children.length === 0;
  who.hidden = !saved;
  whoName.textContent = saved ? saved.username : "";
  whoName.title = saved ? `Signed in as ${saved.username} (${saved.role})` : "";
  document.getElementById("who-role").textContent = saved ? saved.role : "";
}

/** Sign out by the clock when the token runs out, rather than at the next click.
 *  A session with a refresh token is kept alive by api.js instead, and signed
 *  out (whenSignedOut) only when the gateway no longer takes it. */
function watchExpiry() {
  clearTimeout(expiryTimer);
  const saved = session.get();
  if (!saved || saved.refreshToken) return;
  const left = saved.expiresAt * 1000 - Date.now();
  if (left < 2 ** 31) expiryTimer = setTimeout(() => signOut(EXPIRED, true), Math.max(0, left));
}

function show({ focus = true } = {}) {
  if (session.expired()) {
    signOut(EXPIRED, true);
    return;
  }
  const name = routeName();
  if (wantedName() !== name && location.hash !== "" && location.hash !== "#/") {
    history.replaceState(null, "", `#/${name}`);
  }
  if (current) current.dispose();
  current = name === "signin" ? signInView() : ROUTES[name].view.render({ session: session.get() });
  renderChrome(name);
  document.body.dataset.view = name;
  document.body.dataset.role = role() || "";
  main.replaceChildren(current.el);
  document.title = `${ROUTES[name].label} · Book Rental`;
  watchExpiry();
  // A new page was opened: the keyboard and screen readers start at its heading,
  // not on a link of the page that is gone. (The sign-in page focuses its first field.)
  if (focus && name !== "signin" && shownName !== null) focusOn(current.el.querySelector("h1"));
  shownName = name;
}

function go(name) {
  if (location.hash === `#/${name}`) show();
  else location.hash = `#/${name}`; // hashchange shows it
}

function signOut(message = "", comeBack = false) {
  const wanted = wantedName();
  if (!comeBack) returnTo = null;
  else if (wanted && wanted !== "signin") returnTo = wanted;
  session.clear();
  clearTimeout(expiryTimer);
  notice = message;
  if (current) current.dispose();
  current = null;
  history.replaceState(null, "", "#/signin");
  show();
}

async function signOutByHand() {
  // Where the gateway can end the session (POST /auth/logout), its tokens stop
  // working everywhere; this tab forgets them in any case.
  if (has("logout") && session.get()) {
    try {
      await request("POST", "/auth/logout");
    } catch {
      // Signed out here all the same; the token runs out by itself.
    }
  }
  signOut("You are signed out.");
}

// -- sign in and sign up ---------------------------------------------------

function signInView() {
  const username = field("Username", { name: "username", id: "signin-username", autocomplete: "username", required: true, maxlength: 64 });
  const password = field("Password", { name: "password", id: "signin-password", type: "password", autocomplete: "current-password", required: true, maxlength: 256 });
  const message = messageArea();
  message.id = "signin-message";
  const submit = h("button", { type: "submit", class: "button", text: "Sign in" });
  const form = h("form", { class: "card form", id: "signin", novalidate: true, "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title", text: "Sign in" }),
    username.wrapper, password.wrapper,
    h("div", { class: "row" }, submit),
    message);
  if (notice) say(message, notice, "info");
  notice = "";

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(submit, async () => {
      say(message, "");
      const body = { username: username.input.value.trim(), password: password.input.value };
      if (!body.username || !body.password) {
        say(message, "Enter your username and your password.", "error");
        (body.username ? password : username).input.focus();
        return;
      }
      try {
        const token = await request("POST", "/auth/token", { body, auth: false });
        session.set(token);
        const back = returnTo && allowed(returnTo, role()) ? returnTo : null;
        returnTo = null;
        go(back || HOME[role()] || "catalogue");
      } catch (error) {
        password.input.value = "";
        password.input.focus();
        const wrong = error.status === 401 || error.code === "invalid_grant";
        say(message, wrong ? "Wrong username or password. Please try again." : error.message, "error");
      }
    });
  });

  const el = h("section", { class: "view signin stack" }, form, signUpForm(),
    h("p", { class: "meta" }, "Just looking? ", h("a", { href: "#/catalogue", text: "Browse the catalogue" }), "."));
  queueMicrotask(() => username.input.focus());
  return { el, dispose() {} };
}

function signUpForm() {
  const fields = {
    username: field("Choose a username", { name: "new-username", id: "signup-username", autocomplete: "username", required: true, maxlength: 32 },
      { hint: "2 to 32 letters, digits, '.', '_' or '-'." }),
    password: field("Choose a password", { name: "new-password", id: "signup-password", type: "password", autocomplete: "new-password", required: true, maxlength: 256 },
      { hint: "8 characters or more." }),
  };
  // Optional details, where this gateway takes them at sign-up (SPEC §5).
  if (has("signupEmail")) {
    fields.email = field("Email (optional)", { name: "new-email", id: "signup-email", type: "email", autocomplete: "email", maxlength: 254 },
      { hint: "We write to you when something happens to your books." });
  }
  if (has("signupAddress")) {
    fields.address = field("Delivery address (optional)", { name: "new-address", id: "signup-address", autocomplete: "street-address", maxlength: 300, rows: 3 },
      { hint: "Where we bring your books.", multiline: true });
  }
  const message = messageArea();
  const create = h("button", { type: "submit", class: "button quiet", text: "Create account" });
  const form = h("form", { class: "card form", id: "signup", novalidate: true, "aria-labelledby": "signup-title" },
    h("h2", { id: "signup-title", text: "New here? Create a customer account" }),
    Object.values(fields).map((f) => f.wrapper), h("div", { class: "row" }, create), message);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(create, async () => {
      say(message, "");
      Object.values(fields).forEach((f) => showError(f, ""));
      const body = { username: fields.username.input.value.trim(), password: fields.password.input.value };
      for (const name of ["email", "address"]) {
        const value = fields[name] ? fields[name].input.value.trim() : "";
        if (value) body[name] = value;
      }
      try {
        await post("/auth/register", body, { auth: false });
        session.set(await request("POST", "/auth/token", { body: { username: body.username, password: body.password }, auth: false }));
        go("catalogue");
      } catch (error) {
        const errors = fieldErrors(error.details);
        const marked = Object.entries(fields).filter(([name, f]) => {
          showError(f, errors[name]);
          return Boolean(errors[name]);
        });
        say(message, marked.length ? "Please check the fields marked above." : error.message, "error");
        if (marked.length) marked[0][1].input.focus();
      }
    });
  });
  return form;
}

// -- start -----------------------------------------------------------------

document.getElementById("sign-out").addEventListener("click", () => signOutByHand());
document.getElementById("skip").addEventListener("click", (event) => {
  // The fragment holds the route, so the skip link moves the focus itself.
  event.preventDefault();
  focusOn(main.querySelector("h1") || main);
});
whenSignedOut((message) => {
  // Several calls in flight may be refused at once: the first one signs out.
  if (shownName === "signin" && !session.kept()) return;
  signOut(message, true);
});
window.addEventListener("hashchange", () => show());
window.addEventListener("unhandledrejection", (event) => {
  // A failure nobody caught still reaches the person in words.
  const text = event.reason && event.reason.name === "ApiError" ? event.reason.message : describe(500);
  let banner = document.getElementById("app-message");
  if (!banner) {
    banner = messageArea();
    banner.id = "app-message";
    main.prepend(banner);
  }
  say(banner, text, "error");
  event.preventDefault();
});
loadFeatures().then(() => show({ focus: false }));
