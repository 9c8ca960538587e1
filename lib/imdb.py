"""IMDb movie-review sentiment data (Maas et al., 2011): finding, downloading, loading,
tokenising.

The loader reads, from one *data directory*, whichever of these it finds first:

1. a CSV: ``imdb.csv.gz`` or ``imdb.csv`` (or any ``*.csv`` / ``*.csv.gz`` whose header
has the
   columns ``review`` and ``sentiment``), with columns ``review,sentiment[,split]``;
2. the official archive ``aclImdb_v1.tar.gz`` (read directly, without unpacking to disk)
when
   its size and sha256 are the official ones;
3. the unpacked official tree ``aclImdb/`` (``train/pos``, ``train/neg``, ``test/pos``,
   ``test/neg``, files ``<id>_<rating>.txt``).

The verified archive is preferred to a tree because a tree cannot be checked byte by
byte (an interrupted unpack leaves a partial one); the choice is stated in
``ImdbData.note``. The tree and the archive must hold the official 12,500 reviews per
split and label; a CSV whose splits differ from the official 25,000 / 25,000 reviews is
read with a ``UserWarning``.

The data directory is the ``data_dir`` argument, else the environment variable
``GDT_DATA_DIR``, else ``~/.cache/gdt-book/imdb``. If nothing is there,
:func:`load_imdb` downloads the official archive (84 MB), verifying its size and sha256
before it is put in place.

All three sources give the same order: the train split, then the test split; within
each, negative reviews before positive ones, each by increasing file id (the order of
the shared CSV).
Labels: 1 = positive, 0 = negative.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import http.client
import io
import json
import os
import re
import tarfile
import tempfile
import time
import urllib.request
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .validation import check_int

__all__ = [
    "ARCHIVE_NAME",
    "ARCHIVE_SHA256",
    "ARCHIVE_SIZE",
    "ARCHIVE_URL",
    "CSV_NAMES",
    "DATA_DIR_ENV",
    "DEFAULT_DATA_DIR",
    "PAD_ID",
    "REVIEWS_PER_LABEL",
    "PAD_TOKEN",
    "SPLIT_SEED",
    "UNK_ID",
    "UNK_TOKEN",
    "ImdbData",
    "ImdbFormatError",
    "ImdbTensors",
    "IntegrityError",
    "Vocabulary",
    "download_imdb",
    "find_imdb_source",
    "imdb_tensors",
    "load_imdb",
    "resolve_data_dir",
    "tokenize",
    "verify_archive",
]

ARCHIVE_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
ARCHIVE_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
ARCHIVE_SIZE = 84_125_825  # bytes
ARCHIVE_NAME = "aclImdb_v1.tar.gz"
TREE_NAME = "aclImdb"
CSV_NAMES = ("imdb.csv.gz", "imdb.csv")
DATA_DIR_ENV = "GDT_DATA_DIR"
DEFAULT_DATA_DIR = Path("~/.cache/gdt-book/imdb")
SIDECAR_SUFFIX = ".sha256-ok"
#: Reviews per split and label in the official data (train/test x pos/neg).
REVIEWS_PER_LABEL = 12_500
# : Partial downloads (``.aclImdb_v1.tar.gz.*.part``) older than this are removed as
# stale.
STALE_PART_SECONDS = 3600
# : Seed of the stratified 50/50 train/test split made for a CSV without a ``split``
# column.
SPLIT_SEED = 0

PAD_TOKEN, UNK_TOKEN = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1

_SPLITS = ("train", "test")
_LABEL_DIRS = (("neg", 0), ("pos", 1))
_SENTIMENTS = {"positive": 1, "pos": 1, "1": 1, "negative": 0, "neg": 0, "0": 0}
_FILE_RE = re.compile(r"^(\d+)_(\d+)\.txt$")
_MEMBER_RE = re.compile(r"^(?:\./)?aclImdb/(train|test)/(pos|neg)/([^/]+\.txt)$")


class IntegrityError(ValueError):
    """A data file's size or sha256 differs from the expected one (corrupt or
    truncated file)."""


class ImdbFormatError(ValueError):
    """A data file has the wrong layout (missing columns, unknown labels, empty
    reviews, ...)."""


# --------------------------------------------------------------------------------------
# Data containers
# --------------------------------------------------------------------------------------
@dataclass
class ImdbData:
    """Raw IMDb reviews. Labels: 1 = positive, 0 = negative. ``source``: the
    file/folder read."""

    train_texts: list[str] = field(repr=False)
    train_labels: list[int] = field(repr=False)
    test_texts: list[str] = field(repr=False)
    test_labels: list[int] = field(repr=False)
    source: Path
    note: str = ""

    def __post_init__(self) -> None:
        if len(self.train_texts) != len(self.train_labels):
            raise ValueError(
                "ImdbData: train_texts and train_labels must have the same length")
        if len(self.test_texts) != len(self.test_labels):
            raise ValueError(
                "ImdbData: test_texts and test_labels must have the same length")

    def __repr__(self) -> str:
        return (
            f"ImdbData(train={len(self.train_texts)} ({sum(self.train_labels)}"
            f" positive), test={len(self.test_texts)} ({sum(self.test_labels)}"
            f" positive), source={str(self.source)!r}"
            + (f", note={self.note!r})" if self.note else ")")
        )


# --------------------------------------------------------------------------------------
# Finding the data
# --------------------------------------------------------------------------------------
def _check_path_arg(name: str, value: object) -> None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"{name} must be a path (str or os.PathLike) or None, got"
            f" {type(value).__name__}"
        )


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory: ``data_dir``, else ``$GDT_DATA_DIR``, else
    ``~/.cache/gdt-book/imdb``."""
    _check_path_arg("data_dir", data_dir)
    if data_dir is None:
        env = os.environ.get(DATA_DIR_ENV, "").strip()
        data_dir = env if env else DEFAULT_DATA_DIR
    return Path(data_dir).expanduser()


