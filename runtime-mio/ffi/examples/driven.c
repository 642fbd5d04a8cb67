/*
 * driven.c: a room member in plain C on Pierce's driven layer (`pierce_driver_*`: the library
 * owns the UDP socket and the loop's waiting, like enet_host_service), speaking the message
 * contract of `pierce peer` (see `pierce peer --help`), so it can share a room with them:
 *
 *   H<name>             hello, first to every member (channel 0, reliable-ordered)
 *   D<u32 seq><filler>  SIZE bytes, filler byte i = (seq + i) mod 256 (channel 0)
 *   G<u32 count>        "I got COUNT of yours", once all N arrived (channel 0)
 *
 * It connects to a `pierce server`, joins (or creates) a room, waits for K other members,
 * sends each a hello and N messages, and waits until N arrived in order from each, each
 * confirmed ours (G) and the library has every one of ours acknowledged; then it leaves and
 * prints a one-line JSON summary like `pierce peer`'s. Exit status 0 only on complete,
 * in-order delivery; 1 otherwise; 2 for bad arguments.
 *
 *   cc -std=c11 -Wall -Wextra -Werror -I runtime-mio/ffi/include \
 *      runtime-mio/ffi/examples/driven.c -L target/debug -Wl,-rpath,target/debug -lpierce \
 *      -o driven
 *   ./driven --server 127.0.0.1:7777 --room lobby --peers 2 [--send N] [--size BYTES]
 *            [--name NAME] [--server-key HEX] [--password P] [--timeout SECS]
 */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pierce.h"

#define MAX_REMOTES 63 /* a `pierce server` room holds 64 */
#define MAX_NAME 64
#define MIN_SIZE 5 /* the tag and the sequence number */
#define MAX_SIZE 65536

/* What this member knows about one other. */
struct remote {
    uint64_t host;
    int target;    /* one of the members we exchange with */
    int left;
    int named;     /* its hello arrived */
    char name[MAX_NAME + 1];
    uint32_t received;
    uint32_t last_seq;
    int any_seq;
    int in_order;
    uint32_t corrupt;
    int their_got_known; /* its G arrived */
    uint32_t their_got;
    int hello_sent;
    uint32_t next_seq; /* our next D to it */
    int got_sent;      /* our G went to the library */
    int direct;
    uint64_t unacked;  /* from the last peer stats */
    uint64_t queued_bytes;
};

struct args {
    const char *server;
    const char *room;
    const char *password;
    const char *name;
    const char *server_key;
    unsigned peers;
    uint32_t count;
    size_t size;
    unsigned timeout_s;
};

struct member {
    struct args a;
    PierceDriverClient *d;
    uint64_t me;
    int connected;
    uint64_t group;
    int in_room;
    int exchanging;
    struct remote remotes[MAX_REMOTES];
    size_t n_remotes;
    uint64_t expired;
    char failure[512];
    uint8_t *buf; /* one outgoing message */
};

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* 1 if `r` is not an error; else prints what failed with the library's message, and 0. */
static int ok(PierceResult r, const char *what) {
    if (r >= 0) {
        return 1;
    }
    char msg[512];
    pierce_last_error_message(msg, sizeof msg);
    fprintf(stderr, "driven: %s: %s: %s\n", what, pierce_result_name(r), msg);
    return 0;
}

static void fail(struct member *m, const char *why) {
    if (m->failure[0] == '\0') {
        snprintf(m->failure, sizeof m->failure, "%s", why);
    }
}

