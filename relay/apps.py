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
        from relay.queue.rules import ReplyRule
        from smtpadmin.registry import ConfigSection, config_sections

        # A rule is known by its conditions and its place; when it was made is not configuration.
        config_sections.register(
            ConfigSection(
                name="reply_rules",
                model=ReplyRule,
                key=("order", "code", "status", "pattern"),
                order=90,
                skip=("created_at",),
            )
        )
