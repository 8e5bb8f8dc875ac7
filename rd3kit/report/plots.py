"""The report's figures as PNG bytes: claimed vs reproduced, top-1 per seed, DD-Ranking score bars.

Must not: write files, compute a number that is not in the report model, or switch matplotlib's global
backend: each function draws on its own Agg canvas, created inside the function, never at import time.
"""

from __future__ import annotations

import io

from rd3kit.report.build import Report, Row, Score

# Colours carry the verdict, and every plot also says it in words (legend), so colour is never the only cue.
STATUS_COLOURS = {"reproduced": "#1a7f37", "not reproduced": "#cf222e", "inconclusive": "#bf8700"}
OTHER_COLOUR = "#57606a"
DPI = 110


def _figure(width_in: float, height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def label(row: Row) -> str:
    return f"{row.dataset} IPC {row.ipc} {row.method}"


def scatter_pairs(report: Report) -> list[Row]:
    return [r for r in report.rows() if r.claimed is not None and r.reproduced is not None]


def claimed_vs_reproduced(report: Report) -> bytes | None:
    """Scatter of reproduced against claimed mean (percent), error bars = std, with the identity line."""
    rows = scatter_pairs(report)
    if not rows:
        return None
    fig = _figure(6.0, 5.5)
    ax = fig.add_subplot()
    for status in sorted({r.status for r in rows}):
        sel = [r for r in rows if r.status == status]
        ax.errorbar([100 * r.claimed.mean for r in sel], [100 * r.reproduced.mean for r in sel],
                    xerr=[100 * (r.claimed.std or 0.0) for r in sel],
                    yerr=[100 * (r.reproduced.std or 0.0) for r in sel],
                    fmt="o", capsize=3, color=STATUS_COLOURS.get(status, OTHER_COLOUR), label=status)
    values = [100 * r.claimed.mean for r in rows] + [100 * r.reproduced.mean for r in rows]
    pad = max(1.0, 0.05 * (max(values) - min(values)))
    lo, hi = min(values) - pad, max(values) + pad
    ax.plot([lo, hi], [lo, hi], color=OTHER_COLOUR, linestyle="--", linewidth=1,
            label="identity (reproduced = claimed)")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("claimed / reference top-1 (%)")
    ax.set_ylabel("reproduced top-1 (%)")
    ax.set_title("Claimed vs reproduced (error bars: std)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def seed_rows(report: Report) -> list[Row]:
    return [r for r in report.rows() if r.reproduced is not None and r.reproduced.top1]


def _seed_label(row: Row) -> str:
    versus = f" vs [{row.claimed.tag}]" if row.claimed is not None else ""
    return f"{label(row)}: {row.reproduced.ref}{versus}"


def _offsets(k: int) -> list[float]:
    # Deterministic spread of k points over +-0.25 of a row: no random jitter, so figures are repeatable.
    return [0.0] * k if k == 1 else [-0.25 + 0.5 * i / (k - 1) for i in range(k)]


def per_seed(report: Report) -> bytes | None:
    """Strip plot: every seed's top-1 per reproduced row, its mean, and the claim (mean +- std) beside it."""
    rows = seed_rows(report)
    if not rows:
        return None
    fig = _figure(7.5, 1.2 + 0.45 * len(rows))
    ax = fig.add_subplot()
    claim_label = "claimed mean +- std"
    for y, r in enumerate(rows):
        xs = [100 * v for v in r.reproduced.top1]
        colour = STATUS_COLOURS.get(r.status, OTHER_COLOUR)
        ax.scatter(xs, [y + o for o in _offsets(len(xs))], s=14, color=colour, alpha=0.8,
                   label="per seed" if y == 0 else None)
        ax.plot([100 * r.reproduced.mean] * 2, [y - 0.35, y + 0.35], color=colour, linewidth=2,
                label="reproduced mean" if y == 0 else None)
        if r.claimed is not None:
            ax.errorbar([100 * r.claimed.mean], [y], xerr=[100 * (r.claimed.std or 0.0)], fmt="D", color="black",
                        markersize=5, capsize=3, label=claim_label)
            claim_label = None  # one legend entry
    ax.set_yticks(range(len(rows)), [_seed_label(r) for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("top-1 (%)")
    ax.set_title("Top-1 per seed")
    ax.legend(loc="best", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def score_bars(scores: list[tuple[str, Score]], title: str) -> bytes | None:
    """Bars of DD-Ranking scores (fraction units) with their intervals as error bars."""
    present = [(name, s) for name, s in scores if s.point is not None]
    if not present:
        return None
    fig = _figure(6.5, 1.0 + 0.4 * len(present))
    ax = fig.add_subplot()
    ys = range(len(present))
    points = [s.point for _, s in present]
    err = [[s.point - s.low for _, s in present], [s.high - s.point for _, s in present]]
    ax.barh(list(ys), points, xerr=err, capsize=4, color="#0969da", alpha=0.85)
    ax.axvline(0.0, color=OTHER_COLOUR, linewidth=1)
    ax.set_yticks(list(ys), [name for name, _ in present], fontsize=8)
    ax.invert_yaxis()
    levels = sorted({s.level for _, s in present})
    ax.set_xlabel("score (fraction); bars: " + ", ".join(f"{100 * lv:g} %" for lv in levels) + " interval")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def render_all(report: Report) -> dict[str, bytes]:
    """Every figure the report has data for, by file name (stable names, no timestamps)."""
    figures = {"claimed-vs-reproduced.png": claimed_vs_reproduced(report), "per-seed.png": per_seed(report)}
    ior = [(f"{label(r)} [{r.reproduced.ref}]", r.ior) for r in report.rows() if r.ior is not None]
    figures["ior-vs-random.png"] = score_bars(ior, "IOR vs random baseline (DD-Ranking)")
    for audit in report.audits:
        stem = audit.name.removesuffix(".json")
        figures[f"scores-{stem}.png"] = score_bars([(s.name, s) for s in audit.scores],
                                                   f"DD-Ranking scores: {audit.name}")
    return {name: png for name, png in figures.items() if png is not None}
