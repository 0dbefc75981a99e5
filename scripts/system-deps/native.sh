# The C engine (src/tcpmesh/dataplane/_engine.c) is compiled by `pip install` with gcc; without
# it the install still succeeds and the native relay-path tests are skipped, so CI has gcc.
need_apt gcc
