/*
 * sans_io.c: Pierce's sans-IO layer driven from plain C over the program's own POSIX UDP
 * sockets and its own monotonic clock; the C twin of core/examples/drive.rs (in-process
 * mode). The library never touches a socket or a clock here: every datagram goes in with
 * `*_handle_datagram`, every transmit comes out of `*_poll_transmit` and leaves through
 * `sendto()` on the socket it names, every socket the endpoint asks for is opened (or
 * refused) and reported, and the loop sleeps in `poll()` until the earliest `*_poll_timeout`
 * or a datagram.
 *
 * One server and two clients in one process on 127.0.0.1: each client says hello to the
 * server application (echoed back), joins the room "sans-io" and sends N reliable-ordered
 * messages (a 4-byte big-endian sequence number) to the other; the run is complete when both
 * got the echo and all N from the other in order, and the other acknowledged all of theirs.
 * Then both disconnect (the server sees them leave) and everything is freed. Prints a
 * one-line JSON summary; exit status 0 only on complete, in-order delivery.
 *
 *   cc -std=c11 -Wall -Wextra -Werror -I runtime-mio/ffi/include \
 *      runtime-mio/ffi/examples/sans_io.c -L target/debug -Wl,-rpath,target/debug -lpierce \
 *      -o sans_io
 *   ./sans_io [--send N] [--timeout SECS]
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "pierce.h"

#define ROOM "sans-io"
#define HELLO "hello, server"

/* ---- the caller's clock ------------------------------------------------------------------ */

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* 1 if `r` is not an error; else prints what failed with the library's message, and 0. */
static int ok(PierceResult r, const char *what) {
    if (r >= 0) {
        return 1;
    }
    char msg[512];
    pierce_last_error_message(msg, sizeof msg);
    fprintf(stderr, "sans_io: %s: %s: %s\n", what, pierce_result_name(r), msg);
    return 0;
}

/* ---- addresses --------------------------------------------------------------------------- */

static void to_pierce(const struct sockaddr_storage *ss, PierceAddr *out) {
    memset(out, 0, sizeof *out);
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        out->family = 4;
        memcpy(out->ip, &in->sin_addr, 4);
        out->port = ntohs(in->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        out->family = 6;
        memcpy(out->ip, &in6->sin6_addr, 16);
        out->port = ntohs(in6->sin6_port);
    }
}

static socklen_t from_pierce(const PierceAddr *a, struct sockaddr_storage *out) {
    memset(out, 0, sizeof *out);
    if (a->family == 4) {
        struct sockaddr_in *in = (struct sockaddr_in *)out;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, a->ip, 4);
        in->sin_port = htons(a->port);
        return sizeof *in;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
    in6->sin6_family = AF_INET6;
    memcpy(&in6->sin6_addr, a->ip, 16);
    in6->sin6_port = htons(a->port);
    return sizeof *in6;
}

/* Makes socket `fd` (of `family`) send every datagram whole: Don't Fragment set, never
 * fragmented on this host, so a path-MTU probe of the library (RFC 8899: it starts every path
 * at 1200 bytes and probes up to PIERCE_MAX_DATAGRAM_SIZE) arrives as one packet or not at all.
 * Linux: IP_PMTUDISC_PROBE (not _DO: the kernel's cached path MTU must not cap the probes
 * either), and IPV6_PMTUDISC_PROBE on an IPv6 socket; macOS: IP_DONTFRAG / IPV6_DONTFRAG.
 * Elsewhere nothing is set. 0 on success. */
