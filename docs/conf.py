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

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode",
              "sphinx.ext.mathjax"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3
html_theme = "furo"
html_title = "pyro-vae"
exclude_patterns = ["_build"]
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
        if line.lstrip().startswith("- ") and out and out[-1].strip() and not out[-1].lstrip().startswith("- ") \
                and not out[-1].startswith(" " * (len(line) - len(line.lstrip()) + 1)):
            out.append("")
        out.append(line)
    lines[:] = out


def setup(app):
    app.connect("builder-inited", write_config_reference)
    app.connect("autodoc-process-docstring", plain_math)
