"""The report page in headless Chromium: loads with no console message, shows the rows, links open protocols.

Skips when Debian's chromium is not installed (`apt-get install -y chromium`). The page carries no script, so
any console message at all is the browser reporting a problem (a blocked load, a CSP violation): the test
reads them from Chromium's log and fails on the first.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from rd3kit.report import write_report
from rd3kit.report.build import build_report
from rd3kit.report.html import CSP
from test_report import write_records

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs headless Chromium (Debian: apt-get install -y chromium); not installed here")

# No network, no first-run, no background services: the page must render from the file alone.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]
# One Chromium start takes a few seconds; two shared CPU cores under load can make it tens of seconds.
TIMEOUT_S = 120
CONSOLE = re.compile(r":CONSOLE[^\]]*\]\s*(.*)")


def chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp)
    res = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                         timeout=TIMEOUT_S)
    assert res.returncode == 0, f"chromium exited {res.returncode}: {res.stderr[-2000:]}"
    return res


def console_messages(stderr: str) -> list[str]:
    return [m.group(1) for m in map(CONSOLE.search, stderr.splitlines()) if m]


def dump_dom(url: str, tmp: Path) -> tuple[str, list[str]]:
    res = chromium(["--dump-dom", url], tmp)
    return res.stdout, console_messages(res.stderr)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("browser")
    paths = write_records(tmp / "records")
    write_report(paths, tmp / "out")
    return {"tmp": tmp, "index": tmp / "out" / "index.html", "report": build_report(paths)}


def test_console_check_catches_a_blocked_load(tmp_path):
    # The checker itself: a page under the report's CSP that tries an external image must be caught.
    bad = tmp_path / "bad.html"
    bad.write_text(f'<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="{CSP}"></head>'
                   '<body><img src="https://example.invalid/x.png"></body></html>', encoding="utf-8")
    _, console = dump_dom(bad.as_uri(), tmp_path)
    assert any("Content Security Policy" in m for m in console), console


def test_page_loads_clean_and_shows_rows(page):
    dom, console = dump_dom(page["index"].as_uri(), page["tmp"])
    assert console == []
    rows = re.findall(r'<tr data-status="([^"]+)">(.*?)</tr>', dom, flags=re.S)
    assert len(rows) == len(page["report"].rows())
    text = {status: [body for s, body in rows if s == status] for status in {s for s, _ in rows}}
    assert any("digits-rerun.json" in body for body in text["reproduced"])
    assert any("digits-shifted.json" in body for body in text["not reproduced"])
    assert len(text["not run"]) == sum(r.status == "not run" for r in page["report"].rows())


def test_protocol_link_opens_its_details(page):
    info = next(iter(page["report"].protocols.values()))
    dom, console = dump_dom(f"{page['index'].as_uri()}#{info.anchor}", page["tmp"])
    assert console == []
    tag = re.search(rf'<details class="protocol" id="d-{re.escape(info.anchor)}"[^>]*>', dom).group(0)
    assert "open" in tag, f"following #{info.anchor} should open its <details>: {tag}"


def test_screenshot(page):
    shot = page["tmp"] / "report.png"
    res = chromium([f"--screenshot={shot}", "--window-size=1280,2000", page["index"].as_uri()], page["tmp"])
    assert console_messages(res.stderr) == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
