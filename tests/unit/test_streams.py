"""Creating replicated streams on a cluster still forming: "no suitable peers" is waited
out, anything else is not."""

from __future__ import annotations

import pytest
from nats.js.errors import BadRequestError

from events import streams


async def test_no_suitable_peers_is_waited_out() -> None:
    calls = []

    async def create() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise BadRequestError(code=400, err_code=streams.NO_SUITABLE_PEERS, description="no suitable peers")
        return "made"

    assert await streams._placed(create) == "made"
    assert len(calls) == 3


async def test_other_refusals_are_not_retried() -> None:
    calls = []

    async def create() -> str:
        calls.append(1)
        raise BadRequestError(code=400, err_code=10052, description="invalid config")

    with pytest.raises(BadRequestError):
        await streams._placed(create)
    assert len(calls) == 1

