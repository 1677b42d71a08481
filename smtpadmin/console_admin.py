"""Console pages for administration (being written): audit log, users and roles."""

from django.urls import URLPattern

app_name = "admin_pages"
urlpatterns: list[URLPattern] = []
