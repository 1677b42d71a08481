"""/api/v1/: the viewsets and endpoints the apps registered (see ``smtpadmin.registry``), and
a JSON 404 for every other path under it."""

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import re_path
from django.views.decorators.csrf import csrf_exempt

from smtpadmin.registry import api


@csrf_exempt
def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Scripts read JSON: a path no resource has (an id that is not a number, say) is answered
    like an unknown id, not with the console's HTML page."""
    return JsonResponse({"detail": "Not found."}, status=404)


# Only paths with the trailing slash (without it, APPEND_SLASH still redirects to the
# resource); any character, a newline too.
urlpatterns = [*api.urls, re_path(r"^[\s\S]*/$", not_found, name="not-found")]
