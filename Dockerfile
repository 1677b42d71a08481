# One image for every process of docker-compose.yml: web, relay, worker and beat.
FROM python:3.11-slim

# PYTHONPATH: run from the source tree, so templates/ and static/ sit beside the packages.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    SMTPADMIN_VAR_DIR=/var/lib/smtpadmin

WORKDIR /app
COPY . .
# gunicorn serves the web console here; `make run` uses runserver and does not need it.
# The var directory (database, mail, secret key) is the smtpadmin user's alone: 0700, which a
# new named volume takes over from the image.
RUN pip install . gunicorn==27.0.1 \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin smtpadmin \
    && mkdir -p "$SMTPADMIN_VAR_DIR" \
    && chown smtpadmin:smtpadmin "$SMTPADMIN_VAR_DIR" \
    && chmod 0700 "$SMTPADMIN_VAR_DIR"

USER smtpadmin
EXPOSE 8000 2525
CMD ["gunicorn", "smtpadmin.wsgi:application", "--bind", "0.0.0.0:8000"]
