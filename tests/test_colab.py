"""A chapter run the way Colab runs it: outside any checkout, `lib` installed by the
bootstrap.

A fresh virtual environment in a temporary directory, a ``file://`` clone of this
checkout (its tracked files as they are now, tagged) as the book's repository
(``GDT_BOOK_REPO``,
``GDT_BOOK_REF``), a working directory holding a stray ``lib/`` folder and the debris of
an interrupted install; then the preface executes end to end with nbclient.

To stay cheap, the fresh environment gets no packages of its own: a ``.pth`` file lends
it the site-packages of the interpreter running the tests (torch, Jupyter); the book
itself is cloned and ``pip install -e``-ed by the bootstrap cell, as on Colab.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import stamp_repository  # noqa: E402

TAG = "colab-test"
RUN_NOTEBOOK = """
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
nb.cells.append(nbformat.v4.new_code_cell("import lib; print('LIB', lib.__file__)"))
client = NotebookClient(nb, timeout=300, kernel_name="python3",
                        resources={"metadata": {"path": "."}})
client.execute()
print(nb.cells[-1].outputs[0]["text"].strip())
"""


def _git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """(python of a fresh venv, its environment, the remote's file:// URL)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout of the book")
    base = tmp_path_factory.mktemp("colab")
    remote = base / "remote"
    _git("clone", "-q", "--no-local", ROOT.as_uri(), str(remote), cwd=base)
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                             capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, tracked):  # the working tree as it is now, committed
        if (ROOT / rel).is_file():
            (remote / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, remote / rel)
    _git("add", "-A", cwd=remote)
    _git("commit", "-q", "--allow-empty", "-m", "working tree", cwd=remote)
    _git("tag", TAG, cwd=remote)

    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([
        str(python), "-c", "import sysconfig; print(sysconfig."
        "get_paths()['purelib'])"
    ], check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "PYTHON", "VIRTUAL_ENV", "GDT_BOOK_"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
               GDT_BOOK_REPO=remote.as_uri(), GDT_BOOK_REF=TAG, GDT_CACHE="off")
    return python, env, base


def _bootstrap(python, env, cwd, **overrides):
    (cwd / "boot.py").write_text(stamp_repository.bootstrap_source(
        *stamp_repository.repository(ROOT)))
    return subprocess.run([str(python), "boot.py"], cwd=cwd, env={**env, **overrides},
                          capture_output=True, text=True, timeout=300)


def test_bootstrap_errors_say_what_to_do(colab):
    python, env, base = colab
    work = base / "errors"
    work.mkdir()
    bad_ref = _bootstrap(python, env, work, GDT_BOOK_REF="no-such-release")
    assert bad_ref.returncode != 0
    assert "git clone failed" in bad_ref.stderr and "GDT_BOOK_REF" in bad_ref.stderr
    offline = _bootstrap(python, env, work,
                         GDT_BOOK_REPO="https://gdt-book.invalid/book")
    assert "git clone failed: offline" in offline.stderr, offline.stderr
    no_git = _bootstrap(python, env, work, PATH=str(python.parent))
    assert "git not found" in no_git.stderr, no_git.stderr
    assert not (work / "gdt-book").exists()


def test_chapter_runs_like_on_colab(colab):
    """Stray `lib/` folder, debris of an interrupted install, then the preface end
    to end."""
    python, env, base = colab
    work = base / "work"
    (work / "lib").mkdir(
        parents=True)  # e.g. a student's own folder: a namespace package
    (work / "lib" / "notes.txt").write_text("not the book's lib")
    (work / "gdt-book" / "lib").mkdir(parents=True)  # an interrupted clone
    shutil.copy(ROOT / "chapters" / "00_preface.ipynb", work)

    t0 = time.perf_counter()
    run = subprocess.run([str(python), "-c", RUN_NOTEBOOK, "00_preface.ipynb"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"LIB {work / 'gdt-book' / 'lib' / '__init__.py'}" in run.stdout, run.stdout
    print(f"preface executed in a fresh venv via the bootstrap in {seconds:.1f} s")

    marker = work / "gdt-book" / ".installed"
    stamp = marker.stat().st_mtime_ns
    again = _bootstrap(python, env, work, GDT_BOOK_REPO="file:///nonexistent")
    assert again.returncode == 0, again.stderr  # installed once: no second clone
    assert marker.stat().st_mtime_ns == stamp
    nb = nbformat.read(work / "00_preface.ipynb", as_version=4)
    assert stamp_repository.bootstrap_source(*stamp_repository.repository(ROOT)) in [
        c.source for c in nb.cells if c.cell_type == "code"]
