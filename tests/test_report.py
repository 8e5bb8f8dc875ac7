"""`rd3kit report`: the model from reference/ plus synthetic records, the HTML page, the Markdown snapshot, the CLI.

Every number in the synthetic records is derived from reference/ entries or the verdict's own band, never typed in.
"""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rd3kit.cli import app
from rd3kit.protocols import get_protocol, protocol_hash
from rd3kit.reference.store import Claim, Reproduction, entry_path, load_all, save_entry
from rd3kit.reference.verdict import verify
from rd3kit.report import write_report
from rd3kit.report.build import build_report

DIGITS = "digits-random-ipc10-coupled-digits-v1"  # the embedded reproduction every checkout has
CLAIMED = ("dc-cifar10@v1", 10)  # a claim group with several sources under one protocol
# The snapshot is built from these real entries only, so that a new entry elsewhere in reference/ does not
# change it (README.md's tables, checked by test_readme_tables.py, cover every entry).
PINNED = (DIGITS, "dc-cifar10-ipc10-dc-cifar10-v1-s1", "dc-cifar10-ipc10-dc-cifar10-v1-s2-cw128",
          "dc-cifar10-ipc10-dc-cifar10-v1-s7")


def _protocol_block(ref: str) -> dict:
    p = get_protocol(ref)
    return {"ref": p.ref, "sha256": protocol_hash(p), "kind": p.kind, "spec": p.model_dump(mode="json")}


def _result(ref: str, set_files: dict, ipc: int, test_sha: str, seeds: list[int], top1: list[float]) -> dict:
    return {"schema": "rd3kit.result/v1", "protocol": _protocol_block(ref),
            "inputs": {"set": {"origin": next(iter(set_files)), "files": set_files, "ipc": ipc},
                       "test": {"sha256": test_sha}},
            "seeds": seeds, "top1": top1}


def digits_results(entries: dict) -> dict[str, dict]:
    """A rerun of the digits entry (same values), one shifted by twice its band, and an unrelated set."""
    entry = entries[DIGITS]
    assert isinstance(entry, Reproduction)
    files = {f"embedded:{entry.set.path}": entry.set.sha256}
    good = _result(entry.protocol, files, entry.ipc, entry.test.sha256, list(entry.seeds), list(entry.top1))
    shift = 2 * verify(good, entry).band
    bad = _result(entry.protocol, files, entry.ipc, entry.test.sha256, list(entry.seeds),
                  [v - shift for v in entry.top1])
    other = _result(entry.protocol, {"embedded:digits/synthetic/ipc10": "0" * 64}, entry.ipc, entry.test.sha256,
                    list(entry.seeds), [v + shift for v in entry.top1])
    return {"digits-rerun.json": good, "digits-shifted.json": bad, "digits-other-set.json": other}


def group_claims(entries: dict) -> list[Claim]:
    ref, ipc = CLAIMED
    return sorted((e for e in entries.values() if isinstance(e, Claim) and e.protocol == ref and e.ipc == ipc),
                  key=lambda e: e.name)


def claimed_result(entries: dict) -> dict:
    """A dc-cifar10 IPC 10 result at the first claim's mean: judged against every claim of that group."""
    ref, ipc = CLAIMED
    seeds = list(get_protocol(ref).seeds)
    first = [c for c in group_claims(entries) if c.name in PINNED][0]
    return _result(ref, {"catalog:synthetic": "f" * 64}, ipc, "e" * 64, seeds, [first.mean] * len(seeds))


