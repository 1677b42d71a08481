from django.apps import AppConfig


class SmtpadminConfig(AppConfig):
    name = "smtpadmin"
    verbose_name = "Organization"

    def ready(self) -> None:
        from smtpadmin import (
            api_views,  # noqa: F401  (registers organization, users, audit log, token)
            checks,  # noqa: F401  (registers system checks)
            console,  # noqa: F401  (registers the core's navigation nodes)
            console_admin,  # noqa: F401  (audit log, users and roles pages)
        )
