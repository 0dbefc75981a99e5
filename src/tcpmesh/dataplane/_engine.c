/* tcpmesh.dataplane._engine: the accept/connect/relay hot path of the built-in proxy in C.
 *
 * Why: a profile of one worker put 54% of its time in the interpreter, spread over about
 * 150 Python calls per connection with no hot spot (docs/benchmarks.md). This module does
 * the mechanical part of a connection - accept4, the non-blocking connect, both relay
 * directions with back-pressure, half-close and splice(2) - and leaves to Python only
 * what decides semantics: route, balancer pick, stats, timeouts, access log
 * (tcpmesh.dataplane.native).
 *
 * One Engine owns one epoll set. The event loop watches its descriptor (add_reader);
 * poll() handles every ready descriptor and returns what Python must decide as a list of
 * tuples:
 *   (ACCEPTED, listener, cid, (peer ip, port), (local ip, port))
 *   (CONNECTED, cid)             a connect() that returned PENDING completed
 *   (CONNECT_FAILED, cid)        ... or failed; the client is kept (connect again or abort)
 *   (CLOSED, cid, rx, tx, spliced)  both sides closed; rx/tx: bytes from client/upstream
 * Each socket is registered once, edge-triggered, for reading and writing; readiness is
 * remembered per descriptor, so back-pressure needs no epoll_ctl call. Nothing is read
 * from the client until the upstream is connected (as Envoy's tcp_proxy).
 *
 * A direction (source -> sink) reads one chunk, writes it to the sink at once, and keeps
 * what the sink did not take; while bytes are kept it reads nothing more (the kept bytes
 * are at most one chunk, high_water bounded). A FIN from the source goes to the sink with
 * shutdown(SHUT_WR) once the kept bytes left; the other direction keeps flowing. Any
 * error closes both sides. After a read of at least splice_after bytes (0: from the
 * start, -1: never) a connection moves bytes with splice(2) through a pipe per direction,
 * lent from a pool only while bytes sit in it.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

enum { EV_ACCEPTED = 0, EV_CONNECTED = 1, EV_CONNECT_FAILED = 2, EV_CLOSED = 3 };
enum { FLOW_OPEN = 0, FLOW_FIN_PENDING = 1, FLOW_FIN_SENT = 2 };
enum { ST_ACCEPTED = 0, ST_CONNECTING = 1, ST_RELAYING = 2 };
enum { CONNECT_DONE = 0, CONNECT_PENDING = 1, CONNECT_FAILED_NOW = -1 };
#define RD 1
#define WR 2
#define HUP 4 /* the peer's FIN was reported: read on to EOF even after a short read */
#define CLIENT 0
#define UPSTREAM 1
#define TAG_LISTENER (1ULL << 63)
#define TAG_WAKE ((1ULL << 63) | (1ULL << 62))
#define SLOT_BITS 24
#define SLOT_MASK ((1U << SLOT_BITS) - 1)
#define MAX_EVENTS 256
#define ACCEPT_BATCH 64
#define READS_PER_TURN 16 /* then other connections get a turn (see Engine.again) */
#define PIPE_MIN (64 * 1024)
#define PIPES_KEPT 64

typedef struct {
    char *buf; /* bytes the sink has not taken (copy), malloc'd; NULL when none */
    size_t off, len;
    int pipe_r, pipe_w; /* a pipe from the pool while bytes sit in it (splice) */
    size_t queued;
    unsigned char flow;
} Way;

typedef struct {
    uint64_t cid;
    int fd[2];              /* CLIENT, UPSTREAM; -1 when closed */
    unsigned char ready[2]; /* RD|WR as last reported by epoll, cleared on EAGAIN */
    unsigned char state, spliced, queued_again;
    Way way[2]; /* way i reads fd[i] and writes fd[1 - i] */
    uint64_t bytes[2];
} Conn;

typedef struct {
    int fd; /* -1: removed */
    int wildcard;
    PyObject *local; /* (ip, port) for a listener on one address, else NULL */
} Listener;