def audit_record(entries: dict) -> dict:
    """An audit of the shifted digits set: syn/rand/herding arms, scores computed by rd3kit.audit.score."""
    from rd3kit.audit import AuditSpec, score
    from rd3kit.metrics.ddranking import DEFAULT_G, DEFAULT_W

    entry = entries[DIGITS]
    other = digits_results(entries)["digits-other-set.json"]
    proto = _protocol_block(entry.protocol)

    def arm(top1: list[float], inputs: list[str]) -> dict:
        mean = sum(top1) / len(top1)
        std = (sum((v - mean) ** 2 for v in top1) / len(top1)) ** 0.5
        return {"protocol": "protocol", "protocol_sha256": proto["sha256"], "inputs": inputs,
                "seeds": list(entry.seeds), "top1": top1, "mean": mean, "std": std}

    arms = {"syn": arm(other["top1"], ["embedded:digits/synthetic/ipc10"]),
            "rand": arm(list(entry.top1), [entry.set.path]), "herding": arm(list(entry.top1), ["herding selection"])}
    arms["syn_hard"] = dict(arms["syn"], same_as="syn")
    scores = score(arms, AuditSpec(w=DEFAULT_W, g=DEFAULT_G, baselines=("herding",)))
    return {"schema": "rd3kit.audit/v1", "protocol": {"ref": proto["ref"], "sha256": proto["sha256"]},
            "variants": {"protocol": {"sha256": proto["sha256"]}, "hard": {"sha256": proto["sha256"]}},
            "set": {"origin": "embedded:digits/synthetic/ipc10", "ipc": entry.ipc},
            "test": {"dataset": entry.dataset, "sha256": entry.test.sha256}, "seeds": list(entry.seeds),
            "arms": arms, "scores": scores, "notes": ["synthetic audit for the report test"]}


