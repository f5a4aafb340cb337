/*
 * boundary's LD_PRELOAD connect shim for landjail (DESIGN.md section 3).
 *
 * - connect(): an AF_INET/AF_INET6 stream socket aimed anywhere but loopback (the proxy, or a
 *   server of the jail's own: boundary's supervisor decides) is connected to the proxy instead,
 *   followed by "CONNECT host:port"; the handshake completes before connect()
 *   returns, for blocking and non-blocking sockets alike (libuv/Node), bounded by timeouts.
 * - getaddrinfo(): a host name gets a fake address from 198.19.0.0/16, remembered 1:1, so a
 *   proxy-unaware program never needs UDP DNS; connect() maps it back and asks for the name.
 * - exec*() and posix_spawn*(): put back LD_PRELOAD and the jail's variables when a parent
 *   stripped them (env -i, an agent that scrubs the environment of the tools it runs).
 *
 * Configuration comes from the environment: BOUNDARY_SHIM_PROXY=127.0.0.1:PORT and
 * BOUNDARY_SHIM_KEYS=comma-separated names to restore. The shim is a convenience, not the
 * boundary: static binaries ignore it, and boundary's socket supervisor routes every connect anyway.
 */
#define _GNU_SOURCE
#include <alloca.h>
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FAKE_BASE 0xC6130000u /* 198.19.0.0: beside boundary's DNS responder's 198.18.0.0/16, never the same */
#define FAKE_MASK 0xFFFF0000u /* /16 */
#define FAKE_MAX 65534
#define NAME_MAX_LEN 253
#define HEAD_MAX 8192
#define CONNECT_TIMEOUT_MS 15000
#define REPLY_TIMEOUT_MS 60000
#define MAX_SAVED 64

extern char **environ;

static int (*real_connect)(int, const struct sockaddr *, socklen_t);
static int (*real_getaddrinfo)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
static int (*real_execve)(const char *, char *const[], char *const[]);
static int (*real_execvpe)(const char *, char *const[], char *const[]);
static int (*real_fexecve)(int, char *const[], char *const[]);
static int (*real_posix_spawn)(pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *,
                               char *const[], char *const[]);
static int (*real_posix_spawnp)(pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *,
                                char *const[], char *const[]);

static int proxy_port; /* 0: not configured, the shim passes everything through */
static char *saved[MAX_SAVED]; /* "KEY=VALUE" to put back */
static int n_saved;
static char *shim_path;

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static char *names[FAKE_MAX];
static int n_names;

static void save_var(const char *key) {
    const char *v = getenv(key);
    if (!v || n_saved >= MAX_SAVED) return;
    for (int i = 0; i < n_saved; i++)
        if (strncmp(saved[i], key, strlen(key)) == 0 && saved[i][strlen(key)] == '=') return;
    size_t n = strlen(key) + strlen(v) + 2;
    char *kv = malloc(n);
    if (!kv) return;
    snprintf(kv, n, "%s=%s", key, v);
    saved[n_saved++] = kv;
}

__attribute__((constructor)) static void shim_init(void) {
    real_connect = dlsym(RTLD_NEXT, "connect");
    real_getaddrinfo = dlsym(RTLD_NEXT, "getaddrinfo");
    real_execve = dlsym(RTLD_NEXT, "execve");
    real_execvpe = dlsym(RTLD_NEXT, "execvpe");
    real_fexecve = dlsym(RTLD_NEXT, "fexecve");
    real_posix_spawn = dlsym(RTLD_NEXT, "posix_spawn");
    real_posix_spawnp = dlsym(RTLD_NEXT, "posix_spawnp");
    const char *p = getenv("BOUNDARY_SHIM_PROXY");
    if (p) {
        const char *colon = strrchr(p, ':');
        long port = colon ? strtol(colon + 1, NULL, 10) : 0;
        if (port > 0 && port < 65536) proxy_port = (int)port;
    }
    Dl_info info;
    if (dladdr((void *)shim_init, &info) && info.dli_fname) shim_path = strdup(info.dli_fname);
    save_var("LD_PRELOAD");
    save_var("BOUNDARY_SHIM_PROXY");
    save_var("BOUNDARY_SHIM_KEYS");
    const char *keys = getenv("BOUNDARY_SHIM_KEYS");
    if (keys) {
        char *copy = strdup(keys), *save = NULL;
        for (char *k = copy ? strtok_r(copy, ",", &save) : NULL; k; k = strtok_r(NULL, ",", &save)) save_var(k);
        free(copy);
    }
}

