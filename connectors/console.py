"""Console pages of the connectors app (being written): property sheets, lists, navigation nodes."""

from django.urls import URLPattern

app_name = "connectors"
urlpatterns: list[URLPattern] = []
