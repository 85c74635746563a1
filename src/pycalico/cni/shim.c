/*
 * pycalico CNI fast-path shim (compiled by `calico-node install-cni` when a C compiler exists).
 *
 * Owns: forwarding one CNI invocation to the node's pycalico CNI server over a unix socket,
 * so a container ADD does not pay Python interpreter start-up and imports. Protocol:
 *   request : "<plugin>\0" then "KEY=VALUE\0" for every environment variable, "\0", stdin bytes
 *   response: one byte exit status, then the plugin's stdout bytes
 * Status 255 from the server means "not for me" (e.g. the caller's network namespace differs
 * from the server's) and, like any connection failure, makes the shim exec the Python plugin
 * (FALLBACK_DIR/<plugin>.py) with the same argv, environment and stdin: behaviour never depends
 * on the server running, only speed does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef SOCKET_PATH
#define SOCKET_PATH "/var/run/calico/cni.sock"
#endif
#ifndef FALLBACK_DIR
#define FALLBACK_DIR "/opt/cni/bin"
#endif

extern char **environ;

static char *buf;
static size_t len, cap;

static void put(const void *p, size_t n) {
    if (len + n > cap) {
        cap = (len + n) * 2 + 4096;
        buf = realloc(buf, cap);
        if (!buf) _exit(70);
    }
    memcpy(buf + len, p, n);
    len += n;
}

static const char *base(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static void fallback(char **argv, const char *plugin, size_t stdin_off) {
    char path[4096];
    snprintf(path, sizeof path, "%s/.%s.py", FALLBACK_DIR, plugin);
    int fd = memfd_create("cni-stdin", 0);
    if (fd >= 0) {
        size_t off = stdin_off;
        while (off < len) {
            ssize_t w = write(fd, buf + off, len - off);
            if (w <= 0) break;
            off += (size_t)w;
        }
        lseek(fd, 0, SEEK_SET);
        dup2(fd, 0);
        close(fd);
    }
    setenv("PYCALICO_CNI_IN_PROCESS", "1", 1); /* the server already said no */
    execv(path, argv);
    fprintf(stderr, "calico shim: cannot exec %s: %s\n", path, strerror(errno));
    _exit(1);
}

int main(int argc, char **argv) {
    (void)argc;
    const char *plugin = base(argv[0]);
    const char *sock = getenv("CALICO_CNI_SOCKET");
    if (!sock || !*sock) sock = SOCKET_PATH;
    put(plugin, strlen(plugin) + 1);
    for (char **e = environ; *e; e++) put(*e, strlen(*e) + 1);
    put("", 1);
    size_t stdin_off = len;
    char tmp[65536];
    for (;;) {
        ssize_t r = read(0, tmp, sizeof tmp);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        put(tmp, (size_t)r);
    }
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    strncpy(a.sun_path, sock, sizeof a.sun_path - 1);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0) fallback(argv, plugin, stdin_off);
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(s, buf + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) fallback(argv, plugin, stdin_off);
        off += (size_t)w;
    }
    shutdown(s, SHUT_WR);
    unsigned char status;
    ssize_t r;
    while ((r = read(s, &status, 1)) < 0 && errno == EINTR) {}
    if (r == 1 && status == 255) fallback(argv, plugin, stdin_off);
    if (r != 1) { /* the server may have acted: never run the command a second time */
        fputs("{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"pycalico CNI server "
              "connection lost; try again later\"}", stdout);
        return 1;
    }
    for (;;) {
        r = read(s, tmp, sizeof tmp);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        for (ssize_t o = 0; o < r;) {
            ssize_t w = write(1, tmp + o, (size_t)(r - o));
            if (w <= 0) break;
            o += w;
        }
    }
    return status;
}
