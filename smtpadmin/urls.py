from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("", include("smtpadmin.console")),
    path("servers/", include("servers.console")),
    path("connectors/", include("connectors.console")),
    path("relay/", include("relay.console")),
    path("administration/", include("smtpadmin.console_admin")),
    path("api/v1/", include("smtpadmin.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]
