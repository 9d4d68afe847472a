"""Builds the HTML API reference from the docstrings with pdoc, and checks it.

Run ``make docs`` (or ``python docs/build_api.py [OUT_DIR]``); the pages land in ``docs/_build/api`` and
``docs/_build/api/index.html`` is the entry page (open it in a browser, no server needed).

One page per public module: the package `jaxhw`, its top-level modules (`jaxhw.train`, `jaxhw.effects`, ...) and
each subpackage (`jaxhw.faults`, `jaxhw.snn`, ...). A subpackage's page documents the names in its ``__all__``, the
curated public API (optax style); its implementation modules (``jaxhw/faults/sweep.py``) get no page of their own,
unless the subpackage exports the module itself (`jaxhw.parallel.cost`).
Docstrings are Google style, so ``Args:``, ``Returns:`` and ``References:`` render as sections.

The build fails (exit code 1, and `tests/test_docs.py` fails) on a public name without a docstring, a name in
backticks that starts with ``jaxhw.`` but resolves to nothing, a link to a missing page or anchor, or a pdoc warning
other than its known notes on the generated ``__init__`` of NamedTuples and dataclasses.
"""

from __future__ import annotations

import dataclasses
import html.parser
import pkgutil
import re
import sys
import warnings
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "_build" / "api"

#: Top-level modules that are not part of the reference: the entry point of ``python -m jaxhw``, and the studies
#: (they are run by name with ``jaxhw run``; their configs are listed by ``jaxhw run NAME --set bad=1``).
EXCLUDED = ("jaxhw.__main__", "jaxhw.experiments")

# pdoc cannot evaluate the string annotations of a NamedTuple's or dataclass's generated ``__init__`` (its globals
# are not the module's under ``from __future__ import annotations``); it then shows the annotation as written.
_BENIGN_WARNING = re.compile(r"Error parsing type annotation .* for [\w.]+\.__init__\. ")


@dataclasses.dataclass(frozen=True)
class BuildResult:
  """What `build` wrote and what it found wrong.

  Attributes:
    pages: the HTML pages of modules written (``index.html`` and ``search.js`` not counted).
    names: how many public names the pages document (`public_names`).
    problems: one line per problem (missing docstring, unresolved ``jaxhw.`` name, broken link, pdoc warning);
      empty when the reference is complete.
    notes: pdoc's benign warnings, counted but not failing the build.
  """

  pages: list[Path]
  names: int
  problems: list[str]
  notes: list[str]


def public_modules() -> list[str]:
  """The modules the reference documents: `jaxhw`, its non-underscore top-level modules, its subpackages, and any
  module a subpackage exports by name in its ``__all__`` (`jaxhw.parallel.cost`).

  Returns:
    Module names, `jaxhw` first, then sorted.
  """
  import importlib
  import inspect

  import jaxhw

  names = [f"jaxhw.{info.name}" for info in pkgutil.iter_modules(jaxhw.__path__) if not info.name.startswith("_")]
  names = [n for n in names if n not in EXCLUDED]
  for name in list(names):
    package = importlib.import_module(name)
    if hasattr(package, "__path__"):
      names += [f"{name}.{k}" for k in getattr(package, "__all__", ()) if inspect.ismodule(getattr(package, k, None))]
  return ["jaxhw"] + sorted(names)


def build(out_dir: str | Path = DEFAULT_OUT) -> BuildResult:
  """Renders the reference into `out_dir` (replacing what is there) and checks it.

  Args:
    out_dir: output directory; created if missing.

  Returns:
    A `BuildResult` with the pages written and the problems found.
  """
  import shutil

  import pdoc.doc
  import pdoc.render

  out_dir = Path(out_dir)
  if out_dir.exists():
    shutil.rmtree(out_dir)
  out_dir.mkdir(parents=True)
  pdoc.render.configure(docformat="google", show_source=True, search=True,
                        footer_text=f"jaxhw {_version()} API reference")
  # pdoc.pdoc() would also walk into the implementation modules a package's __all__ happens to name (the function
  # `jaxhw.snn.simulate` shares its name with `jaxhw/snn/simulate.py`): render exactly `public_modules()` instead.
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    docs = {name: pdoc.doc.Module.from_name(name) for name in public_modules()}
    for module in docs.values():
      _fill_variable_docs(module)
    pages = []
    for name, module in docs.items():
      page = out_dir / f"{name.replace('.', '/')}.html"
      page.parent.mkdir(parents=True, exist_ok=True)
      page.write_text(pdoc.render.html_module(module, docs), encoding="utf-8")
      pages.append(page)
    (out_dir / "index.html").write_text(pdoc.render.html_index(docs), encoding="utf-8")
    (out_dir / "search.js").write_text(pdoc.render.search_index(docs), encoding="utf-8")
  problems, notes = [], []
  for w in caught:
    text = str(w.message).strip()
    (notes if _BENIGN_WARNING.search(text) else problems).append(f"pdoc warning: {text.splitlines()[0]}")
  problems += missing_docstrings(docs)
  problems += check_html(out_dir)
  return BuildResult(pages=pages, names=len(public_names(docs)), problems=problems, notes=notes)


