"""Console pages of the servers app (URL namespace "servers", mounted at /servers/) and its
nodes in the console tree."""

from django.urls import path

from servers.console import (
    pickers,
    recipients,
    security,
    sessions,
    topology,
    tree,
    virtual_servers,
)

app_name = "servers"

urlpatterns = [
    # Servers > server > Protocols > SMTP > virtual server > Current Sessions
    path("", topology.ServerList.as_view(), name="server-list"),
    path("new/", topology.ServerSheet.as_view(), name="server-new"),
    path("<int:pk>/", topology.ServerSheet.as_view(), name="server"),
    path("<int:pk>/delete/", topology.ServerDelete.as_view(), name="server-delete"),
    path("<int:pk>/protocols/", topology.Protocols.as_view(), name="protocols"),
    path("<int:pk>/smtp/", topology.SmtpContainer.as_view(), name="smtp"),
    path("<int:pk>/smtp/new/", topology.NewVirtualServer.as_view(), name="smtp-new"),
    path(
        "virtual-servers/<int:pk>/",
        virtual_servers.VirtualServerSheet.as_view(),
        name="virtual-server",
    ),
    path(
        "virtual-servers/<int:pk>/delete/",
        virtual_servers.VirtualServerDelete.as_view(),
        name="virtual-server-delete",
    ),
    *[
        path(
            f"virtual-servers/<int:pk>/{verb}/",
            virtual_servers.VirtualServerStateChange.as_view(verb=verb),
            name=f"virtual-server-{verb}",
        )
        for verb, _label, _state in virtual_servers.STATE_ACTIONS
    ],
    path("virtual-servers/<int:pk>/sessions/", sessions.CurrentSessions.as_view(), name="sessions"),
    path(
        "virtual-servers/<int:pk>/sessions/<int:session_pk>/terminate/",
        sessions.TerminateSession.as_view(),
        name="session-terminate",
    ),
    path(
        "virtual-servers/<int:pk>/sessions/terminate-all/",
        sessions.TerminateAllSessions.as_view(),
        name="sessions-terminate-all",
    ),
    # Recipients
    path("accepted-domains/", recipients.AcceptedDomainList.as_view(), name="accepted-domain-list"),
    path(
        "accepted-domains/new/",
        recipients.AcceptedDomainSheet.as_view(),
        name="accepted-domain-new",
    ),
    path(
        "accepted-domains/<int:pk>/",
        recipients.AcceptedDomainSheet.as_view(),
        name="accepted-domain",
    ),
    path(
        "accepted-domains/<int:pk>/delete/",
        recipients.AcceptedDomainDelete.as_view(),
        name="accepted-domain-delete",
    ),
    path("mailboxes/", recipients.MailboxList.as_view(), name="mailbox-list"),
    path("mailboxes/new/", recipients.MailboxSheet.as_view(), name="mailbox-new"),
    path("mailboxes/<int:pk>/", recipients.MailboxSheet.as_view(), name="mailbox"),
    path("mailboxes/<int:pk>/delete/", recipients.MailboxDelete.as_view(), name="mailbox-delete"),
    path("smtp-credentials/", security.SmtpCredentialList.as_view(), name="smtp-credential-list"),
    path(
        "smtp-credentials/new/", security.SmtpCredentialSheet.as_view(), name="smtp-credential-new"
    ),
    path(
        "smtp-credentials/<int:pk>/",
        security.SmtpCredentialSheet.as_view(),
        name="smtp-credential",
    ),
    path(
        "smtp-credentials/<int:pk>/unlock/",
        security.SmtpCredentialUnlock.as_view(),
        name="smtp-credential-unlock",
    ),
    path(
        "smtp-credentials/<int:pk>/delete/",
        security.SmtpCredentialDelete.as_view(),
        name="smtp-credential-delete",
    ),
    path("certificates/", security.CertificateList.as_view(), name="certificate-list"),
    path("certificates/upload/", security.CertificateUpload.as_view(), name="certificate-upload"),
    path(
        "certificates/generate/",
        security.CertificateGenerate.as_view(),
        name="certificate-generate",
    ),
    path("certificates/<int:pk>/", security.CertificateSheet.as_view(), name="certificate"),
    path(
        "certificates/<int:pk>/delete/",
        security.CertificateDelete.as_view(),
        name="certificate-delete",
    ),
]

tree.register()
pickers.register_pickers()