typedef struct {
    PyObject_HEAD
    int ep, wake;
    int woken;
    Conn **slots;
    uint32_t *gens, *free_slots;
    uint32_t nslots, nfree;
    Listener *listeners;
    int nlisteners;
    size_t high_water, chunk;
    long splice_after;
    char *scratch;
    int pipes[PIPES_KEPT][2];
    int npipes;
    uint64_t *again;
    size_t nagain, again_cap;
    PyObject *out; /* events for the next poll() */
    Py_ssize_t open;
} Engine;

/* -- connections table ------------------------------------------------------------- */

static Conn *lookup(Engine *e, uint64_t cid) {
    uint32_t slot = (uint32_t)(cid & SLOT_MASK);
    if (slot >= e->nslots || e->slots[slot] == NULL || e->slots[slot]->cid != cid) return NULL;
    return e->slots[slot];
}

static Conn *new_conn(Engine *e) {
    uint32_t slot;
    if (e->nfree) {
        slot = e->free_slots[--e->nfree];
    } else {
        if (e->nslots > SLOT_MASK) return NULL;
        if ((e->nslots & (e->nslots - 1)) == 0) { /* grow at powers of two */
            uint32_t cap = e->nslots ? e->nslots * 2 : 64;
            Conn **s = PyMem_Realloc(e->slots, cap * sizeof *s);
            if (!s) return NULL;
            e->slots = s;
            uint32_t *g = PyMem_Realloc(e->gens, cap * sizeof *g);
            if (!g) return NULL;
            e->gens = g;
            uint32_t *f = PyMem_Realloc(e->free_slots, cap * sizeof *f);
            if (!f) return NULL;
            e->free_slots = f;
        }
        slot = e->nslots++;
        e->gens[slot] = 0;
    }
    Conn *c = PyMem_Calloc(1, sizeof *c);
    if (!c) {
        e->free_slots[e->nfree++] = slot;
        return NULL;
    }
    e->gens[slot]++;
    c->cid = ((uint64_t)e->gens[slot] << SLOT_BITS) | slot;
    c->fd[0] = c->fd[1] = -1;
    c->way[0].pipe_r = c->way[0].pipe_w = c->way[1].pipe_r = c->way[1].pipe_w = -1;
    e->slots[slot] = c;
    e->open++;
    return c;
}

/* -- pipes ------------------------------------------------------------------------- */

static int take_pipe(Engine *e, Way *w) {
    if (e->npipes) {
        e->npipes--;
        w->pipe_r = e->pipes[e->npipes][0];
        w->pipe_w = e->pipes[e->npipes][1];
        return 0;
    }
    int p[2];
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) return -1;
    /* Above the system's pipe-max-size the default capacity stays. */
    if (e->high_water > PIPE_MIN) (void)fcntl(p[1], F_SETPIPE_SZ, (int)e->high_water);
    w->pipe_r = p[0];
    w->pipe_w = p[1];
    return 0;
}

static void drop_pipe(Engine *e, Way *w, int reuse) {
    if (w->pipe_r < 0) return;
    if (reuse && e->npipes < PIPES_KEPT) {
        e->pipes[e->npipes][0] = w->pipe_r;
        e->pipes[e->npipes][1] = w->pipe_w;
        e->npipes++;
    } else {
        close(w->pipe_r);
        close(w->pipe_w);
    }
    w->pipe_r = w->pipe_w = -1;
    w->queued = 0;
}

/* -- events ------------------------------------------------------------------------ */

static void wake(Engine *e) {
    if (!e->woken) {
        uint64_t one = 1;
        if (write(e->wake, &one, sizeof one) == sizeof one) e->woken = 1;
    }
}

static void emit(Engine *e, PyObject *event) {
    if (event == NULL) { /* out of memory: the event is lost, but not the loop */
        PyErr_Clear();
        return;
    }
    if (PyList_Append(e->out, event) < 0) PyErr_Clear();
    Py_DECREF(event);
}

static PyObject *closed_info(Conn *c) {
    return Py_BuildValue("(KKO)", (unsigned long long)c->bytes[0],
                         (unsigned long long)c->bytes[1], c->spliced ? Py_True : Py_False);
}