static int send_whole(int fd, int family) {
    int v4 = 0, v6 = 0;
    int v4_opt = -1, v6_opt = -1;
#if defined(IP_MTU_DISCOVER) && defined(IP_PMTUDISC_PROBE)
    v4 = IP_PMTUDISC_PROBE, v4_opt = IP_MTU_DISCOVER;
#elif defined(IP_DONTFRAG)
    v4 = 1, v4_opt = IP_DONTFRAG;
#endif
#if defined(IPV6_MTU_DISCOVER) && defined(IPV6_PMTUDISC_PROBE)
    v6 = IPV6_PMTUDISC_PROBE, v6_opt = IPV6_MTU_DISCOVER;
#elif defined(IPV6_DONTFRAG)
    v6 = 1, v6_opt = IPV6_DONTFRAG;
#endif
    if (family == AF_INET6) {
        if (v6_opt >= 0 && setsockopt(fd, IPPROTO_IPV6, v6_opt, &v6, sizeof v6) != 0) {
            return -1;
        }
        /* (For IPv4-mapped destinations of a dual-stack socket; a v6-only one refuses it.) */
        if (v4_opt >= 0) {
            (void)setsockopt(fd, IPPROTO_IP, v4_opt, &v4, sizeof v4);
        }
        return 0;
    }
    if (v4_opt >= 0 && setsockopt(fd, IPPROTO_IP, v4_opt, &v4, sizeof v4) != 0) {
        return -1;
    }
    return 0;
}

/* A non-blocking UDP socket bound at `at`, sending whole datagrams (send_whole); its bound
 * address into `*local`. -1 on failure. */
static int udp_bind(const PierceAddr *at, PierceAddr *local) {
    struct sockaddr_storage ss;
    socklen_t len = from_pierce(at, &ss);
    int fd = socket(ss.ss_family, SOCK_DGRAM, 0);
    if (fd < 0) {
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || send_whole(fd, ss.ss_family) != 0 ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
        close(fd);
        return -1;
    }
    len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
        close(fd);
        return -1;
    }
    to_pierce(&ss, local);
    return fd;
}

/* ---- one endpoint (a server or a client) and its sockets ---------------------------------- */

struct sock {
    uint16_t id;
    int fd;
};

struct endpoint {
    const char *name;
    PierceServer *server; /* one of these two */
    PierceClient *client;
    PierceAddr primary;   /* the primary socket's address */
    struct sock *socks;
    size_t n_socks, cap_socks;
    uint64_t extra_opened;
};

static int add_sock(struct endpoint *e, uint16_t id, int fd) {
    if (e->n_socks == e->cap_socks) {
        size_t cap = e->cap_socks ? e->cap_socks * 2 : 4;
        struct sock *s = realloc(e->socks, cap * sizeof *s);
        if (s == NULL) {
            return 0;
        }
        e->socks = s;
        e->cap_socks = cap;
    }
    e->socks[e->n_socks++] = (struct sock){.id = id, .fd = fd};
    return 1;
}

static void close_sock(struct endpoint *e, uint16_t id) {
    for (size_t i = 0; i < e->n_socks; i++) {
        if (e->socks[i].id == id) {
            close(e->socks[i].fd);
            e->socks[i] = e->socks[--e->n_socks];
            return;
        }
    }
}

static void close_all(struct endpoint *e) {
    for (size_t i = 0; i < e->n_socks; i++) {
        close(e->socks[i].fd);
    }
    free(e->socks);
    e->socks = NULL;
    e->n_socks = e->cap_socks = 0;
}

/* The five verbs, whichever kind the endpoint is. */
static PierceResult handle_datagram(struct endpoint *e, uint64_t now, uint16_t id,
                                    const PierceAddr *from, const uint8_t *b, size_t n) {
    return e->server ? pierce_server_handle_datagram(e->server, now, id, from, b, n)
                     : pierce_client_handle_datagram(e->client, now, id, from, b, n);
}

static PierceResult handle_timeout(struct endpoint *e, uint64_t now) {
    return e->server ? pierce_server_handle_timeout(e->server, now)
                     : pierce_client_handle_timeout(e->client, now);
}

static PierceResult poll_transmit(struct endpoint *e, uint64_t now, uint8_t *buf, size_t cap,
                                  PierceTransmit *t) {
    return e->server ? pierce_server_poll_transmit(e->server, now, buf, cap, t)
                     : pierce_client_poll_transmit(e->client, now, buf, cap, t);
}

static PierceResult poll_timeout(struct endpoint *e, uint64_t *at) {
    return e->server ? pierce_server_poll_timeout(e->server, at)
                     : pierce_client_poll_timeout(e->client, at);
}

static PierceResult poll_socket_request(struct endpoint *e, PierceSocketRequest *r) {
    return e->server ? pierce_server_poll_socket_request(e->server, r)
                     : pierce_client_poll_socket_request(e->client, r);
}

