/* Closed-loop HTTP/1.1 keep-alive load generator for benchmarks/proxy.py (one epoll thread).
 *
 * A Python client spends more CPU per request than the proxy it measures; on a 2-core machine
 * that starves the server and measures the client. This one costs a few microseconds a request.
 *
 *   loadgen HOST PORT CONNECTIONS SECONDS MAX_REQUESTS START_AT_EPOCH REQUEST_TEXT
 * prints {"count": N, "errors": E, "samples": [ms, ...]} (bounded by SECONDS and MAX_REQUESTS).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct { int fd; double sent; char buf[65536]; size_t len; } conn_t;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 8) { fprintf(stderr, "usage: loadgen HOST PORT CONNS SECONDS MAX START_AT REQUEST\n"); return 2; }
    const char *host = argv[1];
    int port = atoi(argv[2]), nconn = atoi(argv[3]);
    double seconds = atof(argv[4]);
    long max = atol(argv[5]);
    double start_at = atof(argv[6]);
    const char *req = argv[7];
    size_t reqlen = strlen(req);
    double *samples = malloc(sizeof(double) * (size_t)max);
    long count = 0, errors = 0;
    conn_t *conns = calloc((size_t)nconn, sizeof(conn_t));
    int ep = epoll_create1(0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &addr.sin_addr);
    for (int i = 0; i < nconn; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) { perror("connect"); return 1; }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    struct timespec wall;
    do { clock_gettime(CLOCK_REALTIME, &wall); } while (wall.tv_sec + wall.tv_nsec / 1e9 < start_at);
    double deadline = now() + seconds;
    for (int i = 0; i < nconn; i++) { conns[i].sent = now(); if (write(conns[i].fd, req, reqlen) < 0) return 1; }
    struct epoll_event events[256];
    int open = nconn;
    while (open > 0) {
        int n = epoll_wait(ep, events, 256, 1000);
        for (int e = 0; e < n; e++) {
            conn_t *c = events[e].data.ptr;
            ssize_t got = read(c->fd, c->buf + c->len, sizeof c->buf - c->len - 1);
            if (got <= 0) { close(c->fd); open--; continue; }
            c->len += (size_t)got;
            c->buf[c->len] = 0;
            for (;;) {
                char *end = strstr(c->buf, "\r\n\r\n");
                if (!end) break;
                long length = 0;
                char *cl = strcasestr(c->buf, "content-length:");
                if (cl && cl < end) length = atol(cl + 15);
                size_t total = (size_t)(end - c->buf) + 4 + (size_t)length;
                if (c->len < total) break;
                double t = now();
                if (strncmp(c->buf + 9, "200", 3) != 0) errors++;
                if (count < max) samples[count++] = (t - c->sent) * 1000.0;
                memmove(c->buf, c->buf + total, c->len - total);
                c->len -= total;
                c->buf[c->len] = 0;
                if (t < deadline && count < max) {
                    c->sent = now();
                    if (write(c->fd, req, reqlen) < 0) { close(c->fd); open--; }
                } else { shutdown(c->fd, SHUT_RDWR); }
            }
        }
        if (n == 0 && now() > deadline + 5) break;
    }
    printf("{\"count\": %ld, \"errors\": %ld, \"samples\": [", count, errors);
    for (long i = 0; i < count; i++) printf(i ? ",%.3f" : "%.3f", samples[i]);
    printf("]}\n");
    return 0;
}
