# The etcd store's tests start real etcd members (Debian's etcd-server) and drive them with
# etcdctl (etcd-client); the TLS tests make their certificates with openssl.
need_apt etcd-server etcd-client openssl
