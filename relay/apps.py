from django.apps import AppConfig


class RelayConfig(AppConfig):
    name = "relay"
    verbose_name = "Relay"

    def ready(self) -> None:
        from relay import (
            api,  # noqa: F401  (registers the API viewsets)
            checks,  # noqa: F401  (registers the system checks)
            console,  # noqa: F401  (registers the console's navigation nodes)
            maintenance,  # noqa: F401  (registers beat's housekeeping tasks)
            metrics,  # noqa: F401  (registers what /metrics shows)
            tasks,  # noqa: F401  (registers the delivery publisher of the queue's wake-ups)
        )
        from relay.admin import jobs  # noqa: F401  (registers the bulk job task)
