"""Commands that read an existing store or ledger reject a missing path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from postloan.cli import main
from postloan.store import open_store, sqlite_file_of

FENCES = (
    '{"type": "FeatureCollection", "features": [{"type": "Feature", '
    '"properties": {"id": "yard"}, "geometry": {"type": "Polygon", '
    '"coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}}]}'
)


def commands(tmp_path: Path, url: str) -> dict[str, list[str]]:
    fences = tmp_path / "fences.geojson"
    fences.write_text(FENCES, encoding="utf-8")
    ledger = tmp_path / "ledger"
    ledger.mkdir(exist_ok=True)
    return {
        "command": ["command", "1", "fuel_cut", "--protocol", "gt06", "--store", url],
        "cancel-command": ["cancel-command", "1", "--store", url],
        "fences check": [
            "fences",
            "check",
            str(fences),
            "--device",
            "1",
            "--since",
            "2024-05-01T08:00:00Z",
            "--until",
            "2024-05-01T09:00:00Z",
            "--store",
            url,
        ],
        "risk evaluate": [
            "risk",
            "evaluate",
            "--on",
            "2026-03-01",
            "--store",
            url,
            "--ledger",
            str(ledger),
            "--state",
            str(tmp_path / "state"),
        ],
        "db maintain": ["db", "maintain", "--store", url],
    }


NAMES = ["command", "cancel-command", "fences check", "risk evaluate", "db maintain"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("form", ["sqlite:///{}", "{}"])
def test_missing_sqlite_store_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, form: str
) -> None:
    missing = tmp_path / "typo" / "none.db"
    argv = commands(tmp_path, form.format(missing))[name]

    status = main(argv)
    err = capsys.readouterr().err

    assert status == 2
    assert "store not found" in err
    assert str(missing) in err
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize("name", ["command", "cancel-command", "fences check"])
def test_existing_store_still_opens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    url = f"sqlite:///{tmp_path / 'track.db'}"
    open_store(url).close()

    main(commands(tmp_path, url)[name])

    assert "store not found" not in capsys.readouterr().err


def test_command_on_missing_relative_store_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)

    status = main(
        [
            "command",
            "1",
            "fuel_cut",
            "--protocol",
            "gt06",
            "--store",
            "sqlite:///none.db",
        ]
    )

    assert status == 2
    assert "none.db does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_risk_evaluate_missing_ledger_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'track.db'}"
    open_store(url).close()
    argv = commands(tmp_path, url)["risk evaluate"]
    typo = tmp_path / "ledgr-typo"
    argv[argv.index("--ledger") + 1] = str(typo)

    status = main(argv)
    err = capsys.readouterr().err

    assert status == 2
    assert f"ledger not found: {typo}" in err
    assert not typo.exists()
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///var/x.db", Path("var/x.db")),
        ("sqlite:////srv/x.db", Path("/srv/x.db")),
        ("SQLite:///var/x.db", Path("var/x.db")),
        ("var/x.db", Path("var/x.db")),
        ("sqlite:///:memory:", None),
        ("postgresql://localhost/test", None),
    ],
)
def test_sqlite_file_of_url(url: str, expected: Path | None) -> None:
    assert sqlite_file_of(url) == expected


def test_cancelled_command_gets_cancelled_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'tracks.db'}"
    open_store(url).close()
    assert (
        main(
            [
                "command",
                "357632600000003",
                "fuel_cut",
                "--protocol",
                "gt06",
                "--store",
                url,
            ]
        )
        == 0
    )
    capsys.readouterr()

    assert main(["cancel-command", "1", "--store", url]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "cancelled"
    assert main(["cancel-command", "1", "--store", url]) == 1
    assert "already cancelled" in capsys.readouterr().err
