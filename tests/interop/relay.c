/* The impairment relay's fast engine: the same contract as `relay.py relay` (read its
 * docstring), in C, so the relay is never the bottleneck of what it measures.
 *
 * relay.py compiles this file with the system C compiler on first use (cached by the
 * source's sha256) and execs it; the arguments are positional and produced by relay.py:
 *
 *   relay LHOST LPORT UHOST UPORT SEED  <up: 8 numbers>  <down: 8 numbers>
 *   per direction: delay_ns jitter_ns loss dup reorder reorder_ns rate_bytes_per_s queue_bytes
 *
 * One thread: recvmmsg() batches from both sockets into a pool of packet slots; each
 * datagram's release time (bottleneck departure + delay + jitter + reorder hold) goes into
 * a binary heap; ppoll() sleeps with nanosecond timeouts until the next release, and due
 * datagrams leave in sendmmsg() batches. Each direction has its own seeded generator
 * (splitmix64), so one direction's traffic never changes the other's decisions.
 * Prints "ready" once bound, a JSON line of counters on SIGUSR1 and on SIGTERM/SIGINT (then exits).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <poll.h>
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
#define NSLOTS 32768      /* datagrams held at once, both directions (64 MiB at most) */
#define BATCH 64
#define SOCK_BUF (8 * 1024 * 1024)

struct dir {
    double delay_ns, jitter_ns, loss, dup, reorder, reorder_ns, rate, queue;
    uint64_t rng;
    uint64_t tail_ns; /* when the bottleneck finishes sending what it holds */
    uint64_t in, dropped, duplicated, reordered, queue_dropped, out, bytes_out, send_errors;
};

struct ev { uint64_t due, seq; uint32_t slot; uint8_t dir; };

static unsigned char (*slots)[SLOT_SIZE];
static uint16_t slot_len[NSLOTS];
static uint32_t free_stack[NSLOTS];
static uint32_t nfree;
static struct ev heap[NSLOTS];
static uint32_t nheap;
static uint64_t seqno;
static struct dir dirs[2]; /* 0: client -> upstream ("up"), 1: upstream -> client ("down") */
static uint64_t pool_full, truncated, recv_errors;
static uint64_t peak_dps, win_start, win_count;
static struct sockaddr_storage client;
static socklen_t client_len;
static volatile sig_atomic_t stop_flag, dump_flag;

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

static void heap_push(uint64_t due, uint32_t slot, uint8_t dir) {
    uint32_t i = nheap++;
    struct ev e = {due, seqno++, slot, dir};
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!ev_less(&e, &heap[p])) break;
        heap[i] = heap[p];
        i = p;
    }
    heap[i] = e;
}

static struct ev heap_pop(void) {
    struct ev top = heap[0], last = heap[--nheap];
    uint32_t i = 0;
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= nheap) break;
        if (c + 1 < nheap && ev_less(&heap[c + 1], &heap[c])) c++;
        if (!ev_less(&heap[c], &last)) break;
        heap[i] = heap[c];
        i = c;
    }
    if (nheap > 0) heap[i] = last;
    return top;
}