def _open_text(path: Path) -> io.TextIOBase:
    raw = gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def _csv_header(path: Path) -> list[str] | None:
    try:
        with _open_text(path) as f:
            row = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError, EOFError, csv.Error, zlib.error):
        return None
    return None if row is None else [c.strip().lower() for c in row]


def _is_csv(path: Path) -> bool:
    return path.is_file() and (path.name.endswith(".csv")
                               or path.name.endswith(".csv.gz"))


def _is_tree(path: Path) -> bool:
    return path.is_dir() and (path / "train").is_dir() and (path / "test").is_dir()


def _missing_message(directory: Path, reason: str | None = None) -> str:
    msg = (
        f"No IMDb data found in {directory}. Put one of these into that directory:\n  -"
        f" a CSV named {' or '.join(CSV_NAMES)} with columns review,sentiment[,split]"
        f" (sentiment: positive/negative);\n  - the unpacked folder {TREE_NAME}/ with"
        " train/pos, train/neg, test/pos, test/neg (files <id>_<rating>.txt);\n  - the"
        f" archive {ARCHIVE_NAME} ({ARCHIVE_SIZE:,} bytes, sha256 {ARCHIVE_SHA256})"
        f" from {ARCHIVE_URL}.\nOr point the environment variable {DATA_DIR_ENV} (or"
        " the data_dir argument) to a directory that holds one of them."
    )
    if reason:
        msg += f"\n({reason})"
    return msg


def find_imdb_source(data_dir: str | os.PathLike | None = None) -> Path:
    """Path of the IMDb data to read, in the order CSV, verified archive,
    ``aclImdb/`` tree (an archive without a tree is returned unverified:
    ``load_imdb`` verifies it).

    ``data_dir`` may also name the source itself (a CSV, the archive, or an
    ``aclImdb`` folder), or a data root whose ``imdb/`` folder holds the data.
    Raises ``FileNotFoundError`` (saying where to put which file) when there is none.
    """
    d = resolve_data_dir(data_dir)
    if d.is_file():
        if _is_csv(d) or d.name.endswith((".tar.gz", ".tgz")):
            return d
        raise FileNotFoundError(
            f"data_dir {d} is a file but neither a CSV (*.csv, *.csv.gz) nor a .tar.gz"
            " archive"
        )
    if not d.is_dir():
        raise FileNotFoundError(
            _missing_message(d, reason="the directory does not exist"))
    if _is_tree(d) and not (d / TREE_NAME).exists():
        return d
    for name in CSV_NAMES:
        if (d / name).is_file():
            return d / name
    for p in sorted(d.iterdir()):
        if _is_csv(p):
            header = _csv_header(p)
            if header is not None and "review" in header and "sentiment" in header:
                return p
    archive, tree = d / ARCHIVE_NAME, d / TREE_NAME
    if archive.is_file() and (not tree.is_dir() or _verified(archive)):
        # an unverified archive beside a tree: the tree is read (see the note)
        return archive
    if tree.is_dir():
        return tree
    if (d / "imdb").is_dir():  # GDT_DATA_DIR may name a data root with an imdb/ folder
        try:
            return find_imdb_source(d / "imdb")
        except FileNotFoundError:
            pass
    raise FileNotFoundError(_missing_message(d))


