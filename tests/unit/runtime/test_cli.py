"""The `tessera` command answers a person's mistakes with a line, not a traceback."""

from __future__ import annotations

import pytest

from tessera import cli
from tessera.suite import free_port


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_decide__unknown_channel__usage_error_listing_channels(capsys):
    code, out = run(
        capsys, "decide", "--identity", "cookie=a", "--placement", "x", "--channel", "tv"
    )

    assert code == 2
    assert "invalid choice: 'tv'" in out and "call_center" in out
    assert "Traceback" not in out


@pytest.mark.parametrize(
    ("context", "expected"),
    [("{bad", "not JSON"), ("[1]", "must be a JSON object")],
)
def test_decide__context_not_a_json_object__usage_error(capsys, context, expected):
    code, out = run(capsys, "decide", "--identity", "c=a", "--placement", "x", "--context", context)

    assert code == 2
    assert expected in out
    assert "Traceback" not in out


def test_decide__identity_without_value__usage_error(capsys):
    code, out = run(capsys, "decide", "--identity", "cookie", "--placement", "x")

    assert code == 2
    assert "is not TYPE=VALUE" in out


def test_decide__suite_not_running__says_how_to_start_it(capsys):
    address = f"127.0.0.1:{free_port()}"

    code, out = run(
        capsys,
        "decide",
        "--identity",
        "c=a",
        "--placement",
        "x",
        "--address",
        address,
        "--timeout",
        "2",
    )

    assert code == 1
    assert out.startswith("UNAVAILABLE")
    assert f"is the suite running at {address}? Start it with `make run`" in out
    assert out.count("\n") == 1  # one line: status, message and what to do
    assert "Traceback" not in out


def test_decide__help__describes_every_flag(capsys):
    code, out = run(capsys, "decide", "--help")

    assert code == 0
    for flag, words in [
        ("--identity", "identity of the visitor"),
        ("--placement", "placement to decide"),
        ("--channel", "calling channel"),
        ("--context", "JSON object"),
        ("--address", "host:port"),
        ("--timeout", "seconds"),
    ]:
        assert flag in out and words in out
