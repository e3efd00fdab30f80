// Sign-in view: log in, or sign up. Errors are shown as text in an alert region.

import { h } from "./dom.js";

function field(label, input) {
  return h("label", { class: "field" }, h("span", { text: label }), input);
}

export function authView(store) {
  const error = h("p", { class: "error", role: "alert" });
  const root = h("section", { class: "auth", "aria-labelledby": "auth-title" });

  function showError(problem) {
    error.textContent = typeof problem?.describe === "function" ? problem.describe() : String(problem?.message ?? problem);
  }

  async function submit(event, action) {
    event.preventDefault();
    const form = event.currentTarget;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    error.textContent = "";
    try {
      await action(new FormData(form));
    } catch (problem) {
      showError(problem);
      button.disabled = false;
    }
  }

  const login = h(
    "form",
    { "aria-label": "Log in", onsubmit: (event) => submit(event, (data) => store.login(data.get("identity"), data.get("password"))) },
    field("Username or e-mail", h("input", { name: "identity", autocomplete: "username", required: true, maxlength: 254 })),
    field("Password", h("input", { name: "password", type: "password", autocomplete: "current-password", required: true, maxlength: 128 })),
    h("button", { type: "submit", class: "primary", text: "Log in" }),
  );
  const signup = h(
    "form",
    {
      "aria-label": "Sign up",
      hidden: true,
      onsubmit: (event) =>
        submit(event, (data) =>
          store.signup({
            name: data.get("name"),
            username: data.get("username"),
            email: data.get("email"),
            password: data.get("password"),
          }),
        ),
    },
    field("Name", h("input", { name: "name", autocomplete: "name", required: true, maxlength: 100 })),
    field("Username", h("input", { name: "username", autocomplete: "username", required: true, minlength: 3, maxlength: 32, pattern: "[A-Za-z0-9_.\\-]+" })),
    field("E-mail", h("input", { name: "email", type: "email", autocomplete: "email", required: true, maxlength: 254 })),
    field("Password", h("input", { name: "password", type: "password", autocomplete: "new-password", required: true, minlength: 8, maxlength: 128 })),
    h("button", { type: "submit", class: "primary", text: "Sign up" }),
  );

  const toggle = h("button", { type: "button", class: "link" });
  const prompt = h("span");
  function show(which) {
    const signingUp = which === "signup";
    login.hidden = signingUp;
    signup.hidden = !signingUp;
    prompt.textContent = signingUp ? "Have an account? " : "No account yet? ";
    toggle.textContent = signingUp ? "Log in" : "Sign up";
    error.textContent = "";
    (signingUp ? signup : login).querySelector("input").focus();
  }
  toggle.addEventListener("click", () => show(login.hidden ? "login" : "signup"));

  root.append(
    h("h1", { id: "auth-title", text: "Chat Group" }),
    login,
    signup,
    error,
    h("p", { class: "switch" }, prompt, toggle),
  );
  return {
    element: root,
    focus: () => show("login"),
    showReason: (reason) => {
      if (reason) error.textContent = reason;
    },
  };
}
