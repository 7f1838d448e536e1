// Progress bar of a contact import that runs in the background: polls the import's JSON endpoint and reloads the
// page when the import has finished (preview ready, imported, or failed).
(function () {
  "use strict";
  var box = document.getElementById("import-progress");
  if (!box) { return; }
  var bar = box.querySelector("progress");
  var label = box.querySelector(".import-progress-label");
  function poll() {
    fetch(box.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.json(); })
      .then(function (data) {
        if (data.total) {
          bar.max = data.total;
          bar.value = data.done;
          label.textContent = data.status_display + " — " + data.done.toLocaleString() + " / " +
            data.total.toLocaleString() + " (" + data.percent + "%)";
        } else {
          label.textContent = data.status_display + "…";
        }
        if (data.finished) { window.location.reload(); } else { window.setTimeout(poll, 1000); }
      })
      .catch(function () { window.setTimeout(poll, 3000); });
  }
  poll();
})();
