"""lib.tables.Table: HTML, text and Markdown renderings; bad shapes rejected."""

import pytest

from lib.tables import Table, fmt_cell


def test_renderings():
    t = Table(["kernel", "acc"], [["Softmax", 0.851], ["<b>", 1]])
    html = t._repr_html_()
    assert html.startswith("<table><thead><tr><th>kernel</th><th>acc</th>")
    assert "<td>0.851</td>" in html and "&lt;b&gt;" in html and "<b>" not in html
    text = repr(t).splitlines()
    assert text[0] == "kernel   acc" and text[1] == "Softmax  0.851"
    md = Table(["a", "b"], [["x|y", 2]]).markdown().splitlines()
    assert md == ["| a | b |", "|---|---|", "| x\\|y | 2 |"]


def test_bad_shapes():
    with pytest.raises(ValueError, match="header"):
        Table([], [])
    with pytest.raises(ValueError, match="header"):
        Table("ab", [])
    with pytest.raises(ValueError, match=r"rows\[1\] must have 2 cells"):
        Table(["a", "b"], [[1, 2], [3]])


def test_fmt_cell():
    assert (
        fmt_cell(None) == "none" and fmt_cell([]) == "none" and fmt_cell(True) == "True"
    )
    assert (
        fmt_cell(20000) == "20,000"
        and fmt_cell([0, 1, 2]) == "0, 1, 2"
        and fmt_cell(0.01) == "0.01"
    )


def test_settings_table():
    from lib.tables import settings_table

    modes = {"default": {"model": {"D": 32, "seeds": [0, 1]}, "data": {"n": 3000}},
             "full": {"model": {"D": 64, "seeds": [0, 1, 2]}, "data": {"n": 6000}}}
    table = settings_table(modes)
    assert table.header == ["part", "setting", "default", "full"]
    assert table.rows == [["model", "D", "32", "64"],
                          ["model", "seeds", "0, 1", "0, 1, 2"],
                          ["data", "n", "3,000", "6,000"]]
    with pytest.raises(ValueError, match="'default' and 'full'"):
        settings_table({"default": modes["default"]})
    with pytest.raises(ValueError, match=r"differ in \[\('data', 'm'\)"):
        settings_table({**modes, "full": {**modes["full"], "data": {"m": 1}}})
