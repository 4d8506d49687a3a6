// vmsnap web UI: keeps the states on the page current without a reload, by polling
// /state.json while the page shows any state (a small JSON document).
"use strict";
(function () {
  var PERIOD_MS = 400;
  var live = null;

  function say(text) {
    if (live) { live.textContent = text; }
  }

  function setState(el, state) {
    if (el.textContent !== state) {
      el.textContent = state;
      el.className = "state s-" + state;
      return true;
    }
    return false;
  }

  function addSnapshot(id, s) {
    var tree = document.getElementById("tree-" + s.vm_id);
    if (!tree) { return; }
    var li = document.createElement("li");
    var a = document.createElement("a");
    a.href = "/snapshots/" + id;
    a.textContent = s.name;
    var span = document.createElement("span");
    span.setAttribute("data-state-of", id);
    li.appendChild(a);
    li.appendChild(document.createTextNode(" "));
    li.appendChild(span);
    tree.appendChild(li);
    setState(span, s.state);
    var empty = document.getElementById("empty-" + s.vm_id);
    if (empty) { empty.remove(); }
  }

  function addVolumeSnapshot(id, s) {
    var list = document.getElementById("vsnaps-" + s.volume_id);
    if (!list) { return; }
    var li = document.createElement("li");
    var span = document.createElement("span");
    span.setAttribute("data-vstate-of", id);
    li.appendChild(document.createTextNode(id.slice(0, 8) + " "));
    li.appendChild(span);
    list.appendChild(li);
    setState(span, s.state);
  }

  function markGone(attr, known) {
    // a snapshot no longer listed was removed
    document.querySelectorAll("[" + attr + "]").forEach(function (el) {
      if (!known[el.getAttribute(attr)]) { setState(el, "removed"); }
    });
  }

  function apply(doc) {
    markGone("data-state-of", doc.snapshots);
    markGone("data-vstate-of", doc.volume_snapshots);
    Object.keys(doc.snapshots).forEach(function (id) {
      var s = doc.snapshots[id];
      var els = document.querySelectorAll('[data-state-of="' + id + '"]');
      if (els.length === 0) { addSnapshot(id, s); }
      els.forEach(function (el) {
        if (setState(el, s.state)) { say(s.name + ": " + s.state); }
      });
    });
    Object.keys(doc.volume_snapshots).forEach(function (id) {
      var s = doc.volume_snapshots[id];
      var els = document.querySelectorAll('[data-vstate-of="' + id + '"]');
      if (els.length === 0) { addVolumeSnapshot(id, s); }
      els.forEach(function (el) { setState(el, s.state); });
    });
    Object.keys(doc.vms).forEach(function (id) {
      var v = doc.vms[id];
      var text = v.operation ? v.operation + (v.state ? ": " + v.state : "") : "none";
      document.querySelectorAll('[data-op-of="' + id + '"]').forEach(function (el) {
        el.textContent = text;
        el.className = v.operation ? "op busy" : "op";
      });
    });
  }

  function poll() {
    fetch("/state.json", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (doc) { if (doc) { apply(doc); } })
      .catch(function () { /* the next poll tries again */ })
      .then(function () { window.setTimeout(poll, PERIOD_MS); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    live = document.getElementById("live");
    if (document.querySelector("[data-state-of], [data-op-of]")) { poll(); }
  });
})();
