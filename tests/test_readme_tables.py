"""README.md's reference tables are generated from reference/ (tools/readme_tables.py) and never hand-edited."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "tools" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _tool()


@pytest.fixture(scope="module")
def block() -> str:
    return tool.generate()


def test_readme_block_is_up_to_date(block):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    if tool.split(text) is None:
        pytest.skip(f"README.md has no {tool.START} ... {tool.END} markers yet; nothing to check")
    problems = tool.check(text, block)
    assert not problems, "\n".join(problems)


def test_block_lists_every_entry(block):
    from rd3kit.reference.store import load_all

    for entry in load_all().values():
        assert f"{entry.mean * 100:.2f}" in block, entry.name


def test_check_and_update_on_a_copy(block, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{tool.START}\nhand-edited 99.99\n{tool.END}\n\nafter\n", encoding="utf-8")
    assert tool.main(["--check", "--readme", str(readme)]) == 1
    assert tool.main(["--readme", str(readme)]) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# Title\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert tool.split(text)[1] == block and "hand-edited" not in text
    assert tool.main(["--check", "--readme", str(readme)]) == 0


def test_missing_markers_fail_the_check_and_write_nothing(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n", encoding="utf-8")
    assert tool.main(["--check", "--readme", str(readme)]) == 1
    assert "markers missing" in capsys.readouterr().err
    assert tool.main(["--readme", str(readme)]) == 0
    assert readme.read_text(encoding="utf-8") == "# Title\n"
    assert tool.START in capsys.readouterr().out
