"""Outbound delivery: next hops (``nexthop``), the SMTP client (``client``), delivery status
notifications (``dsn``), badmail, and the engine that drives them from the queue."""
