"""Tests of lib.imdb on tiny data made in tmp_path (one test reads the real CSV if
available)."""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import tarfile
import urllib.error
import warnings
from pathlib import Path

import pytest
import torch

import lib.imdb as imdb
from lib.imdb import (
    ImdbData,
    ImdbFormatError,
    IntegrityError,
    Vocabulary,
    find_imdb_source,
    imdb_tensors,
    load_imdb,
    resolve_data_dir,
    tokenize,
)

# (split, label folder, file name, text); "zyzzyva" appears only in the test split.
REVIEWS = [
    ("train", "pos", "10_9.txt", "A great film.<br /><br />Great acting, great story!"),
    ("train", "pos", "2_8.txt", "Loved it. Great fun."),
    ("train", "neg", "0_1.txt", "Awful. Boring and awful, a waste."),
    ("train", "neg", "1_3.txt", "Boring plot; I didn't care."),
    ("test", "pos", "0_10.txt", "Great, a zyzzyva of a film."),
    ("test", "pos", "1_7.txt", "Fun and great."),
    ("test", "neg", "0_2.txt", "Awful zyzzyva."),
    ("test", "neg", "3_4.txt", "Boring."),
]
# The canonical order: train then test; negative then positive; by numeric file id.
TRAIN_TEXTS = [REVIEWS[2][3], REVIEWS[3][3], REVIEWS[1][3], REVIEWS[0][3]]
TRAIN_LABELS = [0, 0, 1, 1]
TEST_TEXTS = [REVIEWS[6][3], REVIEWS[7][3], REVIEWS[4][3], REVIEWS[5][3]]
TEST_LABELS = [0, 0, 1, 1]


def make_tree(root: Path) -> Path:
    for split, label, name, text in REVIEWS:
        folder = root / "aclImdb" / split / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    (root / "aclImdb" / "train" / "unsup").mkdir()
    (root / "aclImdb" / "train" / "unsup" / "0_0.txt").write_text(
        "unlabelled", encoding="utf-8")
    (root / "aclImdb" / "imdb.vocab").write_text("the\n", encoding="utf-8")
    return root / "aclImdb"


def archive_bytes(tmp_path: Path) -> bytes:
    src = tmp_path / "src"
    make_tree(src)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(src / "aclImdb", arcname="aclImdb")
    return buf.getvalue()


@pytest.fixture(autouse=True)
def tiny_official_counts(monkeypatch):
    """The tiny tree and archive hold 2 reviews per split and label: make that the
    official count."""
    monkeypatch.setattr(imdb, "REVIEWS_PER_LABEL", 2)


@pytest.fixture
def tiny_archive(tmp_path, monkeypatch):
    """The tiny archive's bytes; the module's expected size and sha256 are set to
    its values."""
    data = archive_bytes(tmp_path)
    monkeypatch.setattr(imdb, "ARCHIVE_SIZE", len(data))
    monkeypatch.setattr(imdb, "ARCHIVE_SHA256", hashlib.sha256(data).hexdigest())
    return data


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    return d


def write_csv(path: Path, rows: list[list[str]],
              header=("review", "sentiment", "split")) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
            f.write(buf.getvalue())
    else:
        path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def csv_rows() -> list[list[str]]:
    rows = []
    for texts, labels, split in ((TRAIN_TEXTS, TRAIN_LABELS, "train"),
                                 (TEST_TEXTS, TEST_LABELS, "test")):
        for t, y in zip(texts, labels):
            rows.append([t, "positive" if y else "negative", split])
    return rows


def assert_tiny(data: ImdbData) -> None:
    assert data.train_texts == TRAIN_TEXTS and data.train_labels == TRAIN_LABELS
    assert data.test_texts == TEST_TEXTS and data.test_labels == TEST_LABELS


