"""The API reference (`make docs`): it builds, documents every public name, and has no broken cross-reference."""

import importlib.util
import inspect
import re
import sys
import textwrap
from pathlib import Path

import pytest

_BUILD_API = Path(__file__).resolve().parents[1] / "docs" / "build_api.py"


def _load_builder():
  spec = importlib.util.spec_from_file_location("jaxhw_docs_build_api", _BUILD_API)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up there
  spec.loader.exec_module(module)
  return module


build_api = _load_builder()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  out = tmp_path_factory.mktemp("api")
  return out, build_api.build(out)


def test_reference_builds_without_problems(built):
  _, result = built
  assert not result.problems, "API reference problems:\n" + "\n".join(result.problems)
  assert result.names > 400  # every subpackage's __all__ and the top-level modules' functions and classes


def test_one_page_per_public_module(built):
  out, result = built
  modules = build_api.public_modules()
  for sub in ("faults", "hessian", "crossbar", "snn", "mann", "parallel", "storage", "models", "data", "detection",
              "effects", "train", "studies"):
    assert f"jaxhw.{sub}" in modules
  assert "jaxhw.parallel.cost" in modules  # exported as a module by jaxhw.parallel.__all__
  assert "jaxhw.experiments" not in modules and "jaxhw.__main__" not in modules
  assert sorted(p.relative_to(out).as_posix() for p in result.pages) == sorted(
      m.replace(".", "/") + ".html" for m in modules)
  assert (out / "index.html").is_file() and (out / "search.js").is_file()


def test_every_exported_name_is_on_its_page_with_signature_and_docstring(built):
  out, _ = built
  import jaxhw

  for sub in ("faults", "hessian", "crossbar", "snn", "mann", "parallel", "storage", "models", "data", "detection"):
    module = getattr(jaxhw, sub)
    page = (out / "jaxhw" / f"{sub}.html").read_text()
    for name in module.__all__:
      if inspect.ismodule(getattr(module, name)):
        continue  # a submodule named in __all__ (jaxhw.parallel.cost) has its own page
      section = re.search(rf'<section id="{re.escape(name)}">(.*?)</section>', page, flags=re.DOTALL)
      assert section, f"jaxhw.{sub}.{name} is not on its page"
      if callable(getattr(module, name)) and not isinstance(getattr(module, name), type):
        assert 'class="signature' in section.group(1), f"jaxhw.{sub}.{name} has no signature"
      assert 'class="docstring"' in section.group(1), f"jaxhw.{sub}.{name} shows no docstring"


def test_google_sections_render_as_sections(built):
  out, _ = built
  page = (out / "jaxhw" / "faults.html").read_text()
  section = re.search(r'<section id="random_bit_flips">(.*?)</section>', page, flags=re.DOTALL).group(1)
  assert '<h6 id="arguments">Arguments:</h6>' in section and "<strong>ber:</strong>" in section
  assert '<h6 id="returns">Returns:</h6>' in section
  references = sum(p.read_text().count('<h6 id="references">References:</h6>') for p in out.rglob("*.html"))
  assert references >= 50  # the paper each method comes from, under the name that implements it


def test_html_check_finds_broken_links_and_unresolved_names(tmp_path):
  (tmp_path / "a.html").write_text(
      '<h1 id="top">A</h1><a href="b.html#there">ok</a><a href="#top">ok</a><a href="https://x.org/#y">ext</a>'
      '<code><a href="b.html#there">jaxhw.b.there</a></code><code>x.y</code>'
      '<a href="missing.html">bad file</a><a href="b.html#nowhere">bad anchor</a><code>jaxhw.b.gone</code>')
  (tmp_path / "b.html").write_text('<section id="there"></section>')
  problems = build_api.check_html(tmp_path)
  assert len(problems) == 3, problems
  assert any("missing.html" in p and "missing file" in p for p in problems)
  assert any("b.html#nowhere" in p and "missing anchor" in p for p in problems)
  assert any("`jaxhw.b.gone` resolves to no documented name" in p for p in problems)


def test_docstring_check_finds_undocumented_names(tmp_path, monkeypatch):
  import pdoc.doc

  (tmp_path / "jaxhw_docs_demo.py").write_text(textwrap.dedent('''
      """Demo."""
      import dataclasses

      __all__ = ["documented", "bare", "Plain", "Empty", "NAMED", "UNNAMED"]

      #: A constant with a comment.
      NAMED = 1
      UNNAMED = 2

      def documented():
        """Has one."""

      def bare():
        pass

      @dataclasses.dataclass
      class Plain:
        """Has one."""
        x: int = 0

      @dataclasses.dataclass
      class Empty:
        x: int = 0
      '''))
  monkeypatch.syspath_prepend(str(tmp_path))
  try:
    doc = pdoc.doc.Module(importlib.import_module("jaxhw_docs_demo"))
    build_api._fill_variable_docs(doc)
    missing = build_api.missing_docstrings({"jaxhw_docs_demo": doc})
  finally:
    sys.modules.pop("jaxhw_docs_demo", None)
  assert sorted(missing) == ["jaxhw_docs_demo.Empty: no docstring", "jaxhw_docs_demo.UNNAMED: no docstring",
                             "jaxhw_docs_demo.bare: no docstring"]
