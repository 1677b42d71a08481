"""A connector's "allow messages to be relayed to these domains": its bridgehead takes mail for
the connector's address space from anyone and passes it on to the connector's next hop (the
backup-MX case), from the next configuration pass on, with no restart; the box turned off
closes it again. Over real sockets to the real relay and on to a real SMTP sink."""

from __future__ import annotations

from collections.abc import Callable

from connectors.models import AddressSpace, Connector
from relay.delivery.engine import deliver_queue
from relay.models import QueueEntry, Recipient
from servers.models import RoutingGroup
from tests.relay.harness import RelayThread, smtp, wait_for
from tests.relay.world import World, message
from tests.sinks import SinkFactory

Relay = Callable[..., RelayThread]


def rcpt_code(world: World, recipient: str) -> int:
    with smtp(world.port) as client:
        client.ehlo()
        assert client.docmd("MAIL FROM:<someone@outside.test>")[0] == 250
        return int(client.docmd(f"RCPT TO:<{recipient}>")[0])


def test_a_backup_mx_relays_for_the_connectors_domain_and_forwards_it(
    world: World, relay: Relay, sink: SinkFactory
) -> None:
    primary = sink()
    running = relay(world.server)
    assert rcpt_code(world, "u@backup.test") == 550
    connector = Connector.objects.create(
        name="Primary MX",
        routing_group=RoutingGroup.first(),
        use_dns=False,
        smart_hosts=primary.smart_host,
        allow_relay=True,
    )
    connector.bridgeheads.set([world.vs])
    AddressSpace.objects.create(connector=connector, domain="backup.test")
    listener = running.supervisor.listeners[world.vs.pk]  # type: ignore[union-attr]
    wait_for(lambda: "backup.test" in listener.config.relay_patterns)

    with smtp(world.port) as client:
        client.ehlo()
        assert client.sendmail("someone@outside.test", ["u@backup.test"], message("Kept")) == {}
    assert rcpt_code(world, "victim@elsewhere.test") == 550  # nothing else opened
    entry = QueueEntry.objects.get(recipients__address="u@backup.test")
    deliver_queue(entry.queue_id, "test-worker")
    (sent,) = primary.messages
    assert sent.rcpt_tos == ["u@backup.test"] and b"Kept" in sent.content
    assert Recipient.objects.get(address="u@backup.test").state == Recipient.State.DELIVERED

    Connector.objects.filter(pk=connector.pk).update(allow_relay=False)
    wait_for(lambda: not listener.config.relay_patterns)
    assert rcpt_code(world, "u@backup.test") == 550
