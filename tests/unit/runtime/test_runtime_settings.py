"""Settings: peer addresses and the refusal to serve the network unauthenticated."""

from __future__ import annotations

import pytest

from tessera.errors import FailedPrecondition
from tessera.settings import RuntimeSettings, check_exposure, is_loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("tessera.internal", False),
    ],
)
def test_is_loopback__hosts__only_this_machine(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_check_exposure__public_host_without_opt_in__refused_naming_host() -> None:
    with pytest.raises(FailedPrecondition) as raised:
        check_exposure(RuntimeSettings(host="0.0.0.0"))

    assert raised.value.field == "host"


def test_check_exposure__public_host_with_opt_in__allowed() -> None:
    check_exposure(RuntimeSettings(host="0.0.0.0", allow_unauthenticated=True))
    check_exposure(RuntimeSettings(host="127.0.0.1"))


def test_address_of__wildcard_host__peers_dial_loopback() -> None:
    settings = RuntimeSettings(host="0.0.0.0", profiles_port=6000)

    assert settings.address_of("profiles") == "127.0.0.1:6000"
    assert RuntimeSettings(segments_address="dns:///segments:1").address_of("segments") == (
        "dns:///segments:1"
    )
