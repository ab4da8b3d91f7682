"""The docs match the code: the settings table is generated from it, links resolve, the product's text speaks of
the product, and every `bash` block of README.md and docs/ runs as written (unless it says why it cannot)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.+?)\s*-->")
FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def bash_blocks() -> list[tuple[str, str, str | None]]:
    """(page:line, block text, why it is not run or None) for every ```bash block of the pages."""
    blocks = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            if match.group(1) != "bash":
                continue
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            why = NOT_RUN.search(before)
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((f"{page.relative_to(REPO)}:{line}", match.group(2), why.group(1) if why else None))
    return blocks


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_configuration", REPO / "docs" / "gen_configuration.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_configuration_page_holds_the_settings_table_of_the_code():
    generator = load_generator()
    text = generator.PAGE.read_text(encoding="utf-8")
    assert generator.rendered(text) == text, "run: python docs/gen_configuration.py"
    from seer.settings import KEYS

    for key, (_kind, default, _meaning) in KEYS.items():
        assert f"| `{key}` | {_kind.__name__} | `{default}` |" in text, key


def test_a_stale_table_is_rewritten_from_the_code():
    generator = load_generator()
    stale = "intro\n<!-- settings table -->\n| `gone` | str | `` | a setting that no longer exists |\n" \
            "<!-- end of settings table -->\nafter\n"
    fresh = generator.rendered(stale)
    assert "`gone`" not in fresh and "| `reasoner` | str | `auto` |" in fresh
    assert fresh.startswith("intro\n") and fresh.endswith("after\n")


def test_readme_is_short_and_links_to_pages_that_exist():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 220
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(REPO)} links to {target}, which is missing"


FORBIDDEN = re.compile(r"\bhelpers? \d|\bissue \d+|\bissue \d+'s|\bthis session\b|\bno GPU was lent\b|\bI have not\b"
                       r"|\bwritten blind\b", re.IGNORECASE)


def test_the_product_text_speaks_of_the_product_only():
    files = [*PAGES, REPO / "main.py", REPO / "Makefile", *REPO.glob("lib/seer/**/*.py"), *REPO.glob("apps/seer/**/*.py"),
             *REPO.glob("bench/*.py"), *REPO.glob("tests/*.py")]
    found = []
    for path in files:
        if path == Path(__file__).resolve():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if FORBIDDEN.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:100]}")
    assert not found, "\n".join(found)


RUNNABLE = [(where, block) for where, block, why in bash_blocks() if why is None]


def test_every_block_that_is_not_run_says_why():
    for where, _block, why in bash_blocks():
        assert why is None or len(why.split()) >= 2, f"{where}: say why the block is not run"
    assert RUNNABLE, "no documented command is run"


@pytest.mark.slow
@pytest.mark.parametrize("where, block", RUNNABLE, ids=[where for where, _ in RUNNABLE])
def test_a_documented_command_runs_as_written(where, block, tmp_path, sample_data):
    for name in ("main.py", "lib", "apps", "bench", "docs", "tests", "sample-data"):
        (tmp_path / name).symlink_to(REPO / name)
    python_bin = Path(sys.executable).parent  # `python` in a block is the tests' own environment's
    env = dict(os.environ, PATH=f"{python_bin}{os.pathsep}{os.environ.get('PATH', '')}", HF_HUB_OFFLINE="1")
    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"{where} failed ({result.returncode}):\n{block}\n{result.stdout[-2000:]}" \
                                   f"\n{result.stderr[-3000:]}"