static PierceResult handle_socket_opened(struct endpoint *e, uint64_t now, uint16_t id,
                                         const PierceAddr *local) {
    return e->server ? pierce_server_handle_socket_opened(e->server, now, id, local)
                     : pierce_client_handle_socket_opened(e->client, now, id, local);
}

/* Carries out the sockets the endpoint asks for: UDP sockets are opened (at the address
 * asked for, or the primary socket's IP with any port) and closed. This example runs UDP
 * only (the clients' transport is PIERCE_TRANSPORT_UDP), so a TCP connect is reported as
 * failed, as a network that blocks TCP would. */
static int serve_requests(struct endpoint *e, uint64_t now) {
    PierceSocketRequest r;
    PierceResult res;
    while ((res = poll_socket_request(e, &r)) == PIERCE_OK) {
        if (r.kind == PIERCE_SOCKET_OPEN) {
            PierceAddr at = e->primary, local;
            at.port = 0;
            if (r.has_addr) {
                at = r.addr;
            }
            int fd = udp_bind(&at, &local);
            if (fd >= 0 && !add_sock(e, r.socket, fd)) {
                close(fd);
                fd = -1;
            }
            e->extra_opened += fd >= 0;
            if (!ok(handle_socket_opened(e, now, r.socket, fd >= 0 ? &local : NULL),
                    "handle_socket_opened")) {
                return 0;
            }
        } else if (r.kind == PIERCE_SOCKET_CLOSE) {
            close_sock(e, r.socket);
        } else if (r.kind == PIERCE_SOCKET_CONNECT || r.kind == PIERCE_SOCKET_CONNECT_RAW) {
            if (!ok(handle_socket_opened(e, now, r.socket, NULL), "handle_socket_opened")) {
                return 0;
            }
        }
    }
    return ok(res, "poll_socket_request");
}

/* Every datagram waiting on any of the endpoint's sockets, handed in. */
static int receive(struct endpoint *e, uint64_t now) {
    static uint8_t buf[65536];
    for (size_t i = 0; i < e->n_socks; i++) {
        for (;;) {
            struct sockaddr_storage from;
            socklen_t len = sizeof from;
            ssize_t n = recvfrom(e->socks[i].fd, buf, sizeof buf, 0, (struct sockaddr *)&from,
                                 &len);
            if (n < 0) {
                break; /* EAGAIN: nothing more (a stray ICMP error: the same, for this turn) */
            }
            PierceAddr a;
            to_pierce(&from, &a);
            if (!ok(handle_datagram(e, now, e->socks[i].id, &a, buf, (size_t)n),
                    "handle_datagram")) {
                return 0;
            }
        }
    }
    return 1;
}

/* Sends one datagram; with a TTL (a hole-punching opener), with that TTL and the default put
 * back after, or not at all if the socket refuses it (never with the default TTL). A send
 * that fails (EMSGSIZE: a path-MTU probe larger than the interface; an unreachable address) is
 * dropped, never retried: to the library it is a datagram lost on the way. */
static void send_one(int fd, const uint8_t *buf, size_t len, const struct sockaddr *to,
                     socklen_t to_len, uint8_t ttl) {
    if (ttl == 0) {
        (void)sendto(fd, buf, len, 0, to, to_len);
        return;
    }
    int value = ttl, reset = -1;
    int v6 = to->sa_family == AF_INET6;
    int level = v6 ? IPPROTO_IPV6 : IPPROTO_IP, opt = v6 ? IPV6_UNICAST_HOPS : IP_TTL;
    if (setsockopt(fd, level, opt, &value, sizeof value) != 0) {
        return;
    }
    (void)sendto(fd, buf, len, 0, to, to_len);
    (void)setsockopt(fd, level, opt, &reset, sizeof reset);
}

/* Drains socket requests and transmits; each transmit leaves from the socket it names (one
 * that is not open any more: dropped, like a datagram lost on the way). */
