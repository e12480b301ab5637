/* A load generator for streaming servers that is not itself the limit: one thread, epoll,
 * no allocation per message. N clients open WebSocket (ws) or plain HTTP (http) streams, are
 * held for a warm-up, then measured for a window; it prints one JSON line.
 *
 * ws: every binary message starts with a u64 little-endian position in `--pos-rate` units
 * (Play Bach's frames and the anchor's alike). A frame's lateness is its arrival time minus
 * pos/pos_rate, less the smallest such offset seen in the window: how much later than the
 * earliest delivery of the same timeline it came. "late" counts those over --late-ms.
 * http: bytes only; a client is "behind" if it got under 90% of --expect-kbps (default: of
 * the median client's bytes).
 *
 * Its own CPU (getrusage over the window) is printed beside the results: it must stay well
 * under one core for the server's figures to mean anything.
 *
 *   cc -O2 -o loadgen loadgen.c -lm
 *   loadgen --port 8000 --path '/ws/radio?codec=opus' --clients 5000 --seconds 10
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { CONNECTING, HEADERS, STREAMING, CLOSED };

typedef struct {
  int fd, state;
  char head[4096];   /* the response headers, then a partial WebSocket frame header */
  int head_len;
  uint64_t need;     /* payload bytes left of the current message */
  int binary;        /* the current message is binary */
  unsigned char pos_bytes[8];
  int pos_have;      /* of the current binary message's first 8 bytes */
  uint64_t bytes, frames, late;
  int measured;      /* counted in the window */
} Client;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu_now(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec +
         u.ru_stime.tv_usec / 1e6;
}

static const char *host = "127.0.0.1", *path = "/", *mode = "ws";
static int port = 8000, nclients = 100, ramp = 1000;
static double seconds = 10, warmup = 3, pos_rate = 48000, late_ms = 200, tick_ms = 10;
static double settle = 30, expect_kbps = 0;
static int in_window = 0;
static double min_offset = 1e18;
static double *lateness; /* every frame's offset in the window, for percentiles */
static size_t nlate, cap_late;

static void record(double offset) {
  if (offset < min_offset) min_offset = offset;
  if (nlate == cap_late) {
    cap_late = cap_late ? 2 * cap_late : 1 << 20;
    lateness = realloc(lateness, cap_late * sizeof(double));
  }
  lateness[nlate++] = offset;
}

