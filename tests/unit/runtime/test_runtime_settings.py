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


def refusal(settings: RuntimeSettings) -> FailedPrecondition | None:
    """The refusal check_exposure raises for `settings`, or None when it allows them."""
    try:
        check_exposure(settings)
    except FailedPrecondition as refused:
        return refused
    return None


def test_check_exposure__public_host_with_opt_in__allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The opt-in as an operator gives it: the documented environment variable.
    monkeypatch.setenv("TESSERA_HOST", "0.0.0.0")
    monkeypatch.setenv("TESSERA_ALLOW_UNAUTHENTICATED", "true")
    opted_in = RuntimeSettings()
    not_opted_in = opted_in.model_copy(update={"allow_unauthenticated": False})

    assert opted_in.allow_unauthenticated is True
    assert refusal(opted_in) is None
    # The opt-in is what allows it: the same host without it is refused.
    refused = refusal(not_opted_in)
    assert refused is not None
    assert refused.field == "host"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_check_exposure__loopback_host_without_opt_in__allowed(host: str) -> None:
    settings = RuntimeSettings(host=host, allow_unauthenticated=False)

    assert refusal(settings) is None


def test_address_of__wildcard_host__peers_dial_loopback() -> None:
    settings = RuntimeSettings(host="0.0.0.0", profiles_port=6000)

    assert settings.address_of("profiles") == "127.0.0.1:6000"
    assert RuntimeSettings(segments_address="dns:///segments:1").address_of("segments") == (
        "dns:///segments:1"
    )
