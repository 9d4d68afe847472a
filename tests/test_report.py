import base64

import matplotlib.pyplot as plt
import pytest

from jaxhw.report import Table, format_cell, write_index, write_study_report


def _plot(path):
  fig, ax = plt.subplots()
  ax.plot([0, 1], [1, 0])
  fig.savefig(path)
  plt.close(fig)


def test_study_report_and_index(tmp_path):
  run = tmp_path / "study_a"
  run.mkdir()
  _plot(run / "curve.png")
  md = write_study_report(run, study="study_a", title="Study A", setup={"data": "MNIST, 5k"},
                          tables=[Table("Results", ["method", "acc"], [["ours", 0.98765], ["paper", 0.99]])],
                          plots=["curve.png"], notes=["falls short by 0.2 points"])
  text = md.read_text()
  assert "| ours | 0.9877 |" in text and "![curve](curve.png)" in text and "falls short" in text
  md_all, page = write_index(tmp_path)
  assert "study_a/curve.png" in md_all.read_text()
  html = page.read_text()
  png = base64.b64encode((run / "curve.png").read_bytes()).decode()
  assert png in html and "<caption>Results</caption>" in html and "MNIST, 5k" in html


def test_missing_plot_is_an_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.png"):
    write_study_report(tmp_path, study="s", title="t", setup={}, tables=[], plots=["nope.png"])


def test_format_cell():
  assert format_cell(1234567) == "1,234,567"
  assert format_cell(0.000012345) == "1.234e-05"
  assert format_cell(None) == "-"