static struct remote *find(struct member *m, uint64_t host) {
    for (size_t i = 0; i < m->n_remotes; i++) {
        if (m->remotes[i].host == host) {
            return &m->remotes[i];
        }
    }
    return NULL;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* The message bytes of a member's event: the contract's H, D and G. */
static void on_message(struct member *m, struct remote *r, uint8_t channel, const uint8_t *p,
                       size_t len) {
    if (len == 0 || channel != PIERCE_CHANNEL_RELIABLE_ORDERED) {
        r->corrupt++;
        return;
    }
    if (p[0] == 'H' && !r->named) {
        size_t n = len - 1 > MAX_NAME ? MAX_NAME : len - 1;
        memcpy(r->name, p + 1, n);
        r->name[n] = '\0';
        r->named = 1;
    } else if (p[0] == 'D' && len == m->a.size) {
        uint32_t seq = be32(p + 1);
        for (size_t i = MIN_SIZE; i < len; i++) {
            if (p[i] != (uint8_t)(seq + (uint32_t)(i - MIN_SIZE))) {
                r->corrupt++;
                return;
            }
        }
        if (seq >= m->a.count || (r->any_seq && seq <= r->last_seq)) {
            r->in_order = 0; /* a duplicate or out of order: reliable-ordered promises neither */
        }
        if (seq >= m->a.count) {
            r->corrupt++;
            return;
        }
        r->received++;
        r->last_seq = seq;
        r->any_seq = 1;
    } else if (p[0] == 'G' && len == 5) {
        r->their_got = be32(p + 1);
        r->their_got_known = 1;
    } else {
        r->corrupt++;
    }
}

static void handle_event(struct member *m, const PierceClientEvent *e) {
    struct remote *r;
    switch (e->kind) {
    case PIERCE_CLIENT_EVENT_CONNECTED:
        if (!m->connected) {
            m->connected = 1;
            m->me = e->host;
            /* A room of K + 1 if we create it (as `pierce peer` does). */
            if (!ok(pierce_driver_client_join_room(m->d, m->a.room, m->a.password, 1,
                                                   (uint16_t)(m->a.peers + 1), 0),
                    "join_room")) {
                fail(m, "cannot join the room");
            }
        }
        break;
    case PIERCE_CLIENT_EVENT_DISCONNECTED:
        if (e->reason != PIERCE_DISCONNECT_RESET) {
            char why[96];
            snprintf(why, sizeof why, "disconnected (reason %u, code %u)", (unsigned)e->reason,
                     (unsigned)e->code);
            fail(m, why);
        }
        break;
    case PIERCE_CLIENT_EVENT_ROOM_JOINED:
        if (e->name != NULL && strcmp(e->name, m->a.room) == 0) {
            m->group = e->group;
            m->in_room = 1;
        }
        break;
    case PIERCE_CLIENT_EVENT_ROOM_FAILED: {
        char why[96];
        snprintf(why, sizeof why, "room operation %u failed: room error %u",
                 (unsigned)e->reason, (unsigned)e->code);
        fail(m, why);
        break;
    }
    case PIERCE_CLIENT_EVENT_MEMBER_JOINED:
        if (m->in_room && e->group == m->group && e->host != m->me && find(m, e->host) == NULL &&
            m->n_remotes < MAX_REMOTES) {
            r = &m->remotes[m->n_remotes++];
            memset(r, 0, sizeof *r);
            r->host = e->host;
            r->in_order = 1;
        }
        break;
    case PIERCE_CLIENT_EVENT_MEMBER_LEFT:
        if (e->group != m->group) {
            break;
        }
        if (e->host == m->me) {
            fail(m, "removed from the room");
        } else if ((r = find(m, e->host)) != NULL) {
            r->left = 1;
            if (r->target && !(r->received == m->a.count && r->their_got_known)) {
                fail(m, "a member left before the exchange was complete");
            }
        }
        break;
    case PIERCE_CLIENT_EVENT_GROUP_DESTROYED:
        if (e->group == m->group) {
            fail(m, "the server destroyed the room");
        }
        break;
    case PIERCE_CLIENT_EVENT_PEER_MESSAGE:
        if ((r = find(m, e->host)) != NULL) {
            on_message(m, r, e->channel, e->payload, e->payload_len);
        }
        break;
    case PIERCE_CLIENT_EVENT_PATH_CHANGED:
        if ((r = find(m, e->host)) != NULL) {
            r->direct = e->direct;
        }
        break;
    case PIERCE_CLIENT_EVENT_MESSAGE_EXPIRED:
        if ((r = find(m, e->host)) == NULL || !r->their_got_known) {
            m->expired++;
        }
        break;
    case PIERCE_CLIENT_EVENT_PEER_DROPPED:
        if ((r = find(m, e->host)) != NULL && r->target) {
            fail(m, "the library dropped a member");
        }
        break;
    default:
        break;
    }
}

/* Sends one message; 1 if sent, 0 if the queue is full (try again after a pump), -1 failed. */
static int send_one(struct member *m, struct remote *r, size_t len) {
    PierceResult res = pierce_driver_client_send(m->d, r->host, PIERCE_CHANNEL_RELIABLE_ORDERED,
                                                 m->buf, len, NULL, NULL);
    if (res == PIERCE_QUEUE_FULL) {
        return 0;
    }
    if (res == PIERCE_UNKNOWN_PEER) {
        r->left = 1; /* it left: MEMBER_LEFT says what that means */
        return 1;
    }
    if (!ok(res, "send")) {
        fail(m, "send failed");
        return -1;
    }
    return 1;
}

/* Hellos, then payloads round-robin over the members, then a G to each member whose N all
 * arrived; as far as the library's queues take them. */
static void send_what_is_due(struct member *m) {
    for (size_t i = 0; i < m->n_remotes; i++) {
        struct remote *r = &m->remotes[i];
        if (!r->target || r->left || r->hello_sent) {
            continue;
        }
        size_t n = strlen(m->a.name);
        m->buf[0] = 'H';
        memcpy(m->buf + 1, m->a.name, n);
        int s = send_one(m, r, n + 1);
        if (s <= 0) {
            return;
        }
        r->hello_sent = 1;
    }
    for (int more = 1; more;) {
        more = 0;
        for (size_t i = 0; i < m->n_remotes; i++) {
            struct remote *r = &m->remotes[i];
            if (!r->target || r->left || r->next_seq >= m->a.count) {
                continue;
            }
            uint32_t seq = r->next_seq;
            m->buf[0] = 'D';
            put_be32(m->buf + 1, seq);
            for (size_t j = MIN_SIZE; j < m->a.size; j++) {
                m->buf[j] = (uint8_t)(seq + (uint32_t)(j - MIN_SIZE));
            }
            int s = send_one(m, r, m->a.size);
            if (s <= 0) {
                return;
            }
            r->next_seq++;
            more = 1;
        }
    }
    for (size_t i = 0; i < m->n_remotes; i++) {
        struct remote *r = &m->remotes[i];
        if (!r->target || r->left || r->got_sent || r->received != m->a.count) {
            continue;
        }
        m->buf[0] = 'G';
        put_be32(m->buf + 1, r->received);
        int s = send_one(m, r, 5);
        if (s <= 0) {
            return;
        }
        r->got_sent = 1;
    }
}

/* Every target: its hello and N payloads, our G sent, its G, and nothing of ours pending. */
static int complete(struct member *m) {
    if (!m->exchanging) {
        return 0;
    }
    for (size_t i = 0; i < m->n_remotes; i++) {
        struct remote *r = &m->remotes[i];
        if (!r->target) {
            continue;
        }
        int flushed = r->left || (r->unacked == 0 && r->queued_bytes == 0);
        if (!(r->named && r->received == m->a.count && r->got_sent && r->their_got_known &&
              r->next_seq == m->a.count && flushed)) {
            return 0;
        }
    }
    return 1;
}

/* Reads every target's acknowledgement state from the library. */
static void refresh_stats(struct member *m) {
    for (size_t i = 0; i < m->n_remotes; i++) {
        struct remote *r = &m->remotes[i];
        if (!r->target || r->left) {
            continue;
        }
        PiercePeerStats s;
        PierceResult res = pierce_driver_client_peer_stats(m->d, r->host, &s);
        if (res == PIERCE_UNKNOWN_PEER) {
            r->unacked = 0;
            r->queued_bytes = 0;
            continue;
        }
        if (!ok(res, "peer_stats")) {
            fail(m, "peer_stats failed");
            return;
        }
        r->unacked = s.unacked;
        r->queued_bytes = s.queued_bytes;
        r->direct = s.direct;
    }
}

static int success(const struct member *m) {
    if (m->failure[0] != '\0' || m->expired != 0 || !m->exchanging) {
        return 0;
    }
    for (size_t i = 0; i < m->n_remotes; i++) {
        const struct remote *r = &m->remotes[i];
        if (r->target && !(r->named && r->corrupt == 0 && r->received == m->a.count &&
                           r->in_order && r->their_got_known && r->their_got == m->a.count)) {
            return 0;
        }
    }
    return 1;
}

/* `s` as a JSON string (bytes outside printable ASCII become '?'). */
static void json_str(const char *s) {
    putchar('"');
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            printf("\\%c", c);
        } else if (c < 0x20 || c >= 0x7f) {
            putchar('?');
        } else {
            putchar(c);
        }
    }
    putchar('"');
}

