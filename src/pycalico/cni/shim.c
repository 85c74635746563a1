/*
 * pycalico CNI fast-path shim (compiled by `calico-node install-cni` when a C compiler exists).
 *
 * Owns: forwarding one CNI invocation to the node's pycalico CNI server over a unix socket,
 * so a container ADD does not pay Python interpreter start-up and imports. Protocol:
 *   request : "<plugin>\0" then "KEY=VALUE\0" for every environment variable, "\0", stdin bytes
 *   response: one byte exit status, then the plugin's stdout bytes
 *   ancillary: an fd of the namespace at $CNI_NETNS (SCM_RIGHTS, on the request's first
 *             bytes) when the shim can open it: the runtime may have mounted that path in its
 *             own mount namespace, where the server cannot see it.
 * Status 255 from the server means "not for me" (e.g. the caller's network namespace differs
 * from the server's, or it needed the namespace fd and got none) and, like any connection
 * failure, makes the shim exec the Python plugin (FALLBACK_DIR/<plugin>.py) with the same argv,
 * environment and stdin: behaviour never depends on the server running, only speed does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
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
    const char *netns = getenv("CNI_NETNS");
    int nsfd = netns && *netns ? open(netns, O_RDONLY | O_CLOEXEC) : -1;
    if (nsfd >= 0) { /* first bytes carry the namespace fd */
        union {
            struct cmsghdr h;
            char b[CMSG_SPACE(sizeof(int))];
        } ctl;
        memset(&ctl, 0, sizeof ctl);
        struct iovec iov = {buf, len};
        struct msghdr m = {0};
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = ctl.b;
        m.msg_controllen = sizeof ctl.b;
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &nsfd, sizeof(int));
        ssize_t w;
        while ((w = sendmsg(s, &m, MSG_NOSIGNAL)) < 0 && errno == EINTR) {}
        close(nsfd);
        if (w <= 0) fallback(argv, plugin, stdin_off);
        off = (size_t)w;
    }
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