static int flush(struct endpoint *e, uint64_t now) {
    uint8_t buf[PIERCE_MAX_DATAGRAM_SIZE];
    PierceTransmit t;
    PierceResult res;
    if (!serve_requests(e, now)) {
        return 0;
    }
    while ((res = poll_transmit(e, now, buf, sizeof buf, &t)) == PIERCE_OK) {
        for (size_t i = 0; i < e->n_socks; i++) {
            if (e->socks[i].id == t.socket) {
                struct sockaddr_storage to;
                socklen_t len = from_pierce(&t.dst, &to);
                send_one(e->socks[i].fd, buf, t.len, (struct sockaddr *)&to, len, t.ttl);
                break;
            }
        }
        if (!serve_requests(e, now)) {
            return 0;
        }
    }
    return ok(res, "poll_transmit");
}

/* One turn for one endpoint: inputs, timers, outputs. */
static int turn(struct endpoint *e, uint64_t now) {
    uint64_t at;
    if (!receive(e, now)) {
        return 0;
    }
    PierceResult res = poll_timeout(e, &at);
    if (!ok(res, "poll_timeout")) {
        return 0;
    }
    if (res == PIERCE_OK && at <= now && !ok(handle_timeout(e, now), "handle_timeout")) {
        return 0;
    }
    return flush(e, now);
}

/* ---- the application --------------------------------------------------------------------- */

struct player {
    struct endpoint ep;
    uint64_t me, peer;
    int connected, have_peer, echoed, direct;
    uint32_t sent, received;
    int in_order;
};

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* The client's events; 0 on a failure that ends the run. */
static int client_events(struct player *p, uint64_t now, uint32_t count) {
    PierceClientEvent ev;
    PierceResult res;
    while ((res = pierce_client_poll_event(p->ep.client, &ev)) == PIERCE_OK) {
        switch (ev.kind) {
        case PIERCE_CLIENT_EVENT_CONNECTED:
            p->connected = 1;
            p->me = ev.host;
            if (!ok(pierce_client_send_to_server(p->ep.client, now, (const uint8_t *)HELLO,
                                                 strlen(HELLO), 1),
                    "send_to_server") ||
                !ok(pierce_client_join_room(p->ep.client, now, ROOM, NULL, 1, 2, 0),
                    "join_room")) {
                return 0;
            }
            break;
        case PIERCE_CLIENT_EVENT_DISCONNECTED:
            fprintf(stderr, "sans_io: %s disconnected (reason %u)\n", p->ep.name,
                    (unsigned)ev.reason);
            return 0;
        case PIERCE_CLIENT_EVENT_ROOM_FAILED:
            fprintf(stderr, "sans_io: %s: room error %u\n", p->ep.name, (unsigned)ev.code);
            return 0;
        case PIERCE_CLIENT_EVENT_SERVER_MESSAGE:
            p->echoed += ev.payload_len == strlen(HELLO) &&
                         memcmp(ev.payload, HELLO, ev.payload_len) == 0;
            break;
        case PIERCE_CLIENT_EVENT_MEMBER_JOINED:
            if (ev.host != p->me && !p->have_peer) {
                p->peer = ev.host;
                p->have_peer = 1;
            }
            break;
        case PIERCE_CLIENT_EVENT_PEER_MESSAGE:
            if (p->have_peer && ev.host == p->peer && ev.payload_len == 4) {
                uint32_t seq = be32(ev.payload);
                p->in_order &= seq == p->received && ev.channel == PIERCE_CHANNEL_RELIABLE_ORDERED;
                p->received++;
            } else {
                p->in_order = 0;
            }
            break;
        case PIERCE_CLIENT_EVENT_PATH_CHANGED:
            if (ev.host == p->peer) {
                p->direct = ev.direct;
            }
            break;
        case PIERCE_CLIENT_EVENT_MESSAGE_EXPIRED:
            fprintf(stderr, "sans_io: %s: message %llu expired\n", p->ep.name,
                    (unsigned long long)ev.message_id);
            return 0;
        default:
            break;
        }
    }
    if (!ok(res, "client poll_event")) {
        return 0;
    }
    /* The N messages, as far as the send queue takes them. */
    while (p->have_peer && p->sent < count) {
        uint8_t msg[4];
        put_be32(msg, p->sent);
        res = pierce_client_send(p->ep.client, now, p->peer, PIERCE_CHANNEL_RELIABLE_ORDERED, msg,
                                 sizeof msg, NULL, NULL);
        if (res == PIERCE_QUEUE_FULL) {
            break; /* the next transmits make room */
        }
        if (!ok(res, "send")) {
            return 0;
        }
        p->sent++;
    }
    return 1;
}

