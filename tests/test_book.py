"""The book runs: every ``book/*.md`` chapter, read with jupytext and executed with nbclient.

Each chapter is one test item (``test_chapter_runs[01-local-receptive-fields]``). A cell that
raises fails the item with the chapter, the cell's number and line in the ``.md``, its source
and its traceback. Chapters run in quick mode unless ``CATNEURON_BOOK_MODE=full`` is set (the
kernel inherits the environment; chapters read it through :mod:`catneuron.book`).

Run only the book::

    .venv/bin/python -m pytest tests/test_book.py -q
    CATNEURON_BOOK_MODE=full .venv/bin/python -m pytest tests/test_book.py -q

A new chapter needs no change here: add ``book/NN-title.md`` and it is collected.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jupytext
import nbformat
import pytest
from jupytext.config import load_jupytext_configuration_file
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from catneuron import book

BOOK = Path(__file__).resolve().parent.parent / "book"
CHAPTERS = sorted(BOOK.glob("*.md"))
CELL_TIMEOUT = 600  # seconds for one cell: generous, a hung cell still ends the item
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _cell_line(text: str, source: str) -> int | None:
    """The 1-based line of the ``.md`` where a code cell's source starts (None if not found)."""
    at = text.find(source.strip()) if source.strip() else -1
    return text.count("\n", 0, at) + 1 if at >= 0 else None


def execute_chapter(path: Path) -> nbformat.NotebookNode:
    """Execute one chapter in a fresh kernel with ``book/`` as the working directory.

    Raises ``pytest.fail`` naming the failing cell, with its source and traceback.
    """
    nb = jupytext.read(path)
    started = {}  # the cell being executed, kept by nbclient's hook for the failure message
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        on_cell_start=lambda cell, cell_index: started.update(cell=cell, index=cell_index),
    )
    failure = None
    try:
        client.execute()
    except Exception as err:  # noqa: BLE001 - any failure becomes a readable test failure
        cell = started.get("cell")
        if cell is None:
            raise
        code_no = sum(c.cell_type == "code" for c in nb.cells[: started["index"] + 1])
        line = _cell_line(path.read_text(encoding="utf-8"), cell.source)
        where = f"{path.name}, code cell {code_no}" + (f" (line {line})" if line else "")
        if isinstance(err, CellExecutionError):  # its text: the cell's source, output, traceback
            detail = ANSI.sub("", str(err))
        else:  # a timeout or a dead kernel: no traceback from the kernel
            detail = f"{cell.source}\n\n{type(err).__name__}: {err}"
        failure = f"{where} failed:\n\n{detail}"
    if failure:  # raised outside the except block: the report is not chained to nbclient's
        pytest.fail(failure, pytrace=False)
    return nb


@pytest.mark.slow
@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_runs(path):
    nb = execute_chapter(path)
    assert any(c.cell_type == "code" and c.outputs for c in nb.cells), f"{path.name} shows nothing"


# --- the chapters' shape: cheap checks that need no kernel -------------------------------

def test_book_has_chapters():
    names = [p.name for p in CHAPTERS]
    assert "00-reading-guide.md" in names, names


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_is_a_myst_notebook(path):
    """A jupytext MyST header with the python3 kernel, an NN-title name, code cells, no outputs."""
    assert re.fullmatch(r"\d\d-[a-z0-9-]+\.md", path.name), f"chapter names are NN-title.md: {path.name}"
    nb = jupytext.read(path)
    meta = nb.metadata
    assert meta.get("jupytext", {}).get("text_representation", {}).get("format_name") == "myst"
    assert meta.get("kernelspec", {}).get("name") == "python3"
    assert any(c.cell_type == "code" for c in nb.cells), f"{path.name} has no code cell"


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_ends_with_exercises(path):
    """The last section is '## Exercises' with 2 to 4 numbered items."""
    text = path.read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings and headings[-1].strip() == "Exercises", f"{path.name}: last section {headings[-1:]}"
    tail = text[text.rindex("## Exercises"):]
    items = re.findall(r"^\d+\. ", tail, flags=re.M)
    assert 2 <= len(items) <= 4, f"{path.name} has {len(items)} exercises, want 2-4"


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_survives_a_save(path):
    """Saving from JupyterLab (jupytext, book/jupytext.toml's format) rewrites nothing: the
    chapter is already in jupytext's own MyST form, so opening and saving leaves no diff."""
    config = load_jupytext_configuration_file(str(BOOK / "jupytext.toml"))
    assert list(config.formats) == ["md:myst"], config.formats
    version = re.compile(r"^\s*jupytext_version: .*$", flags=re.M)  # written by whichever jupytext saves
    saved = jupytext.writes(jupytext.read(path), fmt=config.formats[0])
    assert version.sub("", saved) == version.sub("", path.read_text(encoding="utf-8"))


def test_jupyterlab_opens_markdown_as_notebook():
    """The default-viewer override that `make book` puts on JUPYTER_CONFIG_PATH (labconfig/)."""
    overrides = json.loads((BOOK / ".jupyter/labconfig/default_setting_overrides.json").read_text())
    viewers = overrides["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]
    assert viewers["markdown"] == viewers["myst"] == "Jupytext Notebook"


# --- the quick/full switch ----------------------------------------------------------------

def test_mode_defaults_to_quick(monkeypatch):
    monkeypatch.delenv(book.ENV_VAR, raising=False)
    assert book.mode() == "quick"
    assert book.pick(quick=1, full=2) == 1


@pytest.mark.parametrize("value", ["full", "FULL", " full "])
def test_mode_full(monkeypatch, value):
    monkeypatch.setenv(book.ENV_VAR, value)
    assert book.mode() == "full"
    assert book.pick(quick=1, full=2) == 2


def test_bad_mode_names_the_variable(monkeypatch):
    monkeypatch.setenv(book.ENV_VAR, "fast")
    with pytest.raises(ValueError, match=book.ENV_VAR):
        book.pick(quick=1, full=2)


def test_failing_cell_reports_its_source(tmp_path):
    """The collector's failure message names the cell and carries its source and traceback."""
    bad = tmp_path / "99-broken.md"
    header = CHAPTERS[0].read_text(encoding="utf-8").split("\n---\n", 1)[0] + "\n---\n"
    bad.write_text(header + "\n# Broken\n\n```{code-cell} ipython3\nx = 1\n```\n\n"
                   "```{code-cell} ipython3\nraise RuntimeError('boom in cell two')\n```\n")
    with pytest.raises(pytest.fail.Exception) as info:
        execute_chapter(bad)
    message = str(info.value)
    assert "99-broken.md, code cell 2" in message
    assert "raise RuntimeError('boom in cell two')" in message
    assert "RuntimeError: boom in cell two" in message
