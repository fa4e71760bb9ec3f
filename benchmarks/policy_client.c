/*
 * policy_client: closed-loop load generator for Postfix's policy delegation
 * protocol (SMTPD_POLICY_README), used by benchmarks/policyd_load.py.
 *
 * C connections, one request in flight on each (like smtpd: send, wait for the
 * `action=...` reply and its empty line, send the next). One thread, epoll, so
 * the client costs a few microseconds of CPU per request and leaves the two
 * cores of the bench machine to the server and Redis; its own CPU is measured
 * and reported next to the server's.
 *
 * Modes
 *   rcpt  (default) RCPT requests for `--duration` seconds after `--warmup`:
 *         a uniformly random sender out of --senders SASL logins, an external
 *         recipient with probability --external-pct, and a distinct `instance`
 *         per request (a one-recipient transaction, so every external request
 *         is a new count, never a duplicate).
 *   fill  every sender sends --fill-recipients external recipients in messages
 *         of --fill-per-message recipients: the RCPT requests, then the
 *         END-OF-MESSAGE request that commits them (the daemon's real flow), so
 *         every sender ends with a full window; used for Redis memory.
 *
 * At the start and end of the measured interval the client samples the CPU
 * time (utime+stime from /proc/PID/stat) of every --pid, its own rusage and
 * the machine's /proc/stat, so all CPU figures cover the same interval as the
 * request count. Output: one JSON object on stdout.
 *
 * Build: gcc -O2 -o policy_client policy_client.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_PIDS 8
#define REQ_MAX 4096
#define RBUF 4096

static const char *EXT_DOMAINS[] = {
    "gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "vnpt.vn",
    "fpt.com.vn", "hanoi.gov.vn", "namdinh.gov.vn", "viettel.com.vn", "mof.gov.vn",
};
#define N_EXT (sizeof EXT_DOMAINS / sizeof EXT_DOMAINS[0])
static const char *INT_DOMAINS[] = {
    "ninhbinh.gov.vn", "sokhcn.ninhbinh.gov.vn", "stc.ninhbinh.gov.vn",
};
#define N_INT (sizeof INT_DOMAINS / sizeof INT_DOMAINS[0])

struct conn {
    int fd;
    int idx;
    uint64_t sent_ns;
    char req[REQ_MAX];
    int req_len, req_off;
    char rbuf[RBUF];
    int rlen;
    int busy;
    uint32_t counter;
    /* fill mode */
    int fill_sender;   /* sender this connection works on, -1 when done */
    int fill_done;     /* recipients of fill_sender sent so far */
    int fill_in_msg;   /* RCPTs sent in the current message */
    int fill_eom;      /* the request in flight is an END-OF-MESSAGE */
};

/* options */
static const char *target = NULL;
static int nconns = 10, senders = 1000, ext_pct = 90, mode_fill = 0;
static double warmup_s = 1.0, duration_s = 5.0;
static uint32_t run_id = 1;
static uint64_t seed = 1;
static int fill_recipients = 250, fill_per_message = 5;
static int npids = 0;
static int pids[MAX_PIDS];
static const char *sender_fmt = "nv%04d@ninhbinh.gov.vn";

/* fill mode shared cursor */
static int fill_next_sender = 0;

/* statistics */
static uint64_t *lat;
static size_t nlat, caplat;
static uint64_t replies_dunno, replies_other, errors;
static int measuring = 0;
static uint64_t fill_requests;

static uint64_t rng_state;
static inline uint64_t rng(void) {
    /* xorshift64* */
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

/* utime+stime of a process, in clock ticks; -1 if it is gone */
static long long proc_ticks(int pid) {
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* comm may contain spaces */
    if (!p) return -1;
    p += 2;
    /* fields after comm: state(3) ppid pgrp session tty tpgid flags minflt cminflt
       majflt cmajflt utime(14) stime(15) */
    unsigned long long ut = 0, st = 0;
    int field = 3;
    char *save = NULL;
    for (char *tok = strtok_r(p, " ", &save); tok; tok = strtok_r(NULL, " ", &save), field++) {
        if (field == 14) ut = strtoull(tok, NULL, 10);
        if (field == 15) { st = strtoull(tok, NULL, 10); break; }
    }
    return (long long)(ut + st);
}

/* machine-wide jiffies from /proc/stat: user nice system idle iowait irq softirq steal */
static void machine_ticks(unsigned long long v[8]) {
    FILE *f = fopen("/proc/stat", "r");
    memset(v, 0, 8 * sizeof *v);
    if (!f) return;
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
               &v[4], &v[5], &v[6], &v[7]) != 8)
        memset(v, 0, 8 * sizeof *v);
    fclose(f);
}