class FakeResponse:
    """Stands in for urlopen's response: serves ``data``, raising ``fail`` after
    ``fail_after`` bytes."""

    def __init__(self, data: bytes, chunk: int = 64, fail_after: int | None = None,
                 fail=None):
        self.buf, self.chunk, self.fail_after, self.fail = io.BytesIO(
            data), chunk, fail_after, fail
        self.headers = {"Content-Length": str(len(data))}

    def read(self, n: int = -1) -> bytes:
        if self.fail_after is not None and self.buf.tell() >= self.fail_after:
            raise self.fail
        return self.buf.read(min(n, self.chunk) if n > 0 else self.chunk)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def serve(monkeypatch, **kwargs) -> list[str]:
    calls: list[str] = []

    def fake_urlopen(url, *args, **kw):
        calls.append(url)
        return FakeResponse(**kwargs)

    monkeypatch.setattr(imdb.urllib.request, "urlopen", fake_urlopen)
    return calls


def no_network(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(imdb.urllib.request, "urlopen", offline)


# ------------------------------------------------------------------------------- data
# dir
def test_resolve_data_dir_argument_env_default(tmp_path, monkeypatch):
    monkeypatch.setenv("GDT_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("GDT_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "gdt-book" / "imdb"
    with pytest.raises(TypeError, match="data_dir"):
        resolve_data_dir(42)


def test_source_preference_csv_then_verified_archive_then_tree(data_dir, tiny_archive):
    (data_dir / imdb.ARCHIVE_NAME).write_bytes(tiny_archive)
    assert find_imdb_source(data_dir) == data_dir / imdb.ARCHIVE_NAME
    make_tree(data_dir)
    assert find_imdb_source(
        data_dir) == data_dir / imdb.ARCHIVE_NAME  # verified: preferred
    write_csv(data_dir / "other.csv", [["x", "1"]],
              header=("text", "label"))  # wrong columns
    assert find_imdb_source(data_dir) == data_dir / imdb.ARCHIVE_NAME
    write_csv(data_dir / "reviews.csv.gz", csv_rows())
    assert find_imdb_source(data_dir) == data_dir / "reviews.csv.gz"
    write_csv(data_dir / "imdb.csv", csv_rows())
    assert find_imdb_source(data_dir) == data_dir / "imdb.csv"


def test_data_root_with_imdb_folder(tmp_path):
    write_csv((tmp_path / "imdb").mkdir() or tmp_path / "imdb" / "imdb.csv.gz",
              csv_rows())
    assert find_imdb_source(tmp_path) == tmp_path / "imdb" / "imdb.csv.gz"


# -------------------------------------------------------------------------------
# readers
@pytest.mark.parametrize("name", ["imdb.csv.gz", "imdb.csv"])
def test_csv_with_split(data_dir, name):
    write_csv(data_dir / name, csv_rows())
    data = load_imdb(data_dir, download=False)
    assert_tiny(data)
    assert data.source == data_dir / name
    assert "train=4" in repr(data)


def test_csv_without_split_is_seeded_and_stratified(data_dir):
    labels = ["positive", "pos", "1", "negative", "neg", "0"
              ] * 4  # 12 positive, 12 negative
    rows = [[f"review number {i}", s] for i, s in enumerate(labels)]
    write_csv(data_dir / "imdb.csv", rows, header=("review", "sentiment"))
    a = load_imdb(data_dir, download=False)
    b = load_imdb(data_dir, download=False)
    assert a.train_texts == b.train_texts and a.test_texts == b.test_texts
    assert len(a.train_texts) == len(a.test_texts) == 12
    assert sum(a.train_labels) == sum(a.test_labels) == 6
    assert sorted(a.train_texts + a.test_texts) == sorted(r[0] for r in rows)
    expected = {
        f"review number {i}": int(s in ("positive", "pos", "1"))
        for i, s in enumerate(labels)
    }
    assert all(expected[t] == y for t, y in zip(a.train_texts, a.train_labels))


def test_tree(data_dir):
    make_tree(data_dir)
    data = load_imdb(data_dir, download=False)
    assert_tiny(data)
    assert data.source == data_dir / "aclImdb"
    assert_tiny(load_imdb(data_dir / "aclImdb",
                          download=False))  # the tree named directly


def test_archive_is_read_and_verification_cached(data_dir, tiny_archive, monkeypatch):
    path = data_dir / imdb.ARCHIVE_NAME
    path.write_bytes(tiny_archive)
    data = load_imdb(data_dir, download=False)
    assert_tiny(data)
    assert data.source == path
    assert not (data_dir / "aclImdb").exists()  # read directly, nothing unpacked
    assert path.with_name(path.name + ".sha256-ok").is_file()

    def no_hashing(*args):
        raise AssertionError("the verified archive was hashed again")

    monkeypatch.setattr(imdb, "_sha256_file", no_hashing)
    assert_tiny(load_imdb(data_dir, download=False))


def test_archive_checksum_mismatch(data_dir, tiny_archive, monkeypatch):
    (data_dir / imdb.ARCHIVE_NAME).write_bytes(tiny_archive)
    monkeypatch.setattr(imdb, "ARCHIVE_SHA256", "0" * 64)
    with pytest.raises(IntegrityError) as err:
        load_imdb(data_dir, download=False)
    msg = str(err.value)
    assert "0" * 64 in msg and hashlib.sha256(tiny_archive).hexdigest() in msg
    assert str(data_dir) in msg and "delete it" in msg


def test_truncated_archive(data_dir, tiny_archive, monkeypatch):
    path = data_dir / imdb.ARCHIVE_NAME
    cut = tiny_archive[: len(tiny_archive) // 2]
    path.write_bytes(cut)
    with pytest.raises(IntegrityError,
                       match="bytes, expected"):  # caught by the size check
        load_imdb(data_dir, download=False)
    # Even when the checksum matches (say, a custom archive), truncation is a
    # clear error.
    monkeypatch.setattr(imdb, "ARCHIVE_SIZE", len(cut))
    monkeypatch.setattr(imdb, "ARCHIVE_SHA256", hashlib.sha256(cut).hexdigest())
    with pytest.raises(IntegrityError, match="truncated or corrupt"):
        load_imdb(data_dir, download=False)


def test_csv_missing_column(data_dir):
    path = write_csv(data_dir / "imdb.csv", [["good", "train"]],
                     header=("review", "split"))
    with pytest.raises(ImdbFormatError,
                       match=r"imdb\.csv, line 1: missing column\(s\) sentiment"):
        load_imdb(data_dir, download=False)
    assert path.exists()


def test_csv_bad_label_names_file_and_line(data_dir):
    rows = csv_rows()
    rows[1][1] = "meh"
    write_csv(data_dir / "imdb.csv.gz", rows)
    with pytest.raises(ImdbFormatError,
                       match=r"imdb\.csv\.gz, line 3: unknown sentiment 'meh'"):
        load_imdb(data_dir, download=False)


def test_csv_empty_review(data_dir):
    rows = csv_rows()
    rows[2][0] = "  "
    write_csv(data_dir / "imdb.csv", rows)
    with pytest.raises(ImdbFormatError, match="line 4: empty review"):
        load_imdb(data_dir, download=False)


# -------------------------------------------------------------------------------
# download
def test_offline_without_data_says_where_to_put_what(data_dir, monkeypatch):
    no_network(monkeypatch)
    with pytest.raises(FileNotFoundError) as err:
        load_imdb(data_dir, progress=False)
    msg = str(err.value)
    for needle in (str(data_dir), "imdb.csv.gz", "aclImdb/", "aclImdb_v1.tar.gz",
                   "GDT_DATA_DIR", "no network"):
        assert needle in msg
    assert list(data_dir.iterdir()) == []  # no temporary file left behind


def test_download_false_does_not_touch_the_network(data_dir, monkeypatch):
    calls = serve(monkeypatch, data=b"")
    with pytest.raises(FileNotFoundError, match="GDT_DATA_DIR"):
        load_imdb(data_dir, download=False)
    assert calls == []


def test_fake_download_is_verified_and_atomic(tmp_path, tiny_archive, monkeypatch):
    data_dir = tmp_path / "new" / "dir"  # created on demand
    calls = serve(monkeypatch, data=tiny_archive)
    data = load_imdb(data_dir, progress=False)
    assert calls == [imdb.ARCHIVE_URL]
    assert_tiny(data)
    assert sorted(p.name for p in data_dir.iterdir()) == [
        imdb.ARCHIVE_NAME, imdb.ARCHIVE_NAME + ".sha256-ok"
    ]
    assert (data_dir / imdb.ARCHIVE_NAME).read_bytes() == tiny_archive
    # Second call: read from disk, no download.
    assert_tiny(load_imdb(data_dir, progress=False))
    assert len(calls) == 1


def test_corrupt_download_is_discarded(data_dir, tiny_archive, monkeypatch):
    flipped = tiny_archive[:100] + bytes([tiny_archive[100] ^ 0xFF
                                          ]) + tiny_archive[101:]
    serve(monkeypatch, data=flipped)
    with pytest.raises(IntegrityError, match="expected") as err:
        load_imdb(data_dir, progress=False)
    assert "discarded" in str(err.value)
    assert list(data_dir.iterdir()) == []


def test_interrupted_download_leaves_no_archive(data_dir, tiny_archive, monkeypatch):
    serve(monkeypatch, data=tiny_archive, chunk=100, fail_after=100,
          fail=ConnectionResetError("connection lost (test)"))
    with pytest.raises(FileNotFoundError, match="connection lost"):
        load_imdb(data_dir, progress=False)
    assert list(data_dir.iterdir()) == []


def test_interrupted_download_by_other_error_cleans_up(data_dir, tiny_archive,
                                                       monkeypatch):
    serve(monkeypatch, data=tiny_archive, chunk=100, fail_after=100,
          fail=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        load_imdb(data_dir, progress=False)
    assert list(data_dir.iterdir()) == []


# ------------------------------------------------------------------------------- tokens
def test_tokenize():
    assert tokenize("Great film!<br /><br />I DIDN'T like the 2nd half<BR/>end") == [
        "great", "film", "i", "didn't", "like", "the", "2nd", "half", "end"]
    assert tokenize("") == []
    with pytest.raises(TypeError, match="text"):
        tokenize(None)


def test_vocabulary_order_and_limits():
    texts = ["b a a c", "c a b d", "e"]  # counts: a 3, b 2, c 2, d 1, e 1
    v = Vocabulary.build(texts, max_size=100, min_freq=1)
    assert v.itos == ["<pad>", "<unk>", "a", "b", "c", "d", "e"]
    assert Vocabulary.build(texts, max_size=100,
                            min_freq=2).itos == ["<pad>", "<unk>", "a", "b", "c"]
    assert Vocabulary.build(texts, max_size=4,
                            min_freq=1).itos == ["<pad>", "<unk>", "a", "b"]
    assert len(v) == 7 and v.stoi["c"] == 4
    assert Vocabulary.build(list(reversed(texts)), max_size=100,
                            min_freq=1).itos == v.itos
    with pytest.raises(TypeError, match="texts"):
        Vocabulary.build("a single string")
    with pytest.raises(ValueError, match="min_freq"):
        Vocabulary.build(texts, min_freq=0)


def test_encode_pads_and_truncates_at_the_end():
    v = Vocabulary.build(["a b c"], max_size=10, min_freq=1)  # a 2, b 3, c 4
    ids, lengths = v.encode(["a b", "c b a c b", "zzz", ""], seq_len=4,
                            return_lengths=True)
    assert ids.dtype == torch.long and ids.shape == (4, 4)
    assert ids.tolist() == [[2, 3, 0, 0], [4, 3, 2, 4], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert lengths.tolist() == [2, 4, 1, 0]
    assert torch.equal(ids != imdb.PAD_ID, torch.arange(4)[None, :] < lengths[:, None])
    assert v.decode(ids[0]) == "a b"
    with pytest.raises(ValueError, match="seq_len"):
        v.encode(["a"], seq_len=0)


def test_imdb_tensors_vocabulary_from_train_only(data_dir):
    make_tree(data_dir)
    data = load_imdb(data_dir, download=False)
    t = imdb_tensors(data, seq_len=6, vocab_size=50, min_freq=1)
    assert "zyzzyva" not in t.vocab.stoi  # a test-only word
    assert t.x_test[0, 1].item() == imdb.UNK_ID  # "awful zyzzyva" -> [awful, <unk>]
    assert t.x_test[0, 0].item() == t.vocab.stoi["awful"]
    assert t.x_train.shape == (4, 6) and t.x_test.shape == (4, 6)
    assert t.x_train.dtype == t.y_train.dtype == torch.long
    assert t.y_train.tolist() == TRAIN_LABELS and t.y_test.tolist() == TEST_LABELS
    assert t.vocab.itos[2] == "great"  # the most frequent training word
    with pytest.raises(TypeError, match="data"):
        imdb_tensors([1, 2])
    with pytest.raises(ValueError, match="max_train"):
        imdb_tensors(data, max_train=0)


def test_imdb_tensors_stratified_subsets():
    texts = [f"review {i} {'good' if i % 2 else 'bad'}" for i in range(100)]
    labels = [i % 2 for i in range(100)]
    data = ImdbData(texts, labels, texts[:40], labels[:40], Path("memory"))
    a = imdb_tensors(data, seq_len=4, max_train=30, max_test=10, seed=1)
    b = imdb_tensors(data, seq_len=4, max_train=30, max_test=10, seed=1)
    c = imdb_tensors(data, seq_len=4, max_train=30, max_test=10, seed=2)
    assert a.x_train.shape == (30, 4) and a.x_test.shape == (10, 4)
    assert a.y_train.sum().item() == 15 and a.y_test.sum().item() == 5
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    assert not torch.equal(a.x_train, c.x_train)
    full = imdb_tensors(data, seq_len=4, max_train=1000)
    assert full.x_train.shape == (100, 4)


# ------------------------------------------------------------------------------- real
# data
_REAL_DIR = os.environ.get("GDT_DATA_DIR")


@pytest.mark.skipif(
    not _REAL_DIR, reason="set GDT_DATA_DIR to a directory with the IMDb data "
    "(imdb.csv.gz, aclImdb/ or aclImdb_v1.tar.gz) to run")
def test_real_data_split_and_balance(monkeypatch):
    monkeypatch.setattr(imdb, "REVIEWS_PER_LABEL", 12_500)  # the real official count
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the real data raise no count warning
        data = load_imdb(download=False, progress=False)
    assert len(data.train_texts) == len(data.test_texts) == 25_000
    assert sum(data.train_labels) == sum(data.test_labels) == 12_500
    assert all(t.strip() for t in data.train_texts[:100])


# ------------------------------------------------------------------ incomplete or
# stale data
def test_verified_archive_is_preferred_to_a_tree_and_the_choice_is_stated(
        data_dir, tiny_archive):
    (data_dir / imdb.ARCHIVE_NAME).write_bytes(tiny_archive)
    tree = make_tree(data_dir)
    (tree / "test" / "neg" / "3_4.txt").unlink()  # an interrupted unpack
    data = load_imdb(data_dir, download=False)
    assert_tiny(data)
    assert data.source == data_dir / imdb.ARCHIVE_NAME
    assert "verified archive" in data.note and "note=" in repr(data)


def test_an_unverified_archive_beside_a_tree_gives_the_tree_with_a_note(
        data_dir, tiny_archive, monkeypatch):
    (data_dir / imdb.ARCHIVE_NAME).write_bytes(tiny_archive[:-10])
    make_tree(data_dir)
    data = load_imdb(data_dir, download=False)
    assert_tiny(data)
    assert (
        data.source == data_dir / "aclImdb"
        and "does not have the official" in data.note
    )


def test_a_partial_tree_is_rejected_with_the_official_count(data_dir):
    tree = make_tree(data_dir)
    (tree / "train" / "pos" / "2_8.txt").unlink()
    with pytest.raises(ImdbFormatError,
                       match=r"train/pos/ holds 1 reviews, expected the official 2"):
        load_imdb(data_dir, download=False)


def _custom_archive(tmp_path, monkeypatch, data_dir, transform) -> None:
    """The tiny tree's tar stream, transformed, gzipped and put in place as the
    official archive."""
    src = tmp_path / "src"
    make_tree(src)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        tf.add(src / "aclImdb", arcname="aclImdb", filter=transform.get("filter"))
    data = gzip.compress(transform.get("cut", lambda b: b)(raw.getvalue()))
    monkeypatch.setattr(imdb, "ARCHIVE_SIZE", len(data))
    monkeypatch.setattr(imdb, "ARCHIVE_SHA256", hashlib.sha256(data).hexdigest())
    (data_dir / imdb.ARCHIVE_NAME).write_bytes(data)


def test_an_archive_with_missing_reviews_is_rejected(data_dir, tmp_path, monkeypatch):
    skip = {
        "filter": lambda info: None if info.name.endswith("test/pos/1_7.txt") else info
    }
    _custom_archive(tmp_path, monkeypatch, data_dir, skip)
    with pytest.raises(IntegrityError, match="test/pos/ holds 1 reviews"):
        load_imdb(data_dir, download=False)


def test_a_tar_stream_cut_inside_a_header_is_detected(data_dir, tmp_path, monkeypatch):
    # a complete gzip stream of a tar stream that stops inside a header block
    _custom_archive(tmp_path, monkeypatch, data_dir,
                    {"cut": lambda tar: tar[:512 * 7 + 100]})
    with pytest.raises(IntegrityError, match="truncated or corrupt|ended early"):
        load_imdb(data_dir, download=False)


def test_a_gzip_stream_that_ends_early_is_detected(data_dir, tiny_archive, monkeypatch):
    cut = tiny_archive[:
                       -8]  # the gzip trailer is missing: the tar data may all be there
    monkeypatch.setattr(imdb, "ARCHIVE_SIZE", len(cut))
    monkeypatch.setattr(imdb, "ARCHIVE_SHA256", hashlib.sha256(cut).hexdigest())
    (data_dir / imdb.ARCHIVE_NAME).write_bytes(cut)
    with pytest.raises(IntegrityError, match="truncated or corrupt"):
        load_imdb(data_dir, download=False)


def test_csv_counts_other_than_official_warn(data_dir):
    import warnings

    write_csv(data_dir / "imdb.csv", csv_rows())  # 4 / 4: the official counts here
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_tiny(load_imdb(data_dir, download=False))
    write_csv(data_dir / "imdb.csv", csv_rows()[:-1])  # a file cut at a row boundary
    with pytest.warns(UserWarning,
                      match="4 train and 3 test reviews, not the official 4 / 4"):
        load_imdb(data_dir, download=False)


def test_stale_partial_downloads_are_removed(data_dir, tiny_archive, monkeypatch):
    stale = data_dir / f".{imdb.ARCHIVE_NAME}.old.part"
    fresh = data_dir / f".{imdb.ARCHIVE_NAME}.new.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    old = os.stat(stale).st_mtime - 2 * imdb.STALE_PART_SECONDS
    os.utime(stale, (old, old))
    serve(monkeypatch, data=tiny_archive)
    assert_tiny(load_imdb(data_dir, progress=False))
    assert not stale.exists() and fresh.exists()  # a download in progress is left alone
