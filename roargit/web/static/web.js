/* roar web view: zoom and pan a DAG, light the path through a node, collapse artifacts,
   pick two nodes for a diff, copy a command. The pages read fine without it. */
(function () {
  "use strict";

  function graphOf(svg) {
    var succ = {}, pred = {}, edges = svg.querySelectorAll(".edge");
    edges.forEach(function (e) {
      var f = e.getAttribute("data-f"), t = e.getAttribute("data-t");
      (succ[f] = succ[f] || []).push([t, e]);
      (pred[t] = pred[t] || []).push([f, e]);
    });
    return { succ: succ, pred: pred };
  }

  function light(svg, g, n) {
    clear(svg);
    var nodes = {}, lit = [];
    nodes[n] = true;
    [g.succ, g.pred].forEach(function (adj) {
      var todo = [n], seen = {};
      seen[n] = true;
      while (todo.length) {
        var v = todo.pop();
        (adj[v] || []).forEach(function (pair) {
          lit.push(pair[1]);
          if (!seen[pair[0]]) { seen[pair[0]] = true; nodes[pair[0]] = true; todo.push(pair[0]); }
        });
      }
    });
    svg.classList.add("dim");
    lit.forEach(function (e) { e.classList.add("hl"); });
    svg.querySelectorAll(".node").forEach(function (el) {
      if (nodes[el.getAttribute("data-n")]) el.classList.add("hl");
    });
  }

  function clear(svg) {
    svg.classList.remove("dim");
    svg.querySelectorAll(".hl").forEach(function (el) { el.classList.remove("hl"); });
  }

  function setupView(view) {
    var svg = view.querySelector("svg.dag");
    if (!svg) return;
    var w = +svg.getAttribute("width"), h = +svg.getAttribute("height"), scale = 1;
    var g = graphOf(svg), pinned = null;
    var serverLit = svg.classList.contains("dim");

    function zoom(to, cx, cy) {
      to = Math.max(0.02, Math.min(3, to));
      var r = view.getBoundingClientRect();
      cx = cx === undefined ? r.width / 2 : cx;
      cy = cy === undefined ? r.height / 2 : cy;
      var px = (view.scrollLeft + cx) / scale, py = (view.scrollTop + cy) / scale;
      scale = to;
      svg.setAttribute("width", Math.round(w * scale));
      svg.setAttribute("height", Math.round(h * scale));
      view.scrollLeft = px * scale - cx;
      view.scrollTop = py * scale - cy;
    }
    view.roarZoom = function (how) {
      if (how === "in") zoom(scale * 1.25);
      else if (how === "out") zoom(scale / 1.25);
      else if (how === "1") zoom(1);
      else if (how === "fit") {
        var r = view.getBoundingClientRect();
        zoom(Math.min(r.width / w, Math.max(r.height, 300) / h, 1));
      }
    };
    // The two sides of a diff start whole where that keeps the text legible.
    if (view.hasAttribute("data-fit")) {
      var r0 = view.getBoundingClientRect();
      if (w > r0.width) zoom(Math.max(r0.width / w, 0.6));
    }
    view.addEventListener("wheel", function (ev) {
      if (!(ev.ctrlKey || ev.metaKey)) return;  // plain wheel scrolls, as everywhere
      ev.preventDefault();
      var r = view.getBoundingClientRect();
      zoom(scale * (ev.deltaY < 0 ? 1.15 : 1 / 1.15), ev.clientX - r.left, ev.clientY - r.top);
    }, { passive: false });

    var drag = null;
    view.addEventListener("pointerdown", function (ev) {
      if (ev.target.closest && ev.target.closest(".node")) return;
      drag = { x: ev.clientX, y: ev.clientY, l: view.scrollLeft, t: view.scrollTop };
      view.classList.add("dragging");
    });
    window.addEventListener("pointermove", function (ev) {
      if (!drag) return;
      view.scrollLeft = drag.l - (ev.clientX - drag.x);
      view.scrollTop = drag.t - (ev.clientY - drag.y);
    });
    window.addEventListener("pointerup", function () {
      drag = null;
      view.classList.remove("dragging");
    });

    svg.querySelectorAll(".node").forEach(function (el) {
      var n = el.getAttribute("data-n");
      function on() { if (pinned === null) light(svg, g, n); }
      function off() { if (pinned === null && !serverLit) clear(svg); }
      el.addEventListener("mouseenter", on);
      el.addEventListener("focus", on);
      el.addEventListener("mouseleave", off);
      el.addEventListener("blur", off);
      el.addEventListener("click", function (ev) {
        if (ev.shiftKey) {
          ev.preventDefault();
          pinned = pinned === n ? null : n;
          if (pinned === null) clear(svg); else light(svg, g, n);
          return;
        }
        var pick = document.querySelector("[data-pick]");
        if (pick && pick.checked) {
          ev.preventDefault();
          pickNode(el);
        }
      });
    });
  }

  var picked = [];
  function pickNode(el) {
    var form = document.querySelector(".diff-form");
    if (!form) return;
    picked.push(el);
    el.classList.add("picked");
    if (picked.length > 2) picked.shift().classList.remove("picked");
    var a = form.querySelector("[name=a]"), b = form.querySelector("[name=b]");
    a.value = picked[0] ? picked[0].getAttribute("data-ref") : "";
    b.value = picked[1] ? picked[1].getAttribute("data-ref") : "";
    if (picked.length === 2) form.submit();
  }

  function visibleView() {
    var views = document.querySelectorAll(".dag-view");
    for (var i = 0; i < views.length; i++) if (!views[i].hidden) return views[i];
    return null;
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".dag-view").forEach(setupView);
    document.querySelectorAll("[data-zoom]").forEach(function (b) {
      b.addEventListener("click", function () {
        var v = visibleView();
        if (v && v.roarZoom) v.roarZoom(b.getAttribute("data-zoom"));
      });
    });
    var collapse = document.querySelector("[data-collapse]");
    var full = document.querySelector('[data-view="full"]');
    var compact = document.querySelector('[data-view="compact"]');
    if (collapse && full && compact) {
      collapse.addEventListener("click", function (ev) {
        ev.preventDefault();
        var showCompact = compact.hidden;
        compact.hidden = !showCompact;
        full.hidden = showCompact;
        collapse.textContent = showCompact ? "Show artifacts" : "Collapse artifacts";
      });
    }
    document.addEventListener("keydown", function (ev) {
      if (ev.target.tagName === "INPUT") return;
      var v = visibleView();
      if (!v || !v.roarZoom) return;
      if (ev.key === "+" || ev.key === "=") v.roarZoom("in");
      else if (ev.key === "-") v.roarZoom("out");
      else if (ev.key === "0") v.roarZoom("1");
    });
    document.querySelectorAll("[data-copy]").forEach(function (b) {
      b.addEventListener("click", function () {
        var text = b.getAttribute("data-copy");
        function done() { b.textContent = "Copied"; setTimeout(function () { b.textContent = "Copy"; }, 1500); }
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, function () {});
        } else {
          var code = b.parentNode.querySelector("code"), range = document.createRange();
          range.selectNodeContents(code);
          var sel = window.getSelection();
          sel.removeAllRanges();
          sel.addRange(range);
          try { document.execCommand("copy"); done(); } catch (e) { /* selected: Ctrl+C */ }
        }
      });
    });
  });
})();