# --------------------------------------------------------------------------------------
# Integrity of the archive, and its download
# --------------------------------------------------------------------------------------
def _sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _write_sidecar(path: Path, sha256: str) -> None:
    st = path.stat()
    record = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}
    try:
        _sidecar(path).write_text(json.dumps(record))
    except OSError:  # read-only data directory: verification is just not cached
        pass


def _verified(path: Path) -> bool:
    try:
        verify_archive(path)
    except IntegrityError:
        return False
    return True


def _choice_note(src: Path) -> str:
    """Which of an archive and a tree side by side was read, and why ("" when not
    both)."""
    d = src.parent
    archive, tree = d / ARCHIVE_NAME, d / TREE_NAME
    if not (archive.is_file() and tree.is_dir()):
        return ""
    if src == archive:
        return (
            f"read the verified archive {ARCHIVE_NAME}; the {TREE_NAME}/ folder beside"
            " it was not read (the archive is checked against the official sha256)"
        )
    return (
        f"read the {TREE_NAME}/ folder: the archive {ARCHIVE_NAME} beside it does not"
        " have the official size and sha256"
    )


def _remove_stale_parts(d: Path) -> list[Path]:
    """Delete partial downloads left by an interrupted process (older than
    STALE_PART_SECONDS)."""
    removed = []
    now = time.time()
    for part in d.glob(f".{ARCHIVE_NAME}.*.part"):
        try:
            if now - part.stat().st_mtime > STALE_PART_SECONDS:
                part.unlink()
                removed.append(part)
        except OSError:
            pass
    return removed


def verify_archive(path: str | os.PathLike) -> None:
    """Check that ``path`` has the official archive's size and sha256; raise
    ``IntegrityError`` if not.

    A successful check is cached in ``<archive>.sha256-ok`` (keyed on size and
    modification time).
    """
    _check_path_arg("path", path)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no archive at {path}")
    st = path.stat()
    side = _sidecar(path)
    try:
        rec = json.loads(side.read_text())
        if (rec.get("size"), rec.get("mtime_ns"), rec.get("sha256")) == (
            st.st_size, st.st_mtime_ns, ARCHIVE_SHA256,
        ):
            return
    except (OSError, ValueError, AttributeError):
        pass
    advice = (
        "It is probably incomplete or corrupt: delete it and call load_imdb() again to"
        f" download it, or replace it with the official archive from {ARCHIVE_URL}."
    )
    if st.st_size != ARCHIVE_SIZE:
        raise IntegrityError(
            f"The archive {path} has {st.st_size:,} bytes, expected {ARCHIVE_SIZE:,}"
            f" bytes. {advice}"
        )
    got = _sha256_file(path)
    if got != ARCHIVE_SHA256:
        raise IntegrityError(
            f"The archive {path} has sha256 {got}, expected {ARCHIVE_SHA256}. {advice}"
        )
    _write_sidecar(path, got)