static void summary(const struct member *m) {
    printf("{\"event\":\"summary\",\"ok\":%s,\"name\":", success(m) ? "true" : "false");
    json_str(m->a.name);
    printf(",\"peers\":[");
    int first = 1;
    for (size_t i = 0; i < m->n_remotes; i++) {
        const struct remote *r = &m->remotes[i];
        if (!r->target) {
            continue;
        }
        char fallback[32];
        snprintf(fallback, sizeof fallback, "host#%llu", (unsigned long long)r->host);
        printf("%s{\"name\":", first ? "" : ",");
        json_str(r->named ? r->name : fallback);
        printf(",\"path\":\"%s\",\"received\":%lu,\"in_order\":%s}", r->direct ? "direct" : "relay",
               (unsigned long)r->received, r->in_order ? "true" : "false");
        first = 0;
    }
    printf("]}\n");
    fflush(stdout);
}

static int parse_uint(const char *flag, const char *v, unsigned long max, unsigned long *out) {
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (errno != 0 || !isdigit((unsigned char)v[0]) || *end != '\0' || n > max) {
        fprintf(stderr, "driven: %s takes a whole number from 0 to %lu, not %s\n", flag, max, v);
        return 0;
    }
    *out = n;
    return 1;
}

static int parse_args(int argc, char **argv, struct args *a) {
    unsigned long n;
    *a = (struct args){.password = "", .name = "c", .peers = 1, .count = 10, .size = 64,
                       .timeout_s = 30};
    for (int i = 1; i < argc; i += 2) {
        const char *f = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) {
            fprintf(stderr, "driven: %s needs a value\n", f);
            return 0;
        }
        if (strcmp(f, "--server") == 0) {
            a->server = v;
        } else if (strcmp(f, "--room") == 0) {
            a->room = v;
        } else if (strcmp(f, "--password") == 0) {
            a->password = v;
        } else if (strcmp(f, "--name") == 0) {
            a->name = v;
        } else if (strcmp(f, "--server-key") == 0) {
            a->server_key = v;
        } else if (strcmp(f, "--peers") == 0) {
            if (!parse_uint(f, v, MAX_REMOTES, &n)) return 0;
            a->peers = (unsigned)n;
        } else if (strcmp(f, "--send") == 0) {
            if (!parse_uint(f, v, 10000000, &n)) return 0;
            a->count = (uint32_t)n;
        } else if (strcmp(f, "--size") == 0) {
            if (!parse_uint(f, v, MAX_SIZE, &n) || n < MIN_SIZE) {
                fprintf(stderr, "driven: --size is %d to %d bytes\n", MIN_SIZE, MAX_SIZE);
                return 0;
            }
            a->size = n;
        } else if (strcmp(f, "--timeout") == 0) {
            if (!parse_uint(f, v, 86400, &n) || n == 0) return 0;
            a->timeout_s = (unsigned)n;
        } else {
            fprintf(stderr, "driven: unknown flag %s\n", f);
            return 0;
        }
    }
    if (a->server == NULL || a->room == NULL) {
        fprintf(stderr, "usage: driven --server IP:PORT --room NAME --peers K [--send N] "
                        "[--size BYTES] [--name NAME] [--server-key HEX] [--password P] "
                        "[--timeout SECS]\n");
        return 0;
    }
    if (strlen(a->name) == 0 || strlen(a->name) > MAX_NAME) {
        fprintf(stderr, "driven: --name is 1 to %d bytes\n", MAX_NAME);
        return 0;
    }
    return 1;
}

