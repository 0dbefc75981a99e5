/* tcpmesh: a pod's outgoing loopback connections leave from the pod's own IP.
 *
 * Every pod has its own loopback address, but Linux picks 127.0.0.1 as the source of a
 * connection to any 127.x address, so a shared node proxy could not tell pods apart.
 * Loaded into every pod process with LD_PRELOAD (by tcpmesh.runtime.podsource), this
 * wraps connect(): an IPv4 TCP socket that is not bound yet and connects to 127.0.0.0/8
 * is first bound to $TCPMESH_POD_SOURCE_IP with port 0 and IP_BIND_ADDRESS_NO_PORT (the
 * kernel still picks the port at connect time). A failed bind is ignored: the
 * connection then leaves from 127.0.0.1, as it would without this library.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);

static int unbound_tcp4(int fd) {
    int type = 0;
    socklen_t type_len = sizeof type;
    struct sockaddr_in local;
    socklen_t local_len = sizeof local;
    memset(&local, 0, sizeof local);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) != 0 || type != SOCK_STREAM)
        return 0;
    if (getsockname(fd, (struct sockaddr *)&local, &local_len) != 0)
        return 0;
    return local.sin_family == AF_INET && local.sin_addr.s_addr == htonl(INADDR_ANY) &&
           local.sin_port == 0;
}

static void bind_pod_source(int fd, const struct sockaddr *to, socklen_t len) {
    const char *text = getenv("TCPMESH_POD_SOURCE_IP");
    struct sockaddr_in source;
    int one = 1;
    if (text == NULL || to == NULL || to->sa_family != AF_INET || len < sizeof source)
        return;
    if ((ntohl(((const struct sockaddr_in *)to)->sin_addr.s_addr) >> 24) != 127)
        return;
    memset(&source, 0, sizeof source);
    source.sin_family = AF_INET;
    if (inet_pton(AF_INET, text, &source.sin_addr) != 1 || !unbound_tcp4(fd))
        return;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    bind(fd, (struct sockaddr *)&source, sizeof source);
}

int connect(int fd, const struct sockaddr *to, socklen_t len) {
    static connect_fn real_connect;
    int saved = errno;
    if (real_connect == NULL)
        real_connect = (connect_fn)dlsym(RTLD_NEXT, "connect");
    if (real_connect == NULL) {
        errno = ENOSYS;
        return -1;
    }
    bind_pod_source(fd, to, len);
    errno = saved;
    return real_connect(fd, to, len);
}
