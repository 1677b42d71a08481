from django.apps import AppConfig


class ServersConfig(AppConfig):
    name = "servers"
    verbose_name = "Servers"

    def ready(self) -> None:
        from servers import (
            api,  # noqa: F401  (registers the API viewsets)
            console,  # noqa: F401  (registers the console's navigation nodes)
        )
