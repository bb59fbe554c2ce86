// The coldchain dashboard's few behaviours (no inline script: the pages' CSP allows only files from here).
(function () {
  "use strict";
  // Bar segments carry their width as data (inline style attributes are not allowed).
  document.querySelectorAll("[data-width]").forEach(function (el) {
    el.style.width = Math.max(0, Math.min(100, parseFloat(el.dataset.width) || 0)) + "%";
  });
  // A confirmation's Cancel closes it.
  document.querySelectorAll("details.confirm button.cancel").forEach(function (b) {
    b.addEventListener("click", function () { b.closest("details").open = false; });
  });
  // Opening one confirmation closes the others.
  document.querySelectorAll("details.confirm").forEach(function (d) {
    d.addEventListener("toggle", function () {
      if (!d.open) return;
      document.querySelectorAll("details.confirm").forEach(function (o) { if (o !== d) o.open = false; });
    });
  });
})();
