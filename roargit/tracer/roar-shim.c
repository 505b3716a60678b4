/*
 * roar-shim.so: the in-process half of roar-trace, loaded with LD_PRELOAD into every
 * dynamically linked program of a traced run (docs/trace-format.md, "The shim").
 *
 * It wraps libc's file calls (open family, fopen, creat, rename/link/symlink/unlink/
 * truncate, mkdir/rmdir), appends the same record the tracer would write to the event log
 * (one unbuffered write(2) of a whole line to a file opened with O_APPEND, so a killed
 * process loses nothing it already did and lines of concurrent processes never mix), and then
 * issues the system call itself with ROAR_SHIM_MARKER in args[5]. The tracer's seccomp filter
 * lets marked calls pass without a ptrace stop, so a file call costs a few microseconds
 * instead of a stop (tens of microseconds).
 *
 * Whenever the shim cannot record a call (no log configured, the log fd is gone, a path
 * too long for its buffers, an empty path, cwd unreachable), it issues the call *without*
 * the marker: the call then stops in the tracer, which records it as before. So the shim
 * is an accelerator, never a source of misses. chdir/fchdir and exec are not wrapped: they
 * are rare and the tracer needs to see them (cwd cache, exec records).
 */
#undef _FORTIFY_SOURCE
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include "roar-shim.h"

#define EXPORT __attribute__((visibility("default")))
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE 2
#endif
#ifndef O_PATH
#define O_PATH 010000000
#endif
#ifndef AT_EMPTY_PATH
#define AT_EMPTY_PATH 0x1000
#endif

static int log_fd = -1;  /* -1: not recording, every call traps to the tracer */
static pid_t view_pid;   /* the process whose view of the file system was last checked */
static dev_t log_dev;
static ino_t log_ino;
static char log_path[PATH_MAX];

/* The system call with the marker in its sixth argument register, which is cleared again in
 * the same instruction sequence: libc's wrappers do not set the argument registers a call
 * does not use, so a marker left there would let the next unmarked call of this thread (say,
 * libc's own open_by_handle_at or an internal openat) pass the filter unseen. */
static long marked(long nr, long a0, long a1, long a2, long a3, long a4) {
    long ret;
#if defined(__x86_64__)
    register long r10 __asm__("r10") = a3;
    register long r8 __asm__("r8") = a4;
    register long r9 __asm__("r9") = (long)ROAR_SHIM_MARKER;
    __asm__ volatile("syscall\n\txor %%r9d, %%r9d"
                     : "=a"(ret), "+r"(r9)
                     : "0"(nr), "D"(a0), "S"(a1), "d"(a2), "r"(r10), "r"(r8)
                     : "rcx", "r11", "memory");
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = nr;
    register long x0 __asm__("x0") = a0;
    register long x1 __asm__("x1") = a1;
    register long x2 __asm__("x2") = a2;
    register long x3 __asm__("x3") = a3;
    register long x4 __asm__("x4") = a4;
    register long x5 __asm__("x5") = (long)ROAR_SHIM_MARKER;
    __asm__ volatile("svc #0\n\tmov x5, xzr"
                     : "+r"(x0), "+r"(x5)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4)
                     : "memory");
    ret = x0;
#else
#error "roar-shim supports x86_64 and aarch64"
#endif
    if (ret < 0 && ret > -4096) {
        errno = (int)-ret;
        return -1;
    }
    return ret;
}
static long plain(long nr, long a0, long a1, long a2, long a3, long a4) {
    return syscall(nr, a0, a1, a2, a3, a4, 0L);
}

/* Open the log (with the marker: the tracer must not record it) on a high fd number, so the
 * program's own fds are not disturbed. */
static int open_log(void) {
    int fd = (int)marked(SYS_openat, AT_FDCWD, (long)log_path, O_WRONLY | O_APPEND | O_CLOEXEC, 0,
                         0);
    if (fd < 0) return -1;
    int high = fcntl(fd, F_DUPFD_CLOEXEC, 700);
    if (high >= 0) {
        close(fd);
        fd = high;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return -1;
    }
    log_dev = st.st_dev;
    log_ino = st.st_ino;
    return fd;
}

/* Is the file system ours as the tracer's (ROAR_SHIM_VIEW_ENV)? In a chroot or another mount
 * namespace the paths we would record may name other files: the tracer translates or refuses
 * them, so there we record nothing and every call goes to it. */
