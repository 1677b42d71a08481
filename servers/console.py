"""Console pages of the servers app (being written): property sheets, lists, navigation nodes."""

from django.urls import URLPattern

app_name = "servers"
urlpatterns: list[URLPattern] = []
