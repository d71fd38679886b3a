// Sortable tables, gallery filters and pages, and heatmap cells that filter the gallery.
// Without JavaScript the page still shows everything: every gallery card, tables in class order.
(function () {
  "use strict";

  function sortBy(table, column, header) {
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    var numeric = header.dataset.type === "number";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
      var order = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y, undefined, { numeric: true });
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    table.querySelectorAll("th").forEach(function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }

  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("th").forEach(function (header, column) {
      header.addEventListener("click", function () { sortBy(table, column, header); });
    });
  });

  var cards = Array.prototype.slice.call(document.querySelectorAll("#gallery-cards .card"));
  var classFilter = document.getElementById("filter-class");
  var pairFilter = document.getElementById("filter-pair");
  var pager = document.getElementById("gallery-pager");
  var count = document.getElementById("gallery-count");
  var empty = document.getElementById("gallery-empty");
  var pageSize = parseInt(document.body.dataset.pageSize, 10) || 48;
  var page = 0;

  function matching() {
    var given = classFilter.value, pair = pairFilter.value;
    return cards.filter(function (card) {
      if (given !== "" && card.dataset.given !== given) return false;
      return pair === "" || card.dataset.given + "-" + card.dataset.suggested === pair;
    });
  }

  function button(text, target, pages, current) {
    var b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    b.disabled = target < 0 || target >= pages;
    if (current) b.setAttribute("aria-current", "page");
    b.addEventListener("click", function () { page = target; show(); });
    return b;
  }

  function show() {
    var shown = matching();
    var pages = Math.max(1, Math.ceil(shown.length / pageSize));
    page = Math.min(page, pages - 1);
    cards.forEach(function (card) { card.hidden = true; });
    shown.slice(page * pageSize, (page + 1) * pageSize).forEach(function (card) { card.hidden = false; });
    var first = shown.length ? page * pageSize + 1 : 0;
    count.textContent = "showing " + first + "–" + Math.min(shown.length, (page + 1) * pageSize) + " of " + shown.length;
    empty.hidden = shown.length > 0;
    pager.textContent = "";
    if (pages > 1) {
      pager.appendChild(button("‹ previous", page - 1, pages, false));
      for (var p = 0; p < pages; p++) pager.appendChild(button(String(p + 1), p, pages, p === page));
      pager.appendChild(button("next ›", page + 1, pages, false));
    }
  }

  function pickPair(given, suggested) {
    var pair = given + "-" + suggested;
    if (!pairFilter.querySelector('option[value="' + pair + '"]')) {
      var option = document.createElement("option");
      option.value = pair;
      option.textContent = "(none in the gallery)";
      pairFilter.appendChild(option);
    }
    classFilter.value = "";
    pairFilter.value = pair;
    page = 0;
    show();
    document.getElementById("gallery").scrollIntoView();
  }

  if (cards.length && classFilter && pairFilter) {
    classFilter.addEventListener("change", function () { page = 0; show(); });
    pairFilter.addEventListener("change", function () { page = 0; show(); });
    document.querySelectorAll("svg rect[data-given]").forEach(function (cell) {
      cell.addEventListener("click", function () { pickPair(cell.dataset.given, cell.dataset.suggested); });
    });
    show();
  }

  // Heatmaps of many classes are one image; the cell under the pointer is worked out here.
  var tip = document.createElement("div");
  tip.className = "heat-tip";
  tip.hidden = true;
  document.body.appendChild(tip);
  document.querySelectorAll("svg image.heat").forEach(function (image) {
    var values = JSON.parse(image.dataset.values), labels = JSON.parse(image.dataset.labels);
    function cellAt(event) {
      var box = image.getBoundingClientRect(), n = labels.length;
      var i = Math.floor((event.clientY - box.top) / box.height * n), j = Math.floor((event.clientX - box.left) / box.width * n);
      return i >= 0 && j >= 0 && i < n && j < n ? [i, j] : null;
    }
    image.addEventListener("mousemove", function (event) {
      var cell = cellAt(event);
      if (!cell) { tip.hidden = true; return; }
      tip.textContent = image.dataset.rowTitle + " " + labels[cell[0]] + ", " + image.dataset.columnTitle + " " +
        labels[cell[1]] + ": " + values[cell[0]][cell[1]];
      tip.style.left = (event.pageX + 12) + "px";
      tip.style.top = (event.pageY + 12) + "px";
      tip.hidden = false;
    });
    image.addEventListener("mouseleave", function () { tip.hidden = true; });
    if (image.dataset.pick === "pairs" && cards.length) {
      image.style.cursor = "pointer";
      image.addEventListener("click", function (event) {
        var cell = cellAt(event);
        if (cell && cell[0] !== cell[1] && values[cell[0]][cell[1]] > 0) pickPair(String(cell[0]), String(cell[1]));
      });
    }
  });
  document.body.dataset.ready = "true";
})();