def write_records(folder: Path, entries: dict | None = None) -> list[Path]:
    """The synthetic records as files (stable bytes: no timestamps)."""
    entries = entries or load_all()
    folder.mkdir(parents=True, exist_ok=True)
    docs = digits_results(entries) | {"dc-cifar10-ipc10.json": claimed_result(entries),
                                      "audit-digits.json": audit_record(entries)}
    paths = []
    for name, doc in docs.items():
        path = folder / name
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def pinned_root(folder: Path) -> Path:
    """A reference root holding only the PINNED real entries, copied byte for byte."""
    for name, entry in load_all().items():
        if name in PINNED:
            target = entry_path(entry, folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(entry_path(entry), target)
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("report")
    paths = write_records(tmp / "records")
    written = write_report(paths, tmp / "out")
    return {"paths": paths, "written": written, "out": tmp / "out", "report": build_report(paths),
            "html": (tmp / "out" / "index.html").read_text(encoding="utf-8"),
            "md": (tmp / "out" / "report.md").read_text(encoding="utf-8")}


def _row_status(report, reproduced_ref: str) -> list[str]:
    return [r.status for r in report.rows() if r.reproduced is not None and r.reproduced.ref == reproduced_ref]


def test_verdicts_follow_the_rule(built):
    report = built["report"]
    assert _row_status(report, "digits-rerun.json") == ["reproduced"]
    assert _row_status(report, "digits-shifted.json") == ["not reproduced"]
    assert _row_status(report, "digits-other-set.json") == ["no reference entry"]
    assert len(_row_status(report, "dc-cifar10-ipc10.json")) == len(group_claims(load_all()))
    assert "reproduced" in _row_status(report, "dc-cifar10-ipc10.json")


def test_every_claim_is_a_row_once_unless_judged(built):
    claims = {n for n, e in load_all().items() if isinstance(e, Claim)}
    rows = [r for r in built["report"].rows() if r.claimed is not None]
    assert claims <= {r.claimed.ref for r in rows}
    judged = {r.claimed.ref for r in rows if r.reproduced is not None}
    not_run = [r.claimed.ref for r in rows if r.status == "not run"]
    assert len(not_run) == len(set(not_run)) and not judged & set(not_run)


def test_ior_against_the_random_baseline(built):
    rows = [r for r in built["report"].rows() if r.reproduced and r.reproduced.ref == "digits-other-set.json"]
    assert rows and rows[0].ior is not None and rows[0].ior.low <= rows[0].ior.point <= rows[0].ior.high
    assert rows[0].ior.point > 0  # the set is the random one shifted up


def test_a_protocol_shared_by_methods_is_not_judged(tmp_path):
    real = group_claims(load_all())[0]
    root = tmp_path / "reference"
    for method in ("alpha", "beta"):
        save_entry(real.model_copy(update={"name": f"{method}-{real.name}", "method": method}), root)
    path = tmp_path / "result.json"
    path.write_text(json.dumps(claimed_result(load_all())), encoding="utf-8")
    report = build_report([path], root)
    assert _row_status(report, "result.json") == ["not judged"]
    assert "several methods (alpha, beta)" in report.notes[0]


class _Rows(HTMLParser):
    """Collects the text of every leaderboard/baseline row and every href/src attribute."""

    def __init__(self):
        super().__init__()
        self.rows, self.links, self._cur = [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[k] for k in ("href", "src") if attrs.get(k)]
        if tag == "tr" and "data-status" in attrs:
            self._cur = [attrs["data-status"]]

    def handle_endtag(self, tag):
        if tag == "tr" and self._cur is not None:
            self.rows.append(" ".join(self._cur))
            self._cur = None

    def handle_data(self, data):
        if self._cur is not None and data.strip():
            self._cur.append(data.strip())


def test_html_rows_protocols_and_no_external_urls(built):
    parser = _Rows()
    parser.feed(built["html"])
    report = built["report"]
    assert len(parser.rows) == len(report.rows())
    assert any("digits-rerun.json" in r and r.startswith("reproduced") for r in parser.rows)
    assert any("digits-shifted.json" in r and r.startswith("not reproduced") for r in parser.rows)
    for info in report.protocols.values():
        assert f'id="{info.anchor}"' in built["html"] and info.sha256 in built["html"]
        if info.spec is not None:
            assert f"&quot;id&quot;: &quot;{info.spec['id']}&quot;" in built["html"]
    assert all(not link.startswith(("http://", "https://", "//")) for link in parser.links)
    assert all(link.startswith(("#", "data:")) for link in parser.links)
    assert "<script" not in built["html"].lower()


def test_html_links_resolve(built):
    ids = set(re.findall(r'id="([^"]+)"', built["html"]))
    targets = {h[1:] for h in re.findall(r'href="(#[^"]*)"', built["html"])}
    assert targets <= ids


def test_plots_written_and_embedded(built):
    names = {Path(p).name for p in built["written"]["plots"]}
    assert {"claimed-vs-reproduced.png", "per-seed.png", "ior-vs-random.png", "scores-audit-digits.png"} <= names
    for p in built["written"]["plots"]:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert built["html"].count("data:image/png;base64,") == len(names)


def test_markdown_tables(built):
    md = built["md"]
    assert "| Method | Claimed top-1 % [source] entry |" in md
    assert "## Audits (DD-Ranking scores)" in md and "| gain over herding |" in md
    for info in built["report"].protocols.values():
        assert f'<a id="{info.anchor}"></a>' in md


def test_markdown_snapshot(tmp_path, file_regression):
    root = pinned_root(tmp_path / "reference")
    entries = load_all(root)
    assert sorted(entries) == sorted(PINNED)
    written = write_report(write_records(tmp_path / "records", entries), tmp_path / "out", root)
    file_regression.check(Path(written["markdown"]).read_text(encoding="utf-8"), extension=".md")


def test_cli_report_json(tmp_path):
    paths = write_records(tmp_path / "records")[:2]
    res = CliRunner().invoke(app, ["report", *map(str, paths), "--out", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert Path(doc["html"]).is_file() and Path(doc["markdown"]).is_file()
    human = CliRunner().invoke(app, ["report", "--out", str(tmp_path / "plain")])
    assert human.exit_code == 0 and str(tmp_path / "plain" / "index.html") in human.stdout


def test_cli_report_errors(tmp_path):
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 3 and "file not found" in missing.output and "Traceback" not in missing.output
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"schema": "something/v9"}), encoding="utf-8")
    res = CliRunner().invoke(app, ["report", str(wrong), "--out", str(tmp_path / "o")])
    assert res.exit_code == 3 and "schema expected" in res.output
    afile = tmp_path / "afile"
    afile.write_text("x", encoding="utf-8")
    res = CliRunner().invoke(app, ["report", "--out", str(afile)])
    assert res.exit_code == 2 and "not a folder" in res.output