def _version() -> str:
  import jaxhw

  return jaxhw.__version__


def _fill_variable_docs(module) -> None:
  """Gives each undocumented constant of `module` its docstring.

  pdoc reads a string literal below an assignment, in the exporting module only. This also reads a ``#:`` comment
  above it (the Sphinx convention the code base uses), and looks in the module that defines a re-exported constant;
  a callable object that wraps a function (``jax.jit``, ``jax.custom_vjp``) is shown as that function, with its
  signature, and another callable object (a partial) keeps its own ``__doc__``.
  """
  import inspect

  import pdoc.doc

  for key, member in list(module.members.items()):
    obj = getattr(module.obj, key, _MISSING)
    if isinstance(member, pdoc.doc.Variable) and callable(obj) and not inspect.isroutine(obj):
      inner = inspect.unwrap(obj)
      if inner is not obj and inspect.isroutine(inner):  # jax.jit, jax.custom_vjp, functools.wraps: a function
        module.members[key] = pdoc.doc.Function(module.modulename, member.qualname, inner, member.taken_from)
        continue
    if not isinstance(member, pdoc.doc.Variable) or member.docstring.strip():
      continue
    own = getattr(obj, "__doc__", None) or ""
    if callable(obj) and own.strip() and own != type(obj).__doc__ and not _is_generic_alias(obj):
      member.docstring = inspect.cleandoc(own)
      continue
    candidates = [module.obj] + [m for n, m in sorted(sys.modules.items()) if n.startswith("jaxhw.") and m is not None
                                 and m is not module.obj and vars(m).get(key, _MISSING) is obj]
    for defining in candidates:
      found = _constant_docs(defining).get(key, "")
      if found:
        member.docstring = found
        break


def _is_generic_alias(obj) -> bool:
  # `Callable[[X], Y]` and friends carry typing's own __doc__, not the alias's.
  return type(obj).__module__ in ("typing", "types", "collections.abc")


def _constant_docs(module) -> dict[str, str]:
  """``{name: docstring}`` of a module's top-level assignments: a string literal below it or ``#:`` lines above."""
  import ast
  import inspect

  import pdoc.doc_ast

  try:
    source = inspect.getsource(module)
  except (OSError, TypeError):  # no source to read
    return {}
  docs = dict(pdoc.doc_ast.walk_tree(module).var_docstrings)
  lines = source.splitlines()
  for node in ast.parse(source).body:
    if isinstance(node, ast.Assign):
      targets = node.targets
    elif isinstance(node, ast.AnnAssign):
      targets = [node.target]
    else:
      continue
    names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    comment, i = [], node.lineno - 2
    while i >= 0 and lines[i].lstrip().startswith("#:"):
      comment.insert(0, lines[i].lstrip()[2:].strip())
      i -= 1
    for name in names:
      if comment and not docs.get(name, "").strip():
        docs[name] = "\n".join(comment)
  return {k: inspect.cleandoc(v) for k, v in docs.items() if v.strip()}


_MISSING = object()


def _is_generated_doc(name: str, doc: str) -> bool:
  # dataclasses (Flax modules included) and NamedTuples without a docstring get `Name(field, ...)` as __doc__.
  return re.fullmatch(rf"{re.escape(name)}\(.*\)", doc.strip(), flags=re.DOTALL) is not None


def public_names(docs) -> list[tuple[str, str]]:
  """The public names the reference must document, as ``(module name, name)`` pairs.

  A module's public names are those in its ``__all__`` (re-exports and constants included, submodules not) or,
  without ``__all__``, the non-underscore functions and classes it defines.

  Args:
    docs: ``{module name: pdoc.doc.Module}`` as rendered by `build`.

  Returns:
    The pairs, in page order.
  """
  import pdoc.doc

  out = []
  for name, module in docs.items():
    exported = getattr(module.obj, "__all__", None)
    for key, member in module.members.items():
      if key.startswith("_") or isinstance(member, pdoc.doc.Module):
        continue
      if exported is None and not (isinstance(member, pdoc.doc.Function | pdoc.doc.Class)
                                   and member.taken_from[0] == name):
        continue
      out.append((name, key))
  return out


