"""The documentation builds without a warning (Sphinx with -W: broken references, bad docstrings, a page in no
table of contents all fail), documents every public name of ``pyro_vae``, and README.md stays a landing page."""

from pathlib import Path

import pyro_vae

ROOT = Path(__file__).resolve().parents[1]


def test_the_docs_build_without_a_warning_and_have_search_and_every_page(site):
    assert (site / "search.html").exists() and (site / "searchindex.js").stat().st_size > 10_000
    pages = {
        p.relative_to(ROOT / "docs").with_suffix(".html")
        for p in (ROOT / "docs").rglob("*.md")
        if "_out" not in p.parts
    }
    assert pages and all((site / p).exists() for p in pages), [p for p in pages if not (site / p).exists()]
    config = (site / "reference" / "config.html").read_text()
    assert "model.component_fit" in config and "jit_meanfield" in config and "vamp" in config


def test_the_gallery_shows_every_example_with_its_output_and_figures(site):
    for script in (ROOT / "examples").glob("*.py"):
        page = (site / "gallery" / f"{script.stem}.html").read_text()
        assert "Output" in page and "(nothing printed)" not in page, script.name
    assert "<img" in (site / "gallery" / "mnist_vae.html").read_text()
    assert page.count("<img") <= 4 and len(list((site / "_images").glob("*.png"))) >= 5


def test_every_public_name_is_in_the_api_reference(site):
    from sphinx.util.inventory import InventoryFile

    with open(site / "objects.inv", "rb") as f:
        documented = {name for entries in InventoryFile.load(f, "", lambda base, uri: uri).values() for name in entries}
    missing = [name for name in pyro_vae.__all__ if not any(d.endswith(f".{name}") for d in documented)]
    assert not missing, f"public names without an API entry: {missing}"


def test_readme_is_a_landing_page_that_links_every_guide_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    for page in (ROOT / "docs" / "guide").glob("*.md"):
        assert f"docs/guide/{page.name}" in readme, page.name
    for target in ("docs/getting-started.md", "docs/design.md", "CHANGELOG.md"):
        assert target in readme and (ROOT / target).exists()
    assert (ROOT / "LICENSE").read_text().strip().startswith("Apache License")
