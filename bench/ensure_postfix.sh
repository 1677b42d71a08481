#!/bin/sh
# Postfix for `make bench`: smtp-source, smtp-sink and the reference relay (which the bench
# runs from its own private configuration, never the system's). When this script installs the
# package and the package starts the system instance, that instance is stopped again: nothing
# of it is left listening. An existing installation is left as it is.
set -eu
if [ -x /usr/sbin/postfix ] && [ -x /usr/sbin/smtp-source ] && [ -x /usr/sbin/smtp-sink ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "make bench: Postfix is missing; run as root to have it installed (apt-get install postfix)" >&2
	exit 1
fi
# "No configuration": the package writes no main.cf and has no reason to start anything.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q postfix || { apt-get update -q && apt-get install -y -q postfix; }
if /usr/sbin/postfix status >/dev/null 2>&1; then
	/usr/sbin/postfix stop
fi
