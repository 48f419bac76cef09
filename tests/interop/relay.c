/* The impairment relay's fast engine: the same contract as `relay.py relay` (read its
 * docstring), in C, so the relay is never the bottleneck of what it measures.
 *
 * relay.py compiles this file with the system C compiler on first use (cached by the
 * source's sha256) and execs it; the arguments are positional and produced by relay.py:
 *
 *   relay LHOST LPORT UHOST UPORT SEED  <up: 8 numbers>  <down: 8 numbers>
 *   per direction: delay_ns jitter_ns loss dup reorder reorder_ns rate_bytes_per_s queue_bytes
 *
 * One thread per direction: recvmmsg() batches into that direction's pool of packet slots;
 * each datagram's release time (bottleneck departure + delay + jitter + reorder hold) goes
 * into the direction's binary heap; ppoll() sleeps with nanosecond timeouts until the next
 * release, and due datagrams leave in sendmmsg() batches, each run of equal-sized datagrams
 * as one UDP_SEGMENT (GSO) message the kernel splits again (a third of the CPU per datagram;
 * WGSLIRPY_RELAY_GSO=0, or a kernel that refuses it, sends one message per datagram). Each direction has its own seeded
 * generator (splitmix64), so one direction's traffic never changes the other's decisions.
 * The main thread handles signals and samples the busiest second. Prints "ready" once
 * bound, a JSON line of counters on SIGUSR1 and on SIGTERM/SIGINT (then exits).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SLOT_SIZE 2048    /* > any WireGuard datagram on a 1500-byte underlay */
#define NSLOTS 32768      /* datagrams held at once per direction (64 MiB at most, touched lazily) */
#define BATCH 64
#define SOCK_BUF (8 * 1024 * 1024)

struct ev { uint64_t due, seq; uint32_t slot; };

/* One direction: its settings, its generator, its held datagrams; run by its own thread. */
struct dir {
    double delay_ns, jitter_ns, loss, dup, reorder, reorder_ns, rate, queue; /* from argv, in this order */
    uint64_t rng;
    uint64_t tail_ns; /* when the bottleneck finishes sending what it holds */
    int in_sock, out_sock, k;
    unsigned char (*slots)[SLOT_SIZE];
    uint16_t *slot_len;
    uint32_t *free_stack, nfree; /* invariant: nfree + held + in-flight batch slots == NSLOTS */
    struct ev *heap;
    uint32_t nheap;
    uint64_t seqno;
    /* counters: written by this direction's thread only, read (approximately) by main */
    volatile uint64_t in, dropped, duplicated, reordered, queue_dropped, out, bytes_out, send_errors,
        pool_full, truncated, recv_errors;
};

static struct dir dirs[2]; /* 0: client -> upstream ("up"), 1: upstream -> client ("down") */
/* The client's address: learnt by "up" from what it receives, used by "down" to send. */
static pthread_mutex_t client_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sockaddr_storage client;
static socklen_t client_len;
static volatile uint32_t client_version;
static volatile sig_atomic_t stop_flag;
static uint64_t peak_dps;
/* 0 once the kernel refused a UDP_SEGMENT send: then one message per datagram. */
static volatile int gso_ok = 1;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double rnd(struct dir *d) { /* splitmix64 -> [0, 1) */
    uint64_t z = (d->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static int ev_less(const struct ev *a, const struct ev *b) {
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void heap_push(struct dir *d, uint64_t due, uint32_t slot) {
    uint32_t i = d->nheap++;
    struct ev e = {due, d->seqno++, slot};
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!ev_less(&e, &d->heap[p])) break;
        d->heap[i] = d->heap[p];
        i = p;
    }
    d->heap[i] = e;
}

static struct ev heap_pop(struct dir *d) {
    struct ev top = d->heap[0], last = d->heap[--d->nheap];
    uint32_t i = 0, n = d->nheap;
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && ev_less(&d->heap[c + 1], &d->heap[c])) c++;
        if (!ev_less(&d->heap[c], &last)) break;
        d->heap[i] = d->heap[c];
        i = c;
    }
    if (n > 0) d->heap[i] = last;
    return top;
}

static int resolve(const char *host, const char *port, struct sockaddr_storage *ss, socklen_t *len) {
    struct addrinfo hints = {0}, *res;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    if (getaddrinfo(host, port, &hints, &res) != 0) return -1;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int udp_socket(int family) {
    int s = socket(family, SOCK_DGRAM, 0), v = SOCK_BUF;
    if (s < 0) return -1;
    setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof v);
    setsockopt(s, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof v);
    return s;
}

#define U(x) ((unsigned long long)(x))