static double self_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

struct snap {
    uint64_t t;
    long long pid_ticks[MAX_PIDS];
    double self_cpu;
    unsigned long long mach[8];
    uint64_t dunno, other, errs;
};

static void take_snap(struct snap *s) {
    s->t = now_ns();
    for (int i = 0; i < npids; i++) s->pid_ticks[i] = proc_ticks(pids[i]);
    s->self_cpu = self_cpu_s();
    machine_ticks(s->mach);
    s->dunno = replies_dunno;
    s->other = replies_other;
    s->errs = errors;
}

static int connect_target(void) {
    int fd;
    if (strncmp(target, "unix:", 5) == 0) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", target + 5);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0) die("socket");
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect unix");
    } else if (strncmp(target, "inet:", 5) == 0) {
        char host[128];
        snprintf(host, sizeof host, "%s", target + 5);
        char *colon = strrchr(host, ':');
        if (!colon) { fprintf(stderr, "bad target %s\n", target); exit(2); }
        *colon = 0;
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(colon + 1))};
        if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) { fprintf(stderr, "bad host\n"); exit(2); }
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) die("socket");
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect inet");
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    } else {
        fprintf(stderr, "target must be unix:/path or inet:HOST:PORT\n");
        exit(2);
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* The attribute set of a Postfix 3.7 smtpd policy request (SMTPD_POLICY_README),
   for a SASL-authenticated submission over TLS on port 587. */
static int build_request(char *out, const char *state, int sender, const char *rcpt,
                         int rcpt_count, const char *queue_id, const char *instance,
                         unsigned size) {
    char login[96];
    snprintf(login, sizeof login, sender_fmt, sender);
    return snprintf(out, REQ_MAX,
        "request=smtpd_access_policy\n"
        "protocol_state=%s\n"
        "protocol_name=ESMTP\n"
        "helo_name=pc%04d.ninhbinh.gov.vn\n"
        "queue_id=%s\n"
        "sender=%s\n"
        "recipient=%s\n"
        "recipient_count=%d\n"
        "client_address=10.%d.%d.%d\n"
        "client_name=unknown\n"
        "reverse_client_name=unknown\n"
        "instance=%s\n"
        "sasl_method=PLAIN\n"
        "sasl_username=%s\n"
        "sasl_sender=\n"
        "size=%u\n"
        "ccert_subject=\n"
        "ccert_issuer=\n"
        "ccert_fingerprint=\n"
        "ccert_pubkey_fingerprint=\n"
        "encryption_protocol=TLSv1.3\n"
        "encryption_cipher=TLS_AES_256_GCM_SHA384\n"
        "encryption_keysize=256\n"
        "etrn_domain=\n"
        "stress=\n"
        "client_port=%d\n"
        "server_address=10.0.0.25\n"
        "server_port=587\n"
        "policy_context=submission\n"
        "compatibility_level=3.6\n"
        "mail_version=3.7.11\n"
        "\n",
        state, sender % 10000, queue_id, login, rcpt, rcpt_count, (sender >> 8) & 255,
        sender & 255, 1 + (sender % 250), instance, login, size, 1024 + (sender % 60000));
}

static void next_rcpt_request(struct conn *c) {
    char rcpt[128], instance[64];
    int sender = (int)(rng() % (uint64_t)senders);
    uint64_t r = rng();
    if ((int)(r % 100) < ext_pct)
        snprintf(rcpt, sizeof rcpt, "kh%06u@%s", (unsigned)((r >> 8) % 1000000),
                 EXT_DOMAINS[(r >> 32) % N_EXT]);
    else
        snprintf(rcpt, sizeof rcpt, "cb%04u@%s", (unsigned)((r >> 8) % 10000),
                 INT_DOMAINS[(r >> 32) % N_INT]);
    /* Postfix: "%lx.%lx.%lx.%x" (pid, seconds, microseconds, counter) */
    snprintf(instance, sizeof instance, "%x.%x.%x.0", run_id, c->idx, ++c->counter);
    c->req_len = build_request(c->req, "RCPT", sender, rcpt, 0, "", instance,
                               (unsigned)(2000 + (r >> 40) % 200000));
}

/* fill mode: returns 0 when this connection has nothing more to send */
static int next_fill_request(struct conn *c) {
    char rcpt[128], instance[64], qid[32];
    if (c->fill_sender < 0 ||
        (c->fill_done >= fill_recipients && c->fill_in_msg == 0 && !c->fill_eom)) {
        if (fill_next_sender >= senders) return 0;
        c->fill_sender = fill_next_sender++;
        c->fill_done = 0;
        c->fill_in_msg = 0;
        c->fill_eom = 0;
        c->counter++;
    }
    if (c->fill_eom) { /* the END-OF-MESSAGE was answered: next message */
        c->fill_eom = 0;
        c->fill_in_msg = 0;
        c->counter++;
        if (c->fill_done >= fill_recipients) return next_fill_request(c);
    }
    snprintf(instance, sizeof instance, "%x.%x.%x.0", run_id, c->idx, c->counter);
    /* unique per message, like Postfix's short queue ids (10-12 hex digits) */
    snprintf(qid, sizeof qid, "%02X%03X%05X", (unsigned)(run_id & 0xff), (unsigned)c->idx & 0xfff,
             c->counter & 0xfffff);
    if (c->fill_in_msg < fill_per_message && c->fill_done < fill_recipients) {
        snprintf(rcpt, sizeof rcpt, "kh%06d.%d@%s", c->fill_done, c->fill_sender,
                 EXT_DOMAINS[c->fill_done % N_EXT]);
        c->req_len = build_request(c->req, "RCPT", c->fill_sender, rcpt, 0,
                                   c->fill_in_msg ? qid : "", instance, 30000);
        c->fill_in_msg++;
        c->fill_done++;
    } else {
        /* END-OF-MESSAGE: recipient empty when the message has several */
        if (c->fill_in_msg == 1)
            snprintf(rcpt, sizeof rcpt, "kh%06d.%d@%s", c->fill_done - 1, c->fill_sender,
                     EXT_DOMAINS[(c->fill_done - 1) % N_EXT]);
        else
            rcpt[0] = 0;
        c->req_len = build_request(c->req, "END-OF-MESSAGE", c->fill_sender, rcpt,
                                   c->fill_in_msg, qid, instance, 30000);
        c->fill_eom = 1;
    }
    return 1;
}

static int start_request(struct conn *c) {
    if (mode_fill) {
        if (!next_fill_request(c)) return 0;
    } else {
        next_rcpt_request(c);
    }
    c->req_off = 0;
    c->rlen = 0;
    c->busy = 1;
    c->sent_ns = now_ns();
    while (c->req_off < c->req_len) {
        ssize_t n = write(c->fd, c->req + c->req_off, c->req_len - c->req_off);
        if (n < 0) {
            if (errno == EAGAIN) break; /* rest on EPOLLOUT; rare for < 1 KB */
            return -1;
        }
        c->req_off += (int)n;
    }
    return 1;
}

static void record(uint64_t ns) {
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 1 << 20;
        lat = realloc(lat, caplat * sizeof *lat);
        if (!lat) die("realloc");
    }
    lat[nlat++] = ns;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p) {
    if (!nlat) return 0;
    size_t i = (size_t)(p / 100.0 * (double)(nlat - 1) + 0.5);
    return lat[i] / 1000.0;
}