/* Close both sides and free the connection; the caller reports it (event or return). */
static void destroy(Engine *e, Conn *c) {
    for (int i = 0; i < 2; i++) {
        if (c->fd[i] >= 0) close(c->fd[i]); /* close() also leaves the epoll set */
        PyMem_Free(c->way[i].buf);
        drop_pipe(e, &c->way[i], c->way[i].queued == 0);
    }
    uint32_t slot = (uint32_t)(c->cid & SLOT_MASK);
    e->slots[slot] = NULL;
    e->free_slots[e->nfree++] = slot;
    e->open--;
    PyMem_Free(c);
}

static void finish(Engine *e, Conn *c) {
    emit(e, Py_BuildValue("(iKKKO)", EV_CLOSED, (unsigned long long)c->cid,
                          (unsigned long long)c->bytes[0], (unsigned long long)c->bytes[1],
                          c->spliced ? Py_True : Py_False));
    destroy(e, c);
}

/* -- the relay --------------------------------------------------------------------- */

static int gone(int err) { return err != EAGAIN && err != EWOULDBLOCK && err != EINTR; }

/* Send a direction's kept bytes; 1 all left, 0 some remain, -1 the connection failed. */
static int flush(Conn *c, int i) {
    Way *w = &c->way[i];
    int sink = c->fd[1 - i];
    while (w->len > w->off) {
        ssize_t n = send(sink, w->buf + w->off, w->len - w->off, MSG_NOSIGNAL);
        if (n < 0) {
            if (gone(errno)) return -1;
            c->ready[1 - i] &= ~WR;
            return 0;
        }
        w->off += (size_t)n;
    }
    PyMem_Free(w->buf);
    w->buf = NULL;
    w->off = w->len = 0;
    return 1;
}

static int drain_pipe(Engine *e, Conn *c, int i) {
    Way *w = &c->way[i];
    while (w->queued) {
        ssize_t n = splice(w->pipe_r, NULL, c->fd[1 - i], NULL, w->queued,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n < 0) {
            if (gone(errno)) return -1;
            c->ready[1 - i] &= ~WR;
            return 0;
        }
        w->queued -= (size_t)n;
    }
    drop_pipe(e, w, 1);
    return 1;
}

static int kept(Way *w) { return w->len > w->off || w->queued; }

/* One read and write by copy: >0 bytes read, 0 EOF, -1 failed, -2 nothing to read. */
static ssize_t copy_once(Engine *e, Conn *c, int i) {
    Way *w = &c->way[i];
    ssize_t n = recv(c->fd[i], e->scratch, e->chunk, 0);
    if (n < 0) {
        if (gone(errno)) return -1;
        c->ready[i] &= ~RD;
        return -2;
    }
    if (n == 0) return 0;
    /* A short read emptied the socket: no read just to see EAGAIN. Bytes arriving
     * later raise a new edge; a FIN already reported (HUP) still needs its read. */
    if ((size_t)n < e->chunk && !(c->ready[i] & HUP)) c->ready[i] &= ~RD;
    ssize_t sent = 0;
    if (c->ready[1 - i] & WR) {
        sent = send(c->fd[1 - i], e->scratch, (size_t)n, MSG_NOSIGNAL);
        if (sent < 0) {
            if (gone(errno)) return -1;
            c->ready[1 - i] &= ~WR;
            sent = 0;
        }
    }
    if (sent < n) {
        size_t rest = (size_t)(n - sent);
        w->buf = PyMem_Malloc(rest);
        if (!w->buf) return -1;
        memcpy(w->buf, e->scratch + sent, rest);
        w->off = 0;
        w->len = rest;
    }
    return n;
}

static ssize_t splice_once(Engine *e, Conn *c, int i) {
    Way *w = &c->way[i];
    if (w->pipe_r < 0 && take_pipe(e, w) < 0) return copy_once(e, c, i); /* no fds: copy */
    size_t cap = e->high_water > PIPE_MIN ? e->high_water : PIPE_MIN;
    ssize_t n = splice(c->fd[i], NULL, w->pipe_w, NULL, cap, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0) {
        if (gone(errno)) return -1;
        c->ready[i] &= ~RD;
        drop_pipe(e, w, 1);
        return -2;
    }
    if (n == 0) {
        drop_pipe(e, w, 1);
        return 0;
    }
    w->queued = (size_t)n;
    if (drain_pipe(e, c, i) < 0) return -1;
    return n;
}

