"""Where the book lives is said once (_config.yml) and stamped everywhere else."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import stamp_repository  # noqa: E402


def test_stamped_files_agree_with_config(capsys):
    status = stamp_repository.main(["--check"])
    assert status == 0, capsys.readouterr().err


def test_a_fork_changes_one_line(tmp_path):
    for rel in ["_config.yml", "CONTRIBUTING.md", "pyproject.toml"]:
        shutil.copy(ROOT / rel, tmp_path / rel)
    shutil.copytree(ROOT / "chapters", tmp_path / "chapters",
                    ignore=shutil.ignore_patterns("recorded"))
    config = tmp_path / "_config.yml"
    url, ref = stamp_repository.repository(ROOT)
    config.write_text(config.read_text().replace(url, "https://example.org/course/fork")
                      .replace(f"branch: {ref}", "branch: spring-2027"))
    assert stamp_repository.main(["--check", "--root", str(tmp_path)]) == 1
    assert stamp_repository.main(["--root", str(tmp_path)]) == 0
    assert stamp_repository.main(["--check", "--root", str(tmp_path)]) == 0

    stamped = [p.read_text() for p in tmp_path.rglob("*") if p.is_file()]
    assert not any(url in text for text in stamped)
    for path in sorted((tmp_path / "chapters").glob("*.ipynb")):
        boot = next(c for c in nbformat.read(path, 4).cells
                    if c.cell_type == "code").source
        assert '"https://example.org/course/fork"' in boot and '"spring-2027"' in boot
    preface = (tmp_path / "chapters" / "00_preface.ipynb").read_text()
    assert "git clone --branch spring-2027 https://example.org/course/fork" in preface
    assert "version      = {spring-2027}" in preface
    assert 'Repository = "https://example.org/course/fork"' in (
        tmp_path / "pyproject.toml").read_text()