static void print_dir(const char *name, const struct dir *d) {
    printf("\"%s\": {\"in\": %llu, \"dropped\": %llu, \"duplicated\": %llu, \"reordered\": %llu, "
           "\"queue_dropped\": %llu, \"out\": %llu, \"bytes_out\": %llu, \"send_errors\": %llu, "
           "\"pool_full\": %llu, \"held\": %u}",
           name, U(d->in), U(d->dropped), U(d->duplicated), U(d->reordered), U(d->queue_dropped),
           U(d->out), U(d->bytes_out), U(d->send_errors), U(d->pool_full), d->nheap);
}

static void dump(uint64_t t0) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    const struct dir *u = &dirs[0], *d = &dirs[1];
    printf("{\"engine\": \"c\", \"in\": %llu, \"dropped\": %llu, \"duplicated\": %llu, \"reordered\": %llu, "
           "\"queue_dropped\": %llu, \"to_upstream\": %llu, \"to_client\": %llu, \"send_errors\": %llu, "
           "\"pool_full\": %llu, \"truncated\": %llu, \"recv_errors\": %llu, \"held\": %u, "
           "\"peak_dps\": %llu, \"cpu_s\": %.3f, \"elapsed_s\": %.3f, \"recorded\": 0, \"gso\": %d, ",
           U(u->in + d->in), U(u->dropped + d->dropped), U(u->duplicated + d->duplicated),
           U(u->reordered + d->reordered), U(u->queue_dropped + d->queue_dropped), U(u->out), U(d->out),
           U(u->send_errors + d->send_errors), U(u->pool_full + d->pool_full), U(u->truncated + d->truncated),
           U(u->recv_errors + d->recv_errors), u->nheap + d->nheap, U(peak_dps), cpu, (now_ns() - t0) / 1e9, gso_ok);
    print_dir("up", u);
    printf(", ");
    print_dir("down", d);
    printf("}\n");
    fflush(stdout);
}

/* The release time of one datagram of `len` bytes arriving at `now`; 0 = drop it. `copies` is 2 for a duplicate. */
static uint64_t decide(struct dir *d, uint64_t now, size_t len, int *copies) {
    d->in++;
    *copies = 1;
    double r = rnd(d);
    if (r < d->loss) { d->dropped++; return 0; }
    uint64_t base = now;
    if (d->rate > 0) {
        uint64_t start = d->tail_ns > now ? d->tail_ns : now;
        double backlog = (double)(start - now) * d->rate / 1e9;
        if (backlog + (double)len > d->queue) { d->queue_dropped++; return 0; }
        d->tail_ns = start + (uint64_t)((double)len * 1e9 / d->rate);
        base = d->tail_ns;
    }
    double extra = d->delay_ns;
    if (d->jitter_ns > 0) extra += rnd(d) * d->jitter_ns;
    r -= d->loss;
    if (r < d->dup) { d->duplicated++; *copies = 2; }
    else if (r - d->dup < d->reorder) {
        d->reordered++;
        double lo = 1e6, hi = d->reorder_ns > lo ? d->reorder_ns : lo;
        extra += lo + rnd(d) * (hi - lo);
    }
    return base + (uint64_t)extra + 1; /* +1: never 0 */
}

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#define GSO_MAX_BYTES 65000 /* a GSO send carries at most one UDP datagram's worth */
#define GSO_MAX_SEGS 64

/* Send n datagrams (iov[0..n)) in order; with GSO, each run of equal-sized datagrams (the
 * run's last may be shorter) leaves as one message the kernel splits (UDP_SEGMENT). */
static void send_all(struct dir *d, struct iovec *iov, unsigned n, struct sockaddr_storage *to, socklen_t to_len) {
    static __thread struct mmsghdr msg[BATCH];
    static __thread unsigned cnt[BATCH];
    static __thread union { char buf[CMSG_SPACE(sizeof(uint16_t))]; struct cmsghdr align; } ctrl[BATCH];
    unsigned nmsg = 0, i = 0;
    while (i < n) {
        unsigned j = i + 1;
        size_t seg = iov[i].iov_len, total = seg;
        if (gso_ok) {
            while (j < n && j - i < GSO_MAX_SEGS && iov[j].iov_len == seg && total + seg <= GSO_MAX_BYTES) total += iov[j++].iov_len;
            if (j < n && j - i < GSO_MAX_SEGS && iov[j].iov_len < seg && total + iov[j].iov_len <= GSO_MAX_BYTES) total += iov[j++].iov_len;
        }
        struct msghdr *h = &msg[nmsg].msg_hdr;
        memset(h, 0, sizeof *h);
        h->msg_iov = &iov[i];
        h->msg_iovlen = j - i;
        if (d->k == 1) {
            h->msg_name = to;
            h->msg_namelen = to_len;
        }
        if (j - i > 1) {
            h->msg_control = ctrl[nmsg].buf;
            h->msg_controllen = sizeof ctrl[nmsg].buf;
            struct cmsghdr *c = CMSG_FIRSTHDR(h);
            c->cmsg_level = SOL_UDP;
            c->cmsg_type = UDP_SEGMENT;
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t gso = (uint16_t)seg;
            memcpy(CMSG_DATA(c), &gso, sizeof gso);
        }
        cnt[nmsg++] = j - i;
        i = j;
    }
    unsigned off = 0, first = 0; /* first: index in iov of msg[off]'s first datagram */
    while (off < nmsg) {
        int r = sendmmsg(d->out_sock, msg + off, nmsg - off, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            if (cnt[off] > 1) { /* no GSO here: send this run one by one, and never try again */
                gso_ok = 0;
                send_all(d, &iov[first], cnt[off], to, to_len);
            } else {
                d->send_errors++;
            }
            first += cnt[off++];
            continue;
        }
        for (int q = 0; q < r; q++) {
            d->bytes_out += msg[off + q].msg_len;
            d->out += cnt[off + q];
            first += cnt[off + q];
        }
        off += (unsigned)r;
    }
}

