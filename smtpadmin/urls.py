from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

urlpatterns = [
    path("", include("smtpadmin.console")),
    path("servers/", include("servers.console")),
    path("connectors/", include("connectors.console")),
    path("relay/", include("relay.console")),
    path("administration/", include("smtpadmin.console_admin")),
    path("api/v1/", include("smtpadmin.api_urls")),
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
