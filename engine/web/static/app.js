// The console's only script (served from /static/, so the pages' Content-Security-Policy can
// forbid inline script):
//  - data-confirm="question" on a form or a button: ask confirm() before the form is sent;
//  - data-refresh="SECONDS" data-src="/path" on an element: reload its inner HTML from that
//    same-site path every SECONDS seconds;
//  - csrfFetch(url, options): fetch() with the session's X-CSRF-Token header (for POSTs).
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.getAttribute("content") : "";
}

window.csrfFetch = function (url, options) {
  const opts = Object.assign({ credentials: "same-origin" }, options || {});
  opts.headers = Object.assign({ "X-CSRF-Token": csrfToken() }, opts.headers || {});
  return fetch(url, opts);
};

document.addEventListener("submit", function (event) {
  const form = event.target;
  const button = event.submitter;
  const question = (button && button.dataset.confirm) || form.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

function refresh(element) {
  const src = element.dataset.src;
  if (!src || !src.startsWith("/") || src.startsWith("//")) {
    return;
  }
  fetch(src, { credentials: "same-origin", headers: { "Accept": "text/html" } })
    .then(function (response) {
      if (response.redirected || !response.ok) {
        throw new Error("refresh: " + response.status);
      }
      return response.text();
    })
    .then(function (html) {
      element.innerHTML = html;
      element.dataset.refreshedAt = String(Date.now());
    })
    .catch(function () {
      element.classList.add("stale");
    });
}

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-refresh]").forEach(function (element) {
    const seconds = Number(element.dataset.refresh);
    if (seconds >= 1) {
      window.setInterval(function () { refresh(element); }, seconds * 1000);
    }
  });
});
