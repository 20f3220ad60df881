"""The plain channel table agrees with the contract's Channel enum."""

from tessera.channels import CHANNEL_NAMES, CHANNELS
from tessera.common.v1 import common_pb2


def test_channel_names__every_contract_channel__named_as_its_enum_value():
    from_contract = {
        value: name.removeprefix("CHANNEL_").lower()
        for name, value in common_pb2.Channel.items()
        if value != common_pb2.CHANNEL_UNSPECIFIED
    }

    assert dict(CHANNEL_NAMES) == from_contract
    assert CHANNELS == ("web", "app", "email", "sms", "push", "call_center", "store")
