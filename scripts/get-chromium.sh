#!/bin/sh
# Installs Debian's chromium for the report's browser tests when we run as root and it is missing.
# Without it those tests are skipped, each saying how to install it; nothing else needs it.
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
	exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
	(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) ||
		echo "make: chromium could not be installed; the browser tests will be skipped" >&2
else
	echo "make: no chromium (apt-get install chromium as root); the browser tests will be skipped" >&2
fi
exit 0