/* The server's events: application messages are echoed. Counts clients that left. */
static int server_events(struct endpoint *s, uint64_t now, int *left) {
    PierceServerEvent ev;
    PierceResult res;
    while ((res = pierce_server_poll_event(s->server, &ev)) == PIERCE_OK) {
        if (ev.kind == PIERCE_SERVER_EVENT_MESSAGE &&
            !ok(pierce_server_send(s->server, now, ev.host, ev.payload, ev.payload_len, 1),
                "server_send")) {
            return 0;
        }
        *left += ev.kind == PIERCE_SERVER_EVENT_CLIENT_LEFT;
    }
    return ok(res, "server poll_event");
}

/* Everything arrived and everything sent was acknowledged. */
static int done(struct player *p, uint32_t count) {
    if (!(p->echoed == 1 && p->received == count && p->sent == count)) {
        return 0;
    }
    PiercePeerStats s;
    if (!ok(pierce_client_peer_stats(p->ep.client, p->peer, &s), "peer_stats")) {
        return 0;
    }
    p->direct = s.direct;
    return s.unacked == 0 && s.queued_bytes == 0;
}

/* Waits in poll() on every socket until a datagram or the earliest deadline (at most 50 ms,
 * so the loop looks at its own timeout too). */
static int wait_for_input(struct endpoint **eps, size_t n, uint64_t now) {
    size_t total = 0;
    uint64_t wait = 50000;
    for (size_t i = 0; i < n; i++) {
        uint64_t at;
        PierceResult res = poll_timeout(eps[i], &at);
        if (!ok(res, "poll_timeout")) {
            return 0;
        }
        if (res == PIERCE_OK) {
            uint64_t in = at > now ? at - now : 0;
            wait = in < wait ? in : wait;
        }
        total += eps[i]->n_socks;
    }
    struct pollfd *fds = calloc(total ? total : 1, sizeof *fds);
    if (fds == NULL) {
        fprintf(stderr, "sans_io: out of memory\n");
        return 0;
    }
    nfds_t nfds = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < eps[i]->n_socks; j++) {
            fds[nfds++] = (struct pollfd){.fd = eps[i]->socks[j].fd, .events = POLLIN};
        }
    }
    /* Round up: waking before the deadline would only spin. */
    int polled = poll(fds, nfds, (int)((wait + 999) / 1000));
    free(fds);
    if (polled < 0 && errno != EINTR) {
        perror("sans_io: poll");
        return 0;
    }
    return 1;
}