static int same_view(void) {
    const char *want = getenv(ROAR_SHIM_VIEW_ENV);
    char ns[64], have[160];
    struct stat st;
    ssize_t n = readlink("/proc/self/ns/mnt", ns, sizeof ns - 1);
    if (!want || n <= 0 || stat("/", &st) != 0) return 0;
    ns[n] = 0;
    snprintf(have, sizeof have, "%s %lu:%lu", ns, (unsigned long)st.st_dev,
             (unsigned long)st.st_ino);
    return strcmp(want, have) == 0;
}

__attribute__((constructor)) static void shim_init(void) {
    const char *p = getenv(ROAR_SHIM_LOG_ENV);
    if (!p || p[0] != '/' || strlen(p) >= sizeof log_path || !same_view()) return;
    strcpy(log_path, p);
    int e = errno;
    view_pid = getpid();
    log_fd = open_log();
    errno = e;
}

/* The log fd, checked: the program may have closed our fd and reused its number (for
 * example after fork, before exec); writing there would corrupt its file. The first record of
 * a new process (`pid`, from the record) checks its view again: a clone with CLONE_NEWNS
 * starts in another mount namespace with us loaded and recording. */
static int current_log(pid_t pid) {
    int fd = __atomic_load_n(&log_fd, __ATOMIC_RELAXED);
    if (fd < 0) return -1;
    if (pid != __atomic_load_n(&view_pid, __ATOMIC_RELAXED)) {
        if (!same_view()) {
            fd = __atomic_exchange_n(&log_fd, -1, __ATOMIC_SEQ_CST);
            if (fd >= 0) close(fd);
            return -1;
        }
        __atomic_store_n(&view_pid, pid, __ATOMIC_RELAXED);
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_ino == log_ino && st.st_dev == log_dev) return fd;
    int nfd = open_log();
    __atomic_store_n(&log_fd, nfd, __ATOMIC_RELAXED);
    return nfd;
}

/* ------------------------------------------------------------------ one log line */

struct line {
    char buf[PATH_MAX + 256];
    size_t len;
    int overflow;
    pid_t pid;
};

