from pathlib import Path

import pandas as pd
import pytest
from conftest import TARGET

from {{ cookiecutter.module_name }}.config import Config, DataConfig
from {{ cookiecutter.module_name }}.core.data import (
    DataError,
    fingerprint,
    load,
    split,
    write_sample,
)


def test_load_drops_rows_without_target_and_counts_them(config: Config) -> None:
    dataset = load(config.data)

    assert dataset.dropped_rows == 3
    assert len(dataset.features) == 197
    assert dataset.target.notna().all()
    assert TARGET not in dataset.features.columns


def test_integer_columns_become_floats(config: Config) -> None:
    dataset = load(config.data)

    assert dataset.features["count"].dtype == "float64"


def test_unknown_target_names_the_columns(config: Config) -> None:
    with pytest.raises(DataError, match=r"'nope' is not in .*size, weight, count, colour"):
        load(config.data.model_copy(update={"target": "nope"}))


def test_missing_file_says_how_to_get_data(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="make data"):
        load(DataConfig(path=tmp_path / "absent.csv", target=TARGET))


def test_fingerprint_follows_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("x,y\n1,2\n")
    first = fingerprint(path)
    path.write_text("x,y\n1,3\n")

    # The digests of the file's bytes, as `sha256sum` and `md5sum` (and DVC 3) print them.
    assert first.sha256 == "81bf9fa83c6f7f151bd491a98cd7d933de3965289e3ebd77c6c425f7eaa16392"
    assert first.md5 == "344fd2323dd33d5c058b7cf27de029e8"
    assert fingerprint(path).sha256 != first.sha256
    assert fingerprint(path).md5 != first.md5


@pytest.mark.both_tasks
def test_split_holds_out_the_configured_share(config: Config) -> None:
    dataset = load(config.data)
    parts = split(dataset, config.data, config.task)

    assert len(parts.x_test) == pytest.approx(0.2 * 197, abs=1)
    assert len(parts.x_train) + len(parts.x_test) == 197
    assert parts.x_train.index.intersection(parts.x_test.index).empty


def test_split_is_reproducible(config: Config) -> None:
    dataset = load(config.data)

    first = split(dataset, config.data, config.task)
    second = split(dataset, config.data, config.task)

    pd.testing.assert_frame_equal(first.x_test, second.x_test)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_sample_dataset_ships_with_scikit_learn(tmp_path: Path, task: str) -> None:
    path = write_sample(tmp_path / "data" / "sample.csv", task, "outcome")  # type: ignore[arg-type]
    frame = pd.read_csv(path)

    assert "outcome" in frame.columns
    assert len(frame) > 400
    if task == "classification":
        assert set(frame["outcome"]) == {"malignant", "benign"}
