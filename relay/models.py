"""The relay's models live with their stage (``relay.queue.models``); Django finds them here."""

from relay.queue.models import (
    LinkQueue,
    Message,
    QueueEntry,
    Recipient,
    TrackingEvent,
    new_queue_id,
)
from relay.queue.rules import ReplyRule as ReplyRule

__all__ = ["LinkQueue", "Message", "QueueEntry", "Recipient", "TrackingEvent", "new_queue_id"]
