#!/usr/bin/env python3
"""Put a pinned, checksum-verified MathJax into the book build, so math needs no
network.

``python scripts/fetch_mathjax.py [DEST]`` (default ``_mathjax``, ignored by git)
fetches
``mathjax@VERSION`` from the npm registry with ``npm pack`` (once: the tarball is cached
in
``~/.cache/gdt-book/``), checks its SHA-512 against the pinned value, and unpacks the
parts a page uses into ``DEST/mathjax/``. ``_config.yml`` copies ``_mathjax`` into the
HTML output (``html_extra_path``) and loads ``mathjax/tex-mml-chtml.js`` from there
(``mathjax_path``).
``make book`` and ``scripts/build_book.py`` run this first.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERSION = "3.2.2"
#: The npm registry's ``dist.integrity`` of mathjax@3.2.2.
SHA512 = ("Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/"
          "O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==")
ENTRY = "tex-mml-chtml.js"
# : Parts of ``package/es5/`` a page can load: the entry point, TeX extensions
# (autoloaded),
#: CHTML fonts, the menu and its accessibility components (on demand).
KEEP = (ENTRY, "input/", "output/chtml", "ui/", "a11y/", "adaptors/")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gdt-book"


class MathJaxError(RuntimeError):
    pass


def _sha512(path: Path) -> str:
    return base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode("ascii")


def tarball(cache: Path = CACHE) -> Path:
    """The verified npm tarball of mathjax@VERSION, fetched into ``cache`` if
    missing."""
    path = cache / f"mathjax-{VERSION}.tgz"
    if not path.is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise MathJaxError(
                "npm not found: install Node.js (npm), or put "
                f"mathjax-{VERSION}.tgz from the npm registry into {cache}")
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            run = subprocess.run(
                [npm, "pack", f"mathjax@{VERSION}", "--pack-destination", tmp],
                capture_output=True, text=True, stdin=subprocess.DEVNULL)
            got = Path(tmp) / path.name
            if run.returncode != 0 or not got.is_file():
                raise MathJaxError(f"`npm pack mathjax@{VERSION}` failed (offline?):\n"
                                   + run.stderr[-800:])
            got.replace(path)
    if _sha512(path) != SHA512:
        path.unlink()
        raise MathJaxError(
            f"{path.name}: SHA-512 differs from the pinned value; deleted it")
    return path


def install(dest: Path, cache: Path = CACHE) -> Path:
    """Unpack the needed parts of MathJax into ``dest/mathjax``; return the entry
    script."""
    target = dest / "mathjax"
    stamp = target / f".mathjax-{VERSION}"
    if stamp.is_file():
        return target / ENTRY
    shutil.rmtree(target, ignore_errors=True)
    with tarfile.open(tarball(cache)) as tar:
        for member in tar.getmembers():
            rel = member.name.removeprefix("package/es5/")
            if member.isfile() and rel != member.name and rel.startswith(KEEP):
                out = target / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src:
                    out.write_bytes(src.read())
    stamp.write_text(f"mathjax {VERSION} from the npm registry, sha512-{SHA512}\n")
    return target / ENTRY


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", nargs="?", type=Path, default=ROOT / "_mathjax")
    args = parser.parse_args(argv)
    try:
        entry = install(args.dest)
    except MathJaxError as exc:
        print(f"fetch_mathjax: error: {exc}", file=sys.stderr)
        return 1
    print(f"fetch_mathjax: MathJax {VERSION} (checksum verified) at {entry}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
