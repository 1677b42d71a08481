"""Grow a bench setup's configuration to the big one, through bench/config_scale.py's bulk
``fill``, in the setup's database (``DATABASE_URL`` / ``SMTPADMIN_VAR_DIR`` of the caller).

    python -m bench.config_fill CONNECTORS MAILBOXES VIRTUAL_SERVERS

The new connectors are bridged on the first virtual server (the relay's, created first by
bench/relay_world.py); their address spaces never cover the bench's recipients, which stay
on the catch-all connector to the sink."""

from __future__ import annotations

import os
import sys

import django

from bench.config_scale import fill  # it imports models only when called


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smtpadmin.settings")
    django.setup()
    connectors, mailboxes, virtual_servers = (int(value) for value in sys.argv[1:4])
    fill(connectors, mailboxes, virtual_servers)


if __name__ == "__main__":
    main()
