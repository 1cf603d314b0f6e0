"""`anabranch fault-server`: the fault-injecting OpenAI-compatible endpoint, for testing graphs."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

import typer

from anabranch.cli.codes import UsageError


def fault_server(
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port; 0 picks a free one.")] = 8001,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    config: Annotated[
        str, typer.Option(help='FaultConfig as JSON, e.g. \'{"rates": {"429": 0.2}}\'.')
    ] = "{}",
) -> None:
    """Serve the fault-injecting OpenAI-compatible endpoint, for testing your own graphs. It
    prints the address it listens on, then serves until stopped."""
    from pydantic import ValidationError

    from anabranch.errors import describe
    from anabranch.testing.fault_server import FaultConfig, serve

    try:
        faults = FaultConfig.model_validate_json(config)
    except ValidationError as exc:
        raise UsageError(f"--config is not a FaultConfig: {describe(exc)}") from exc
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(faults, host, port))
