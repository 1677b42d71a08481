from django.apps import AppConfig


class ConnectorsConfig(AppConfig):
    name = "connectors"
    verbose_name = "Connectors"

    def ready(self) -> None:
        from connectors import (
            api,  # noqa: F401  (registers the API viewsets)
            console,  # noqa: F401  (registers the console's navigation nodes)
        )
