"""``coldchain broker``: the embedded MQTT broker (amqtt, MQTT 3.1.1) on 127.0.0.1."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from coldchain.console import console, user_errors

app = typer.Typer(help="Run the embedded MQTT broker on 127.0.0.1.", invoke_without_command=True)


@app.callback()
def broker(port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port on 127.0.0.1.")] = 1883,
           seconds: Annotated[float | None, typer.Option(min=1, help="Stop after this long.")] = None,
           mosquitto_conf: Annotated[bool, typer.Option(
               "--mosquitto-conf", help="Print a Mosquitto configuration for the fleet (queue limits, "
               "persistence) instead of serving.")] = False) -> None:
    """Serve MQTT on 127.0.0.1 until Ctrl-C. At scale use Mosquitto (TLS, passwords, ACL) instead."""
    if mosquitto_conf:
        from cloud.broker import mosquitto_conf as conf

        print(conf(port), end="")  # plain text for a file: no console markup
        return
    from cloud.broker import EmbeddedBroker
    from cloud.errors import BrokerError

    with user_errors(BrokerError), EmbeddedBroker(port=port) as embedded:
        console.print(f"broker listening on [bold]{embedded.url}[/] (MQTT 3.1.1; clients use --protocol 3.1.1)")
        until = None if seconds is None else time.monotonic() + seconds
        try:
            while until is None or time.monotonic() < until:
                time.sleep(0.5)
        except KeyboardInterrupt:
            console.print("stopping the broker")
