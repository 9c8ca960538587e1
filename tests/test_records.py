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


def _square_job(job, *, out_path, offset):
    result = dict(job, value=job["x"] ** 2 + offset)
    records.write_json_atomic(out_path, result)
    return result


def _stem(job):
    return f"x{job['x']}"


def test_resumable_jobs_carry_run_and_time(tmp_records, tmp_path, capsys):
    import os

    work = tmp_path / "work"
    work.mkdir()
    settings = {"n": 3}
    # The committed record holds x = 0; a fresh work folder starts from it, once.
    records.save_record("jobs_demo", {"jobs": [{"x": 0, "value": 100}]},
                        settings=settings, wall_seconds=50.0)
    carried = records.carry_jobs("jobs_demo", settings, work, _stem)
    assert carried == {"jobs": ["x0"], "wall_seconds": 50.0}
    assert records.carry_jobs("jobs_demo", {"n": 4}, work, _stem) == carried  # once
    start = work / "start"
    start.write_text("")
    jobs = [{"x": x} for x in range(3)]
    out = records.run_jobs(jobs, _square_job, work, _stem, workers=1, offset=1)
    # x = 0 was not rerun (its carried value stays); the others ran
    assert [r["value"] for r in out] == [100, 2, 5]
    assert "3 jobs, 1 already done, 2 to run" in capsys.readouterr().out
    again = records.run_jobs(jobs, _square_job, work, _stem, workers=1, offset=7)
    assert again == out  # nothing left to run
    sessions = json.loads((work / "sessions.json").read_text())
    assert [s["jobs_run"] for s in sessions] == [2, 0]
    t0 = start.stat().st_mtime
    os.utime(work / "x0.json", (t0 + 500, t0 + 500))  # carried: not counted
    os.utime(work / "x1.json", (t0 + 10, t0 + 10))
    os.utime(work / "x2.json", (t0 + 20, t0 + 20))
    stems = [_stem(j) for j in jobs]
    assert records.jobs_wall_time(work, start, carried, stems) == pytest.approx(70.0)
    # No committed record with these settings: nothing is carried.
    other = tmp_path / "other"
    other.mkdir()
    assert records.carry_jobs("jobs_demo", {"n": 4}, other, _stem) == {
        "jobs": [], "wall_seconds": 0.0}

def test_jobs_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "repository_root", lambda: tmp_path)
    path = records.jobs_dir("jobs_demo", quick=True)
    assert path == tmp_path / ".cache" / "records" / "jobs_demo_quick" and path.is_dir()
    with pytest.raises(ValueError, match="name"):
        records.jobs_dir("../x")
    with pytest.raises(ValueError, match="name"):
        records.jobs_dir("../x")


def test_job_curves_selects_one_job_per_kernel_and_seed():
    def job(kernel, seed, lr, acc):
        return {"kernel": kernel, "seed": seed, "lr": lr, "status": "max_steps",
                "eval_steps": [0, 10, 20], "test_acc": [0.5, acc, acc],
                "test_loss": [0.7, 0.6, 0.5]}

    record = {"settings": {"steps": 20, "eval_every": 10, "seeds": [0, 1]},
              "jobs": [job(k, s, lr, 0.6 + s / 10 + lr)
                       for k in ("a", "b") for s in (0, 1) for lr in (0.0, 0.01)]}
    steps, acc = records.job_curves(record, ("a", "b"), keys=("test_acc",), lr=0.01)
    assert steps.tolist() == [0, 10, 20]
    assert acc["b"][:, -1].tolist() == pytest.approx([0.61, 0.71])
    with pytest.raises(ValueError, match="2 jobs for kernel 'a', seed 0"):
        records.job_curves(record, ("a", "b"))  # two step sizes match
    with pytest.raises(ValueError, match="0 jobs"):
        records.job_curves(record, ("a",), lr=0.5)
    record["jobs"][0]["eval_steps"] = [0, 20]
    with pytest.raises(ValueError, match="different steps"):
        records.job_curves(record, ("a", "b"), lr=0.0)
