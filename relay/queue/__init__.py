"""The queue stage's data: messages, their recipients, link queues, queue entries and message
tracking events (``relay.queue.models``, re-exported from ``relay.models``)."""
