from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from smtpadmin.metrics import metrics_view

urlpatterns = [
    # The page the console opens on.
    path("", include("relay.console.dashboard")),
    path("", include("smtpadmin.console")),
    path("servers/", include("servers.console")),
    path("connectors/", include("connectors.console")),
    path("relay/", include("relay.console")),
    path("administration/", include("smtpadmin.console_admin")),
    path("api/v1/", include("smtpadmin.api_urls")),
    # Prometheus: an administrator's API token, the scrape token or an allowed address.
    path("metrics", metrics_view, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its start script as a file (?script), so the CSP needs no inline script.
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(
            url_name="schema", template_name="smtpadmin/swagger_ui.html"
        ),
        name="swagger-ui",
    ),
]
