"""Sphinx configuration of pyro-vae's documentation: Markdown pages (MyST), the API from the docstrings
(autodoc), the configuration reference generated from the code (``pyro_vae.config.reference``)."""

import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

project = "pyro-vae"
author = "the pyro-vae developers"
copyright = "2026, the pyro-vae developers"
release = version = "0.1.0"

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode", "sphinx.ext.mathjax"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3
html_theme = "furo"
html_title = "pyro-vae"
exclude_patterns = ["_build", "gallery/_out"]
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "none"
nitpicky = False
suppress_warnings = ["myst.xref_missing"] if os.environ.get("PYRO_VAE_DOCS_LENIENT") else []


def write_config_reference(app):
    """docs/reference/config.md from the code, each build (ignored by git: it is generated)."""
    import pyro_vae
    from pyro_vae.config.reference import config_reference

    pyro_vae.VAE  # noqa: B018  (imports the whole API, so every registry is filled)
    target = HERE / "reference" / "config.md"
    text = config_reference() + "\n"
    if not target.exists() or target.read_text() != text:
        target.write_text(text)


_LITERAL = re.compile(r"(``.*?``)")


def plain_math(app, what, name, obj, options, lines):
    """The package's docstrings write math as plain text (``p(x|z)``, ``(n, *data_shape)``, ``|mean| / std``):
    escape ``*`` and ``|`` outside ``literals`` so reStructuredText reads them as characters, not emphasis or
    substitutions, and open a list that follows a line of text with the blank line it needs."""
    out = []
    for line in lines:
        parts = _LITERAL.split(line)
        line = "".join(p if p.startswith("``") else p.replace("*", "\\*").replace("|", "\\|") for p in parts)
        if (
            line.lstrip().startswith("- ")
            and out
            and out[-1].strip()
            and not out[-1].lstrip().startswith("- ")
            and not out[-1].startswith(" " * (len(line) - len(line.lstrip()) + 1))
        ):
            out.append("")
        out.append(line)
    lines[:] = out


def build_gallery(app):
    """docs/gallery/: each examples/*.py run in this process with its quick arguments (examples/quick.toml), its
    page holding the docstring, the code, what it printed and the figures it wrote. A failing example fails the
    build. Generated each build (ignored by git)."""
    import contextlib
    import io
    import runpy
    import shutil
    import tomllib

    import matplotlib

    matplotlib.use("Agg")
    examples, gallery = HERE.parent / "examples", HERE / "gallery"
    quick = tomllib.loads((examples / "quick.toml").read_text())
    shutil.rmtree(gallery, ignore_errors=True)
    (gallery / "_out").mkdir(parents=True)
    pages = []
    for script in sorted(examples.glob("*.py")):
        name = script.stem
        out = gallery / "_out" / name
        out.mkdir()
        args = [a.format(out=out) for a in quick[name]["args"]]
        printed = io.StringIO()
        argv, cwd = sys.argv, os.getcwd()
        try:
            sys.argv = [script.name, *args]
            os.chdir(out)
            with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
                runpy.run_path(str(script), run_name="__main__")
        except BaseException as e:
            from sphinx.errors import ExtensionError

            raise ExtensionError(f"the example {script.name} failed: {type(e).__name__}: {e}") from e
        finally:
            sys.argv = argv
            os.chdir(cwd)
        doc = _docstring(script)
        title, _, rest = doc.partition("\n")
        figures = sorted(out.rglob("*.png"), key=lambda f: (len(f.relative_to(out).parts), f))[:4]  # studies first
        shown = "\n".join(
            f"```{{figure}} _out/{f.relative_to(gallery / '_out').as_posix()}\n:width: 70%\n\n"
            f"`{f.relative_to(out).as_posix()}`\n```\n"
            for f in figures
        )
        text = printed.getvalue().replace(str(out), "OUT").strip() or "(nothing printed)"
        pages.append(name)
        (gallery / f"{name}.md").write_text(
            f"# {title.rstrip('.')}\n\n{rest.strip()}\n\nRun here as `python examples/{script.name} "
            f"{' '.join(quick[name]['args']).replace('{out}', 'OUT')}` (a quick budget on small data).\n\n"
            f"```{{literalinclude}} ../../examples/{script.name}\n:language: python\n```\n\n"
            f"## Output\n\n```text\n{text}\n```\n\n{shown}"
        )
    (gallery / "index.md").write_text(
        "# Examples\n\nEach example of `examples/`, run when these pages were built, "
        "with what it printed and drew.\n\n```{toctree}\n:maxdepth: 1\n\n" + "\n".join(pages) + "\n```\n"
    )


def _docstring(script):
    import ast

    return ast.get_docstring(ast.parse(script.read_text())) or script.stem


def setup(app):
    app.connect("builder-inited", write_config_reference)
    app.connect("builder-inited", build_gallery)
    app.connect("autodoc-process-docstring", plain_math)


smartquotes = False  # "--epochs" stays two hyphens
