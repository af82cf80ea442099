"""``review.html``: one static page over a predict folder's results.csv, for a person to review.

Why a static file: it opens offline from disk (no server, no CDN: CSS and script are inline), can
be zipped with the folder and read on a locked-down hospital workstation. At 5 000 scans it stays
usable because the rows travel as one compact JSON block (a few hundred bytes a row), the table
shows one page of rows at a time, and the images are the overlays/ PNGs already on disk, referenced
by relative URL and lazy-loaded (``<img loading="lazy">``) — nothing is inlined.

Safety: the JSON block escapes ``<``, ``>``, ``&`` (a case id cannot close the script), and the
script only ever sets ``textContent`` / attributes, never ``innerHTML`` with data.

Order: cases to review first — failed, then review, then ok; within each, higher qc_score first.
"""

from __future__ import annotations

import csv
import html
import json
import re
from pathlib import Path
from urllib.parse import quote

from sarco_nn.atomic import write_text_atomic
from sarco_nn.status import Status, parse_reasons

__all__ = ["write_review_html", "gallery_rows", "REVIEW_FILE"]

REVIEW_FILE = "review.html"

#: (results.csv column, key in the page, header shown, numeric?)
COLUMNS: tuple[tuple[str, str, str, bool], ...] = (
    ("case_id", "id", "Case", False),
    ("status", "status", "Status", False),
    ("qc_score", "qc", "Suspicion (QC)", True),
    ("sma_cm2", "sma", "SMA cm²", True),
    ("smi_cm2_m2", "smi", "SMI cm²/m²", True),
    ("muscle_hu_mean", "hu", "Muscle HU", True),
    ("sarcopenic", "flag", "Sarcopenic", False),
    ("reasons", "reasons", "Reasons", False),
)
_EXTRA = (("sex", "Sex"), ("height_m", "Height m"), ("threshold", "Threshold"), ("slice_index", "Slice"),
          ("l3_method", "L3 method"), ("l3_confidence", "L3 confidence"), ("folds", "Folds"), ("input", "Input"))


def _url(relative: str) -> str:
    """Relative URL of a file in the output folder; odd characters in a case id are percent-encoded."""
    return "/".join(quote(part, safe="") for part in Path(relative).parts) if relative else ""


def _priority(row: dict) -> tuple[int, float]:
    rank = {s.value: s.rank for s in Status}.get(row.get("status", ""), 2)
    try:
        qc = float(row.get("qc_score") or "nan")
    except ValueError:
        qc = float("nan")
    return -rank, -(qc if qc == qc else -1.0)


