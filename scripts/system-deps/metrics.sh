# The metrics tests scrape with a real Prometheus; the console tests drive Debian's Chromium.
need_apt prometheus chromium
