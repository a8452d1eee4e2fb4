"""The chapters as code: each chapter's code cells pass ruff (the project's rules, read through
jupytext), and a result chapter holds at most 60 lines of code (prose, a call and a figure; the
logic lives in skdlib.analysis and skdlib.viz)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "book"
#: The chapters that are notebooks (a jupytext header), as the Makefile finds them.
CHAPTERS = sorted(p for p in BOOK.glob("*.md") if "\njupytext:" in "\n" + p.read_text())
MAX_CODE_LINES = 60
#: Ruff's rules for chapters beyond the project's: long lines up to 120 (a notebook's cells are
#: read in a wide column), imports after the parameters cell (E402) and a bare expression that
#: displays a value (B018) are how notebooks work; Greek letters in comments are the paper's.
CHAPTER_RUFF = ["--line-length", "120", "--extend-ignore", "E402,B018,RUF001,RUF002,RUF003"]
_OVER = "more than 60 lines of code until its tables and plots move into skdlib.analysis"
#: Every chapter that reads the runs; those still over the limit are expected to fail for now.
RESULT_CHAPTERS = [
    "ablation",
    "later_methods",
    "unlabeled",
    "embedding_scores",
    "paper_vs_code",
    "pairwise_variants",
    "explorer",
    "intro",
]


def code_cells(chapter: Path) -> list[str]:
    """The sources of the chapter's code cells (jupytext reads the MyST file)."""
    import jupytext

    notebook = jupytext.read(chapter, fmt="md:myst")
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


def code_lines(chapter: Path) -> int:
    """Lines of code in the chapter's code cells: blank lines and comment lines not counted."""
    lines = (line.strip() for cell in code_cells(chapter) for line in cell.splitlines())
    return sum(1 for line in lines if line and not line.startswith("#"))


def test_the_line_count_leaves_out_prose_blank_lines_and_comments(tmp_path: Path) -> None:
    chapter = tmp_path / "c.md"
    chapter.write_text(
        "---\njupytext:\n  text_representation:\n    format_name: myst\n---\n\n# Title\n\n"
        "Prose with `code`.\n\n```{code-cell} ipython3\n:tags: [parameters]\n# a comment\nX = 1\n"
        "\n```\n\n```{code-cell} ipython3\nprint(X)  # shown\ny = [\n    1,\n]\n```\n"
    )
    assert code_lines(chapter) == 5  # X = 1; print(X); y = [; 1,; ]


def test_every_chapter_passes_ruff(tmp_path: Path) -> None:
    for chapter in CHAPTERS:
        cells = []
        for number, cell in enumerate(code_cells(chapter)):
            magic, _, body = cell.partition("\n")
            if magic.startswith("%%writefile"):  # a file the chapter writes: linted as a module
                (tmp_path / f"{chapter.stem}_file{number}.py").write_text(body + "\n")
            elif not magic.startswith("%%"):  # other cell magics hold no Python
                cells.append(cell)
        (tmp_path / f"{chapter.stem}.py").write_text("\n\n# %%\n".join(cells) + "\n")
    command = [
        sys.executable,
        "-m",
        "ruff",
        "check",
        "--no-cache",
        "--config",
        str(REPO / "pyproject.toml"),
    ]
    result = subprocess.run(
        [*command, *CHAPTER_RUFF, "--output-format", "concise", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", RESULT_CHAPTERS)
def test_a_result_chapter_holds_at_most_60_lines_of_code(name: str) -> None:
    assert code_lines(BOOK / f"{name}.md") <= MAX_CODE_LINES


def test_the_api_reference_lists_every_module() -> None:
    """Each module of skdlib has an ``automodule`` in a page of book/api (a new module is added
    to the page of its package)."""
    package = REPO / "skdlib"
    modules = {
        ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for path in package.rglob("*.py")
        if path.name != "__main__.py"
    }
    pages = "".join(page.read_text() for page in (BOOK / "api").glob("*.md"))
    listed = {line.split("::")[1].strip() for line in pages.splitlines() if "automodule::" in line}
    assert sorted(modules - listed) == []
    assert sorted(listed - modules) == []
