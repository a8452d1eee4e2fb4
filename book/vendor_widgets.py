"""Copy the JavaScript the rendered book needs (widgets, MathJax) into a static folder, from pinned
npm packages.

The rendered chapters embed the saved ipywidgets state; to draw it, a page needs RequireJS and
``@jupyter-widgets/html-manager``'s ``embed-amd.js`` (which bundles the base, controls and output
widget modules, so nothing is fetched lazily for the standard widgets). myst-nb loads both from a
CDN by default. This script installs the versions pinned in ``package.json`` /
``package-lock.json`` with ``npm ci`` into an ignored folder and copies the needed files into
``<dest>/widgets/``; Sphinx's ``html_static_path`` then copies them to
``_build/html/_static/widgets/`` and ``nb_ipywidgets_js`` points at them, so pages work offline.
The same holds for MathJax (Sphinx loads it from a CDN by default): its combined
``tex-mml-chtml.js`` and the folders it loads lazily (fonts, TeX extensions, menu) go to
``<dest>/mathjax/``, and ``mathjax_path`` points at it.

    python book/vendor_widgets.py [--dest _build/widgets_static] [--npm-dir _build/widgets_npm]

Standard library only (no skdlib, no third-party imports). Exit status 1 with a message when npm
is missing or a file is not where the pinned packages put it.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HTML_MANAGER_DIST = Path("node_modules/@jupyter-widgets/html-manager/dist")
REQUIREJS = Path("node_modules/requirejs/require.js")
# Files of the html-manager's dist folder that pages never load (the non-AMD bundles, the source
# map).
SKIPPED = ("embed.js", "embed.js.map", "libembed-amd.js")
MATHJAX = Path("node_modules/mathjax/es5")
# The combined component the pages load, and what it fetches on demand (relative to MATHJAX).
MATHJAX_PARTS = ("tex-mml-chtml.js", "input", "output/chtml", "ui", "a11y")
STAMP = ".package-lock.sha256"


def _lock_digest() -> str:
    return hashlib.sha256((ROOT / "package-lock.json").read_bytes()).hexdigest()


def install(npm_dir: Path) -> None:
    """``npm ci`` the pinned packages into ``npm_dir`` unless the same lock file is installed
    there."""
    npm_dir.mkdir(parents=True, exist_ok=True)
    stamp = npm_dir / STAMP
    digest = _lock_digest()
    if (
        stamp.is_file()
        and stamp.read_text().strip() == digest
        and (npm_dir / HTML_MANAGER_DIST).is_dir()
    ):
        return
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError(
            "npm not found on PATH: install Node.js (e.g. `apt-get install -y npm`)"
        )
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(ROOT / name, npm_dir / name)
    subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefix", str(npm_dir)],
        check=True,
    )
    stamp.write_text(digest + "\n")


def copy_assets(npm_dir: Path, dest: Path) -> list[Path]:
    """Copy RequireJS, ``embed-amd.js`` and its fonts into ``dest/widgets/``; return the files."""
    dist = npm_dir / HTML_MANAGER_DIST
    require = npm_dir / REQUIREJS
    for needed in (dist / "embed-amd.js", require):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} missing: the pinned npm packages did not install it")
    target = dest / "widgets"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    copied = [Path(shutil.copy2(require, target / "require.js"))]
    for path in sorted(dist.iterdir()):
        if path.is_file() and path.name not in SKIPPED:
            copied.append(Path(shutil.copy2(path, target / path.name)))
    for package in ("@jupyter-widgets/html-manager", "requirejs"):
        licence = npm_dir / "node_modules" / package / "LICENSE"
        if licence.is_file():
            copied.append(
                Path(shutil.copy2(licence, target / f"LICENSE.{package.replace('/', '_')}"))
            )
    copied += copy_mathjax(npm_dir, dest)
    return copied


def copy_mathjax(npm_dir: Path, dest: Path) -> list[Path]:
    """Copy MathJax's ``tex-mml-chtml.js`` and the folders it loads lazily into
    ``dest/mathjax/``."""
    source = npm_dir / MATHJAX
    target = dest / "mathjax"
    if target.exists():
        shutil.rmtree(target)
    for part in MATHJAX_PARTS:
        path = source / part
        if path.is_file():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / part)
        elif path.is_dir():
            shutil.copytree(path, target / part)
        else:
            raise FileNotFoundError(f"{path} missing: the pinned npm packages did not install it")
    licence = npm_dir / "node_modules" / "mathjax" / "LICENSE"
    if licence.is_file():
        shutil.copy2(licence, target / "LICENSE")
    return [p for p in target.rglob("*") if p.is_file()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dest",
        type=Path,
        default=ROOT / "_build" / "widgets_static",
        help="folder listed in html_static_path (the files go to <dest>/widgets/)",
    )
    parser.add_argument(
        "--npm-dir",
        type=Path,
        default=ROOT / "_build" / "widgets_npm",
        help="ignored folder for node_modules",
    )
    args = parser.parse_args(argv)
    try:
        install(args.npm_dir)
        copied = copy_assets(args.npm_dir, args.dest)
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        print(f"vendor_widgets: {exc}", file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in copied) / 2**20
    print(
        f"vendor_widgets: {len(copied)} files ({size:.1f} MiB) in {args.dest}/widgets and "
        f"{args.dest}/mathjax"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