def gallery_rows(results_csv: Path) -> list[dict]:
    """The page's rows from results.csv, in review order (reasons from `reasons`, or legacy `reason`)."""
    with open(results_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rows.sort(key=_priority)
    out = []
    for row in rows:
        cell = row.get("reasons") if row.get("reasons") is not None else row.get("reason", "")
        item = {key: (row.get(col) or "") for col, key, _, _ in COLUMNS if col != "reasons"}
        item["reasons"] = [f"{code}: {message}" if code != "other" else message
                           for code, message in parse_reasons(cell)]
        item["overlay"] = _url(row.get("overlay", ""))
        item["thumb"] = _url(row.get("l3_thumbnail", ""))
        item["extra"] = [[label, row[col]] for col, label in _EXTRA if row.get(col)]
        out.append(item)
    return out


def _json_for_script(data) -> str:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for char, escape in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def write_review_html(out_dir: Path, results_csv: Path | None = None, title: str | None = None) -> Path:
    """Write ``review.html`` into a predict output folder from its results.csv; return its path."""
    out_dir = Path(out_dir)
    rows = gallery_rows(results_csv or out_dir / "results.csv")
    columns = [{"key": key, "label": label, "numeric": numeric} for _, key, label, numeric in COLUMNS]
    fills = {"TITLE": html.escape(title or f"sarco review: {out_dir.name}"), "COLUMNS": _json_for_script(columns),
             "ROWS": _json_for_script(rows)}
    # one pass: a folder named "{{ROWS}}" (or a case id holding "{{TITLE}}") is text, not another placeholder
    text = re.sub(r"\{\{(TITLE|COLUMNS|ROWS)\}\}", lambda m: fills[m.group(1)], _TEMPLATE)
    path = out_dir / REVIEW_FILE
    write_text_atomic(path, text)
    return path


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{{TITLE}}</title>
<style>
body{font:14px system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:10px 16px}header h1{font-size:18px;margin:0 0 4px}
main{padding:8px 16px}.counts span{margin-right:14px}
.controls{display:flex;gap:10px;align-items:center;flex-wrap:wrap;margin:8px 0}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:middle}
th{background:#eceff1;cursor:pointer;user-select:none;position:sticky;top:0}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.case:hover{background:#f1f8e9;cursor:pointer}
img.thumb{width:72px;height:72px;object-fit:contain;background:#000}
.noimg{display:inline-block;width:72px;color:#888;font-size:11px;text-align:center}
.st-failed{color:#b71c1c;font-weight:600}.st-review{color:#e65100;font-weight:600}.st-ok{color:#2e7d32}
ul.reasons{margin:0;padding-left:16px;font-size:12px}
#first{display:flex;gap:8px;overflow-x:auto;padding:4px 0}
#first .card{flex:0 0 150px;background:#fff;border:1px solid #ddd;padding:4px;cursor:pointer;font-size:12px}
#first .card img{width:140px;height:140px;object-fit:contain;background:#000}
#detail{position:fixed;inset:4% 8%;background:#fff;border:1px solid #999;box-shadow:0 4px 24px #0006;
overflow:auto;padding:12px;display:none}#detail.open{display:block}
#detail img{max-width:100%;height:auto}#detail dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px}
#detail dt{font-weight:600}.pager button{margin:0 4px}
</style></head>
<body>
<header><h1>{{TITLE}}</h1><div class="counts" id="counts"></div></header>
<main>
<h2>Review first</h2><div id="first"></div>
<h2>All scans</h2>
<div class="controls">
<label>Search <input id="q" type="search" placeholder="case id or reason"></label>
<label>Status <select id="fstatus"><option value="">all</option><option>failed</option><option>review</option><option>ok</option></select></label>
<label>Flag <select id="fflag"><option value="">all</option><option>yes</option><option>no</option><option>unknown</option></select></label>
<span class="pager"><button id="prev" type="button">&lt;</button><span id="page"></span><button id="next" type="button">&gt;</button></span>
</div>
<table id="cases"><thead><tr id="head"><th data-key="thumb">Overlay</th></tr></thead><tbody id="body"></tbody></table>
</main>
<section id="detail" role="dialog" aria-modal="true"><button id="close" type="button">Close</button>
<h2 id="d-title"></h2><dl id="d-numbers"></dl><ul class="reasons" id="d-reasons"></ul><img id="d-img" alt="overlay">
<img id="d-thumb" alt="L3 level"></section>
<script id="columns" type="application/json">{{COLUMNS}}</script>
<script id="rows" type="application/json">{{ROWS}}</script>
<script>
"use strict";
const COLS = JSON.parse(document.getElementById("columns").textContent);
const ROWS = JSON.parse(document.getElementById("rows").textContent);
const PAGE = 100;
const STATUS_RANK = {failed: 2, review: 1, ok: 0};
let view = ROWS.slice(), page = 0, sortKey = null, sortDir = 1;
const $ = id => document.getElementById(id);
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls; return e; }
function num(v) { const x = parseFloat(v); return isNaN(x) ? null : x; }
function counts() {
  const c = {ok: 0, review: 0, failed: 0};
  ROWS.forEach(r => { c[r.status] = (c[r.status] || 0) + 1; });
  $("counts").append(el("span", ROWS.length + " scans"), el("span", c.failed + " failed", "st-failed"),
    el("span", c.review + " to review", "st-review"), el("span", c.ok + " ok", "st-ok"));
}
function img(src, cls, alt) { if (!src) return el("span", "no image", "noimg " + (cls || ""));
  const i = el("img", undefined, cls); i.loading = "lazy"; i.decoding = "async"; i.alt = alt; i.src = src; return i; }
function firstCards() {
  ROWS.filter(r => r.status !== "ok").slice(0, 24).forEach(r => {
    const card = el("div", undefined, "card"); card.dataset.id = r.id;
    card.append(img(r.overlay, "", "overlay " + r.id), el("div", r.id), el("div", r.status + (r.qc ? " · suspicion " + r.qc : ""), "st-" + r.status));
    card.addEventListener("click", () => openCase(r)); $("first").append(card);
  });
  if (!$("first").children.length) $("first").append(el("p", "Nothing to review: every scan is ok."));
}
function header() {
  COLS.forEach(c => { const th = el("th", c.label); th.dataset.key = c.key; th.tabIndex = 0;
    th.addEventListener("click", () => sortBy(c)); $("head").append(th); });
}
function sortBy(c) {
  sortDir = sortKey === c.key ? -sortDir : 1; sortKey = c.key;
  document.querySelectorAll("#head th").forEach(th => th.removeAttribute("aria-sort"));
  document.querySelector('#head th[data-key="' + c.key + '"]').setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
  const value = c.key === "status" ? (r => STATUS_RANK[r.status]) : c.key === "reasons" ? (r => r.reasons.join(" "))
    : c.numeric ? (r => num(r[c.key])) : (r => r[c.key]);
  view.sort((a, b) => { const x = value(a), y = value(b);
    if (x === null || x === "") return (y === null || y === "") ? 0 : 1; if (y === null || y === "") return -1;
    return (typeof x === "number" ? x - y : String(x).localeCompare(String(y), undefined, {numeric: true})) * sortDir; });
  page = 0; render();
}
function filter() {
  const q = $("q").value.trim().toLowerCase(), st = $("fstatus").value, fl = $("fflag").value;
  view = ROWS.filter(r => (!st || r.status === st) && (!fl || r.flag === fl) &&
    (!q || r.id.toLowerCase().includes(q) || r.reasons.join(" ").toLowerCase().includes(q)));
  if (sortKey) { const c = COLS.find(c => c.key === sortKey); sortDir = -sortDir; sortBy(c); } else { page = 0; render(); }
}
function render() {
  const body = $("body"); body.replaceChildren();
  const pages = Math.max(1, Math.ceil(view.length / PAGE)); page = Math.min(page, pages - 1);
  view.slice(page * PAGE, (page + 1) * PAGE).forEach(r => {
    const tr = el("tr", undefined, "case"); tr.dataset.id = r.id;
    const t = el("td"); t.append(img(r.overlay, "thumb", "overlay " + r.id)); tr.append(t);
    COLS.forEach(c => {
      let td;
      if (c.key === "reasons") { td = el("td"); const ul = el("ul", undefined, "reasons");
        r.reasons.forEach(x => ul.append(el("li", x))); td.append(ul); }
      else td = el("td", r[c.key], c.numeric ? "num" : (c.key === "status" ? "st-" + r.status : ""));
      td.dataset.key = c.key; tr.append(td);
    });
    tr.addEventListener("click", () => openCase(r)); body.append(tr);
  });
  $("page").textContent = view.length + " shown · page " + (page + 1) + "/" + pages;
}
function openCase(r) {
  $("d-title").textContent = r.id + " — " + r.status;
  const dl = $("d-numbers"); dl.replaceChildren();
  COLS.filter(c => c.key !== "reasons" && c.key !== "id").map(c => [c.label, r[c.key]]).concat(r.extra)
    .forEach(([k, v]) => dl.append(el("dt", k), el("dd", v || "—")));
  const ul = $("d-reasons"); ul.replaceChildren(); r.reasons.forEach(x => ul.append(el("li", x)));
  const i = $("d-img"); if (r.overlay) { i.src = r.overlay; i.hidden = false; } else { i.removeAttribute("src"); i.hidden = true; }
  const t = $("d-thumb"); if (r.thumb) { t.src = r.thumb; t.hidden = false; } else { t.removeAttribute("src"); t.hidden = true; }
  $("detail").classList.add("open"); $("detail").dataset.id = r.id;
}
$("close").addEventListener("click", () => $("detail").classList.remove("open"));
document.addEventListener("keydown", e => { if (e.key === "Escape") $("detail").classList.remove("open"); });
["q", "fstatus", "fflag"].forEach(id => $(id).addEventListener("input", filter));
$("prev").addEventListener("click", () => { if (page > 0) { page--; render(); } });
$("next").addEventListener("click", () => { if ((page + 1) * PAGE < view.length) { page++; render(); } });
counts(); header(); firstCards(); render();
</script></body></html>
"""
