"""/api/v1/: the viewsets and endpoints the apps registered (see ``smtpadmin.registry``)."""

from smtpadmin.registry import api

urlpatterns = api.urls