/* ---- fake DNS ------------------------------------------------------------------------------ */

static int fake_index(const char *name) {
    char lower[NAME_MAX_LEN + 1];
    size_t n = strlen(name);
    if (n && name[n - 1] == '.') n--;
    if (n == 0 || n > NAME_MAX_LEN) return -1;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        lower[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    lower[n] = 0;
    int found = -1;
    pthread_mutex_lock(&table_lock);
    for (int i = 0; i < n_names; i++)
        if (strcmp(names[i], lower) == 0) { found = i; break; }
    if (found < 0 && n_names < FAKE_MAX && (names[n_names] = strdup(lower)) != NULL) found = n_names++;
    pthread_mutex_unlock(&table_lock);
    return found;
}

static const char *fake_name(uint32_t ip) {
    if ((ip & FAKE_MASK) != FAKE_BASE) return NULL;
    uint32_t i = (ip - FAKE_BASE) - 1;
    const char *out = NULL;
    pthread_mutex_lock(&table_lock);
    if (i < (uint32_t)n_names) out = names[i];
    pthread_mutex_unlock(&table_lock);
    return out;
}

static int is_numeric(const char *node) {
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, node, buf) == 1 || inet_pton(AF_INET6, node, buf) == 1;
}

static int is_local_name(const char *node) {
    size_t n = strlen(node);
    return strcasecmp(node, "localhost") == 0 || (n > 10 && strcasecmp(node + n - 10, ".localhost") == 0);
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res) {
    if (!real_getaddrinfo) real_getaddrinfo = dlsym(RTLD_NEXT, "getaddrinfo");
    if (!proxy_port || !node || is_numeric(node) || is_local_name(node) ||
        (hints && (hints->ai_flags & AI_NUMERICHOST)))
        return real_getaddrinfo(node, service, hints, res);
    int family = hints ? hints->ai_family : AF_UNSPEC;
    if (family != AF_UNSPEC && family != AF_INET && family != AF_INET6) return EAI_FAMILY;
    int idx = fake_index(node);
    if (idx < 0) return EAI_FAIL;
    uint32_t ip = FAKE_BASE + (uint32_t)idx + 1;
    char text[64];
    struct in_addr a = {htonl(ip)};
    char v4[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a, v4, sizeof v4);
    snprintf(text, sizeof text, family == AF_INET6 ? "::ffff:%s" : "%s", v4);
    struct addrinfo h = {0};
    if (hints) h = *hints;
    h.ai_family = family == AF_INET6 ? AF_INET6 : AF_INET;
    h.ai_flags = (h.ai_flags | AI_NUMERICHOST) & ~(AI_ADDRCONFIG | AI_V4MAPPED | AI_ALL);
    return real_getaddrinfo(text, service, &h, res);
}

/* ---- connect through the proxy ------------------------------------------------------------- */

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int wait_fd(int fd, short events, long deadline) {
    for (;;) {
        long left = deadline - now_ms();
        if (left <= 0) { errno = ETIMEDOUT; return -1; }
        struct pollfd p = {fd, events, 0};
        int r = poll(&p, 1, (int)left);
        if (r > 0) return 0;
        if (r < 0 && errno != EINTR) return -1;
    }
}

static int send_all(int fd, const char *buf, size_t len, long deadline) {
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n > 0) { buf += n; len -= (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(fd, POLLOUT, deadline) < 0) return -1;
            continue;
        }
        return -1;
    }
    return 0;
}

/* The proxy's reply head, read a byte at a time so no tunnelled byte is consumed. */
static int read_head(int fd, char *buf, size_t cap, long deadline) {
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = recv(fd, buf + n, 1, 0);
        if (r == 1) {
            n++;
            if (n >= 4 && memcmp(buf + n - 4, "\r\n\r\n", 4) == 0) { buf[n] = 0; return 0; }
            continue;
        }
        if (r == 0) { errno = ECONNRESET; return -1; }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (wait_fd(fd, POLLIN, deadline) < 0) return -1;
            continue;
        }
        return -1;
    }
    errno = EPROTO;
    return -1;
}

