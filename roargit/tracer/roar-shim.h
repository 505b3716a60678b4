/*
 * Shared between roar-trace.c (the tracer) and roar-shim.c (the LD_PRELOAD shim).
 *
 * The shim records a file call itself and then issues the system call with ROAR_SHIM_MARKER
 * in the sixth argument register (args[5]), which no file call we trace uses; the tracer's
 * seccomp filter lets such calls through without a ptrace stop. Everything else (no shim,
 * static binaries, raw syscalls, glibc-internal opens) still stops in the tracer.
 */
#ifndef ROAR_SHIM_H
#define ROAR_SHIM_H

#define ROAR_SHIM_MARKER 0x726f617273686d21ULL /* "roarshm!" */
#define ROAR_SHIM_MARKER_LO 0x73686d21U
#define ROAR_SHIM_MARKER_HI 0x726f6172U

/* Environment: the log the shim appends to (absolute path). Set by the tracer. */
#define ROAR_SHIM_LOG_ENV "ROAR_SHIM_LOG"
/* The tracer's view of the file system, "MNT_NS DEV:INO" (readlink of /proc/self/ns/mnt, and
 * the device and inode of its "/"): a shim in another view (a chroot, another mount namespace)
 * records nothing, so that the tracer, which translates or refuses such paths, sees its calls. */
#define ROAR_SHIM_VIEW_ENV "ROAR_SHIM_VIEW"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

/* The `connect` record's FAMILY and ADDRESS (docs/trace-format.md) for a connect to a server
 * on this machine: "unix" and the socket's path ("@name" for an abstract one), or "inet" and
 * "127.0.0.1:PORT" / "[::1]:PORT" for loopback. 0 for any other address (the network, not a
 * process of this machine that roar could name). */
static inline int roar_local_peer(const void *addr, size_t len, const char **family, char *out,
                                  size_t cap) {
    sa_family_t fam;
    if (len < sizeof fam) return 0;
    memcpy(&fam, addr, sizeof fam);
    if (fam == AF_UNIX) {
        struct sockaddr_un un;
        size_t n = len > sizeof un ? sizeof un : len;
        memset(&un, 0, sizeof un);
        memcpy(&un, addr, n);
        size_t plen = n - offsetof(struct sockaddr_un, sun_path);
        if (n <= offsetof(struct sockaddr_un, sun_path) || plen >= cap) return 0;
        *family = "unix";
        if (un.sun_path[0] == 0) { /* abstract: a name, not a path; may hold any byte */
            out[0] = '@';
            memcpy(out + 1, un.sun_path + 1, plen - 1);
            out[plen] = 0;
            for (size_t i = 1; i < plen; i++)
                if (!out[i]) out[i] = '@';
        } else {
            memcpy(out, un.sun_path, plen);
            out[plen] = 0;
        }
        return 1;
    }
    char ip[INET6_ADDRSTRLEN];
    if (fam == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in in;
        memcpy(&in, addr, sizeof in);
        if ((ntohl(in.sin_addr.s_addr) >> 24) != 127) return 0;
        inet_ntop(AF_INET, &in.sin_addr, ip, sizeof ip);
        snprintf(out, cap, "%s:%u", ip, ntohs(in.sin_port));
        *family = "inet";
        return 1;
    }
    if (fam == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 in6;
        memcpy(&in6, addr, sizeof in6);
        const unsigned char *b = in6.sin6_addr.s6_addr;
        static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        int loop = IN6_IS_ADDR_LOOPBACK(&in6.sin6_addr) ||
                   (memcmp(b, v4mapped, 12) == 0 && b[12] == 127);
        if (!loop) return 0;
        inet_ntop(AF_INET6, &in6.sin6_addr, ip, sizeof ip);
        snprintf(out, cap, "[%s]:%u", ip, ntohs(in6.sin6_port));
        *family = "inet";
        return 1;
    }
    return 0;
}

#endif