/* The source sent FIN: pass it on once nothing is kept. 1 when both ways are done. */
static int fin_now(Conn *c, int i) {
    Way *w = &c->way[i];
    if (kept(w)) {
        w->flow = FLOW_FIN_PENDING;
        return 0;
    }
    w->flow = FLOW_FIN_SENT;
    /* Both ways done: close() sends this FIN (nothing is unread: the sink's own FIN
     * was read), so no shutdown call. A peer already gone: the next I/O says so. */
    if (c->way[1 - i].flow == FLOW_FIN_SENT) return 1;
    (void)shutdown(c->fd[1 - i], SHUT_WR);
    return 0;
}

/* Move what one direction can: -1 the connection failed, 1 ended, 0 go on. */
static int pump(Engine *e, Conn *c, int i, int *more) {
    Way *w = &c->way[i];
    if (kept(w)) {
        if (!(c->ready[1 - i] & WR)) return 0;
        int r = w->queued ? drain_pipe(e, c, i) : flush(c, i);
        if (r <= 0) return r;
    }
    if (w->flow == FLOW_FIN_PENDING) return fin_now(c, i);
    if (w->flow != FLOW_OPEN) return 0;
    for (int turn = 0; c->ready[i] & RD; turn++) {
        if (turn == READS_PER_TURN) {
            *more = 1;
            return 0;
        }
        ssize_t n = c->spliced ? splice_once(e, c, i) : copy_once(e, c, i);
        if (n == -1) return -1;
        if (n == -2) return 0;
        if (n == 0) return fin_now(c, i);
        c->bytes[i] += (uint64_t)n;
        if (e->splice_after >= 0 && n >= e->splice_after) c->spliced = 1;
        if (kept(w)) return 0; /* back-pressure: read again once the sink took it */
    }
    return 0;
}

static void push_again(Engine *e, Conn *c) {
    if (c->queued_again) return;
    if (e->nagain == e->again_cap) {
        size_t cap = e->again_cap ? e->again_cap * 2 : 64;
        uint64_t *a = PyMem_Realloc(e->again, cap * sizeof *a);
        if (!a) return; /* the connection waits for its next readiness event instead */
        e->again = a;
        e->again_cap = cap;
    }
    e->again[e->nagain++] = c->cid;
    c->queued_again = 1;
    wake(e);
}

static void run(Engine *e, Conn *c) {
    int more = 0;
    for (int i = 0; i < 2; i++) {
        int r = pump(e, c, i, &more);
        if (r != 0) {
            finish(e, c);
            return;
        }
    }
    /* A source still readable after its turn: the rest after the other connections. */
    if (more) push_again(e, c);
}

/* -- connecting -------------------------------------------------------------------- */

static int watch(Engine *e, Conn *c, int side) {
    struct epoll_event ev;
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = (c->cid << 1) | (uint64_t)side;
    return epoll_ctl(e->ep, EPOLL_CTL_ADD, c->fd[side], &ev);
}

static int relay_start(Engine *e, Conn *c) {
    c->state = ST_RELAYING;
    if (watch(e, c, CLIENT) < 0) return -1;
    /* Freshly accepted and connected: writable; the client's request is usually there. */
    c->ready[CLIENT] |= RD | WR;
    c->ready[UPSTREAM] |= WR;
    c->spliced = e->splice_after == 0;
    return 0;
}

static void drop_upstream(Conn *c) {
    if (c->fd[UPSTREAM] >= 0) close(c->fd[UPSTREAM]);
    c->fd[UPSTREAM] = -1;
    c->ready[UPSTREAM] = 0;
    c->state = ST_ACCEPTED;
}

static void connect_ready(Engine *e, Conn *c, uint32_t events) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd[UPSTREAM], SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err == 0 && !(events & EPOLLOUT)) return; /* not done yet */
    if (err) {
        drop_upstream(c);
        emit(e, Py_BuildValue("(iK)", EV_CONNECT_FAILED, (unsigned long long)c->cid));
        return;
    }
    if (events & EPOLLIN) c->ready[UPSTREAM] |= RD;
    if (relay_start(e, c) < 0) {
        finish(e, c);
        return;
    }
    emit(e, Py_BuildValue("(iK)", EV_CONNECTED, (unsigned long long)c->cid));
    run(e, c);
}