static int tunnel(int fd, int family, const char *host, int port) {
    long deadline = now_ms() + CONNECT_TIMEOUT_MS;
    int r;
    if (family == AF_INET6) {
        struct sockaddr_in6 p = {.sin6_family = AF_INET6, .sin6_port = htons(proxy_port)};
        p.sin6_addr = in6addr_loopback;
        r = real_connect(fd, (struct sockaddr *)&p, sizeof p);
    } else {
        struct sockaddr_in p = {.sin_family = AF_INET, .sin_port = htons(proxy_port)};
        p.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        r = real_connect(fd, (struct sockaddr *)&p, sizeof p);
    }
    if (r < 0 && errno != EINPROGRESS && errno != EINTR) return -1;
    if (r < 0) {
        if (wait_fd(fd, POLLOUT, deadline) < 0) return -1;
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return -1;
        if (err) { errno = err; return -1; }
    }
    char req[NAME_MAX_LEN + 128];
    int n = snprintf(req, sizeof req, "CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n", host, port, host, port);
    if (n <= 0 || (size_t)n >= sizeof req) { errno = EINVAL; return -1; }
    if (send_all(fd, req, (size_t)n, deadline) < 0) return -1;
    char head[HEAD_MAX];
    if (read_head(fd, head, sizeof head, now_ms() + REPLY_TIMEOUT_MS) < 0) return -1;
    if (strncmp(head, "HTTP/1.", 7) != 0 || strncmp(head + 8, " 200", 4) != 0) {
        errno = ECONNREFUSED; /* denied: boundary has already said why on its stderr */
        return -1;
    }
    return 0;
}

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    if (!real_connect) real_connect = dlsym(RTLD_NEXT, "connect");
    if (!proxy_port || !addr || (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
        return real_connect(fd, addr, len);
    int type = 0;
    socklen_t tl = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_STREAM) return real_connect(fd, addr, len);
    char host[INET6_ADDRSTRLEN + 2];
    int port;
    uint32_t v4 = 0;
    int is_v4 = 0;
    if (addr->sa_family == AF_INET) {
        if (len < sizeof(struct sockaddr_in)) return real_connect(fd, addr, len);
        const struct sockaddr_in *s = (const struct sockaddr_in *)addr;
        v4 = ntohl(s->sin_addr.s_addr);
        is_v4 = 1;
        port = ntohs(s->sin_port);
    } else {
        if (len < sizeof(struct sockaddr_in6)) return real_connect(fd, addr, len);
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)addr;
        port = ntohs(s->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&s->sin6_addr)) {
            memcpy(&v4, &s->sin6_addr.s6_addr[12], 4);
            v4 = ntohl(v4);
            is_v4 = 1;
        } else if (IN6_IS_ADDR_LOOPBACK(&s->sin6_addr)) {
            return real_connect(fd, addr, len); /* the proxy, or a server of the jail's own: boundary decides */
        } else {
            char t[INET6_ADDRSTRLEN];
            inet_ntop(AF_INET6, &s->sin6_addr, t, sizeof t);
            snprintf(host, sizeof host, "[%s]", t);
        }
    }
    if (is_v4) {
        if ((v4 >> 24) == 127) return real_connect(fd, addr, len); /* likewise, all of 127/8 */
        struct in_addr a = {htonl(v4)};
        inet_ntop(AF_INET, &a, host, sizeof host);
    }
    const char *name = is_v4 ? fake_name(v4) : NULL;
    if (is_v4 && (v4 & FAKE_MASK) == FAKE_BASE && !name) { errno = ECONNREFUSED; return -1; }
    int saved_errno = errno;
    if (tunnel(fd, addr->sa_family, name ? name : host, port) < 0) return -1;
    errno = saved_errno;
    return 0;
}

/* ---- exec: put the jail's environment back ------------------------------------------------- */

static int has_key(char *const envp[], const char *kv) {
    size_t k = (size_t)(strchr(kv, '=') - kv);
    for (int i = 0; envp && envp[i]; i++)
        if (strncmp(envp[i], kv, k + 1) == 0) return i;
    return -1;
}

/* A new environment with the saved variables added where missing and the shim first in
 * LD_PRELOAD; NULL when nothing needs to change (or memory is short: exec goes ahead as is). */