static int run(struct endpoint *server, struct player *players, uint32_t count,
               unsigned timeout_s, int *left) {
    uint64_t start = now_us();
    PierceAddr loopback = {.family = 4, .ip = {127, 0, 0, 1}, .port = 0};

    PierceServerConfig scfg;
    if (!ok(pierce_server_config_default(&scfg), "server_config_default") ||
        !ok(pierce_server_new(&scfg, NULL, start, 0, &server->server), "server_new")) {
        return 0;
    }
    int fd = udp_bind(&loopback, &server->primary);
    if (fd < 0 || !add_sock(server, PIERCE_SOCKET_PRIMARY, fd)) {
        perror("sans_io: server socket");
        if (fd >= 0) close(fd);
        return 0;
    }
    PierceClientConfig ccfg;
    if (!ok(pierce_client_config_default(&ccfg), "client_config_default") ||
        !ok(pierce_server_public_key(server->server, ccfg.server_key), "public_key")) {
        return 0;
    }
    ccfg.pin_server_key = 1;
    ccfg.transport = PIERCE_TRANSPORT_UDP;
    for (int i = 0; i < 2; i++) {
        struct player *p = &players[i];
        if (!ok(pierce_client_new(&ccfg, NULL, start, &p->ep.client), "client_new")) {
            return 0;
        }
        fd = udp_bind(&loopback, &p->ep.primary);
        if (fd < 0 || !add_sock(&p->ep, PIERCE_SOCKET_PRIMARY, fd)) {
            perror("sans_io: client socket");
            if (fd >= 0) close(fd);
            return 0;
        }
        if (!ok(pierce_client_connect(p->ep.client, start, &server->primary, NULL, 0),
                "connect")) {
            return 0;
        }
    }
    struct endpoint *eps[3] = {server, &players[0].ep, &players[1].ep};
    uint64_t deadline = start + (uint64_t)timeout_s * 1000000u;
    int complete = 0;
    while (!complete) {
        uint64_t now = now_us();
        if (now >= deadline) {
            fprintf(stderr, "sans_io: timed out\n");
            return 0;
        }
        for (size_t i = 0; i < 3; i++) {
            if (!turn(eps[i], now)) {
                return 0;
            }
        }
        if (!server_events(server, now, left) || !client_events(&players[0], now, count) ||
            !client_events(&players[1], now, count)) {
            return 0;
        }
        /* What the events queued goes out now, not a turn later. */
        for (size_t i = 0; i < 3; i++) {
            if (!flush(eps[i], now)) {
                return 0;
            }
        }
        complete = done(&players[0], count) && done(&players[1], count);
        if (!complete && !wait_for_input(eps, 3, now_us())) {
            return 0;
        }
    }
    /* Both leave; the server must see it. */
    for (int i = 0; i < 2; i++) {
        uint64_t now = now_us();
        if (!ok(pierce_client_disconnect(players[i].ep.client, now, 0), "disconnect") ||
            !flush(&players[i].ep, now)) {
            return 0;
        }
    }
    while (*left < 2 && now_us() < deadline) {
        uint64_t now = now_us();
        if (!turn(server, now) || !server_events(server, now, left) ||
            !wait_for_input(eps, 1, now)) {
            return 0;
        }
    }
    return *left == 2;
}

int main(int argc, char **argv) {
    unsigned long count = 100, timeout_s = 20;
    for (int i = 1; i + 1 < argc; i += 2) {
        unsigned long *v = strcmp(argv[i], "--send") == 0      ? &count
                           : strcmp(argv[i], "--timeout") == 0 ? &timeout_s
                                                               : NULL;
        char *end;
        if (v == NULL || (*v = strtoul(argv[i + 1], &end, 10), *end != '\0')) {
            fprintf(stderr, "usage: sans_io [--send N] [--timeout SECS]\n");
            return 2;
        }
    }
    if (argc % 2 == 0 || count > 1000000 || timeout_s == 0 || timeout_s > 86400) {
        fprintf(stderr, "usage: sans_io [--send N (at most 1000000)] [--timeout SECS]\n");
        return 2;
    }
    if (!ok(pierce_check_version(PIERCE_ABI_VERSION), "check_version")) {
        return 1;
    }
    struct endpoint server = {.name = "server"};
    struct player players[2] = {{.ep = {.name = "client 0"}, .in_order = 1},
                                {.ep = {.name = "client 1"}, .in_order = 1}};
    int left = 0;
    int good = run(&server, players, (uint32_t)count, (unsigned)timeout_s, &left);
    for (int i = 0; i < 2; i++) {
        good &= players[i].in_order;
    }
    printf("{\"event\":\"summary\",\"ok\":%s,\"program\":\"sans_io\",\"send\":%lu,"
           "\"server_saw_left\":%d,\"clients\":[",
           good ? "true" : "false", count, left);
    for (int i = 0; i < 2; i++) {
        const struct player *p = &players[i];
        printf("%s{\"echoed\":%d,\"sent\":%lu,\"received\":%lu,\"in_order\":%s,\"path\":\"%s\","
               "\"extra_sockets_opened\":%llu}",
               i ? "," : "", p->echoed, (unsigned long)p->sent, (unsigned long)p->received,
               p->in_order ? "true" : "false", p->direct ? "direct" : "relay",
               (unsigned long long)p->ep.extra_opened);
    }
    printf("]}\n");
    /* Free everything, whatever happened. */
    for (int i = 0; i < 2; i++) {
        good &= ok(pierce_client_free(players[i].ep.client), "client_free");
        close_all(&players[i].ep);
    }
    good &= ok(pierce_server_free(server.server), "server_free");
    close_all(&server);
    return good ? 0 : 1;
}
