from django.apps import AppConfig


class ConnectorsConfig(AppConfig):
    name = "connectors"
    verbose_name = "Connectors"

    def ready(self) -> None:
        from connectors import (
            api,  # noqa: F401  (registers the API viewsets)
            console,  # noqa: F401  (registers the console's navigation nodes)
        )
        from connectors.models import AddressSpace, Connector
        from smtpadmin.registry import ConfigChild, ConfigSection, config_sections

        config_sections.register(
            ConfigSection(
                name="connectors",
                model=Connector,
                key=("name",),
                order=80,
                children=(
                    ConfigChild(
                        name="address_spaces",
                        model=AddressSpace,
                        parent_field="connector",
                        key=("domain",),
                        min_count=1,
                    ),
                ),
            )
        )