static void usage(void) {
    fprintf(stderr,
            "usage: policy_client --target unix:/path|inet:HOST:PORT [--conns C]\n"
            "  [--warmup S] [--duration S] [--senders N] [--external-pct P] [--seed N]\n"
            "  [--run-id N] [--pid PID]... [--mode rcpt|fill] [--fill-recipients N]\n"
            "  [--fill-per-message N] [--sender-format FMT]\n");
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        if (!strcmp(a, "--target")) target = v;
        else if (!strcmp(a, "--conns")) nconns = atoi(v);
        else if (!strcmp(a, "--warmup")) warmup_s = atof(v);
        else if (!strcmp(a, "--duration")) duration_s = atof(v);
        else if (!strcmp(a, "--senders")) senders = atoi(v);
        else if (!strcmp(a, "--external-pct")) ext_pct = atoi(v);
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--run-id")) run_id = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--fill-recipients")) fill_recipients = atoi(v);
        else if (!strcmp(a, "--fill-per-message")) fill_per_message = atoi(v);
        else if (!strcmp(a, "--sender-format")) sender_fmt = v;
        else if (!strcmp(a, "--mode")) mode_fill = !strcmp(v, "fill");
        else if (!strcmp(a, "--pid")) {
            if (npids < MAX_PIDS) pids[npids++] = atoi(v);
        } else usage();
        i++;
    }
    if (!target || nconns < 1 || senders < 1 || fill_per_message < 1) usage();
    rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;

    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    struct conn *conns = calloc((size_t)nconns, sizeof *conns);
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = connect_target();
        conns[i].idx = i;
        conns[i].fill_sender = -1;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0) die("epoll_ctl");
    }

    struct snap s0, s1;
    uint64_t t_start = now_ns();
    uint64_t t_measure = t_start + (uint64_t)(warmup_s * 1e9);
    uint64_t t_end = t_measure + (uint64_t)(duration_s * 1e9);
    int active = 0;
    if (mode_fill) { /* everything is measured; no time limit */
        take_snap(&s0);
        measuring = 1;
    }
    for (int i = 0; i < nconns; i++) {
        int r = start_request(&conns[i]);
        if (r < 0) { errors++; close(conns[i].fd); conns[i].fd = -1; }
        else if (r > 0) active++;
    }
    if (!mode_fill && warmup_s <= 0) { take_snap(&s0); measuring = 1; }

    struct epoll_event evs[256];
    int stopping = 0;
    while (active > 0) {
        int n = epoll_wait(ep, evs, 256, 5);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        uint64_t now = now_ns();
        if (!mode_fill) {
            if (!measuring && now >= t_measure) { take_snap(&s0); measuring = 1; }
            if (measuring && !stopping && now >= t_end) { take_snap(&s1); stopping = 1; }
        }
        for (int k = 0; k < n; k++) {
            struct conn *c = evs[k].data.ptr;
            if (c->fd < 0) continue;
            if (evs[k].events & EPOLLOUT && c->req_off < c->req_len) {
                ssize_t w = write(c->fd, c->req + c->req_off, c->req_len - c->req_off);
                if (w > 0) c->req_off += (int)w;
                if (c->req_off == c->req_len) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (!(evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
            ssize_t r = read(c->fd, c->rbuf + c->rlen, RBUF - 1 - c->rlen);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                active--;
                continue;
            }
            c->rlen += (int)r;
            c->rbuf[c->rlen] = 0;
            char *end = strstr(c->rbuf, "\n\n");
            if (!end) {
                if (c->rlen >= RBUF - 1) { errors++; c->rlen = 0; }
                continue;
            }
            uint64_t t = now_ns();
            if (strncmp(c->rbuf, "action=DUNNO\n", 13) == 0 ||
                strncmp(c->rbuf, "action=dunno\n", 13) == 0)
                replies_dunno++;
            else
                replies_other++;
            if (mode_fill) fill_requests++;
            if (measuring && !stopping) record(t - c->sent_ns);
            c->busy = 0;
            if (stopping) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                active--;
                continue;
            }
            int s = start_request(c);
            if (s <= 0) {
                if (s < 0) errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                active--;
            } else if (c->req_off < c->req_len) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            }
        }
    }
    if (mode_fill || !stopping) take_snap(&s1);
    if (!measuring) s0 = s1;

    qsort(lat, nlat, sizeof *lat, cmp_u64);
    double wall = (s1.t - s0.t) / 1e9;
    long hz = sysconf(_SC_CLK_TCK);
    printf("{\"mode\": \"%s\", \"conns\": %d, \"wall_s\": %.6f, \"requests\": %zu, "
           "\"rps\": %.1f, \"dunno\": %llu, \"other\": %llu, \"errors\": %llu, "
           "\"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f, "
           "\"max_us\": %.1f, \"client_cpu_s\": %.6f, \"clk_tck\": %ld, "
           "\"machine_ticks\": {\"user\": %llu, \"nice\": %llu, \"system\": %llu, "
           "\"idle\": %llu, \"iowait\": %llu, \"irq\": %llu, \"softirq\": %llu, "
           "\"steal\": %llu}, \"pid_cpu_s\": {",
           mode_fill ? "fill" : "rcpt", nconns, wall, nlat, wall > 0 ? nlat / wall : 0.0,
           (unsigned long long)(s1.dunno - s0.dunno), (unsigned long long)(s1.other - s0.other),
           (unsigned long long)(s1.errs - s0.errs), pct(50), pct(90), pct(99), pct(99.9),
           nlat ? lat[nlat - 1] / 1000.0 : 0.0, s1.self_cpu - s0.self_cpu, hz,
           s1.mach[0] - s0.mach[0], s1.mach[1] - s0.mach[1], s1.mach[2] - s0.mach[2],
           s1.mach[3] - s0.mach[3], s1.mach[4] - s0.mach[4], s1.mach[5] - s0.mach[5],
           s1.mach[6] - s0.mach[6], s1.mach[7] - s0.mach[7]);
    for (int i = 0; i < npids; i++)
        printf("%s\"%d\": %.3f", i ? ", " : "", pids[i],
               (s0.pid_ticks[i] < 0 || s1.pid_ticks[i] < 0)
                   ? -1.0 : (double)(s1.pid_ticks[i] - s0.pid_ticks[i]) / (double)hz);
    printf("}, \"fill_requests\": %llu}\n", (unsigned long long)fill_requests);
    return errors ? 1 : 0;
}