static void on_signal(int sig) {
    if (sig == SIGUSR1) dump_flag = 1;
    else stop_flag = 1;
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

static void print_dir(const char *name, const struct dir *d) {
    printf("\"%s\": {\"in\": %llu, \"dropped\": %llu, \"duplicated\": %llu, \"reordered\": %llu, "
           "\"queue_dropped\": %llu, \"out\": %llu, \"bytes_out\": %llu, \"send_errors\": %llu}",
           name, (unsigned long long)d->in, (unsigned long long)d->dropped,
           (unsigned long long)d->duplicated, (unsigned long long)d->reordered,
           (unsigned long long)d->queue_dropped, (unsigned long long)d->out,
           (unsigned long long)d->bytes_out, (unsigned long long)d->send_errors);
}

static void dump(uint64_t t0) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    const struct dir *u = &dirs[0], *d = &dirs[1];
    printf("{\"engine\": \"c\", \"in\": %llu, \"dropped\": %llu, \"duplicated\": %llu, \"reordered\": %llu, "
           "\"queue_dropped\": %llu, \"to_upstream\": %llu, \"to_client\": %llu, \"send_errors\": %llu, "
           "\"pool_full\": %llu, \"truncated\": %llu, \"recv_errors\": %llu, \"held\": %u, "
           "\"peak_dps\": %llu, \"cpu_s\": %.3f, \"elapsed_s\": %.3f, \"recorded\": 0, ",
           (unsigned long long)(u->in + d->in), (unsigned long long)(u->dropped + d->dropped),
           (unsigned long long)(u->duplicated + d->duplicated), (unsigned long long)(u->reordered + d->reordered),
           (unsigned long long)(u->queue_dropped + d->queue_dropped), (unsigned long long)u->out,
           (unsigned long long)d->out, (unsigned long long)(u->send_errors + d->send_errors),
           (unsigned long long)pool_full, (unsigned long long)truncated, (unsigned long long)recv_errors,
           nheap, (unsigned long long)peak_dps, cpu, (now_ns() - t0) / 1e9);
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

static void count_forwarded(uint64_t now, unsigned n) {
    uint64_t span = now - win_start;
    if (span >= 1000000000ull) {
        uint64_t rate = (uint64_t)((double)win_count * 1e9 / (double)span);
        if (span < 2000000000ull && rate > peak_dps) peak_dps = rate;
        win_start = now;
        win_count = 0;
    }
    win_count += n;
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
    uint64_t seed = strtoull(argv[5], NULL, 10);
    for (int k = 0; k < 2; k++) {
        double *f = &dirs[k].delay_ns;
        for (int j = 0; j < 8; j++) f[j] = strtod(argv[6 + 8 * k + j], NULL);
        dirs[k].rng = seed * 2 + (uint64_t)k + 0x1234567ull;
    }
    slots = malloc((size_t)NSLOTS * SLOT_SIZE);
    if (!slots) { perror("relay: malloc"); return 1; }
    for (uint32_t i = 0; i < NSLOTS; i++) free_stack[i] = NSLOTS - 1 - i;
    nfree = NSLOTS;

    int down = udp_socket(laddr.ss_family), up = udp_socket(uaddr.ss_family);
    if (down < 0 || up < 0 || bind(down, (struct sockaddr *)&laddr, llen) < 0 ||
        connect(up, (struct sockaddr *)&uaddr, ulen) < 0) {
        perror("relay: socket");
        return 1;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal; /* no SA_RESTART: ppoll returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0); /* 1 us wake-up slack instead of 50 us */
    printf("ready\n");
    fflush(stdout);

    static struct mmsghdr rmsg[BATCH], smsg[2][BATCH];
    static struct iovec riov[BATCH], siov[2][BATCH];
    static uint32_t rslot[BATCH], sslot[2][BATCH];
    static struct sockaddr_storage rfrom[BATCH];
    static unsigned char scratch[SLOT_SIZE];
    unsigned nsend[2] = {0, 0};
    int socks[2] = {down, up}; /* index = direction whose datagrams arrive on it */
    uint64_t t0 = now_ns();
    win_start = t0;

#define FLUSH(k)                                                                              \
    do {                                                                                      \
        unsigned off_ = 0;                                                                    \
        while (off_ < nsend[k]) {                                                             \
            int r_ = sendmmsg((k) == 0 ? up : down, smsg[k] + off_, nsend[k] - off_, 0);      \
            if (r_ < 0) {                                                                     \
                if (errno == EINTR) continue;                                                 \
                dirs[k].send_errors++;                                                        \
                off_++;                                                                       \
                continue;                                                                     \
            }                                                                                 \
            for (int q_ = 0; q_ < r_; q_++) dirs[k].bytes_out += smsg[k][off_ + q_].msg_len;  \
            dirs[k].out += (uint64_t)r_;                                                      \
            off_ += (unsigned)r_;                                                             \
        }                                                                                     \
        count_forwarded(now_ns(), nsend[k]);                                                  \
        for (unsigned q_ = 0; q_ < nsend[k]; q_++) free_stack[nfree++] = sslot[k][q_];         \
        nsend[k] = 0;                                                                         \
    } while (0)

    while (!stop_flag) {
        if (dump_flag) { dump_flag = 0; dump(t0); }
        uint64_t now = now_ns();
        while (nheap > 0 && heap[0].due <= now) {
            struct ev e = heap_pop();
            int k = e.dir;
            if (k == 1 && client_len == 0) { free_stack[nfree++] = e.slot; continue; }
            unsigned i = nsend[k];
            siov[k][i].iov_base = slots[e.slot];
            siov[k][i].iov_len = slot_len[e.slot];
            memset(&smsg[k][i].msg_hdr, 0, sizeof smsg[k][i].msg_hdr);
            smsg[k][i].msg_hdr.msg_iov = &siov[k][i];
            smsg[k][i].msg_hdr.msg_iovlen = 1;
            if (k == 1) {
                smsg[k][i].msg_hdr.msg_name = &client;
                smsg[k][i].msg_hdr.msg_namelen = client_len;
            }
            sslot[k][i] = e.slot;
            if (++nsend[k] == BATCH) FLUSH(k);
        }
        if (nsend[0]) FLUSH(0);
        if (nsend[1]) FLUSH(1);

        struct timespec ts = {0, 200000000};
        if (nheap > 0) {
            now = now_ns();
            uint64_t wait = heap[0].due > now ? heap[0].due - now : 0;
            if (wait < 200000000ull) { ts.tv_sec = 0; ts.tv_nsec = (long)wait; }
        }
        struct pollfd pfd[2] = {{down, POLLIN, 0}, {up, POLLIN, 0}};
        int pr = ppoll(pfd, 2, &ts, NULL);
        if (pr <= 0) continue;
        for (int k = 0; k < 2; k++) {
            if (!(pfd[k].revents & (POLLIN | POLLERR))) continue;
            for (int burst = 0; burst < 8; burst++) {
                unsigned n = BATCH;
                if (nfree < 2 * BATCH) n = 1; /* nearly full: read one at a time into scratch */
                for (unsigned i = 0; i < n; i++) {
                    rslot[i] = nfree >= 2 * BATCH ? free_stack[--nfree] : UINT32_MAX;
                    riov[i].iov_base = rslot[i] == UINT32_MAX ? scratch : slots[rslot[i]];
                    riov[i].iov_len = SLOT_SIZE;
                    memset(&rmsg[i].msg_hdr, 0, sizeof rmsg[i].msg_hdr);
                    rmsg[i].msg_hdr.msg_iov = &riov[i];
                    rmsg[i].msg_hdr.msg_iovlen = 1;
                    rmsg[i].msg_hdr.msg_name = &rfrom[i];
                    rmsg[i].msg_hdr.msg_namelen = sizeof rfrom[i];
                }
                int got = recvmmsg(socks[k], rmsg, n, MSG_DONTWAIT, NULL);
                int used = got < 0 ? 0 : got;
                for (unsigned i = (unsigned)used; i < n; i++)
                    if (rslot[i] != UINT32_MAX) free_stack[nfree++] = rslot[i];
                if (got < 0) {
                    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) recv_errors++;
                    break;
                }
                now = now_ns();
                for (int i = 0; i < got; i++) {
                    if (k == 0) {
                        memcpy(&client, &rfrom[i], rmsg[i].msg_hdr.msg_namelen);
                        client_len = rmsg[i].msg_hdr.msg_namelen;
                    }
                    if (rslot[i] == UINT32_MAX) { dirs[k].in++; pool_full++; continue; }
                    if (rmsg[i].msg_hdr.msg_flags & MSG_TRUNC) {
                        dirs[k].in++;
                        truncated++;
                        free_stack[nfree++] = rslot[i];
                        continue;
                    }
                    slot_len[rslot[i]] = (uint16_t)rmsg[i].msg_len;
                    int copies;
                    uint64_t due = decide(&dirs[k], now, rmsg[i].msg_len, &copies);
                    if (due == 0) { free_stack[nfree++] = rslot[i]; continue; }
                    heap_push(due, rslot[i], (uint8_t)k);
                    if (copies == 2 && nfree > 0) {
                        uint32_t c = free_stack[--nfree];
                        memcpy(slots[c], slots[rslot[i]], rmsg[i].msg_len);
                        slot_len[c] = slot_len[rslot[i]];
                        heap_push(due + 1000, c, (uint8_t)k);
                    }
                }
                if ((unsigned)got < n) break;
            }
        }
    }
    dump(t0);
    return 0;
}