/* Send every due datagram, in batches. */
static void release_due(struct dir *d, struct sockaddr_storage *to, socklen_t *to_len, uint32_t *seen) {
    static __thread struct iovec iov[BATCH];
    static __thread uint32_t slot[BATCH];
    if (d->k == 1 && *seen != __atomic_load_n(&client_version, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&client_lock);
        *to = client;
        *to_len = client_len;
        *seen = client_version;
        pthread_mutex_unlock(&client_lock);
    }
    uint64_t now = now_ns();
    while (d->nheap > 0 && d->heap[0].due <= now) {
        unsigned n = 0;
        while (n < BATCH && d->nheap > 0 && d->heap[0].due <= now) {
            struct ev e = heap_pop(d);
            if (d->k == 1 && *to_len == 0) { d->free_stack[d->nfree++] = e.slot; continue; }
            iov[n].iov_base = d->slots[e.slot];
            iov[n].iov_len = d->slot_len[e.slot];
            slot[n++] = e.slot;
        }
        send_all(d, iov, n, to, *to_len);
        for (unsigned q = 0; q < n; q++) d->free_stack[d->nfree++] = slot[q];
        now = now_ns();
    }
}

/* Read what is waiting (bounded), decide each datagram's fate, hold the survivors. */
static void receive(struct dir *d) {
    static __thread struct mmsghdr msg[BATCH];
    static __thread struct iovec iov[BATCH];
    static __thread uint32_t slot[BATCH];
    static __thread struct sockaddr_storage from[BATCH];
    static __thread unsigned char scratch[SLOT_SIZE];
    for (int burst = 0; burst < 8; burst++) {
        unsigned n = d->nfree >= 2 * BATCH ? BATCH : 1; /* nearly full: read one at a time into scratch */
        for (unsigned i = 0; i < n; i++) {
            slot[i] = d->nfree >= 2 * BATCH ? d->free_stack[--d->nfree] : UINT32_MAX;
            iov[i].iov_base = slot[i] == UINT32_MAX ? scratch : d->slots[slot[i]];
            iov[i].iov_len = SLOT_SIZE;
            memset(&msg[i].msg_hdr, 0, sizeof msg[i].msg_hdr);
            msg[i].msg_hdr.msg_iov = &iov[i];
            msg[i].msg_hdr.msg_iovlen = 1;
            msg[i].msg_hdr.msg_name = &from[i];
            msg[i].msg_hdr.msg_namelen = sizeof from[i];
        }
        int got = recvmmsg(d->in_sock, msg, n, MSG_DONTWAIT, NULL);
        for (unsigned i = got < 0 ? 0 : (unsigned)got; i < n; i++)
            if (slot[i] != UINT32_MAX) d->free_stack[d->nfree++] = slot[i];
        if (got < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) d->recv_errors++;
            return;
        }
        uint64_t now = now_ns();
        for (int i = 0; i < got; i++) {
            if (d->k == 0) {
                socklen_t len = msg[i].msg_hdr.msg_namelen;
                if (len != client_len || memcmp(&client, &from[i], len) != 0) {
                    pthread_mutex_lock(&client_lock);
                    memcpy(&client, &from[i], len);
                    client_len = len;
                    __atomic_add_fetch(&client_version, 1, __ATOMIC_RELEASE);
                    pthread_mutex_unlock(&client_lock);
                }
            }
            if (slot[i] == UINT32_MAX) { d->in++; d->pool_full++; continue; }
            if (msg[i].msg_hdr.msg_flags & MSG_TRUNC) {
                d->in++;
                d->truncated++;
                d->free_stack[d->nfree++] = slot[i];
                continue;
            }
            d->slot_len[slot[i]] = (uint16_t)msg[i].msg_len;
            int copies;
            uint64_t due = decide(d, now, msg[i].msg_len, &copies);
            if (due == 0) { d->free_stack[d->nfree++] = slot[i]; continue; }
            heap_push(d, due, slot[i]);
            if (copies == 2 && d->nfree > 0) {
                uint32_t c = d->free_stack[--d->nfree];
                memcpy(d->slots[c], d->slots[slot[i]], msg[i].msg_len);
                d->slot_len[c] = d->slot_len[slot[i]];
                heap_push(d, due + 1000, c);
            }
        }
        if ((unsigned)got < n) return;
    }
}

