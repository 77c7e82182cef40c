"""The documentation: the README's size and links, the docs' links, the API reference builds, public names documented."""

import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def test_the_readme_fits_on_a_screen_and_its_links_and_the_docs_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (page.parent / target).exists(), f"{page.name} links to {target}, which is not there"


def test_the_api_reference_builds_offline_with_a_page_per_package(tmp_path):
    build = importlib.import_module("build-api-docs")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "build-api-docs.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for package in build.PACKAGES:
        page = tmp_path / (package.replace(".", "/") + ".html")
        assert page.is_file(), page
    assert "http" not in "".join(re.findall(r'<script[^>]+src="([^"]+)"', (tmp_path / "medveil.html").read_text()))


def test_every_public_name_has_a_docstring():
    build = importlib.import_module("build-api-docs")
    missing = []
    for package in build.PACKAGES:
        module = importlib.import_module(package)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if (inspect.isclass(obj) and not obj.__doc__) or (inspect.isfunction(obj) and not inspect.getdoc(obj)):
                missing.append(f"{package}.{name}")
    assert not missing, missing
