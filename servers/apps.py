from django.apps import AppConfig


class ServersConfig(AppConfig):
    name = "servers"
    verbose_name = "Servers"

    def ready(self) -> None:
        from servers import (
            api,  # noqa: F401  (registers the API viewsets)
            console,  # noqa: F401  (registers the console's navigation nodes)
        )

        self.register_configuration()

    @staticmethod
    def register_configuration() -> None:
        from servers import models as m
        from smtpadmin.registry import ConfigSection, config_sections

        def one_default_domain(domain: m.AcceptedDomain, user: object) -> None:
            if domain.is_default:
                m.AcceptedDomain.clear_default(by=user, keep=domain.pk)

        for section in (
            ConfigSection(name="routing_groups", model=m.RoutingGroup, key=("name",), order=10),
            ConfigSection(name="servers", model=m.Server, key=("name",), order=20),
            # Subject, issuer, dates and fingerprint are read from the certificate by clean().
            ConfigSection(
                name="certificates",
                model=m.Certificate,
                key=("name",),
                order=30,
                skip=("subject", "issuer", "sans", "not_before", "not_after", "fingerprint_sha256"),
            ),
            ConfigSection(
                name="virtual_servers", model=m.VirtualServer, key=("server", "name"), order=40
            ),
            ConfigSection(
                name="accepted_domains",
                model=m.AcceptedDomain,
                key=("domain",),
                order=50,
                before_save=one_default_domain,
            ),
            ConfigSection(name="mailboxes", model=m.Mailbox, key=("address",), order=60),
            ConfigSection(
                name="smtp_credentials", model=m.SmtpCredential, key=("username",), order=70
            ),
        ):
            config_sections.register(section)
