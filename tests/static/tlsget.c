/*
 * A proxy-unaware, statically linked HTTPS client (glibc + OpenSSL, no shim can see it):
 *   tlsget NAME PORT PATH CAFILE   getaddrinfo, connect, TLS with SNI verified against CAFILE, GET;
 *                                  prints the status line and the body's first line, or what failed
 */
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 5) return 2;
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int e = getaddrinfo(argv[1], argv[2], &hints, &res);
    if (e) {
        printf("getaddrinfo: %s\n", gai_strerror(e));
        return 1;
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, res->ai_addr, res->ai_addrlen) < 0) {
        perror("connect");
        puts("connect failed");
        return 1;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_load_verify_locations(ctx, argv[4], NULL) != 1) return 3;
    SSL *ssl = SSL_new(ctx);
    SSL_set_tlsext_host_name(ssl, argv[1]);
    SSL_set1_host(ssl, argv[1]);
    SSL_set_fd(ssl, s);
    if (SSL_connect(ssl) != 1) {
        puts("tls: handshake failed");
        return 1;
    }
    char req[512], resp[8192];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n", argv[3], argv[1]);
    SSL_write(ssl, req, n);
    int have = 0, got;
    while (have < (int)sizeof resp - 1 && (got = SSL_read(ssl, resp + have, sizeof resp - 1 - have)) > 0) have += got;
    resp[have] = 0;
    char *body = strstr(resp, "\r\n\r\n");
    char *eol = strchr(resp, '\r');
    if (eol) *eol = 0;
    printf("%s | %s\n", resp, body ? body + 4 : "");
    return 0;
}