static void conn_event(Engine *e, uint64_t data, uint32_t events) {
    Conn *c = lookup(e, data >> 1);
    if (c == NULL) return; /* closed earlier in this batch */
    int side = (int)(data & 1);
    if (c->state == ST_CONNECTING) {
        if (side == UPSTREAM) connect_ready(e, c, events);
        return;
    }
    if (c->state != ST_RELAYING) return;
    if (events & EPOLLERR) { /* a reset or an error: both sides close, as on the copy path */
        finish(e, c);
        return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) c->ready[side] |= RD;
    if (events & (EPOLLRDHUP | EPOLLHUP)) c->ready[side] |= HUP;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) c->ready[side] |= WR;
    run(e, c);
}

/* -- accepting --------------------------------------------------------------------- */

static PyObject *address(const struct sockaddr_storage *ss) {
    char text[INET6_ADDRSTRLEN];
    int port;
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        if (!inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text)) text[0] = 0;
        port = ntohs(a->sin6_port);
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        if (!inet_ntop(AF_INET, &a->sin_addr, text, sizeof text)) text[0] = 0;
        port = ntohs(a->sin_port);
    }
    return Py_BuildValue("(si)", text, port);
}

static void accept_some(Engine *e, int lid) {
    Listener *l = &e->listeners[lid];
    for (int k = 0; k < ACCEPT_BATCH && l->fd >= 0; k++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof peer;
        int fd = accept4(l->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return; /* EAGAIN; others (EMFILE, ECONNABORTED): the next event */
        PyObject *local;
        if (l->local) {
            local = l->local;
            Py_INCREF(local);
        } else {
            struct sockaddr_storage here;
            socklen_t hlen = sizeof here;
            if (getsockname(fd, (struct sockaddr *)&here, &hlen) < 0) {
                close(fd);
                continue;
            }
            local = address(&here);
        }
        Conn *c = new_conn(e);
        PyObject *peer_t = address(&peer);
        if (!c || !local || !peer_t) {
            PyErr_Clear();
            Py_XDECREF(local);
            Py_XDECREF(peer_t);
            if (c) destroy(e, c); /* closes nothing: fd not yet stored */
            close(fd);
            continue;
        }
        c->fd[CLIENT] = fd;
        emit(e, Py_BuildValue("(iiKNN)", EV_ACCEPTED, lid, (unsigned long long)c->cid, peer_t,
                              local));
    }
}

/* -- the Python type ---------------------------------------------------------------- */

static Conn *conn_arg(Engine *e, PyObject *arg) {
    unsigned long long cid = PyLong_AsUnsignedLongLong(arg);
    if (cid == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    return lookup(e, (uint64_t)cid);
}

static int engine_init(Engine *e, PyObject *args, PyObject *kw) {
    static char *names[] = {"high_water", "splice_after", NULL};
    Py_ssize_t high_water;
    long splice_after;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "nl", names, &high_water, &splice_after))
        return -1;
    if (high_water < 1) {
        PyErr_SetString(PyExc_ValueError, "high_water must be positive");
        return -1;
    }
    e->high_water = (size_t)high_water;
    e->chunk = e->high_water < 256 * 1024 ? e->high_water : 256 * 1024;
    e->splice_after = splice_after;
    e->scratch = PyMem_Malloc(e->chunk);
    e->out = PyList_New(0);
    e->ep = epoll_create1(EPOLL_CLOEXEC);
    e->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!e->scratch || !e->out) return PyErr_NoMemory(), -1;
    if (e->ep < 0 || e->wake < 0) return PyErr_SetFromErrno(PyExc_OSError), -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_WAKE};
    if (epoll_ctl(e->ep, EPOLL_CTL_ADD, e->wake, &ev) < 0)
        return PyErr_SetFromErrno(PyExc_OSError), -1;
    return 0;
}

static PyObject *engine_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    Engine *e = (Engine *)type->tp_alloc(type, 0);
    if (e) e->ep = e->wake = -1;
    return (PyObject *)e;
}

