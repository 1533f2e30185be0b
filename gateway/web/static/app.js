// Book Rental's web app: sign in, then the pages of your role.
// Routes live in the URL's fragment (#/mypage), so the gateway serves one
// page and every asset from /static; no build step, no third party.

import { describe, fieldErrors, post, request, session, whenSignedOut } from "./api.js";
import { busy, field, h, messageArea, say } from "./dom.js";
import * as account from "./account.js";
import * as catalogue from "./catalogue.js";
import * as courier from "./courier.js";
import * as librarian from "./librarian.js";
import * as mypage from "./mypage.js";
import * as notices from "./notices.js";

const ROUTES = {
  catalogue: { label: "Catalogue", roles: ["customer", "librarian", null], view: catalogue },
  mypage: { label: "MyPage", roles: ["customer"], view: mypage },
  notices: { label: "Notices", roles: ["customer"], view: notices },
  account: { label: "Account", roles: ["customer"], view: account },
  stock: { label: "Stock", roles: ["librarian"], view: librarian },
  deliveries: { label: "Deliveries", roles: ["courier"], view: courier },
  signin: { label: "Sign in", roles: [null], view: null },
};
const HOME = { customer: "catalogue", librarian: "stock", courier: "deliveries" };

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const whoName = document.getElementById("who-name");
let current = null; // the view on screen: {el, dispose}
let notice = ""; // said once on the sign-in page (e.g. "your sign-in expired")

function role() {
  const saved = session.get();
  return saved ? saved.role : null;
}

function routeName() {
  const wanted = (location.hash.replace(/^#\/?/, "").split(/[/?]/)[0] || "").toLowerCase();
  const r = role();
  if (ROUTES[wanted] && ROUTES[wanted].roles.includes(r)) return wanted;
  return r ? HOME[r] || "catalogue" : "signin";
}

function renderChrome(active) {
  const saved = session.get();
  const r = saved ? saved.role : null;
  nav.replaceChildren(...Object.entries(ROUTES)
    .filter(([, route]) => route.roles.includes(r))
    .map(([name, route]) => h("a", { href: `#/${name}`, text: route.label, "aria-current": name === active ? "page" : false })));
  nav.hidden = false;
  who.hidden = !saved;
  whoName.textContent = saved ? `${saved.username} (${saved.role})` : "";
}

function show() {
  const name = routeName();
  if (`#/${name}` !== location.hash && location.hash !== "" && location.hash !== "#/") {
    history.replaceState(null, "", `#/${name}`);
  }
  if (current) current.dispose();
  current = name === "signin" ? signInView() : ROUTES[name].view.render({ session: session.get() });
  renderChrome(name);
  document.body.dataset.view = name;
  document.body.dataset.role = role() || "";
  main.replaceChildren(current.el);
  document.title = `${ROUTES[name].label} · Book Rental`;
}

function go(name) {
  if (location.hash === `#/${name}`) show();
  else location.hash = `#/${name}`; // hashchange shows it
}

function signOut(message = "") {
  session.clear();
  notice = message;
  if (current) current.dispose();
  current = null;
  history.replaceState(null, "", "#/signin");
  show();
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
        return;
      }
      try {
        const token = await request("POST", "/auth/token", { body, auth: false });
        session.set(token);
        go(HOME[role()] || "catalogue");
      } catch (error) {
        password.input.value = "";
        password.input.focus();
        say(message, error.status === 401 ? "Wrong username or password. Please try again." : error.message, "error");
      }
    });
  });

  const newName = field("Choose a username", { name: "new-username", id: "signup-username", autocomplete: "username", required: true, maxlength: 32 });
  const newPassword = field("Choose a password (8 characters or more)", { name: "new-password", id: "signup-password", type: "password", autocomplete: "new-password", required: true, maxlength: 256 });
  const signUpMessage = messageArea();
  const create = h("button", { type: "submit", class: "button quiet", text: "Create account" });
  const signUp = h("form", { class: "card form", id: "signup", novalidate: true, "aria-labelledby": "signup-title" },
    h("h2", { id: "signup-title", text: "New here? Create a customer account" }),
    newName.wrapper, newPassword.wrapper, h("div", { class: "row" }, create), signUpMessage);
  signUp.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(create, async () => {
      say(signUpMessage, "");
      newName.error.textContent = "";
      newPassword.error.textContent = "";
      const body = { username: newName.input.value.trim(), password: newPassword.input.value };
      try {
        await post("/auth/register", body, { auth: false });
        session.set(await request("POST", "/auth/token", { body, auth: false }));
        go("catalogue");
      } catch (error) {
        const errors = fieldErrors(error.details);
        newName.error.textContent = errors.username || "";
        newPassword.error.textContent = errors.password || "";
        say(signUpMessage, error.message, "error");
      }
    });
  });

  const el = h("section", { class: "view signin stack" }, form, signUp,
    h("p", { class: "meta" }, "Just looking? ", h("a", { href: "#/catalogue", text: "Browse the catalogue" }), "."));
  queueMicrotask(() => username.input.focus());
  return { el, dispose() {} };
}

// -- start -----------------------------------------------------------------

document.getElementById("sign-out").addEventListener("click", () => signOut("You are signed out."));
whenSignedOut((message) => signOut(message));
window.addEventListener("hashchange", show);
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
show();
