/* The SMS/LMS/MMS counter under a variant's text in the campaign admin.
 *
 * Same rule as campaigns/channels/sms_length.py: ASCII = 1 byte, any other character = 2 bytes (EUC-KR);
 * SMS up to 90 bytes without a subject or image, LMS up to 2,000 bytes, MMS with an image. For an advertising
 * campaign the bytes include the notice the pipeline adds ("(광고)<sender>" first, "무료수신거부 <080>" last), as
 * the server-side check does. Shown only while the campaign's channel is SMS. The server validates the same rule
 * on save; this only shows it while typing. Text areas opt in with data-sms-counter.
 */
(function () {
  "use strict";
  var SMS_MAX = 90, LMS_MAX = 2000;

  function eucKrLength(text) {
    var bytes = 0;
    for (var i = 0; i < text.length; i++) {
      var code = text.charCodeAt(i);
      if (code >= 0xd800 && code <= 0xdbff) { i++; } // a surrogate pair is one character
      bytes += code < 0x80 ? 1 : 2;
    }
    return bytes;
  }

  function messageType(text, subject, hasImage) {
    if (hasImage) { return "MMS"; }
    if ((subject || "").trim() || eucKrLength(text) > SMS_MAX) { return "LMS"; }
    return "SMS";
  }

  function withAdvertisingNotice(textarea, text) {
    var purpose = document.getElementById("id_purpose");
    if (!purpose || purpose.value !== "advertising") { return text; }
    var senderField = document.getElementById("id_sender_name");
    var sender = (senderField && senderField.value.trim()) || textarea.dataset.smsSender || "";
    return "(광고)" + sender + "\n" + text.trim() + "\n" + "무료수신거부 " + (textarea.dataset.smsOptout || "");
  }

  function fieldNear(textarea, name) {
    var prefix = textarea.name.slice(0, textarea.name.lastIndexOf("-") + 1);
    return document.querySelector('[name="' + prefix + name + '"]');
  }

  function hasImage(textarea) {
    var image = fieldNear(textarea, "image");
    if (image && image.value) { return true; }
    // An image saved earlier: the widget shows "Currently: <a>" unless "Clear" is ticked.
    var clear = fieldNear(textarea, "image-clear");
    var row = image && image.closest(".form-row");
    var current = row && row.querySelector(".file-upload a[href]");
    return !!(current && !(clear && clear.checked));
  }

  function update(textarea, output) {
    var channel = document.getElementById("id_channel");
    output.hidden = !!(channel && channel.value !== "sms");
    if (output.hidden) { return; }
    var subject = fieldNear(textarea, "subject");
    var text = withAdvertisingNotice(textarea, textarea.value);
    var bytes = eucKrLength(text);
    var kind = messageType(text, subject ? subject.value : "", hasImage(textarea));
    var max = kind === "SMS" ? SMS_MAX : LMS_MAX;
    output.textContent = interpolate(gettext("%(kind)s · %(bytes)s / %(max)s bytes"),
      {kind: kind, bytes: bytes.toLocaleString(), max: max.toLocaleString()}, true);
    output.dataset.kind = kind;
    output.classList.toggle("loop-sms-over", bytes > LMS_MAX);
    if (bytes > LMS_MAX) {
      output.textContent += " — " + gettext("too long to send");
    }
  }

  var counters = [];

  function attach(textarea) {
    if (textarea.dataset.smsCounterAttached) { return; }
    textarea.dataset.smsCounterAttached = "1";
    var output = document.createElement("div");
    output.className = "help loop-sms-counter";
    output.setAttribute("aria-live", "polite");
    textarea.insertAdjacentElement("afterend", output);
    var refresh = function () { update(textarea, output); };
    counters.push(refresh);
    textarea.addEventListener("input", refresh);
    ["subject", "image", "image-clear"].forEach(function (name) {
      var field = fieldNear(textarea, name);
      if (field) { field.addEventListener("input", refresh); field.addEventListener("change", refresh); }
    });
    refresh();
  }

  function refreshAll() { counters.forEach(function (refresh) { refresh(); }); }

  function attachAll() {
    document.querySelectorAll("textarea[data-sms-counter]").forEach(function (textarea) {
      if (textarea.name.indexOf("__prefix__") === -1) { attach(textarea); }
    });
  }

  window.loopSmsLength = {eucKrLength: eucKrLength, messageType: messageType};
  document.addEventListener("DOMContentLoaded", function () {
    attachAll();
    ["id_channel", "id_purpose", "id_sender_name"].forEach(function (id) {
      var field = document.getElementById(id);
      if (field) { field.addEventListener("input", refreshAll); field.addEventListener("change", refreshAll); }
    });
  });
  document.addEventListener("formset:added", attachAll);
})();