static void *direction_loop(void *arg) {
    struct dir *d = arg;
    struct sockaddr_storage to;
    socklen_t to_len = 0;
    uint32_t seen = 0;
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0); /* 1 us wake-up slack instead of 50 us */
    while (!stop_flag) {
        release_due(d, &to, &to_len, &seen);
        struct timespec ts = {0, 100000000}; /* wake at least every 100 ms to see stop_flag */
        if (d->nheap > 0) {
            uint64_t now = now_ns(), due = d->heap[0].due;
            uint64_t wait = due > now ? due - now : 0;
            if (wait < 100000000ull) ts.tv_nsec = (long)wait;
        }
        struct pollfd pfd = {d->in_sock, POLLIN, 0};
        if (ppoll(&pfd, 1, &ts, NULL) > 0) receive(d);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 6 + 16) {
        fprintf(stderr, "usage: relay LHOST LPORT UHOST UPORT SEED + 8 numbers per direction (see relay.py)\n");
        return 2;
    }
    struct sockaddr_storage laddr, uaddr;
    socklen_t llen, ulen;
    if (resolve(argv[1], argv[2], &laddr, &llen) || resolve(argv[3], argv[4], &uaddr, &ulen)) {
        fprintf(stderr, "relay: bad address\n");
        return 2;
    }
    int down = udp_socket(laddr.ss_family), up = udp_socket(uaddr.ss_family);
    if (down < 0 || up < 0 || bind(down, (struct sockaddr *)&laddr, llen) < 0 ||
        connect(up, (struct sockaddr *)&uaddr, ulen) < 0) {
        perror("relay: socket");
        return 1;
    }
    uint64_t seed = strtoull(argv[5], NULL, 10);
    for (int k = 0; k < 2; k++) {
        struct dir *d = &dirs[k];
        double *f = &d->delay_ns;
        for (int j = 0; j < 8; j++) f[j] = strtod(argv[6 + 8 * k + j], NULL);
        d->rng = seed * 2 + (uint64_t)k + 0x1234567ull;
        d->k = k;
        d->in_sock = k == 0 ? down : up;
        d->out_sock = k == 0 ? up : down;
        d->slots = malloc((size_t)NSLOTS * SLOT_SIZE);
        d->slot_len = calloc(NSLOTS, sizeof *d->slot_len);
        d->free_stack = malloc(NSLOTS * sizeof *d->free_stack);
        d->heap = malloc(NSLOTS * sizeof *d->heap);
        if (!d->slots || !d->slot_len || !d->free_stack || !d->heap) { perror("relay: malloc"); return 1; }
        for (uint32_t i = 0; i < NSLOTS; i++) d->free_stack[i] = NSLOTS - 1 - i;
        d->nfree = NSLOTS;
    }
    /* The relay stands for the wire, which does not wait for a CPU: ask for a better share
     * than the endpoints it connects (it needs little; ignored without the privilege). */
    setpriority(PRIO_PROCESS, 0, -10);
    /* Signals go to the main thread only (blocked here, inherited by the workers). */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    pthread_t th[2];
    if (getenv("WGSLIRPY_RELAY_GSO") && strcmp(getenv("WGSLIRPY_RELAY_GSO"), "0") == 0) gso_ok = 0;
    for (int k = 0; k < 2; k++)
        if (pthread_create(&th[k], NULL, direction_loop, &dirs[k]) != 0) { perror("relay: thread"); return 1; }
    uint64_t t0 = now_ns(), last = t0, last_out = 0;
    printf("ready\n");
    fflush(stdout);
    while (!stop_flag) {
        struct timespec one = {1, 0};
        int sig = sigtimedwait(&set, NULL, &one);
        uint64_t now = now_ns(), out = dirs[0].out + dirs[1].out;
        if (now - last >= 900000000ull) { /* the busiest second so far */
            uint64_t rate = (uint64_t)((double)(out - last_out) * 1e9 / (double)(now - last));
            if (rate > peak_dps) peak_dps = rate;
            last = now;
            last_out = out;
        }
        if (sig == SIGUSR1) dump(t0);
        else if (sig == SIGTERM || sig == SIGINT) stop_flag = 1;
    }
    for (int k = 0; k < 2; k++) pthread_join(th[k], NULL);
    dump(t0);
    return 0;
}
