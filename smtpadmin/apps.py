from django.apps import AppConfig


class SmtpadminConfig(AppConfig):
    name = "smtpadmin"
    verbose_name = "Organization"

    def ready(self) -> None:
        from smtpadmin import (
            api_config,  # noqa: F401  (registers the configuration export endpoint)
            api_views,  # noqa: F401  (registers organization, users, audit log, token)
            checks,  # noqa: F401  (registers system checks)
            console,  # noqa: F401  (registers the core's navigation nodes)
            console_admin,  # noqa: F401  (audit log, users and roles pages)
        )
        from smtpadmin.models import Organization
        from smtpadmin.registry import ConfigSection, config_sections

        # The organization's global settings: the one row, exported first.
        config_sections.register(
            ConfigSection(name="organization", model=Organization, key=(), order=0)
        )
