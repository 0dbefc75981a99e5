# The multi-host tests (tests/integration/test_multihost.py) make network namespaces, veth
# pairs and a bridge with ip(8), and run etcd members in them (etcd.sh).
need_apt iproute2
