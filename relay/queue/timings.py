"""How long a queue entry may wait, from the virtual server whose delivery settings it follows:
plain data, so the relay's configuration snapshot can carry it and intake reads no row for it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class DeliveryTimes:
    """One virtual server's expiration and delay-notification times (minutes)."""

    virtual_server_id: int
    outbound_expiration_minutes: int = 2880
    outbound_delay_notification_minutes: int = 720
    local_expiration_minutes: int = 2880
    local_delay_notification_minutes: int = 720


@dataclass(frozen=True)
class EntryTiming:
    expires_at: datetime
    delay_notify_at: datetime


def entry_timing(times: DeliveryTimes, *, local: bool, now: datetime) -> EntryTiming:
    """When an entry placed ``now`` expires and when its sender hears of a delay."""
    if local:
        expire, delay = times.local_expiration_minutes, times.local_delay_notification_minutes
    else:
        expire = times.outbound_expiration_minutes
        delay = times.outbound_delay_notification_minutes
    return EntryTiming(now + timedelta(minutes=expire), now + timedelta(minutes=delay))