static void put_raw(struct line *l, const char *s, size_t n) {
    if (l->len + n > sizeof l->buf) {
        l->overflow = 1;
        return;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

/* Escaped path bytes (trace-format.md: bytes <= 0x20, '%' and 0x7f as %XX). */
static void put_esc(struct line *l, const char *s) {
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (l->len + 3 > sizeof l->buf) {
            l->overflow = 1;
            return;
        }
        if (c <= 0x20 || c == '%' || c == 0x7f) {
            l->buf[l->len++] = '%';
            l->buf[l->len++] = hex[c >> 4];
            l->buf[l->len++] = hex[c & 15];
        } else {
            l->buf[l->len++] = (char)c;
        }
    }
}

static void put_num(struct line *l, unsigned long long v, int base16) {
    char tmp[24];
    int n = 0;
    unsigned b = base16 ? 16 : 10;
    do {
        tmp[n++] = "0123456789abcdef"[v % b];
        v /= b;
    } while (v);
    char out[24];
    for (int i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    put_raw(l, out, (size_t)n);
}

static void put_head(struct line *l, const char *kind) {
    l->len = 0;
    l->overflow = 0;
    put_raw(l, kind, strlen(kind));
    put_raw(l, " ", 1);
    l->pid = getpid();
    put_num(l, (unsigned long long)l->pid, 0);
}

/* The path of an open fd (the kernel's name for it); -1 if it has none we can use. */
static int fd_path(int fd, char *out, size_t cap) {
    char link[40] = "/proc/self/fd/";
    size_t k = strlen(link);
    char num[16];
    int n = 0;
    unsigned v = (unsigned)fd;
    if (fd < 0) return -1;
    do {
        num[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) link[k++] = num[--n];
    link[k] = 0;
    ssize_t r = readlink(link, out, cap - 1);
    if (r <= 0 || out[0] != '/') return -1;
    out[r] = 0;
    return 0;
}

/* Folders resolved for "..", per process: a compiler names the same `lib/gcc/…/../../..`
 * folders over and over. An entry holds while this process has not made, renamed or removed
 * a name since (dircache_gen); a link re-pointed by another process meanwhile is not seen,
 * which is the price of the cache. A slot in use by another thread (or by the signal handler
 * that interrupted us) is a miss, never a wait. */
#define DIRCACHE_SLOTS 64
#define DIRCACHE_LEN 512
static struct dircache_slot {
    unsigned gen;
    int busy;
    char key[DIRCACHE_LEN], val[DIRCACHE_LEN];
} dircache[DIRCACHE_SLOTS];
static unsigned dircache_gen = 1;

static void dircache_forget(void) { __atomic_add_fetch(&dircache_gen, 1, __ATOMIC_SEQ_CST); }

static struct dircache_slot *dircache_slot(const char *dir) {
    unsigned h = 2166136261u; /* FNV-1a */
    for (const char *c = dir; *c; c++) h = (h ^ (unsigned char)*c) * 16777619u;
    struct dircache_slot *s = &dircache[h % DIRCACHE_SLOTS];
    return __atomic_exchange_n(&s->busy, 1, __ATOMIC_ACQUIRE) ? NULL : s;
}

static int dircache_get(const char *dir, char *out, size_t cap) {
    struct dircache_slot *s = strlen(dir) < DIRCACHE_LEN ? dircache_slot(dir) : NULL;
    if (!s) return -1;
    int hit = s->gen == __atomic_load_n(&dircache_gen, __ATOMIC_SEQ_CST) &&
              strcmp(s->key, dir) == 0 && strlen(s->val) < cap;
    if (hit) strcpy(out, s->val);
    __atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE);
    return hit ? 0 : -1;
}

static void dircache_put(const char *dir, const char *real, unsigned gen) {
    struct dircache_slot *s =
        strlen(dir) < DIRCACHE_LEN && strlen(real) < DIRCACHE_LEN ? dircache_slot(dir) : NULL;
    if (!s) return;
    strcpy(s->key, dir);
    strcpy(s->val, real);
    s->gen = gen; /* as it was before the lookup: a change during it makes this a miss */
    __atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE);
}

/* A ".." component is taken as the kernel takes it: after a symlinked folder it goes up from
 * the link's target (resolve_dotdot in roar-trace.c, which this mirrors). The folder part is
 * opened with O_PATH (a marked call: it is no access) and named from /proc/self/fd. */
static int resolve_dotdot(char *path, size_t cap) {
    const char *s = path;
    int dotdot = 0;
    while (!dotdot && (s = strstr(s, "/..")) != NULL) {
        dotdot = s[3] == '/' || s[3] == 0;
        s += 3;
    }
    if (!dotdot) return 0;
    char *slash = strrchr(path, '/');
    const char *name = slash + 1;
    int whole = !*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0;
    char dir[PATH_MAX], real[PATH_MAX], tail[PATH_MAX];
    size_t dlen = whole ? strlen(path) : (size_t)(slash - path);
    if (dlen >= sizeof dir || strlen(name) >= sizeof tail) return -1;
    memcpy(dir, path, dlen);
    dir[dlen] = 0;
    if (!dlen) strcpy(dir, "/");
    strcpy(tail, whole ? "" : name);
    if (dircache_get(dir, real, sizeof real) != 0) {
        unsigned gen = __atomic_load_n(&dircache_gen, __ATOMIC_SEQ_CST);
        int fd =
            (int)marked(SYS_openat, AT_FDCWD, (long)dir, O_PATH | O_DIRECTORY | O_CLOEXEC, 0, 0);
        if (fd < 0) return -1;
        int r = fd_path(fd, real, sizeof real);
        close(fd);
        if (r != 0) return -1;
        dircache_put(dir, real, gen);
    }
    size_t rl = strlen(real), tl = strlen(tail);
    int sep = tl && strcmp(real, "/") != 0;
    if (rl + (size_t)sep + tl + 1 > cap) return -1;
    memcpy(path, real, rl);
    if (sep) path[rl++] = '/';
    memcpy(path + rl, tail, tl + 1);
    return 0;
}

/* " PATH" resolved against dirfd / cwd like the tracer does (absolute, not normalised but for
 * ".."). An empty path names dirfd itself where `empty_ok` (AT_EMPTY_PATH). Returns -1 where
 * the shim cannot resolve it; the caller then lets the call trap. */
static int put_path_at(struct line *l, int dirfd, const char *path, int empty_ok) {
    if (!path || (!path[0] && !empty_ok)) return -1;
    char full[PATH_MAX * 2];
    size_t n = 0, len = strlen(path);
    if (path[0] != '/') {
        if (dirfd == AT_FDCWD) {
            if (!getcwd(full, PATH_MAX) || full[0] != '/') return -1;
        } else if (fd_path(dirfd, full, PATH_MAX) != 0) {
            return -1;
        }
        n = strlen(full);
        if (len && strcmp(full, "/") != 0) full[n++] = '/';
    }
    if (n + len + 1 > sizeof full) return -1;
    memcpy(full + n, path, len + 1);
    if (resolve_dotdot(full, sizeof full) != 0) return -1;
    put_raw(l, " ", 1);
    put_esc(l, full);
    return l->overflow ? -1 : 0;
}

static int put_path(struct line *l, int dirfd, const char *path) {
    return put_path_at(l, dirfd, path, 0);
}

static void put_exists(struct line *l, int dirfd, const char *path) {
    struct stat st;
    put_raw(l, fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0 ? " 1" : " 0", 2);
}

/* Write the finished line; 0 if it is in the log. */
static int emit(struct line *l) {
    put_raw(l, "\n", 1);
    if (l->overflow) return -1;
    int fd = current_log(l->pid);
    if (fd < 0) return -1;
    ssize_t n;
    do {
        n = write(fd, l->buf, l->len);
    } while (n < 0 && errno == EINTR);
    return n == (ssize_t)l->len ? 0 : -1;
}

/* ------------------------------------------------------------------ the calls */

static int do_openat(int dirfd, const char *path, int flags, mode_t mode) {
    int e = errno;
    int recorded = 0;
    if (log_fd >= 0 && path) {
        if (flags & (O_DIRECTORY | O_PATH)) {
            recorded = 1; /* not a file access (trace-format.md): nothing to record */
        } else {
            struct line l;
            put_head(&l, "open");
            put_raw(&l, " ", 1);
            put_num(&l, (unsigned)flags, 1);
            if (flags & O_CREAT)
                put_exists(&l, dirfd, path);
            else
                put_raw(&l, " -", 2);
            recorded = put_path(&l, dirfd, path) == 0 && emit(&l) == 0;
        }
    }
    errno = e;
    return (int)(recorded ? marked : plain)(SYS_openat, dirfd, (long)path, flags, (long)mode, 0);
}

static mode_t mode_arg(int flags, va_list ap) {
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

EXPORT int open(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t m = mode_arg(flags, ap);
    va_end(ap);
    return do_openat(AT_FDCWD, path, flags, m);
}
EXPORT int open64(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t m = mode_arg(flags, ap);
    va_end(ap);
    return do_openat(AT_FDCWD, path, flags, m);
}
EXPORT int openat(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t m = mode_arg(flags, ap);
    va_end(ap);
    return do_openat(dirfd, path, flags, m);
}
EXPORT int openat64(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t m = mode_arg(flags, ap);
    va_end(ap);
    return do_openat(dirfd, path, flags, m);
}
/* _FORTIFY_SOURCE variants (no mode: O_CREAT is not allowed with them) */
EXPORT int __open_2(const char *path, int flags) { return do_openat(AT_FDCWD, path, flags, 0); }
EXPORT int __open64_2(const char *path, int flags) { return do_openat(AT_FDCWD, path, flags, 0); }
EXPORT int __openat_2(int d, const char *path, int flags) { return do_openat(d, path, flags, 0); }
EXPORT int __openat64_2(int d, const char *path, int flags) { return do_openat(d, path, flags, 0); }

EXPORT int creat(const char *path, mode_t mode) {
    return do_openat(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}
EXPORT int creat64(const char *path, mode_t mode) {
    return do_openat(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

static void *dlsym_next(const char *name) { return dlsym(RTLD_NEXT, name); }

/* fopen = our open + fdopen, so glibc's internal (unwrapped) open is not used. Modes we do
 * not parse (",ccs=") fall back to libc's fopen, whose open then traps. */
static FILE *do_fopen(const char *path, const char *mode, int large) {
    int flags, i = 1;
    char fmode[3] = {mode ? mode[0] : 0, 0, 0};
    switch (fmode[0]) {
    case 'r': flags = O_RDONLY; break;
    case 'w': flags = O_WRONLY | O_CREAT | O_TRUNC; break;
    case 'a': flags = O_WRONLY | O_CREAT | O_APPEND; break;
    default: errno = EINVAL; return NULL;
    }
    for (; mode[i]; i++) {
        switch (mode[i]) {
        case '+':
            flags = (flags & ~O_ACCMODE) | O_RDWR;
            fmode[1] = '+';
            break;
        case 'x': flags |= O_EXCL; break;
        case 'e': flags |= O_CLOEXEC; break;
        case 'b': case 't': case 'm': case 'c': break;
        default: {
            FILE *(*real)(const char *, const char *) =
                (FILE * (*)(const char *, const char *)) dlsym_next(large ? "fopen64" : "fopen");
            if (!real) {
                errno = EINVAL;
                return NULL;
            }
            return real(path, mode);
        }
        }
    }
    int fd = do_openat(AT_FDCWD, path, flags, 0666);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, fmode);
    if (!f) {
        int e = errno;
        close(fd);
        errno = e;
    }
    return f;
}

EXPORT FILE *fopen(const char *path, const char *mode) { return do_fopen(path, mode, 0); }
EXPORT FILE *fopen64(const char *path, const char *mode) { return do_fopen(path, mode, 1); }

/* One record "KIND PID EXISTED PATH" (EXISTED of PATH, checked before the call). */
static int record1(const char *kind, int dirfd, const char *path) {
    if (log_fd < 0 || !path || !path[0]) return 0;
    struct line l;
    put_head(&l, kind);
    put_exists(&l, dirfd, path);
    return put_path(&l, dirfd, path) == 0 && emit(&l) == 0;
}

/* "KIND PID EXISTED FROM TO" (EXISTED of TO); a literal FROM (1) is the symlink's text; with
 * EMPTY_NAMES_FD (2) an empty FROM names the fd d1 (linkat's AT_EMPTY_PATH). */
#define EMPTY_NAMES_FD 2
static int record2(const char *kind, int d1, const char *p1, int literal, int d2, const char *p2) {
    if (log_fd < 0 || !p1 || (!p1[0] && literal != EMPTY_NAMES_FD) || !p2 || !p2[0]) return 0;
    struct line l;
    put_head(&l, kind);
    put_exists(&l, d2, p2);
    if (literal == 1) {
        put_raw(&l, " ", 1);
        put_esc(&l, p1);
    } else if (put_path_at(&l, d1, p1, literal == EMPTY_NAMES_FD) != 0) {
        return 0;
    }
    return put_path(&l, d2, p2) == 0 && emit(&l) == 0;
}

#define CALL(ok, nr, a0, a1, a2, a3, a4)                                                        \
    do {                                                                                        \
        int ok_ = (ok);                                                                         \
        errno = e_;                                                                             \
        return (int)(ok_ ? marked : plain)(nr, (long)(a0), (long)(a1), (long)(a2), (long)(a3),  \
                                           (long)(a4));                                         \
    } while (0)

/* CALL, for a call that may change how a folder path resolves (a name made, moved or removed):
 * the ".." cache forgets what it knew once the call is done. */
#define CALL_FORGET(ok, nr, a0, a1, a2, a3, a4)                                                 \
    do {                                                                                        \
        int ok_ = (ok);                                                                         \
        errno = e_;                                                                             \
        long r_ = (ok_ ? marked : plain)(nr, (long)(a0), (long)(a1), (long)(a2), (long)(a3),    \
                                         (long)(a4));                                           \
        dircache_forget();                                                                      \
        return (int)r_;                                                                         \
    } while (0)

static int do_renameat2(int d1, const char *p1, int d2, const char *p2, unsigned flags) {
    int e_ = errno;
    int ok = record2("rename", d1, p1, 0, d2, p2);
    if (ok && (flags & RENAME_EXCHANGE)) ok = record2("rename", d2, p2, 0, d1, p1);
    CALL_FORGET(ok, SYS_renameat2, d1, p1, d2, p2, flags);
}
EXPORT int rename(const char *a, const char *b) { return do_renameat2(AT_FDCWD, a, AT_FDCWD, b, 0); }
EXPORT int renameat(int d1, const char *a, int d2, const char *b) {
    return do_renameat2(d1, a, d2, b, 0);
}
EXPORT int renameat2(int d1, const char *a, int d2, const char *b, unsigned flags) {
    return do_renameat2(d1, a, d2, b, flags);
}

static int do_linkat(int d1, const char *a, int d2, const char *b, int flags) {
    int e_ = errno;
    /* AT_EMPTY_PATH links the open fd d1 itself: an O_TMPFILE file gets its name here. */
    int ok = record2("link", d1, a, (flags & AT_EMPTY_PATH) ? EMPTY_NAMES_FD : 0, d2, b);
    CALL(ok, SYS_linkat, d1, a, d2, b, flags);
}
EXPORT int link(const char *a, const char *b) { return do_linkat(AT_FDCWD, a, AT_FDCWD, b, 0); }
EXPORT int linkat(int d1, const char *a, int d2, const char *b, int flags) {
    return do_linkat(d1, a, d2, b, flags);
}

static int do_symlinkat(const char *target, int d, const char *lnk) {
    int e_ = errno;
    int ok = record2("symlink", AT_FDCWD, target, 1, d, lnk);
    CALL_FORGET(ok, SYS_symlinkat, target, d, lnk, 0, 0);
}
EXPORT int symlink(const char *t, const char *l) { return do_symlinkat(t, AT_FDCWD, l); }
EXPORT int symlinkat(const char *t, int d, const char *l) { return do_symlinkat(t, d, l); }

static int do_unlinkat(int d, const char *p, int flags) {
    int e_ = errno;
    int ok = record1((flags & AT_REMOVEDIR) ? "rmdir" : "unlink", d, p);
    CALL_FORGET(ok, SYS_unlinkat, d, p, flags, 0, 0);
}
EXPORT int unlink(const char *p) { return do_unlinkat(AT_FDCWD, p, 0); }
EXPORT int unlinkat(int d, const char *p, int flags) { return do_unlinkat(d, p, flags); }
EXPORT int rmdir(const char *p) { return do_unlinkat(AT_FDCWD, p, AT_REMOVEDIR); }

static int do_mkdirat(int d, const char *p, mode_t mode) {
    int e_ = errno;
    int ok = record1("mkdir", d, p);
    CALL(ok, SYS_mkdirat, d, p, mode, 0, 0);
}
EXPORT int mkdir(const char *p, mode_t mode) { return do_mkdirat(AT_FDCWD, p, mode); }
EXPORT int mkdirat(int d, const char *p, mode_t mode) { return do_mkdirat(d, p, mode); }

static int do_truncate(const char *p, off_t len) {
    int e_ = errno;
    int ok = record1("truncate", AT_FDCWD, p);
    CALL(ok, SYS_truncate, p, len, 0, 0, 0);
}
EXPORT int truncate(const char *p, off_t len) { return do_truncate(p, len); }
EXPORT int truncate64(const char *p, off64_t len) { return do_truncate(p, (off_t)len); }

/* ------------------------------------------------------------------ changes of view */

/* chroot, unshare(CLONE_NEWNS), setns: after them our paths may not be the tracer's. Recording
 * stops before the call (so no thread records a path of the new view) and resumes if it failed
 * or left the view as it was. The call carries the marker: it still stops in the tracer (which
 * must see it), and tells it that we stopped recording. */
static long view_call(long nr, long a0, long a1) {
    int e = errno;
    int was = __atomic_exchange_n(&log_fd, -1, __ATOMIC_SEQ_CST);
    errno = e;
    long r = marked(nr, a0, a1, 0, 0, 0);
    e = errno;
    if (was >= 0) {
        if (r != 0 || same_view())
            __atomic_store_n(&log_fd, was, __ATOMIC_SEQ_CST);
        else
            close(was);
    }
    errno = e;
    return r;
}
EXPORT int chroot(const char *path) { return (int)view_call(SYS_chroot, (long)path, 0); }
EXPORT int unshare(int flags) { return (int)view_call(SYS_unshare, flags, 0); }
EXPORT int setns(int fd, int nstype) { return (int)view_call(SYS_setns, fd, nstype); }

/* ------------------------------------------------------------------ connections */

/* A connect to a server on this machine (a Unix socket, loopback) is recorded: the server may
 * do work for the run that no trace of the run sees (roar_local_peer). Others pass unrecorded;
 * they never stop in the tracer either way once marked. */
EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    int e = errno;
    int ok = log_fd >= 0;
    const char *family;
    char peer[PATH_MAX];
    if (ok && addr && roar_local_peer(addr, len, &family, peer, sizeof peer)) {
        struct line l;
        put_head(&l, "connect");
        put_raw(&l, " ", 1);
        put_raw(&l, family, strlen(family));
        put_raw(&l, " ", 1);
        put_esc(&l, peer);
        ok = emit(&l) == 0;
    }
    errno = e;
    return (int)(ok ? marked : plain)(SYS_connect, fd, (long)addr, (long)len, 0, 0);
}