def download_imdb(data_dir: str | os.PathLike | None = None, *,
                  progress: bool = True) -> Path:
    """Download the official archive into the data directory; return its path.

    The bytes go to a temporary file in the same directory; only when size and
    sha256 match is it renamed (atomically, ``os.replace``) to
    ``aclImdb_v1.tar.gz``. On any failure the temporary file is removed, so a
    partial or corrupt download is never taken for a good one; temporary files that
    a killed process left behind (older than ``STALE_PART_SECONDS``) are removed first.
    Raises ``IntegrityError`` on a mismatch, and the network's ``OSError`` when offline.
    """
    from tqdm.auto import tqdm

    d = resolve_data_dir(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(d)
    dest = d / ARCHIVE_NAME
    fd, tmp_name = tempfile.mkstemp(prefix=f".{ARCHIVE_NAME}.", suffix=".part", dir=d)
    tmp = Path(tmp_name)
    done = False
    try:
        h = hashlib.sha256()
        n = 0
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(ARCHIVE_URL,
                                                              timeout=60) as resp:
            total = ARCHIVE_SIZE
            headers = getattr(resp, "headers", None)
            if headers is not None and headers.get("Content-Length"):
                total = int(headers.get("Content-Length"))
            with tqdm(total=total, unit="B", unit_scale=True, desc=ARCHIVE_NAME,
                      disable=not progress) as bar:
                while block := resp.read(1 << 20):
                    f.write(block)
                    h.update(block)
                    n += len(block)
                    bar.update(len(block))
            f.flush()
            os.fsync(f.fileno())
        got = h.hexdigest()
        if n != ARCHIVE_SIZE or got != ARCHIVE_SHA256:
            raise IntegrityError(
                f"The download from {ARCHIVE_URL} has {n:,} bytes and sha256 {got};"
                f" expected {ARCHIVE_SIZE:,} bytes and sha256 {ARCHIVE_SHA256}. It was"
                f" discarded (nothing was written to {dest}). Try again, or download"
                f" the archive by hand and put it at {dest}."
            )
        os.replace(tmp, dest)
        done = True
    finally:
        if not done:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
    _write_sidecar(dest, ARCHIVE_SHA256)
    return dest


# --------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------
def _seeded_split(labels: list[int], seed: int) -> np.ndarray:
    """Boolean mask (True = train) of a stratified 50/50 split, seeded."""
    y = np.asarray(labels)
    is_train = np.zeros(len(y), dtype=bool)
    rng = np.random.default_rng(seed)
    for c in (0, 1):
        idx = np.flatnonzero(y == c)
        is_train[rng.permutation(idx)[: (len(idx) + 1) // 2]] = True
    return is_train


def _read_csv(path: Path) -> ImdbData:
    """Read a CSV with columns ``review,sentiment[,split]`` (other columns are ignored).

    Without a ``split`` column the reviews are split 50/50, stratified by label,
    with the fixed seed ``SPLIT_SEED`` (so every run gets the same split); row order
    is kept.
    """
    texts: list[str] = []
    labels: list[int] = []
    splits: list[str] = []
    try:
        with _open_text(path) as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise ImdbFormatError(
                    f"{path}: the file is empty (expected a header row "
                    f"with columns review,sentiment[,split])")
            cols = [c.strip().lower() for c in header]
            missing = [c for c in ("review", "sentiment") if c not in cols]
            if missing:
                raise ImdbFormatError(
                    f"{path}, line 1: missing column(s) {', '.join(missing)}; the"
                    f" header is {header!r}, expected columns review,sentiment[,split]"
                )
            i_rev, i_sent = cols.index("review"), cols.index("sentiment")
            i_split = cols.index("split") if "split" in cols else None
            width = len(cols)
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != width:
                    raise ImdbFormatError(
                        f"{path}, line {line}: {len(row)} fields, expected {width} (as"
                        " in the header)"
                    )
                review = row[i_rev]
                if not review.strip():
                    raise ImdbFormatError(f"{path}, line {line}: empty review")
                s = row[i_sent].strip().lower()
                if s not in _SENTIMENTS:
                    raise ImdbFormatError(
                        f"{path}, line {line}: unknown sentiment {row[i_sent]!r};"
                        " expected positive/negative (or pos/neg, 1/0)"
                    )
                if i_split is not None:
                    sp = row[i_split].strip().lower()
                    if sp not in _SPLITS:
                        raise ImdbFormatError(
                            f"{path}, line {line}: unknown split {row[i_split]!r};"
                            " expected train/test"
                        )
                    splits.append(sp)
                texts.append(review)
                labels.append(_SENTIMENTS[s])
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error) as err:
        raise ImdbFormatError(
            f"{path}: cannot be read as a (gzipped) UTF-8 CSV: {err}") from err
    if not texts:
        raise ImdbFormatError(f"{path}: no reviews after the header")
    if i_split is None:
        is_train = _seeded_split(labels, SPLIT_SEED).tolist()
    else:
        is_train = [s == "train" for s in splits]
    data = ImdbData(
        train_texts=[t for t, k in zip(texts, is_train) if k],
        train_labels=[y for y, k in zip(labels, is_train) if k],
        test_texts=[t for t, k in zip(texts, is_train) if not k],
        test_labels=[y for y, k in zip(labels, is_train) if not k],
        source=path,
    )
    for name in ("train", "test"):
        if not getattr(data, f"{name}_texts"):
            raise ImdbFormatError(f"{path}: no reviews in the {name} split")
    official = 2 * REVIEWS_PER_LABEL
    counts = (len(data.train_texts), len(data.test_texts))
    if counts != (official, official):
        warnings.warn(
            f"{path} holds {counts[0]:,} train and {counts[1]:,} test reviews, not the"
            f" official {official:,} / {official:,}: a different or incomplete copy of"
            " IMDb (a file cut at a row boundary loses rows without any other sign);"
            " results will differ from the book's",
            UserWarning,
            stacklevel=3,
        )
    return data


def _sort_key(name: str) -> tuple[int, str]:
    m = _FILE_RE.match(name)
    return (int(m.group(1)) if m else 1 << 62, name)


def _assemble(
    groups: dict[tuple[str, str], list[tuple[str, str]]], source: Path,
    error: type[ValueError] = ImdbFormatError,
) -> ImdbData:
    """groups[(split, 'pos'|'neg')] = [(file name, text)] -> ImdbData in the
    canonical order.

    Every (split, label) must hold the official REVIEWS_PER_LABEL reviews; ``error``
    is raised otherwise (``ImdbFormatError`` for a tree, ``IntegrityError`` for an
    archive)."""
    what = (
        "an interrupted unpack leaves a partial tree: delete it and unpack the archive "
        "again, or put the verified archive beside it" if error is ImdbFormatError else
        "the archive's tar stream ended early or holds other data")
    out: dict[str, tuple[list[str], list[int]]] = {s: ([], []) for s in _SPLITS}
    for split in _SPLITS:
        for label_dir, label in _LABEL_DIRS:
            items = groups.get((split, label_dir), [])
            if len(items) != REVIEWS_PER_LABEL:
                raise error(
                    f"{source}: {TREE_NAME}/{split}/{label_dir}/ holds {len(items):,}"
                    f" reviews, expected the official {REVIEWS_PER_LABEL:,} ({what})"
                )
            for name, text in sorted(items, key=lambda it: _sort_key(it[0])):
                if not text.strip():
                    raise ImdbFormatError(
                        f"{source}: empty review {split}/{label_dir}/{name}")
                out[split][0].append(text)
                out[split][1].append(label)
    return ImdbData(out["train"][0], out["train"][1], out["test"][0], out["test"][1],
                    source)


def _read_tree(root: Path) -> ImdbData:
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for split in _SPLITS:
        for label_dir, _ in _LABEL_DIRS:
            folder = root / split / label_dir
            if not folder.is_dir():
                raise ImdbFormatError(f"{root}: missing folder {split}/{label_dir}/")
            try:
                groups[(split, label_dir)] = [(p.name, p.read_text(encoding="utf-8"))
                                              for p in folder.glob("*.txt")]
            except UnicodeDecodeError as err:
                raise ImdbFormatError(
                    f"{folder}: a review is not valid UTF-8: {err}") from err
    return _assemble(groups, root, ImdbFormatError)


def _read_archive(path: Path) -> ImdbData:
    """Stream the archive's ``aclImdb/{train,test}/{pos,neg}/*.txt`` members (no
    unpacking)."""
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    try:
        with gzip.open(path, "rb") as gz:
            with tarfile.open(fileobj=gz, mode="r|") as tf:
                for member in tf:
                    m = _MEMBER_RE.match(member.name)
                    if m is None or not member.isfile():
                        continue
                    f = tf.extractfile(member)
                    if f is None:
                        continue
                    text = f.read().decode("utf-8")
                    groups.setdefault((m.group(1), m.group(2)), []).append(
                        (m.group(3), text))
            # tarfile stops quietly where a header is cut; the compressed
            # stream must still
            # reach its end-of-stream marker (gzip raises EOFError when it ends early).
            while gz.read(1 << 20):
                pass
    except (tarfile.TarError, EOFError, zlib.error, OSError, UnicodeDecodeError) as err:
        raise IntegrityError(
            f"The archive {path} is truncated or corrupt ({type(err).__name__}: {err})."
            " Delete it and call load_imdb() again to download it, or replace it with"
            f" the official archive from {ARCHIVE_URL}."
        ) from err
    return _assemble(groups, path, IntegrityError)


def load_imdb(data_dir: str | os.PathLike | None = None, *, download: bool = True,
              progress: bool = True) -> ImdbData:
    """Load the 50,000 labelled IMDb reviews (25,000 train / 25,000 test for the
    official data).

    Reads a CSV, the ``aclImdb/`` tree or the archive from the data directory (see
    :func:`find_imdb_source`); an archive is first checked against the official size
    and sha256. With nothing there and ``download=True``, downloads the archive (see
    :func:`download_imdb`). A CSV without a ``split`` column gets a seeded 50/50
    split, stratified by label.

    Raises ``FileNotFoundError`` (naming the directory, the accepted files and
    ``GDT_DATA_DIR``) when there is no data and it cannot be downloaded;
    ``IntegrityError`` for a corrupt archive;
    ``ImdbFormatError`` for a malformed CSV or tree.
    """
    if not isinstance(download, bool):
        raise TypeError(f"download must be a bool, got {type(download).__name__}")
    d = resolve_data_dir(data_dir)
    try:
        src = find_imdb_source(d)
    except FileNotFoundError:
        if not download or d.is_file():
            raise
        try:
            src = download_imdb(d, progress=progress)
        except (OSError, http.client.HTTPException) as err:
            raise FileNotFoundError(
                _missing_message(d, reason=f"downloading {ARCHIVE_URL} failed: {err}")
            ) from err
    if src.is_dir():
        data = _read_tree(src)
    elif src.name.endswith((".tar.gz", ".tgz")):
        verify_archive(src)
        data = _read_archive(src)
    else:
        data = _read_csv(src)
    data.note = _choice_note(src)
    return data


# --------------------------------------------------------------------------------------
# Tokeniser and vocabulary
# --------------------------------------------------------------------------------------
_BR_RE = re.compile(r"<br\s*/?>", re.IGNORECASE)
_TOKEN_RE = re.compile(r"[a-z0-9']+")


def tokenize(text: str) -> list[str]:
    """Word-level tokens: ``<br />`` tags removed, lower-cased, runs of ``[a-z0-9']``.

    Why words and not bytes: with the short sequence budgets a CPU affords (a few
    hundred tokens), a byte-level sequence covers only the first sentence or two of
    a review, while the same number of words covers most of it (a training review
    has a median of 174 words, about 980 bytes; 256 words cover the whole of 71% of
    the reviews). Long Range Arena uses bytes at length 4,000 on purpose (to test
    long contexts), which is beyond a laptop's budget for the experiments of this book.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _TOKEN_RE.findall(_BR_RE.sub(" ", text).lower())


def _check_texts(name: str, texts: object) -> None:
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            f"{name} must be a sequence of strings, not a single string (wrap it in a"
            " list)"
        )


class Vocabulary:
    """Token <-> id map: ``<pad>`` = 0, ``<unk>`` = 1, then tokens by frequency
    (desc), ties alphabetically. ``itos[i]`` is the token of id ``i``; ``stoi`` the
    inverse map."""

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if tokens[:2] != [PAD_TOKEN, UNK_TOKEN]:
            raise ValueError(f"tokens must start with {PAD_TOKEN!r}, {UNK_TOKEN!r}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("tokens must be distinct")
        self.itos: list[str] = tokens
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(cls, texts: Iterable[str], max_size: int = 20000,
              min_freq: int = 2) -> "Vocabulary":
        """Vocabulary of the ``max_size - 2`` most frequent tokens seen at least
        ``min_freq`` times in ``texts`` (pass the *training* texts only);
        ``len(vocab) <= max_size``."""
        _check_texts("texts", texts)
        return cls._from_token_lists((tokenize(t) for t in texts), max_size, min_freq)

    @classmethod
    def _from_token_lists(cls, token_lists: Iterable[list[str]], max_size: int,
                          min_freq: int) -> "Vocabulary":
        max_size = check_int(max_size, "max_size", 2)
        min_freq = check_int(min_freq, "min_freq", 1)
        counts: Counter[str] = Counter()
        for toks in token_lists:
            counts.update(toks)
        kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t:
                      (-counts[t], t))
        return cls([PAD_TOKEN, UNK_TOKEN] + kept[: max_size - 2])

    def __len__(self) -> int:
        return len(self.itos)

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)}, most frequent={self.itos[2:7]})"

    def _encode_token_lists(self, token_lists: Sequence[list[str]], seq_len: int
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        ids = np.full((len(token_lists), seq_len), PAD_ID, dtype=np.int64)
        lengths = np.zeros(len(token_lists), dtype=np.int64)
        get = self.stoi.get
        for i, toks in enumerate(token_lists):
            row = [get(t, UNK_ID) for t in toks[:seq_len]]
            ids[i, : len(row)] = row
            lengths[i] = len(row)
        return torch.from_numpy(ids), torch.from_numpy(lengths)

    def encode(self, texts: Sequence[str], seq_len: int, *, return_lengths: bool = False
               ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Token ids, shape (N, seq_len), long: the first ``seq_len`` tokens of
        each text, padded at the end with ``PAD_ID`` = 0 (so ``ids != 0`` is the
        mask of real tokens). With ``return_lengths=True`` also returns the
        number of real tokens, shape (N,)."""
        _check_texts("texts", texts)
        seq_len = check_int(seq_len, "seq_len", 1)
        ids, lengths = self._encode_token_lists([tokenize(t) for t in texts], seq_len)
        return (ids, lengths) if return_lengths else ids

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """The tokens of one id sequence, shape (L,), joined by spaces, padding
        dropped."""
        return " ".join(self.itos[int(i)] for i in ids if int(i) != PAD_ID)


# --------------------------------------------------------------------------------------
# Tensors for training
# --------------------------------------------------------------------------------------
@dataclass
class ImdbTensors:
    """Encoded IMDb: ``x_*`` (N, seq_len) long token ids (pad 0), ``y_*`` (N,) long
    labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    vocab: Vocabulary


def _stratified_subset(labels: np.ndarray, n: int,
                       rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``n`` items keeping the class proportions (largest
    remainders)."""
    if n >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    quota = n * counts / counts.sum()
    take = np.floor(quota).astype(int)
    for j in np.argsort(-(quota - take), kind="stable")[: n - take.sum()]:
        take[j] += 1
    picks = [
        rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)
    ]
    return np.sort(np.concatenate(picks))


def imdb_tensors(
    data: ImdbData,
    *,
    seq_len: int = 256,
    vocab_size: int = 20000,
    min_freq: int = 2,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
) -> ImdbTensors:
    """Tokenise and encode: x_train (N_train, seq_len), y_train (N_train,), x_test,
    y_test.

    ``max_train`` / ``max_test`` keep a seeded, class-stratified subset (balanced
    when the data are), for reduced CPU runs. The vocabulary (``len <= vocab_size``,
    counting ``<pad>`` and
    ``<unk>``) is built from the kept training texts only; test words not in it
    become ``<unk>``. Rows keep the source order (grouped by label): shuffle when
    batching.
    """
    if not isinstance(data, ImdbData):
        raise TypeError(
            f"data must be an ImdbData (from load_imdb), got {type(data).__name__}")
    seq_len = check_int(seq_len, "seq_len", 1)
    vocab_size = check_int(vocab_size, "vocab_size", 2)
    min_freq = check_int(min_freq, "min_freq", 1)
    seed = check_int(seed, "seed", 0)
    if max_train is not None:
        max_train = check_int(max_train, "max_train", 1)
    if max_test is not None:
        max_test = check_int(max_test, "max_test", 1)
    rng = np.random.default_rng(seed)

    def subset(texts: list[str], labels: list[int],
               n: int | None) -> tuple[list[str], np.ndarray]:
        y = np.asarray(labels, dtype=np.int64)
        if n is None:
            return texts, y
        idx = _stratified_subset(y, n, rng)
        return [texts[i] for i in idx], y[idx]

    tr_texts, y_tr = subset(data.train_texts, data.train_labels, max_train)
    te_texts, y_te = subset(data.test_texts, data.test_labels, max_test)
    tr_tokens = [tokenize(t) for t in tr_texts]
    vocab = Vocabulary._from_token_lists(tr_tokens, vocab_size, min_freq)
    x_tr, _ = vocab._encode_token_lists(tr_tokens, seq_len)
    x_te, _ = vocab._encode_token_lists([tokenize(t) for t in te_texts], seq_len)
    return ImdbTensors(x_tr, torch.from_numpy(y_tr), x_te, torch.from_numpy(y_te),
                       vocab)
