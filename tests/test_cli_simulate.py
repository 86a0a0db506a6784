"""``postloan simulate`` rejects negative counts and speed-ups before replaying."""

from __future__ import annotations

import pytest

from postloan.cli import build_parser


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--devices", "-3"),
        ("--devices", "two"),
        ("--speedup", "-1"),
        ("--speedup", "nan"),
        ("--speedup", "inf"),
    ],
)
def test_simulate_rejects_invalid_option(
    capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["simulate", f"{option}={value}"])

    err = capsys.readouterr().err
    assert caught.value.code == 2
    assert option in err
    assert repr(value) in err


@pytest.mark.parametrize(
    ("argv", "devices", "speedup"),
    [
        ([], 0, 0.0),
        (["--devices", "3", "--speedup", "60"], 3, 60.0),
        (["--devices", "0", "--speedup", "0.5"], 0, 0.5),
    ],
)
def test_simulate_accepts_valid_options(
    argv: list[str], devices: int, speedup: float
) -> None:
    args = build_parser().parse_args(["simulate", *argv])

    assert args.devices == devices
    assert args.speedup == speedup
