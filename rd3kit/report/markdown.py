"""The report as Markdown (same tables as the HTML page), the README's reference tables, and number formats.

Must not: read or write files, compute numbers (the model carries them), or print anything volatile
(timestamps, absolute paths): the output is snapshotted and diffed.
"""

from __future__ import annotations

import json

from rd3kit.report.build import AuditView, Group, Measure, ProtocolInfo, Report, Row, Score

STATUS_ORDER = ("reproduced", "not reproduced", "inconclusive", "no reference entry", "not judged",
                "reference run (no claim)",
                "audit arm", "not run")
NOTE = ("Top-1 in percent, mean ± std; the std is the one the source reports (papers: run-to-run; rd3kit runs: "
        "population std over seeds). Verdicts apply the written rule of docs/acceptance.md (V1-V5).")


def pct(value: float) -> str:
    return f"{100 * value:.2f}"


def measure_text(m: Measure | None, with_n: bool = False) -> str:
    if m is None:
        return "—"
    std = "n/a" if m.std is None else pct(m.std)
    n = f" (n={m.n})" if with_n and m.n is not None else ""
    return f"{pct(m.mean)} ± {std}{n}"


def score_text(s: Score | None) -> str:
    if s is None:
        return "—"
    if s.point is None:
        return f"n/a ({s.missing})"
    return f"{s.point:+.4f} [{s.low:+.4f}, {s.high:+.4f}] ({100 * s.level:g} %)"


def verdict_text(row: Row) -> str:
    v = row.verdict
    if v is None:
        return row.status
    z = "" if v.z is None else f", z {v.z:+.2f}"
    return f"{v.status} (Δ {100 * v.delta:+.2f} pp, band ±{100 * v.band:.2f} pp{z})"


def verdict_reasons(row: Row) -> list[str]:
    v = row.verdict
    if v is None:
        return []
    return [v.rule, *v.reasons] + ([f"acceptance override: {v.override}"] if v.override else [])


def status_counts(report: Report) -> list[tuple[str, int]]:
    rows = report.rows()
    seen = [s for s in STATUS_ORDER if any(r.status == s for r in rows)]
    seen += sorted({r.status for r in rows} - set(seen))
    return [(s, sum(r.status == s for r in rows)) for s in seen]


def sources(report: Report) -> list[tuple[str, str]]:
    """Unique (tag, source text) of every number shown, sorted."""
    found = {(m.tag, m.source) for r in report.rows() for m in (r.claimed, r.reproduced) if m is not None}
    found |= {(m.tag, m.source) for a in report.audits for _, m, _ in a.arms}
    return sorted(found)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def _protocol_cell(report: Report, anchor: str) -> str:
    info = report.protocols.get(anchor)
    return "—" if info is None else f"[{info.ref}](#{anchor}) `{info.sha256[:12]}`"


def _claimed_cell(m: Measure | None) -> str:
    return "—" if m is None else f"{measure_text(m)} [{m.tag}] `{m.ref}`"


def _reproduced_cell(m: Measure | None) -> str:
    return "—" if m is None else f"{measure_text(m, with_n=True)} `{m.ref}`"


def _row_cells(report: Report, row: Row) -> list[str]:
    verdict = "; ".join([verdict_text(row), *verdict_reasons(row)[1:]])
    cells = [row.method, _claimed_cell(row.claimed), _reproduced_cell(row.reproduced), verdict]
    return cells + ([] if row.baseline else [score_text(row.ior)]) + [_protocol_cell(report, row.protocol)]


ROW_HEAD = ["Method", "Claimed top-1 % [source] entry", "Reproduced top-1 % (n seeds)", "Verdict",
            "IOR vs random [interval]", "Protocol"]
BASELINE_HEAD = ["Baseline", "Reference top-1 % [source] entry", "Reproduced top-1 % (n seeds)", "Verdict",
                 "Protocol"]


