/* tcp_relay: the control experiment of tests/bench/ssh_bench.py --relay.
 *
 * A plain TCP relay: one thread, one epoll loop, no TLS, no WebSocket, no
 * SSH (the client's SSH passes through it end to end). It is the least
 * that any gateway on one event loop must do for a keystroke: wake up for
 * the client's packet, send it on, wake up for the VM's answer, send it
 * back. What it adds to the direct path on this machine is a floor that
 * no single-loop gateway can go under; the bench shows it next to what
 * posternd adds.
 *
 *   tcp_relay --listen-port N --to-port M     (both on 127.0.0.1)
 *
 * Prints "listening\n" on stdout when ready; runs until killed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE 65536

/* One direction of a connection pair: bytes read from `fd` wait in buf
 * until the peer can take them. */
typedef struct end {
    int fd;
    struct end *peer;
    char buf[BUF_SIZE]; /* read from fd, not yet written to peer->fd */
    size_t len, off;
    int closed;
    struct end *next_dead;
} end;

static int ep;
/* Pairs closed during an epoll batch: freed after it, since the batch may
 * still hold the other end's event. */
static end *dead;

static void die(const char *what)
{
    fprintf(stderr, "tcp_relay: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void tune(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void watch(end *e, int op)
{
    /* Read while there is room; wait for POLLOUT while a write is owed. */
    struct epoll_event ev = {.data.ptr = e};
    ev.events = (e->len == 0 ? EPOLLIN : 0) | (e->peer->len ? EPOLLOUT : 0);
    if (epoll_ctl(ep, op, e->fd, &ev) != 0)
        die("epoll_ctl");
}

static void close_pair(end *e)
{
    end *p = e->peer, *base = e < p ? e : p; /* the two ends are one allocation */
    close(e->fd);
    close(p->fd);
    e->closed = p->closed = 1;
    base->next_dead = dead;
    dead = base;
}

/* Writes what `from` holds to its peer; 0, or -1 on a dead connection. */
static int flush(end *from)
{
    while (from->len) {
        ssize_t w = send(from->peer->fd, from->buf + from->off, from->len, MSG_NOSIGNAL);
        if (w < 0)
            return errno == EAGAIN ? 0 : -1;
        from->off += (size_t)w;
        from->len -= (size_t)w;
    }
    from->off = 0;
    return 0;
}

static void on_event(end *e, unsigned events)
{
    end *p = e->peer;
    if (e->closed)
        return;
    int was_full = e->len != 0, peer_owed = p->len != 0;
    if ((events & EPOLLOUT) && flush(p) != 0) {
        close_pair(e);
        return;
    }
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && e->len == 0) {
        ssize_t n = recv(e->fd, e->buf, sizeof(e->buf), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN)) {
            close_pair(e);
            return;
        }
        if (n > 0) {
            e->len = (size_t)n;
            if (flush(e) != 0) {
                close_pair(e);
                return;
            }
        }
    }
    /* Re-arm only where interest changed: no epoll_ctl per keystroke. */
    if ((e->len != 0) != was_full || (p->len != 0) != peer_owed) {
        watch(e, EPOLL_CTL_MOD);
        watch(p, EPOLL_CTL_MOD);
    }
}

int main(int argc, char **argv)
{
    int listen_port = 0, to_port = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--listen-port"))
            listen_port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--to-port"))
            to_port = atoi(argv[i + 1]);
    }
    if (!listen_port || !to_port) {
        fprintf(stderr, "usage: tcp_relay --listen-port N --to-port M\n");
        return 2;
    }
    struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = htons((uint16_t)listen_port)};
    struct sockaddr_in ta = {.sin_family = AF_INET, .sin_port = htons((uint16_t)to_port)};
    inet_pton(AF_INET, "127.0.0.1", &la.sin_addr);
    ta.sin_addr = la.sin_addr;
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ls < 0 || bind(ls, (struct sockaddr *)&la, sizeof(la)) != 0 || listen(ls, 1024) != 0)
        die("listen");
    ep = epoll_create1(0);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ls, &lev) != 0)
        die("epoll");
    printf("listening\n");
    fflush(stdout);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr) {
                on_event(evs[i].data.ptr, evs[i].events);
                continue;
            }
            int c = accept(ls, NULL, NULL);
            if (c < 0)
                continue;
            /* The VM side is connected blocking: loopback, set-up only. */
            int v = socket(AF_INET, SOCK_STREAM, 0);
            if (v < 0 || connect(v, (struct sockaddr *)&ta, sizeof(ta)) != 0) {
                close(c);
                if (v >= 0)
                    close(v);
                continue;
            }
            end *pair = calloc(2, sizeof(end));
            if (!pair)
                die("calloc");
            pair[0].fd = c;
            pair[1].fd = v;
            pair[0].peer = &pair[1];
            pair[1].peer = &pair[0];
            tune(c);
            tune(v);
            watch(&pair[0], EPOLL_CTL_ADD);
            watch(&pair[1], EPOLL_CTL_ADD);
        }
        while (dead) {
            end *d = dead;
            dead = d->next_dead;
            free(d);
        }
    }
}
