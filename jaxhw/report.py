"""Reports: a ``report.md`` per study, and one combined ``report.md`` + ``index.html`` for a set of runs.

Each study calls `write_study_report`, which writes ``report.md`` and a structured ``report.json`` beside it.
`write_index` gathers the ``report.json`` files below a directory into one markdown report and one
self-contained HTML page (PNG plots embedded as base64, readable offline with no server).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from jaxhw.metrics import to_jsonable, write_json


def figure(**kwargs: Any) -> Figure:
  """A matplotlib `Figure` drawn without pyplot, so reports never touch the user's backend or global state.

  Use ``ax = fig.subplots(...)``, then ``fig.savefig(path)``; no ``close`` is needed.
  """
  return Figure(**kwargs)


@dataclasses.dataclass(frozen=True)
class Table:
  """A table for a report.

  Attributes:
    title: caption.
    columns: column headers.
    rows: one list of cells per row (numbers are formatted with `jaxhw.report.format_cell`).
  """

  title: str
  columns: list[str]
  rows: list[list[Any]]


def format_cell(value: Any) -> str:
  """Formats a number compactly (4 significant digits), anything else with `str`."""
  if isinstance(value, bool) or value is None:
    return "-" if value is None else str(value)
  if isinstance(value, int):
    return f"{value:,}"
  if isinstance(value, float):
    if value != value:
      return "nan"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
      return f"{value:.4g}"
    return f"{value:.3e}"
  return str(value)


def device_description() -> str:
  """The JAX backend and device in words, e.g. ``"cpu (2 cores)"``."""
  import jax

  dev = jax.devices()[0]
  if dev.platform == "cpu":
    return f"CPU ({os.cpu_count()} cores, {platform.machine()})"
  return f"{dev.platform.upper()}: {getattr(dev, 'device_kind', dev.platform)} x{jax.device_count()}"


def table_markdown(table: Table) -> str:
  """A `Table` as Markdown: its bold title, then a pipe table with its cells formatted by `format_cell`."""
  head = "| " + " | ".join(table.columns) + " |"
  sep = "|" + "|".join("---" for _ in table.columns) + "|"
  body = ["| " + " | ".join(format_cell(c) for c in row) + " |" for row in table.rows]
  return "\n".join([f"**{table.title}**", "", head, sep, *body])


def _study_markdown(rep: dict[str, Any], plot_prefix: str = "", heading: str = "#") -> str:
  lines = [f"{heading} {rep['title']}", ""]
  if rep.get("setup"):
    lines += [f"{heading}# Setup", ""] + [f"- **{k}**: {v}" for k, v in rep["setup"].items()] + [""]
  for t in rep.get("tables", []):
    lines += [table_markdown(Table(**t)), ""]
  if rep.get("notes"):
    lines += [f"{heading}# Notes", ""] + [f"- {n}" for n in rep["notes"]] + [""]
  for p in rep.get("plots", []):
    lines += [f"![{Path(p).stem}]({plot_prefix}{p})", ""]
  return "\n".join(lines)


def write_study_report(workdir: str | os.PathLike, *, study: str, title: str, setup: dict[str, Any],
                       tables: Sequence[Table], plots: Sequence[str] = (), notes: Sequence[str] = ()) -> Path:
  """Writes ``report.md`` and ``report.json`` for one study run.

  Args:
    workdir: the run's directory (plots are PNG files in it).
    study: the study's name (``experiments/<study>.py``).
    title: heading.
    setup: what was run, e.g. ``{"data": "MNIST, 5k train images", "device": "CPU", "seed": 0}``.
    tables: result tables; put the paper's figure beside ours.
    plots: PNG filenames relative to `workdir`.
    notes: plain statements, including where the result falls short of the paper.

  Returns:
    The path of ``report.md``.
  """
  workdir = Path(workdir)
  missing = [p for p in plots if not (workdir / p).is_file()]
  if missing:
    raise FileNotFoundError(f"plots {missing} are not in {workdir}.")
  setup = {"device": device_description(), **setup}
  rep = {"study": study, "title": title, "setup": to_jsonable(setup),
         "tables": [to_jsonable(dataclasses.asdict(t)) for t in tables], "plots": list(plots), "notes": list(notes)}
  write_json(workdir / "report.json", rep)
  path = workdir / "report.md"
  path.write_text(_study_markdown(rep))
  return path


def _find_reports(root: Path) -> list[tuple[Path, dict[str, Any]]]:
  found = []
  for p in sorted(root.glob("**/report.json")):
    if "checkpoints" in p.parts:
      continue
    found.append((p.parent, json.loads(p.read_text())))
  return found


def _html_table(t: dict[str, Any]) -> str:
  head = "".join(f"<th>{html.escape(str(c))}</th>" for c in t["columns"])
  rows = "".join("<tr>" + "".join(f"<td>{html.escape(format_cell(c))}</td>" for c in row) + "</tr>"
                 for row in t["rows"])
  return f"<table><caption>{html.escape(t['title'])}</caption><tr>{head}</tr>{rows}</table>"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}
th{background:#eee}caption{font-weight:bold;text-align:left;padding:4px 0}img{max-width:100%;border:1px solid #ddd}
section{border-top:2px solid #444;margin-top:2em}nav a{margin-right:1em}"""


def write_index(root: str | os.PathLike, title: str = "jaxhw results") -> tuple[Path, Path]:
  """Combines every study report below `root` into ``root/report.md`` and a self-contained ``root/index.html``.

  Args:
    root: a directory holding study run directories (each with ``report.json``), or one run directory.
    title: page title.

  Returns:
    ``(report_md, index_html)`` paths.
  """
  root = Path(root)
  reports = _find_reports(root)
  if not reports:
    raise FileNotFoundError(f"no study report (report.json) found below {root}; run a study first "
                            "(`jaxhw run STUDY --workdir DIR`).")
  md = [f"# {title}", ""]
  sections, nav = [], []
  for run_dir, rep in reports:
    rel = run_dir.relative_to(root).as_posix()
    prefix = "" if rel == "." else rel + "/"
    md += [_study_markdown(rep, plot_prefix=prefix, heading="##"), ""]
    anchor = html.escape(rep["study"])
    nav.append(f'<a href="#{anchor}">{anchor}</a>')
    parts = [f'<section id="{anchor}"><h2>{html.escape(rep["title"])}</h2><ul>']
    parts += [f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>" for k, v in rep["setup"].items()]
    parts.append("</ul>")
    parts += [_html_table(t) for t in rep["tables"]]
    if rep.get("notes"):
      parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in rep["notes"]) + "</ul>")
    for p in rep["plots"]:
      data = base64.b64encode((run_dir / p).read_bytes()).decode()
      parts.append(f'<p><img alt="{html.escape(p)}" src="data:image/png;base64,{data}"></p>')
    sections.append("".join(parts) + "</section>")
  md_path = root / "report.md"
  md_path.write_text("\n".join(md))
  page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
          f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><nav>{''.join(nav)}</nav>"
          f"{''.join(sections)}</body></html>")
  html_path = root / "index.html"
  html_path.write_text(page)
  return md_path, html_path