def _group(report: Report, g: Group) -> list[str]:
    lines = [f"### {g.dataset}, IPC {g.ipc}", ""]
    if g.rows:
        lines += _table(ROW_HEAD, [_row_cells(report, r) for r in g.rows]) + [""]
    if g.baselines:
        cells = [_row_cells(report, r) for r in g.baselines]
        lines += [f"Baselines ({g.dataset}, IPC {g.ipc}):", ""] + _table(BASELINE_HEAD, cells) + [""]
    return lines


def _audit(report: Report, a: AuditView) -> list[str]:
    lines = [f"### Audit `{a.name}`", "", f"Set `{a.origin}`, {a.dataset} IPC {a.ipc}, protocol "
             f"{_protocol_cell(report, a.protocol)}; record sha256 `{a.sha256}`.", ""]
    arms = [[arm, measure_text(m, with_n=True), _protocol_cell(report, anchor) if anchor else "—"]
            for arm, m, anchor in a.arms]
    lines += _table(["Arm", "Top-1 % (n seeds)", "Protocol"], arms) + [""]
    lines += _table(["Score", "Point [interval] (level)", "Interval method"],
                    [[s.name, score_text(s), s.method or "—"] for s in a.scores]) + [""]
    return lines + [f"- {n}" for n in a.notes] + ([""] if a.notes else [])


def _protocol(info: ProtocolInfo) -> list[str]:
    body = (json.dumps(info.spec, indent=2, sort_keys=True) if info.spec is not None
            else f"spec unavailable: {info.note}")
    return [f'<a id="{info.anchor}"></a>', f"<details><summary>{info.ref} · sha256 {info.sha256}</summary>", "",
            "```json" if info.spec is not None else "```", body, "```", "", "</details>", ""]


def _header(report: Report, plots: list[str]) -> list[str]:
    lines = ["# rd3kit report", "", f"{report.n_entries} reference entries, "
             f"{len(report.inputs)} record file(s). {NOTE}", ""]
    lines += _table(["Status", "Rows"], [[s, str(n)] for s, n in status_counts(report)]) + [""]
    if report.inputs:
        lines += ["## Inputs", ""] + _table(["File", "Schema", "sha256"],
                                            [[f.name, f.schema, f"`{f.sha256}`"] for f in report.inputs]) + [""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p}](plots/{p})" for p in plots] + [""]
    return lines


def render(report: Report, plots: list[str]) -> str:
    """The whole Markdown report; `plots` are file names under plots/."""
    lines = _header(report, plots)
    for dataset in dict.fromkeys(g.dataset for g in report.groups):
        lines += [f"## {dataset}", ""]
        for g in (g for g in report.groups if g.dataset == dataset):
            lines += _group(report, g)
    if report.audits:
        lines += ["## Audits (DD-Ranking scores)", ""]
        for a in report.audits:
            lines += _audit(report, a)
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    lines += ["## Sources", ""] + _table(["Tag", "Source"], [list(s) for s in sources(report)]) + [""]
    lines += ["## Protocols", ""]
    for info in report.protocols.values():
        lines += _protocol(info)
    return "\n".join(lines).rstrip() + "\n"


README_HEAD = ["IPC", "Method", "Claimed top-1 % [source]", "rd3kit run top-1 % (n seeds)", "Verdict", "Protocol"]


def readme_tables(report: Report) -> str:
    """The reference numbers as Markdown tables, one per dataset (for README.md; no links into the report)."""
    lines = []
    for dataset in dict.fromkeys(g.dataset for g in report.groups):
        rows = [r for g in report.groups if g.dataset == dataset for r in (*g.rows, *g.baselines)]
        cells = [[str(r.ipc), r.method, "—" if r.claimed is None else f"{measure_text(r.claimed)} [{r.claimed.tag}]",
                  measure_text(r.reproduced, with_n=True), r.status,
                  f"{report.protocols[r.protocol].ref} `{report.protocols[r.protocol].sha256[:12]}`"] for r in rows]
        lines += [f"**{dataset}**", ""] + _table(README_HEAD, cells) + [""]
    tags = sorted({(r.claimed.tag, r.claimed.source) for r in report.rows() if r.claimed is not None})
    lines += ["Sources: " + "; ".join(f"[{t}] {s}" for t, s in tags)] if tags else []
    return "\n".join(lines).rstrip() + "\n"
