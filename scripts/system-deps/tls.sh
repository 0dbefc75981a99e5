# TLS by SNI and termination (issue 13): the termination tests drive `openssl s_client`,
# the client users reach for first.
need_apt openssl
