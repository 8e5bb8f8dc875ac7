"""The report as one self-contained HTML page: inline CSS, figures as data: URIs, no script, no external URL.

Must not: read or write files, compute numbers (the model carries them), or reference anything outside the
page: a Content-Security-Policy forbids every load but inline styles and data: images, so a slip shows up
as a console error in the browser test.
"""

from __future__ import annotations

import base64
import json
from html import escape

from rd3kit.report import markdown as md
from rd3kit.report.build import AuditView, Group, Measure, ProtocolInfo, Report, Row

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
:root { --fg:#1f2328; --muted:#57606a; --line:#d0d7de; --bg:#ffffff; --alt:#f6f8fa; --link:#0969da; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg);
       margin: 0 auto; max-width: 1400px; padding: 0 24px 48px; }
h1 { margin: 24px 0 4px; } h2 { border-bottom: 1px solid var(--line); padding-bottom: 4px; margin-top: 36px; }
h3 { margin: 22px 0 8px; }
a { color: var(--link); text-decoration: none; } a:hover { text-decoration: underline; }
.lede, .ref, .small { color: var(--muted); } .small { font-size: 12px; }
.ref { font-size: 12px; word-break: break-all; }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { border: 1px solid var(--line); padding: 5px 8px; vertical-align: top; text-align: left; }
th { background: var(--alt); font-weight: 600; } tbody tr:nth-child(even) { background: #fbfcfd; }
td.num, .num { font-variant-numeric: tabular-nums; white-space: nowrap; }
.pair { display: flex; gap: 24px; align-items: flex-start; flex-wrap: wrap; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
         border: 1px solid currentColor; white-space: nowrap; }
.st-reproduced { color: #1a7f37; } .st-not-reproduced { color: #cf222e; } .st-inconclusive { color: #9a6700; }
.st-other { color: var(--muted); } a.proto { white-space: nowrap; }
.chips { display: flex; gap: 10px; flex-wrap: wrap; margin: 10px 0; }
nav { background: var(--alt); border: 1px solid var(--line); padding: 8px 12px; border-radius: 6px;
      display: flex; flex-wrap: wrap; gap: 4px 14px; }
nav a { white-space: nowrap; }
figure { margin: 8px 0 18px; max-width: 100%; } figure img { max-width: 100%; max-height: 720px;
  border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 12px; }
details > summary { cursor: pointer; } details.protocol { border: 1px solid var(--line); border-radius: 6px;
  padding: 6px 10px; margin: 6px 0; } details.protocol[open] { background: var(--alt); }
pre { background: #ffffff; border: 1px solid var(--line); padding: 8px; overflow: auto; max-height: 32em;
      font-size: 12px; }
:target { outline: 2px solid var(--link); outline-offset: 2px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
"""


def _status_class(status: str) -> str:
    known = {"reproduced", "not reproduced", "inconclusive"}
    return "st-" + status.replace(" ", "-") if status in known else "st-other"


def _badge(status: str) -> str:
    return f'<span class="badge {_status_class(status)}">{escape(status)}</span>'


def _source_ids(report: Report) -> dict[tuple[str, str], str]:
    return {key: f"src-{i + 1}" for i, key in enumerate(md.sources(report))}


def _protocol_link(report: Report, anchor: str) -> str:
    info = report.protocols.get(anchor)
    if info is None:
        return "—"
    return (f'<a class="proto" href="#{escape(anchor)}" title="sha256 {info.sha256}">{escape(info.ref)}</a>'
            f'<div class="ref"><code>{info.sha256[:12]}</code></div>')


def _seeds(m: Measure) -> str:
    if not m.top1:
        return ""
    items = ", ".join(f"{s}: {md.pct(v)}" for s, v in zip(m.seeds or range(len(m.top1)), m.top1))
    return f'<details><summary class="small">per seed</summary><span class="small num">{escape(items)}</span></details>'


def _measure_cell(m: Measure | None, src: dict, with_n: bool) -> str:
    if m is None:
        return '<td class="num">—</td>'
    link = f'<a href="#{src[(m.tag, m.source)]}" title="{escape(m.source)}">{escape(m.tag)}</a>'
    return (f'<td><span class="num">{escape(md.measure_text(m, with_n))}</span> [{link}]'
            f'<div class="ref">{escape(m.ref)}</div>{_seeds(m)}</td>')


def _verdict_cell(row: Row) -> str:
    v, text = row.verdict, ""
    if v is not None:
        z = "" if v.z is None else f", z {v.z:+.2f}"
        text = f'<div class="small num">Δ {100 * v.delta:+.2f} pp, band ±{100 * v.band:.2f} pp{z}</div>'
        items = "".join(f"<li>{escape(r)}</li>" for r in md.verdict_reasons(row))
        text += f'<details><summary class="small">rule</summary><ul class="small">{items}</ul></details>'
    return f"<td>{_badge(row.status)}{text}</td>"


def _row(report: Report, row: Row, src: dict) -> str:
    cells = [f"<td>{escape(row.method)}</td>", _measure_cell(row.claimed, src, False),
             _measure_cell(row.reproduced, src, True), _verdict_cell(row)]
    if not row.baseline:
        cells.append(f'<td class="num">{escape(md.score_text(row.ior))}</td>')
    cells.append(f"<td>{_protocol_link(report, row.protocol)}</td>")
    return f'<tr data-status="{escape(row.status)}">' + "".join(cells) + "</tr>"


def _table(head: list[str], body: list[str], cls: str) -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def group_id(g: Group) -> str:
    return f"g-{g.dataset}-ipc{g.ipc}"


def _group(report: Report, g: Group, src: dict) -> str:
    parts = []
    if g.rows:
        parts.append(_table(md.ROW_HEAD, [_row(report, r, src) for r in g.rows], "leaderboard"))
    if g.baselines:
        parts.append("<div><strong>Baselines</strong>" + _table(
            md.BASELINE_HEAD, [_row(report, r, src) for r in g.baselines], "baselines") + "</div>")
    return (f'<section id="{escape(group_id(g))}"><h3>{escape(g.dataset)}, IPC {g.ipc}</h3>'
            f'<div class="pair">{"".join(parts)}</div></section>')


def _figure(name: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure id="fig-{escape(name)}"><img alt="{escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(caption)} (plots/{escape(name)})</figcaption></figure>")


CAPTIONS = {"claimed-vs-reproduced.png": "Claimed vs reproduced top-1, error bars = std, dashed = identity",
            "per-seed.png": "Top-1 of every seed (dots), the reproduced mean (bar) and the claim (diamond, ± std)",
            "ior-vs-random.png": "IOR (DD-Ranking) of each reproduced method over the random baseline, with interval"}


def _plots(plots: dict[str, bytes]) -> str:
    if not plots:
        return "<p class=lede>No figure: no reproduced numbers yet (pass result records or run `rd3kit reproduce`).</p>"
    figures = "".join(_figure(n, png, CAPTIONS.get(n, f"DD-Ranking scores with intervals: {n}"))
                      for n, png in plots.items())
    return f'<div class="pair">{figures}</div>'



def _audit(report: Report, a: AuditView, src: dict) -> str:
    arms = [f"<tr><td>{escape(arm)}</td>{_measure_cell(m, src, True)}<td>"
            f"{_protocol_link(report, anchor) if anchor else '—'}</td></tr>" for arm, m, anchor in a.arms]
    scores = [f'<tr><td>{escape(s.name)}</td><td class="num">{escape(md.score_text(s))}</td>'
              f'<td class="small">{escape(s.method or "—")}</td></tr>' for s in a.scores]
    notes = "".join(f"<li>{escape(n)}</li>" for n in a.notes)
    return (f'<section id="audit-{escape(a.name)}"><h3>Audit {escape(a.name)}</h3>'
            f'<p class="lede">Set <code>{escape(a.origin)}</code>, {escape(a.dataset)} IPC {a.ipc}, protocol '
            f'{_protocol_link(report, a.protocol)} record sha256 <code>{a.sha256}</code></p><div class="pair">'
            + _table(["Arm", "Top-1 % (n seeds)", "Protocol"], arms, "arms")
            + _table(["Score", "Point [interval] (level)", "Interval method"], scores, "scores")
            + f'</div><ul class="small">{notes}</ul></section>')


def _protocol(info: ProtocolInfo) -> str:
    body = (escape(json.dumps(info.spec, indent=2, sort_keys=True)) if info.spec is not None
            else escape(f"spec unavailable: {info.note}"))
    # The id sits inside the closed <details>: following a link to it opens the details (no script needed).
    return (f'<details class="protocol" id="d-{escape(info.anchor)}"><summary><code>{escape(info.ref)}</code> '
            f'<span class="small">sha256 <code>{info.sha256}</code></span></summary>'
            f'<div id="{escape(info.anchor)}"><p class="small">id@vN <code>{escape(info.ref)}</code>, sha256 of the '
            f'canonical JSON <code>{info.sha256}</code></p><pre>{body}</pre></div></details>')


def _header(report: Report) -> str:
    chips = "".join(f"{_badge(s)} <span class=num>{n}</span>" for s, n in md.status_counts(report))
    toc = "".join(f'<a href="#{escape(group_id(g))}">{escape(g.dataset)} IPC {g.ipc}</a>' for g in report.groups)
    inputs = "".join(f"<tr><td>{escape(f.name)}</td><td>{escape(f.schema)}</td><td><code>{f.sha256}</code></td></tr>"
                     for f in report.inputs)
    table = _table(["File", "Schema", "sha256"], [inputs], "inputs") if inputs else ""
    return (f"<header><h1>rd3kit report</h1><p class=lede>{report.n_entries} reference entries, "
            f"{len(report.inputs)} record file(s). {escape(md.NOTE)} Each protocol link opens its id@vN, sha256 "
            f"and full resolved spec.</p><div class=chips>{chips}</div>{table}"
            f'<nav><a href="#plots">Plots</a>{toc}<a href="#audits">Audits</a><a href="#sources">Sources</a>'
            f'<a href="#protocols">Protocols</a></nav></header>')


def _sources(report: Report, src: dict) -> str:
    rows = "".join(f'<tr id="{src[key]}"><td>{escape(key[0])}</td><td>{escape(key[1])}</td></tr>' for key in src)
    return _table(["Tag", "Source"], [rows], "sources")


def render(report: Report, plots: dict[str, bytes], generator: str) -> str:
    """The page; `plots` maps file names to PNG bytes (embedded), `generator` names the producing rd3kit."""
    src = _source_ids(report)
    datasets = dict.fromkeys(g.dataset for g in report.groups)
    board = "".join(f"<h2>{escape(d)}</h2>" + "".join(_group(report, g, src) for g in report.groups if g.dataset == d)
                    for d in datasets)
    audits = "".join(_audit(report, a, src) for a in report.audits) or "<p class=lede>No audit record given.</p>"
    notes = "".join(f"<li>{escape(n)}</li>" for n in report.notes)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,"><title>rd3kit report</title><style>{CSS}</style></head><body>'
            f'{_header(report)}<section id="plots"><h2>Plots</h2>{_plots(plots)}</section>'
            f'<section id="leaderboard">{board}</section>'
            f'<section id="audits"><h2>Audits (DD-Ranking scores)</h2>{audits}</section>'
            + (f'<section id="notes"><h2>Notes</h2><ul>{notes}</ul></section>' if notes else "")
            + f'<section id="sources"><h2>Sources</h2>{_sources(report, src)}</section>'
            f'<section id="protocols"><h2>Protocols</h2>{"".join(_protocol(p) for p in report.protocols.values())}'
            f"</section><footer>{escape(generator)}</footer></body></html>\n")
