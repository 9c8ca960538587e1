"""lib.records: locate, save (settings, hardware, wall time, date) and load with a
settings check."""

import json

import pytest

from lib import records


@pytest.fixture
def tmp_records(tmp_path, monkeypatch):
    monkeypatch.setenv(records.RECORDS_ENV, str(tmp_path))
    return tmp_path


def test_default_directory(monkeypatch):
    monkeypatch.delenv(records.RECORDS_ENV, raising=False)
    assert records.records_dir().parts[-2:] == ("chapters", "recorded")


def test_round_trip(tmp_records):
    settings = {"lr": 0.01, "seeds": (0, 1), "gamma": None}
    path = records.save_record(
        "demo", {"runs": [1, 2]}, settings=settings, wall_seconds=12.5
    )
    assert path == tmp_records / "demo.json" and not list(tmp_records.glob("*.tmp"))
    rec = records.load_record(
        "demo", settings=settings
    )  # tuples compare as the lists JSON stores
    assert (
        rec["runs"] == [1, 2]
        and rec["wall_seconds"] == 12.5
        and rec["settings"]["seeds"] == [0, 1]
    )
    hw = rec["hardware"]
    assert {"processor", "logical_cpus", "torch", "torch_threads", "device"} <= set(hw)
    assert rec["recorded_utc"].endswith("+00:00")
    assert json.loads(path.read_text()) == rec


def test_settings_mismatch_and_missing(tmp_records):
    records.save_record("demo", {}, settings={"lr": 0.01, "steps": 10}, wall_seconds=1)
    with pytest.raises(ValueError, match=r"\['lr', 'seeds'\]"):
        records.load_record("demo", settings={"lr": 0.02, "steps": 10, "seeds": [0]})
    assert records.settings_differences({"a": 1}, {"a": 1}) == []
    with pytest.raises(FileNotFoundError, match="scripts/record_"):
        records.load_record("absent")


def test_bad_arguments(tmp_records):
    with pytest.raises(ValueError, match="name"):
        records.record_path("../x")
    with pytest.raises(ValueError, match="reserved"):
        records.save_record("demo", {"settings": 1}, settings={}, wall_seconds=1)
    with pytest.raises(ValueError, match="wall_seconds"):
        records.save_record("demo", {}, settings={}, wall_seconds=-1)


def test_run_curves():
    record = {
        "settings": {"steps": 20, "eval_every": 10, "seeds": [0, 1]},
        "eval_steps": [0, 10, 20],
        "runs": {
            k: [
                {
                    "seed": s,
                    "status": "max_steps",
                    "test_acc": [0.5, 0.6, 0.7],
                    "test_loss": [0.7, 0.6, 0.5],
                }
                for s in (0, 1)
            ]
            for k in ("a", "b")
        },
    }
    steps, acc, loss = records.run_curves(record, ["a", "b"])
    assert (
        steps.tolist() == [0, 10, 20]
        and acc["a"].shape == (2, 3)
        and loss["b"][1, 2] == 0.5
    )
    record["runs"]["b"][1]["status"] = "diverged"
    with pytest.raises(ValueError, match=r"b: seeds \[1\]"):
        records.run_curves(record, ["a", "b"])
    record["eval_steps"] = [0, 20]
    with pytest.raises(ValueError, match="eval_steps"):
        records.run_curves(record, ["a"])