def missing_docstrings(docs) -> list[str]:
  """Modules and public names (`public_names`) in the rendered modules that have no docstring of their own.

  A constant is documented by a ``#:`` comment above it, or a string literal below it, where it is defined. The
  ``Name(field, ...)`` docstring Python generates for a dataclass (a Flax module) or NamedTuple does not count.

  Args:
    docs: ``{module name: pdoc.doc.Module}`` as rendered by `build`.

  Returns:
    One line per undocumented module or name, e.g. ``"jaxhw.faults.flip_bits: no docstring"``.
  """
  out = [f"{name}: module has no docstring" for name, module in docs.items() if not module.docstring.strip()]
  for name, key in public_names(docs):
    doc = docs[name].members[key].docstring
    if not doc.strip() or _is_generated_doc(key, doc):
      out.append(f"{name}.{key}: no docstring")
  return out


class _Collector(html.parser.HTMLParser):
  """Collects the ids, the hrefs and the unlinked ``<code>jaxhw....</code>`` texts of one page."""

  def __init__(self):
    super().__init__()
    self.ids: set[str] = set()
    self.hrefs: list[str] = []
    self.unlinked: list[str] = []
    self._code_depth = 0
    self._code_text: list[str] = []
    self._code_has_link = False

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if "id" in attrs:
      self.ids.add(attrs["id"])
    if tag == "a" and "name" in attrs:
      self.ids.add(attrs["name"])
    if tag == "a" and "href" in attrs:
      if attrs["href"]:
        self.hrefs.append(attrs["href"])
      if self._code_depth:
        self._code_has_link = True  # href="" links to the page itself (a module naming itself)
    if tag == "code":
      self._code_depth += 1
      if self._code_depth == 1:
        self._code_text, self._code_has_link = [], False

  def handle_endtag(self, tag):
    if tag == "code" and self._code_depth:
      self._code_depth -= 1
      if not self._code_depth:
        text = "".join(self._code_text).strip()
        if re.fullmatch(r"jaxhw(\.[A-Za-z_]\w*)+(\(\))?", text) and not self._code_has_link:
          self.unlinked.append(text)

  def handle_data(self, data):
    if self._code_depth:
      self._code_text.append(data)


def check_html(out_dir: str | Path) -> list[str]:
  """Finds broken cross-references in the rendered pages.

  Args:
    out_dir: the directory `build` wrote.

  Returns:
    One line per problem: a relative link to a missing file or anchor, or a name in backticks starting with
    ``jaxhw.`` that pdoc could not link (a renamed or private name).
  """
  out_dir = Path(out_dir)
  pages = {p.resolve(): _Collector() for p in out_dir.rglob("*.html")}
  for path, collector in pages.items():
    collector.feed(path.read_text(encoding="utf-8"))
  problems = []
  for path, collector in sorted(pages.items()):
    rel = path.relative_to(out_dir.resolve())
    for text in sorted(set(collector.unlinked)):
      problems.append(f"{rel}: `{text}` resolves to no documented name")
    for href in collector.hrefs:
      if re.match(r"^[a-z][a-z0-9+.-]*:", href) or href.startswith("//"):
        continue  # external (https:, mailto:, data:)
      target, _, anchor = href.partition("#")
      target_path = (path.parent / target).resolve() if target else path
      if target_path not in pages:
        if not target_path.exists():
          problems.append(f"{rel}: link {href!r} points to a missing file")
        continue
      if anchor and anchor not in pages[target_path].ids:
        problems.append(f"{rel}: link {href!r} points to a missing anchor")
  return problems


def main(argv: list[str] | None = None) -> int:
  """``python docs/build_api.py [OUT_DIR]``: builds the reference, prints the page count and any problems.

  Args:
    argv: command-line arguments (default ``sys.argv[1:]``).

  Returns:
    0 when the reference is complete, 1 when problems were found (they are printed).
  """
  argv = sys.argv[1:] if argv is None else argv
  out_dir = Path(argv[0]) if argv else DEFAULT_OUT
  result = build(out_dir)
  for line in result.problems:
    print(f"problem: {line}", file=sys.stderr)
  print(f"{len(result.pages)} module pages, {result.names} public names, in {out_dir} (open {out_dir / 'index.html'}); "
        f"{len(result.notes)} benign pdoc notes, {len(result.problems)} problems")
  return 1 if result.problems else 0


if __name__ == "__main__":
  sys.exit(main())