static int parse_key(const char *hex, uint8_t key[32]) {
    if (strlen(hex) != 64) {
        return 0;
    }
    for (int i = 0; i < 32; i++) {
        char byte[3] = {hex[2 * i], hex[2 * i + 1], '\0'};
        if (!isxdigit((unsigned char)byte[0]) || !isxdigit((unsigned char)byte[1])) {
            return 0;
        }
        key[i] = (uint8_t)strtoul(byte, NULL, 16);
    }
    return 1;
}

/* Connects, runs the exchange until it completes, fails or times out; 1 on success. */
static int run(struct member *m, const PierceAddr *server) {
    PierceClientConfig config;
    if (!ok(pierce_client_config_default(&config), "client_config_default")) {
        return 0;
    }
    if (m->a.server_key != NULL) {
        parse_key(m->a.server_key, config.server_key); /* checked in main */
        config.pin_server_key = 1;
    }
    /* Any local address of the server's family, any port. */
    PierceAddr bind = {.family = server->family};
    if (!ok(pierce_driver_client_new(&bind, &config, &m->d), "driver_client_new") ||
        !ok(pierce_driver_client_connect(m->d, server, NULL, 0), "connect")) {
        return 0;
    }
    uint64_t deadline = now_ms() + (uint64_t)m->a.timeout_s * 1000u;
    while (m->failure[0] == '\0' && !complete(m)) {
        if (now_ms() >= deadline) {
            fail(m, "timed out");
            break;
        }
        if (!ok(pierce_driver_client_pump(m->d, 5), "pump")) {
            fail(m, "pump failed");
            break;
        }
        PierceClientEvent e;
        PierceResult res;
        while ((res = pierce_driver_client_poll_event(m->d, &e)) == PIERCE_OK) {
            handle_event(m, &e);
        }
        if (!ok(res, "poll_event")) {
            fail(m, "poll_event failed");
            break;
        }
        size_t present = 0;
        for (size_t i = 0; i < m->n_remotes; i++) {
            present += !m->remotes[i].left;
        }
        if (!m->exchanging && m->in_room && present >= m->a.peers) {
            for (size_t i = 0; i < m->n_remotes; i++) {
                m->remotes[i].target = !m->remotes[i].left;
            }
            m->exchanging = 1;
        }
        if (m->exchanging) {
            send_what_is_due(m);
            refresh_stats(m);
        }
    }
    /* Leave politely: the server tells the others at once. */
    ok(pierce_driver_client_disconnect(m->d, 0), "disconnect");
    ok(pierce_driver_client_pump(m->d, 0), "pump");
    return success(m);
}

int main(int argc, char **argv) {
    struct member m;
    memset(&m, 0, sizeof m);
    if (!parse_args(argc, argv, &m.a)) {
        return 2;
    }
    if (!ok(pierce_check_version(PIERCE_ABI_VERSION), "check_version")) {
        return 1;
    }
    PierceAddr server;
    uint8_t key[32];
    if (!ok(pierce_addr_parse(m.a.server, &server), "--server")) {
        return 2;
    }
    if (m.a.server_key != NULL && !parse_key(m.a.server_key, key)) {
        fprintf(stderr, "driven: --server-key takes 64 hex digits\n");
        return 2;
    }
    m.buf = malloc(m.a.size > MAX_NAME + 1 ? m.a.size : MAX_NAME + 1);
    if (m.buf == NULL) {
        fprintf(stderr, "driven: out of memory\n");
        return 1;
    }
    int good = run(&m, &server);
    if (m.failure[0] != '\0') {
        fprintf(stderr, "driven: %s: %s\n", m.a.name, m.failure);
    }
    summary(&m);
    int freed = ok(pierce_driver_client_free(m.d), "driver_client_free");
    free(m.buf);
    return good && freed ? 0 : 1;
}