static char **jail_env(char *const envp[]) {
    int n = 0;
    while (envp && envp[n]) n++;
    char **out = malloc(sizeof(char *) * (size_t)(n + n_saved + 1));
    if (!out) return NULL;
    int m = 0, changed = 0;
    for (int i = 0; i < n; i++) out[m++] = envp[i];
    out[m] = NULL;
    for (int i = 0; i < n_saved; i++) {
        int at = has_key(out, saved[i]);
        if (at < 0) {
            out[m++] = saved[i];
            changed = 1;
        } else if (shim_path && strncmp(saved[i], "LD_PRELOAD=", 11) == 0 && !strstr(out[at], shim_path)) {
            size_t len = strlen(out[at]) + strlen(shim_path) + 2;
            char *v = malloc(len);
            if (!v) continue;
            snprintf(v, len, "LD_PRELOAD=%s %s", shim_path, out[at] + 11);
            out[at] = v;
            changed = 1;
        }
        out[m] = NULL;
    }
    out[m] = NULL;
    if (!changed) { free(out); return NULL; }
    return out;
}

#define WITH_JAIL_ENV(envp, call)                      \
    do {                                               \
        char **fixed = jail_env(envp);                 \
        int ret_ = (call(fixed ? fixed : (envp)));     \
        int err_ = errno;                              \
        free(fixed);                                   \
        errno = err_;                                  \
        return ret_;                                   \
    } while (0)

int execve(const char *path, char *const argv[], char *const envp[]) {
    if (!real_execve) real_execve = dlsym(RTLD_NEXT, "execve");
#define CALL(e) real_execve(path, argv, e)
    WITH_JAIL_ENV(envp, CALL);
#undef CALL
}

int execvpe(const char *file, char *const argv[], char *const envp[]) {
    if (!real_execvpe) real_execvpe = dlsym(RTLD_NEXT, "execvpe");
#define CALL(e) real_execvpe(file, argv, e)
    WITH_JAIL_ENV(envp, CALL);
#undef CALL
}

int fexecve(int fd, char *const argv[], char *const envp[]) {
    if (!real_fexecve) real_fexecve = dlsym(RTLD_NEXT, "fexecve");
#define CALL(e) real_fexecve(fd, argv, e)
    WITH_JAIL_ENV(envp, CALL);
#undef CALL
}

int execv(const char *path, char *const argv[]) { return execve(path, argv, environ); }

int execvp(const char *file, char *const argv[]) { return execvpe(file, argv, environ); }

/* execl, execlp, execle: collect the variadic arguments, then go through the wrappers above */
#define COLLECT_ARGS(first, ap, argv)                          \
    va_list ap;                                                \
    size_t n_ = 1;                                             \
    va_start(ap, first);                                       \
    while (va_arg(ap, char *)) n_++;                           \
    va_end(ap);                                                \
    char **argv = alloca(sizeof(char *) * (n_ + 1));           \
    argv[0] = (char *)(first);                                 \
    va_start(ap, first);                                       \
    for (size_t i_ = 1; i_ <= n_; i_++) argv[i_] = va_arg(ap, char *);

int execl(const char *path, const char *arg, ...) {
    COLLECT_ARGS(arg, ap, argv)
    va_end(ap);
    return execve(path, argv, environ);
}

int execlp(const char *file, const char *arg, ...) {
    COLLECT_ARGS(arg, ap, argv)
    va_end(ap);
    return execvpe(file, argv, environ);
}

int execle(const char *path, const char *arg, ...) {
    COLLECT_ARGS(arg, ap, argv)
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    return execve(path, argv, envp);
}

int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa, const posix_spawnattr_t *attr,
                char *const argv[], char *const envp[]) {
    if (!real_posix_spawn) real_posix_spawn = dlsym(RTLD_NEXT, "posix_spawn");
#define CALL(e) real_posix_spawn(pid, path, fa, attr, argv, e)
    WITH_JAIL_ENV(envp, CALL);
#undef CALL
}

int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa, const posix_spawnattr_t *attr,
                 char *const argv[], char *const envp[]) {
    if (!real_posix_spawnp) real_posix_spawnp = dlsym(RTLD_NEXT, "posix_spawnp");
#define CALL(e) real_posix_spawnp(pid, file, fa, attr, argv, e)
    WITH_JAIL_ENV(envp, CALL);
#undef CALL
}