static void close_all(Engine *e) {
    for (uint32_t s = 0; s < e->nslots; s++)
        if (e->slots[s]) destroy(e, e->slots[s]);
    for (int i = 0; i < e->nlisteners; i++) Py_CLEAR(e->listeners[i].local);
    while (e->npipes) {
        e->npipes--;
        close(e->pipes[e->npipes][0]);
        close(e->pipes[e->npipes][1]);
    }
    if (e->ep >= 0) close(e->ep);
    if (e->wake >= 0) close(e->wake);
    e->ep = e->wake = -1;
}

static void engine_dealloc(Engine *e) {
    close_all(e);
    PyMem_Free(e->slots);
    PyMem_Free(e->gens);
    PyMem_Free(e->free_slots);
    PyMem_Free(e->listeners);
    PyMem_Free(e->scratch);
    PyMem_Free(e->again);
    Py_XDECREF(e->out);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyObject *need_open(Engine *e) {
    if (e->ep < 0) PyErr_SetString(PyExc_ValueError, "the engine is closed");
    return e->ep < 0 ? NULL : Py_None;
}

static PyObject *engine_fileno(Engine *e, PyObject *unused) { return PyLong_FromLong(e->ep); }

static PyObject *engine_listen(Engine *e, PyObject *args) {
    int fd;
    if (!PyArg_ParseTuple(args, "i", &fd) || !need_open(e)) return NULL;
    struct sockaddr_storage here;
    socklen_t len = sizeof here;
    if (getsockname(fd, (struct sockaddr *)&here, &len) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    int one = 1; /* accepted sockets inherit it: no setsockopt per connection */
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Listener *ls = PyMem_Realloc(e->listeners, (size_t)(e->nlisteners + 1) * sizeof *ls);
    if (!ls) return PyErr_NoMemory();
    e->listeners = ls;
    int lid = e->nlisteners;
    Listener *l = &ls[lid];
    l->fd = fd;
    l->wildcard = here.ss_family == AF_INET6
                      ? IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)&here)->sin6_addr)
                      : ((struct sockaddr_in *)&here)->sin_addr.s_addr == htonl(INADDR_ANY);
    l->local = l->wildcard ? NULL : address(&here);
    if (!l->wildcard && !l->local) return NULL;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_LISTENER | (uint64_t)lid};
    if (epoll_ctl(e->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        Py_CLEAR(l->local);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    e->nlisteners++;
    return PyLong_FromLong(lid);
}

static PyObject *engine_unlisten(Engine *e, PyObject *args) {
    int lid;
    if (!PyArg_ParseTuple(args, "i", &lid)) return NULL;
    if (lid < 0 || lid >= e->nlisteners || e->listeners[lid].fd < 0) Py_RETURN_FALSE;
    Listener *l = &e->listeners[lid];
    if (e->ep >= 0) (void)epoll_ctl(e->ep, EPOLL_CTL_DEL, l->fd, NULL);
    l->fd = -1;
    Py_CLEAR(l->local);
    Py_RETURN_TRUE;
}

static void run_again(Engine *e) {
    size_t n = e->nagain;
    uint64_t *list = e->again;
    e->again = NULL;
    e->nagain = e->again_cap = 0;
    for (size_t k = 0; k < n; k++) {
        Conn *c = lookup(e, list[k]);
        if (c) {
            c->queued_again = 0;
            run(e, c);
        }
    }
    PyMem_Free(list);
}

static PyObject *engine_poll(Engine *e, PyObject *unused) {
    if (!need_open(e)) return NULL;
    struct epoll_event evs[MAX_EVENTS];
    int n = epoll_wait(e->ep, evs, MAX_EVENTS, 0);
    for (int k = 0; k < n; k++) {
        uint64_t data = evs[k].data.u64;
        if (data == TAG_WAKE) {
            uint64_t count;
            if (read(e->wake, &count, sizeof count) < 0) { /* EAGAIN: already read */
            }
            e->woken = 0;
        } else if (data & TAG_LISTENER) {
            accept_some(e, (int)(data & ~TAG_LISTENER));
        } else {
            conn_event(e, data, evs[k].events);
        }
    }
    if (e->nagain) run_again(e);
    PyObject *result = e->out;
    e->out = PyList_New(0);
    if (!e->out) {
        e->out = result;
        return NULL;
    }
    return result;
}

/* serve(handler): poll(), then handler(events) only when there are some. The event
 * loop calls this directly: most readiness is relay work done entirely in C, and then
 * no Python frame runs at all. */
static PyObject *engine_serve(Engine *e, PyObject *handler) {
    PyObject *events = engine_poll(e, NULL);
    if (!events) return NULL;
    if (PyList_GET_SIZE(events) == 0) {
        Py_DECREF(events);
        Py_RETURN_NONE;
    }
    PyObject *r = PyObject_CallOneArg(handler, events);
    Py_DECREF(events);
    return r;
}

static int fill_address(PyObject *host, int port, struct sockaddr_storage *ss, socklen_t *len) {
    const char *text = PyUnicode_AsUTF8(host);
    if (!text) return -1;
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, text, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *len = sizeof *a4;
    } else if (inet_pton(AF_INET6, text, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof *a6;
    } else {
        PyErr_Format(PyExc_ValueError, "not an IP address: %R", host);
        return -1;
    }
    return 0;
}

static void keepalive(int fd, int idle, int interval, int probes) {
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    if (idle > 0) (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    if (interval > 0)
        (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    if (probes > 0) (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);
}

/* connect(cid, host, port, keepalive_idle, keepalive_interval, keepalive_probes): DONE,
 * PENDING (a CONNECTED or CONNECT_FAILED event follows; connect_timeout() gives up) or
 * FAILED. Keepalive values <= 0 leave the system's default; -1, -1, -1 sets none. */
static PyObject *engine_connect(Engine *e, PyObject *args) {
    PyObject *cid_obj, *host;
    int port, ka_idle = -1, ka_interval = -1, ka_probes = -1, ka_on = 0;
    if (!PyArg_ParseTuple(args, "OUi|piii", &cid_obj, &host, &port, &ka_on, &ka_idle,
                          &ka_interval, &ka_probes))
        return NULL;
    Conn *c = conn_arg(e, cid_obj);
    if (!c) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "no such connection");
        return NULL;
    }
    if (c->state != ST_ACCEPTED) return PyErr_Format(PyExc_ValueError, "connect twice");
    struct sockaddr_storage ss;
    socklen_t len;
    if (fill_address(host, port, &ss, &len) < 0) return NULL;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return PyLong_FromLong(CONNECT_FAILED_NOW);
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (ka_on) keepalive(fd, ka_idle, ka_interval, ka_probes);
    int r = connect(fd, (struct sockaddr *)&ss, len);
    if (r < 0 && errno != EINPROGRESS) {
        close(fd);
        return PyLong_FromLong(CONNECT_FAILED_NOW);
    }
    c->fd[UPSTREAM] = fd;
    if (watch(e, c, UPSTREAM) < 0) {
        drop_upstream(c);
        return PyLong_FromLong(CONNECT_FAILED_NOW);
    }
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    /* To a peer on this host the handshake is usually done within connect(). */
    if (r < 0 && getpeername(fd, (struct sockaddr *)&peer, &plen) < 0) {
        c->state = ST_CONNECTING;
        return PyLong_FromLong(CONNECT_PENDING);
    }
    if (relay_start(e, c) < 0) {
        drop_upstream(c);
        return PyLong_FromLong(CONNECT_FAILED_NOW);
    }
    run(e, c);
    if (PyList_GET_SIZE(e->out)) wake(e);
    return PyLong_FromLong(CONNECT_DONE);
}

/* The connect timeout passed: True when the connection was still connecting (its
 * upstream socket is now closed, the client kept), False otherwise. */
static PyObject *engine_connect_timeout(Engine *e, PyObject *arg) {
    Conn *c = conn_arg(e, arg);
    if (!c) return PyErr_Occurred() ? NULL : Py_NewRef(Py_False);
    if (c->state != ST_CONNECTING) Py_RETURN_FALSE;
    drop_upstream(c);
    Py_RETURN_TRUE;
}

/* End a connection now (both sides): (rx, tx, spliced), or None when it is gone. */
static PyObject *engine_abort(Engine *e, PyObject *arg) {
    Conn *c = conn_arg(e, arg);
    if (!c) return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    PyObject *info = closed_info(c);
    if (info) destroy(e, c);
    return info;
}

static PyObject *engine_counts(Engine *e, PyObject *arg) {
    Conn *c = conn_arg(e, arg);
    if (!c) return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    return Py_BuildValue("(KK)", (unsigned long long)c->bytes[0], (unsigned long long)c->bytes[1]);
}

static PyObject *engine_buffered(Engine *e, PyObject *arg) {
    Conn *c = conn_arg(e, arg);
    if (!c) return PyErr_Occurred() ? NULL : PyLong_FromLong(0);
    size_t n = 0;
    for (int i = 0; i < 2; i++) n += c->way[i].len - c->way[i].off + c->way[i].queued;
    return PyLong_FromSize_t(n);
}

static PyObject *engine_close(Engine *e, PyObject *unused) {
    close_all(e);
    Py_RETURN_NONE;
}

static PyObject *engine_get_open(Engine *e, void *unused) { return PyLong_FromSsize_t(e->open); }

static PyObject *engine_get_pipes(Engine *e, void *unused) { return PyLong_FromLong(e->npipes); }

static PyMethodDef engine_methods[] = {
    {"fileno", (PyCFunction)engine_fileno, METH_NOARGS, "The epoll descriptor to watch."},
    {"listen", (PyCFunction)engine_listen, METH_VARARGS,
     "listen(fd) -> listener id: accept on a bound, listening, non-blocking socket (the "
     "caller keeps it open until unlisten)."},
    {"unlisten", (PyCFunction)engine_unlisten, METH_VARARGS, "Stop accepting on a listener."},
    {"poll", (PyCFunction)engine_poll, METH_NOARGS, "Handle what is ready; the events."},
    {"serve", (PyCFunction)engine_serve, METH_O,
     "serve(handler): poll(), and handler(events) when there are any."},
    {"connect", (PyCFunction)engine_connect, METH_VARARGS,
     "connect(cid, host, port[, keepalive, idle, interval, probes]) -> 0 done, 1 pending, "
     "-1 failed."},
    {"connect_timeout", (PyCFunction)engine_connect_timeout, METH_O,
     "Give up a pending connect: True when it was still pending."},
    {"abort", (PyCFunction)engine_abort, METH_O,
     "Close both sides now: (rx, tx, spliced) or None."},
    {"counts", (PyCFunction)engine_counts, METH_O, "(rx, tx) so far, or None."},
    {"buffered", (PyCFunction)engine_buffered, METH_O, "Bytes kept in user space or pipes."},
    {"close", (PyCFunction)engine_close, METH_NOARGS, "Close every connection and the set."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef engine_getset[] = {
    {"open", (getter)engine_get_open, NULL, "Connections held.", NULL},
    {"pipes", (getter)engine_get_pipes, NULL, "Empty pipes kept for reuse.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tcpmesh.dataplane._engine.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One worker's accept/connect/relay engine over one epoll set.",
    .tp_new = engine_new,
    .tp_init = (initproc)engine_init,
    .tp_dealloc = (destructor)engine_dealloc,
    .tp_methods = engine_methods,
    .tp_getset = engine_getset,
};

static struct PyModuleDef engine_module = {
    PyModuleDef_HEAD_INIT, "_engine", "The C accept/connect/relay path (see _engine.c).", -1,
};

PyMODINIT_FUNC PyInit__engine(void) {
    if (PyType_Ready(&EngineType) < 0) return NULL;
    PyObject *m = PyModule_Create(&engine_module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Engine", (PyObject *)&EngineType) < 0 ||
        PyModule_AddIntConstant(m, "ACCEPTED", EV_ACCEPTED) < 0 ||
        PyModule_AddIntConstant(m, "CONNECTED", EV_CONNECTED) < 0 ||
        PyModule_AddIntConstant(m, "CONNECT_FAILED", EV_CONNECT_FAILED) < 0 ||
        PyModule_AddIntConstant(m, "CLOSED", EV_CLOSED) < 0 ||
        PyModule_AddIntConstant(m, "DONE", CONNECT_DONE) < 0 ||
        PyModule_AddIntConstant(m, "PENDING", CONNECT_PENDING) < 0 ||
        PyModule_AddIntConstant(m, "FAILED", CONNECT_FAILED_NOW) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