static int open_client(Client *c, int ep) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, host, &a.sin_addr);
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (c->fd < 0) return -1;
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
    close(c->fd);
    return -1;
  }
  c->state = CONNECTING;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
  return epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void send_request(Client *c, int ep) {
  char req[1024];
  int n;
  if (strcmp(mode, "ws") == 0)
    n = snprintf(req, sizeof req,
                 "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                 path, host, port);
  else
    n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s:%d\r\nUser-Agent: loadgen\r\n\r\n",
                 path, host, port);
  if (write(c->fd, req, n) != n) {
    c->state = CLOSED;
    return;
  }
  c->state = HEADERS;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Consume WebSocket bytes: frame headers, payloads, the position of each binary message. */
static void ws_bytes(Client *c, const unsigned char *p, size_t n, double t) {
  while (n) {
    if (c->need == 0) { /* a frame header, maybe split across reads */
      size_t take = n < (size_t)(14 - c->head_len) ? n : (size_t)(14 - c->head_len);
      memcpy(c->head + c->head_len, p, take);
      int have = c->head_len + take;
      unsigned char *h = (unsigned char *)c->head;
      if (have < 2) { c->head_len = have; return; }
      int len7 = h[1] & 127, hl = len7 == 126 ? 4 : len7 == 127 ? 10 : 2;
      if (have < hl) { c->head_len = have; return; }
      uint64_t len = len7;
      if (len7 == 126) len = (h[2] << 8) | h[3];
      if (len7 == 127) { len = 0; for (int i = 2; i < 10; i++) len = (len << 8) | h[i]; }
      int op = h[0] & 15;
      if (op == 2) c->binary = 1;
      else if (op == 1) c->binary = 0; /* continuation frames keep the message's kind */
      int consumed = hl - c->head_len;
      p += consumed; n -= consumed;
      c->head_len = 0;
      c->need = len;
      c->pos_have = 0;
      if (op == 8) { c->state = CLOSED; return; }
      if (len == 0) continue;
    }
    size_t take = n < c->need ? n : c->need;
    if (c->binary && c->pos_have < 8) {
      size_t k = take < (size_t)(8 - c->pos_have) ? take : (size_t)(8 - c->pos_have);
      memcpy(c->pos_bytes + c->pos_have, p, k);
      c->pos_have += k;
      if (c->pos_have == 8 && in_window && c->measured) {
        uint64_t pos = 0;
        for (int i = 7; i >= 0; i--) pos = (pos << 8) | c->pos_bytes[i];
        c->frames++;
        record(t - pos / pos_rate);
      }
    }
    p += take; n -= take; c->need -= take;
  }
}

static void on_read(Client *c, double t) {
  static unsigned char buf[1 << 16];
  for (;;) {
    ssize_t n = read(c->fd, buf, sizeof buf);
    if (n == 0) { c->state = CLOSED; return; }
    if (n < 0) { if (errno != EAGAIN) c->state = CLOSED; return; }
    unsigned char *p = buf;
    size_t left = n;
    if (c->state == HEADERS) {
      size_t take = left < sizeof c->head - c->head_len - 1 ? left : sizeof c->head - c->head_len - 1;
      memcpy(c->head + c->head_len, p, take);
      c->head_len += take;
      c->head[c->head_len] = 0;
      char *end = strstr(c->head, "\r\n\r\n");
      if (!end) { if (c->head_len >= (int)sizeof c->head - 1) c->state = CLOSED; continue; }
      int ok = strstr(c->head, strcmp(mode, "ws") == 0 ? " 101 " : " 200") != NULL;
      if (!ok) { c->state = CLOSED; return; }
      size_t used = (end + 4 - c->head) - (c->head_len - take);
      p += used; left -= used;
      c->head_len = 0;
      c->state = STREAMING;
    }
    if (in_window && c->measured) c->bytes += left;
    if (strcmp(mode, "ws") == 0) ws_bytes(c, p, left, t);
    if (c->state == CLOSED) return;
  }
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (!strcmp(k, "--host")) host = v;
    else if (!strcmp(k, "--port")) port = atoi(v);
    else if (!strcmp(k, "--path")) path = v;
    else if (!strcmp(k, "--mode")) mode = v;
    else if (!strcmp(k, "--clients")) nclients = atoi(v);
    else if (!strcmp(k, "--ramp")) ramp = atoi(v);
    else if (!strcmp(k, "--seconds")) seconds = atof(v);
    else if (!strcmp(k, "--warmup")) warmup = atof(v);
    else if (!strcmp(k, "--pos-rate")) pos_rate = atof(v);
    else if (!strcmp(k, "--late-ms")) late_ms = atof(v);
    else if (!strcmp(k, "--tick-ms")) tick_ms = atof(v);
    else if (!strcmp(k, "--settle")) settle = atof(v);
    else if (!strcmp(k, "--expect-kbps")) expect_kbps = atof(v);
    else { fprintf(stderr, "loadgen: unknown option %s\n", k); return 2; }
  }
  struct rlimit lim = {nclients + 64, nclients + 64};
  if (setrlimit(RLIMIT_NOFILE, &lim) < 0) { perror("loadgen: RLIMIT_NOFILE"); return 2; }
  Client *cs = calloc(nclients, sizeof *cs);
  int ep = epoll_create1(0);
  struct epoll_event evs[1024];
  int opened = 0, failed = 0;
  double t0 = now(), last_open = 0, all_open = 0, win_start = 0, win_end = 0, cpu0 = 0, cpu1 = 0;
  for (;;) {
    double t = now();
    int due = (int)((t - t0) * ramp) + 1; /* open at --ramp connections a second */
    while (opened < nclients && opened < due) {
      if (open_client(&cs[opened], ep) < 0) { cs[opened].state = CLOSED; failed++; }
      opened++;
    }
    /* the warm-up starts once every client streams (or gave up), at most --settle s after
     * the last was opened: a server that accepts slowly is measured with those it took */
    if (opened == nclients && !all_open) {
      if (!last_open) last_open = t;
      int pending = 0;
      for (int i = 0; i < nclients; i++) pending += cs[i].state == CONNECTING || cs[i].state == HEADERS;
      if (!pending || t - last_open > settle) all_open = t;
    }
    if (all_open && !in_window && !win_end && t >= all_open + warmup) {
      in_window = 1; win_start = t; cpu0 = cpu_now();
      fprintf(stderr, "window start\n");
      fflush(stderr);
      for (int i = 0; i < nclients; i++) cs[i].measured = cs[i].state == STREAMING;
    }
    if (in_window && t >= win_start + seconds) {
      in_window = 0; win_end = t; cpu1 = cpu_now();
      fprintf(stderr, "window end\n");
      fflush(stderr);
      break;
    }
    /* At most one pass each --tick-ms: messages pile up in the kernel meanwhile and are read
     * several at a time (the generator's CPU), at the cost of that much timing resolution. */
    double pass = now();
    int n = epoll_wait(ep, evs, 1024, 5);
    t = now();
    for (int i = 0; i < n; i++) {
      Client *c = evs[i].data.ptr;
      if (c->state == CONNECTING) {
        int err = 0; socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) c->state = CLOSED; else send_request(c, ep);
      } else if (c->state != CLOSED) {
        on_read(c, t);
      }
      if (c->state == CLOSED) { epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL); close(c->fd); c->fd = -1; }
    }
    double rest = tick_ms / 1000 - (now() - pass);
    if (n < 1024 && rest > 0) usleep((useconds_t)(rest * 1e6));
  }
  int measured = 0, streaming = 0, dropped = 0;
  uint64_t frames = 0, bytes = 0, *per = calloc(nclients, sizeof *per);
  for (int i = 0; i < nclients; i++) {
    if (!cs[i].measured) continue;
    per[measured++] = cs[i].bytes;
    frames += cs[i].frames; bytes += cs[i].bytes;
    if (cs[i].state == STREAMING) streaming++; else dropped++;
  }
  qsort(per, measured, sizeof *per, cmp_u64);
  uint64_t median = measured ? per[measured / 2] : 0;
  int behind = 0;
  double wall = win_end - win_start;
  /* behind: under 90% of the stream's rate (--expect-kbps), or else of the median client's */
  double enough = 0.9 * (expect_kbps ? expect_kbps * 1000 / 8 * wall : (double)median);
  for (int i = 0; i < measured; i++) behind += per[i] < enough;
  uint64_t late = 0;
  for (size_t i = 0; i < nlate; i++) {
    lateness[i] -= min_offset;
    late += lateness[i] > late_ms / 1000;
  }
  qsort(lateness, nlate, sizeof *lateness, cmp_double);
#define PCT(q) (nlate ? lateness[(size_t)((nlate - 1) * (q))] * 1000 : 0)
  printf("{\"clients\": %d, \"measured\": %d, \"streaming\": %d, \"dropped\": %d, \"failed\": %d, "
         "\"seconds\": %.2f, \"frames_per_client_s\": %.2f, \"kbps_per_client\": %.1f, "
         "\"late\": %llu, \"frames\": %llu, \"late_p50_ms\": %.1f, \"late_p99_ms\": %.1f, "
         "\"late_max_ms\": %.1f, \"behind\": %d, \"connect_s\": %.2f, \"generator_cpu\": %.3f}\n",
         nclients, measured, streaming, dropped, failed, wall,
         measured ? frames / (double)measured / wall : 0,
         measured ? bytes * 8 / 1000.0 / measured / wall : 0, (unsigned long long)late,
         (unsigned long long)frames, PCT(0.5), PCT(0.99), PCT(1.0), behind, all_open - t0,
         (cpu1 - cpu0) / wall);
  return 0;
}
