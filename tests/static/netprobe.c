/*
 * A proxy-unaware, statically linked network probe for the landjail tests (no LD_PRELOAD shim can see
 * it; built with glibc and with musl). One line of output per command:
 *   netprobe connect IP PORT MSG        raw syscall(SYS_connect), then send MSG; "connected" or "connect: ERR"
 *   netprobe dns connected|unconnected SERVER NAME
 *                                       one A query over UDP port 53, the way Go (connected socket, read)
 *                                       or musl (sendto, recvfrom checking the source) asks; "A a.b.c.d"
 *   netprobe resolve NAME               the libc resolver (getaddrinfo, AF_INET); "A a.b.c.d"
 *   netprobe get NAME PORT PATH         getaddrinfo, connect, plain HTTP/1.0 GET; the response's first line
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static int fail(const char *what) {
    printf("%s: %s\n", what, strerror(errno));
    return 1;
}

static int parse_addr(const char *ip, int port, struct sockaddr_storage *ss, socklen_t *len) {
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof *ss);
    if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        *len = sizeof *a4;
        return AF_INET;
    }
    if (inet_pton(AF_INET6, ip, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        *len = sizeof *a6;
        return AF_INET6;
    }
    return -1;
}

static int cmd_connect(const char *ip, int port, const char *msg) {
    struct sockaddr_storage ss;
    socklen_t len;
    int fam = parse_addr(ip, port, &ss, &len);
    int s = socket(fam, SOCK_STREAM, 0);
    if (s < 0) return fail("socket");
    if (syscall(SYS_connect, s, &ss, len) < 0) return fail("connect");
    if (write(s, msg, strlen(msg)) < 0) return fail("write");
    puts("connected");
    return 0;
}

static size_t build_query(unsigned char *q, const char *name) {
    size_t n = 0;
    memcpy(q, "\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00", 12);
    n = 12;
    while (*name) {
        const char *dot = strchr(name, '.');
        size_t l = dot ? (size_t)(dot - name) : strlen(name);
        q[n++] = (unsigned char)l;
        memcpy(q + n, name, l);
        n += l;
        name += l + (dot ? 1 : 0);
    }
    q[n++] = 0;
    memcpy(q + n, "\x00\x01\x00\x01", 4);
    return n + 4;
}

static int print_answer(const unsigned char *r, ssize_t got, size_t qlen) {
    if (got < (ssize_t)(qlen + 16) || r[0] != 0x12 || r[1] != 0x34 || (r[7] == 0 && r[6] == 0)) {
        printf("dns: no answer (%zd bytes)\n", got);
        return 1;
    }
    const unsigned char *a = r + got - 4;
    printf("A %u.%u.%u.%u\n", a[0], a[1], a[2], a[3]);
    return 0;
}

static int cmd_dns(const char *mode, const char *server, const char *name) {
    struct sockaddr_storage ss, from;
    socklen_t len, flen = sizeof from;
    unsigned char q[300], r[512];
    int fam = parse_addr(server, 53, &ss, &len);
    size_t qlen = build_query(q, name);
    int s = socket(fam, SOCK_DGRAM, 0);
    if (s < 0) return fail("socket");
    struct pollfd p = {s, POLLIN, 0};
    ssize_t got;
    if (!strcmp(mode, "connected")) {
        if (connect(s, (struct sockaddr *)&ss, len) < 0) return fail("connect");
        if (write(s, q, qlen) < 0) return fail("write");
        if (poll(&p, 1, 10000) != 1) return fail("poll");
        got = read(s, r, sizeof r);
    } else {
        if (sendto(s, q, qlen, 0, (struct sockaddr *)&ss, len) < 0) return fail("sendto");
        for (;;) {
            if (poll(&p, 1, 10000) != 1) return fail("poll (no reply from the server asked)");
            flen = sizeof from;
            got = recvfrom(s, r, sizeof r, 0, (struct sockaddr *)&from, &flen);
            if (got < 0) return fail("recvfrom");
            if (flen == len && !memcmp(&from, &ss, len)) break; /* musl ignores replies from elsewhere */
        }
    }
    if (got < 0) return fail("read");
    return print_answer(r, got, qlen);
}

static struct addrinfo *lookup(const char *name, const char *port) {
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int e = getaddrinfo(name, port, &hints, &res);
    if (e) {
        printf("getaddrinfo: %s\n", gai_strerror(e));
        return NULL;
    }
    return res;
}

static int cmd_resolve(const char *name) {
    struct addrinfo *res = lookup(name, NULL);
    if (!res) return 1;
    char buf[64];
    inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, buf, sizeof buf);
    printf("A %s\n", buf);
    return 0;
}

static int cmd_get(const char *name, const char *port, const char *path) {
    struct addrinfo *res = lookup(name, port);
    if (!res) return 1;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, res->ai_addr, res->ai_addrlen) < 0) return fail("connect");
    char req[512], resp[4096];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s:%s\r\nConnection: close\r\n\r\n", path, name, port);
    if (write(s, req, n) < 0) return fail("write");
    size_t have = 0;
    ssize_t got;
    while (have < sizeof resp - 1 && (got = read(s, resp + have, sizeof resp - 1 - have)) > 0) have += got;
    resp[have] = 0;
    if (!have) {
        puts("get: connection closed without a response");
        return 1;
    }
    char *body = strstr(resp, "\r\n\r\n");
    *strchr(resp, '\r') = 0;
    printf("%s | %s\n", resp, body ? body + 4 : "");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 5 && !strcmp(argv[1], "connect")) return cmd_connect(argv[2], atoi(argv[3]), argv[4]);
    if (argc == 5 && !strcmp(argv[1], "dns")) return cmd_dns(argv[2], argv[3], argv[4]);
    if (argc == 3 && !strcmp(argv[1], "resolve")) return cmd_resolve(argv[2]);
    if (argc == 5 && !strcmp(argv[1], "get")) return cmd_get(argv[2], argv[3], argv[4]);
    fprintf(stderr, "usage: see the comment at the top of netprobe.c\n");
    return 2;
}
