/*
 * roar-trace: record the file accesses of a command and of every process it starts.
 *
 *   roar-trace --log FILE [--summary FILE [--stat-files]] [--cwd DIR] [--no-filter]
 *              [--no-shim] [--grace SECONDS] [--sigint-ignored] -- CMD [ARG...]
 *
 * The command runs under ptrace with a seccomp-bpf filter installed before its execve, so
 * only the file-related system calls (open family, rename/unlink/link/symlink/truncate,
 * mkdir/rmdir, chdir, execve) stop it, once, at syscall entry (SECCOMP_RET_TRACE gives a
 * PTRACE_EVENT_SECCOMP stop); every other call runs at full speed. The tracer never takes
 * the exit stop: the path and flags are read at entry and the outcome is judged later, by
 * the Python side, from the state of the file system (see docs/trace-format.md).
 *
 * Processes: the front process (this one) forks a worker, the worker forks the command and
 * is its tracer. The front waits for the worker's verdict and exits with the command's
 * status. That split lets the worker keep serving processes the command left behind (see
 * "Left-behind processes" in docs/trace-format.md) after the front has returned.
 *
 * Dynamically linked programs get roar-shim.so (next to this binary) in LD_PRELOAD: it writes
 * their file calls to the log itself and makes them with a marker in args[5] that the filter
 * lets pass without a stop (roar-shim.h, "The shim" in docs/trace-format.md). The log is
 * opened O_APPEND and our buffered records are flushed only between records, so the shim's
 * lines and ours never mix.
 *
 * Env: ROAR_TRACE_NO_FILTER=1 (same as --no-filter: stop at every syscall entry and exit,
 * a debug switch that shows what the filter saves), ROAR_TRACE_NO_SHIM=1 (same as
 * --no-shim: every file call stops), ROAR_TRACE_DAEMON_GRACE=SECONDS.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <stdio_ext.h>
#include <time.h>
#include <unistd.h>

#include "roar-shim.h"

#define LOG_VERSION 5

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#else
#error "roar-trace supports x86_64 and aarch64"
#endif

#ifndef __NR_openat2
#define __NR_openat2 437 /* same number on every architecture (unified table, Linux 5.6) */
#endif
#ifndef PTRACE_EVENT_STOP
#define PTRACE_EVENT_STOP 128
#endif
#ifndef O_TMPFILE
#define O_TMPFILE (020000000 | O_DIRECTORY)
#endif
#ifndef AT_EMPTY_PATH
#define AT_EMPTY_PATH 0x1000
#endif

/* SECCOMP_RET_DATA values: what the filter saw. */
#define DATA_FILE 1
#define DATA_FOREIGN 2 /* another syscall ABI (i386, x32): we cannot decode it */

/* ptrace(PTRACE_GET_SYSCALL_INFO) result, Linux 5.3; layout is kernel ABI. */
struct roar_syscall_info {
    uint8_t op;
    uint8_t pad[3];
    uint32_t arch;
    uint64_t instruction_pointer;
    uint64_t stack_pointer;
    union {
        struct {
            uint64_t nr;
            uint64_t args[6];
        } entry;
        struct {
            int64_t rval;
            uint8_t is_error;
        } exit;
        struct {
            uint64_t nr;
            uint64_t args[6];
            uint32_t ret_data;
        } seccomp;
    };
};
#define ROAR_GET_SYSCALL_INFO 0x420e
#define INFO_OP_ENTRY 1
#define INFO_OP_EXIT 2
#define INFO_OP_SECCOMP 3

/* ---------------------------------------------------------------- the filter */

static const long traced_calls[] = {
#ifdef __NR_open
    __NR_open,
#endif
#ifdef __NR_creat
    __NR_creat,
#endif
#ifdef __NR_rename
    __NR_rename,
#endif
#ifdef __NR_unlink
    __NR_unlink,
#endif
#ifdef __NR_link
    __NR_link,
#endif
#ifdef __NR_symlink
    __NR_symlink,
#endif
#ifdef __NR_mkdir
    __NR_mkdir,
#endif
#ifdef __NR_rmdir
    __NR_rmdir,
#endif
#ifdef __NR_renameat
    __NR_renameat,
#endif
    __NR_openat,   __NR_openat2, __NR_renameat2, __NR_unlinkat, __NR_truncate,
    __NR_linkat,   __NR_symlinkat, __NR_mkdirat, __NR_chdir,    __NR_fchdir,
    __NR_execve,   __NR_execveat,
    /* Not file calls, but after them paths mean something else or files are reached another
     * way: they are warned about or translated (see "What is and is not seen"). */
    __NR_chroot,   __NR_pivot_root, __NR_unshare, __NR_setns, __NR_open_by_handle_at,
#ifdef __NR_io_uring_setup
    __NR_io_uring_setup,
#endif
    __NR_connect, /* to a server on this machine: work another process does for the run */
};
#define N_TRACED (sizeof traced_calls / sizeof traced_calls[0])

static int is_traced_call(long nr) {
    for (size_t i = 0; i < N_TRACED; i++)
        if (traced_calls[i] == nr) return 1;
    return 0;
}

/* Calls that trap even with the shim's marker: the tracer must see them itself (exec records,
 * the cwd cache, a task's view of the file system). The shim does not wrap the first four, so
 * they never carry the marker; it wraps chroot, unshare and setns, and marks them to say that
 * it stops recording after them (its paths would be the task's new view, not the host's). */
static const long always_traced[] = {__NR_execve, __NR_execveat, __NR_chdir,   __NR_fchdir,
                                     __NR_chroot, __NR_unshare,  __NR_setns, __NR_pivot_root};
#define N_ALWAYS (sizeof always_traced / sizeof always_traced[0])

static int use_shim; /* the filter lets calls marked by roar-shim.so pass */

static int install_filter(void) {
    struct sock_filter prog[16 + N_TRACED + N_ALWAYS];
    size_t n = 0;
    /* Jump offsets below are relative; the two return blocks sit at the end. */
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                             offsetof(struct seccomp_data, arch));
    /* arch != native -> foreign (index computed after the list) */
    size_t arch_jump = n;
    prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 0, 0);
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                             offsetof(struct seccomp_data, nr));
#if defined(__x86_64__)
    /* x32 calls share AUDIT_ARCH_X86_64 and carry bit 30 in the number. */
    size_t x32_jump = n;
    prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 0);
#endif
    /* Marked by the shim (args[5] == ROAR_SHIM_MARKER, both halves): allow, unless the call
     * is one the tracer must always see. */
    size_t marker_hi = 0, marker_lo = 0, first_always = 0;
    if (use_shim) {
        prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                                 offsetof(struct seccomp_data, args[5]) + 4);
        marker_hi = n;
        prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ROAR_SHIM_MARKER_HI, 0, 0);
        prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                                 offsetof(struct seccomp_data, args[5]));
        marker_lo = n;
        prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ROAR_SHIM_MARKER_LO, 0, 0);
        prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                                 offsetof(struct seccomp_data, nr));
        first_always = n;
        for (size_t i = 0; i < N_ALWAYS; i++)
            prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K,
                                                     (uint32_t)always_traced[i], 0, 0);
        prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
        /* not marked: reload the number for the list below */
        prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                                 offsetof(struct seccomp_data, nr));
    }
    size_t unmarked = n - 1; /* the reload above (jump targets land after it) */
    size_t first_cmp = n;
    for (size_t i = 0; i < N_TRACED; i++)
        prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K,
                                                 (uint32_t)traced_calls[i], 0, 0);
    size_t ret_allow = n;
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    size_t ret_trace = n;
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE | DATA_FILE);
    size_t ret_foreign = n;
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE | DATA_FOREIGN);
    (void)ret_allow;
    /* patch jumps */
    prog[arch_jump].jt = 0;
    prog[arch_jump].jf = (uint8_t)(ret_foreign - arch_jump - 1);
#if defined(__x86_64__)
    prog[x32_jump].jt = (uint8_t)(ret_foreign - x32_jump - 1);
    prog[x32_jump].jf = 0;
#endif
    if (use_shim) {
        prog[marker_hi].jt = 0;
        prog[marker_hi].jf = (uint8_t)(unmarked - marker_hi - 1);
        prog[marker_lo].jt = 0;
        prog[marker_lo].jf = (uint8_t)(unmarked - marker_lo - 1);
        for (size_t i = first_always; i < first_always + N_ALWAYS; i++) {
            prog[i].jt = (uint8_t)(ret_trace - i - 1);
            prog[i].jf = 0;
        }
    }
    for (size_t i = first_cmp; i < first_cmp + N_TRACED; i++) {
        prog[i].jt = (uint8_t)(ret_trace - i - 1);
        prog[i].jf = 0;
    }
    struct sock_fprog fprog = {.len = (unsigned short)n, .filter = prog};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
    if (syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) != 0) return -1;
    return 0;
}

/* ---------------------------------------------------------------- the log */

static FILE *logf_;     /* NULL once the log is finished */
static int no_filter;

static void log_raw(const char *s) {
    if (logf_) fputs(s, logf_);
}

/* Paths are raw bytes: escape what would break the line format (see trace-format.md). */
static int needs_escape(unsigned char c) { return c <= 0x20 || c == '%' || c == 0x7f; }

static void log_bytes(const char *s, size_t len) {
    if (!logf_) return;
    putc_unlocked(' ', logf_);
    if (len == 0) {
        fputs("%00", logf_); /* an empty field still needs a token; %00 cannot be a path byte */
        return;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (needs_escape(c))
            fprintf(logf_, "%%%02X", c);
        else
            putc_unlocked(c, logf_);
    }
}
static void log_str(const char *s) { log_bytes(s, strlen(s)); }

static void log_end_line(void) {
    if (logf_) putc_unlocked('\n', logf_);
}

static void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_warn(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_raw("warn");
    log_str(buf);
    log_end_line();
}

/* ---------------------------------------------------------------- tasks */

struct task {
    pid_t tid;
    pid_t tgid;
    int cwd_gen;       /* cwd_cache valid while equal to the global generation */
    char *cwd_cache;
    char *pending_exec; /* resolved path of the last execve entry, used at the exec event */
    int foreign_warned;
    int view_gen;       /* view and root valid while equal to view_generation */
    int view;           /* VIEW_HOST, VIEW_CHROOT (root: its root, as we see it), VIEW_OTHER */
    char *root;
    int uring_warned;
    int await_exit;        /* open_by_handle_at: its fd, known at the exit stop, names the file */
    uint64_t handle_flags; /* and its flags */
};

static struct task *tasks;
static size_t n_tasks, cap_tasks;
static int cwd_generation = 1;

/* A task's view of the file system: the tracer's (VIEW_HOST); chrooted (VIEW_CHROOT: its paths
 * are translated, its root prefixed and its folders walked inside that root); or another mount
 * namespace (VIEW_OTHER: a bind mount, a container), where a path may name a different file
 * than ours: its paths are mapped through the mount tables (map_other), and one that has no
 * path here is not recorded (the run is then incomplete). */
#define VIEW_HOST 0
#define VIEW_CHROOT 1
#define VIEW_OTHER 2
static int view_generation = 1; /* bumped by chroot, pivot_root, unshare, setns */
static int awaiting_exits;      /* tasks with await_exit set */
static char own_mnt_ns[64];     /* readlink of /proc/self/ns/mnt */

static struct task *find_task(pid_t tid) {
    for (size_t i = n_tasks; i-- > 0;)
        if (tasks[i].tid == tid) return &tasks[i];
    return NULL;
}

static pid_t read_tgid(pid_t tid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/status", tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tid;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return tid;
    buf[n] = 0;
    char *p = strstr(buf, "\nTgid:");
    return p ? (pid_t)atoi(p + 6) : tid;
}

static struct task *add_task(pid_t tid) {
    struct task *t = find_task(tid);
    if (t) return t;
    if (n_tasks == cap_tasks) {
        cap_tasks = cap_tasks ? cap_tasks * 2 : 64;
        tasks = realloc(tasks, cap_tasks * sizeof *tasks);
        if (!tasks) abort();
    }
    t = &tasks[n_tasks++];
    memset(t, 0, sizeof *t);
    t->tid = tid;
    t->tgid = read_tgid(tid);
    return t;
}

static void remove_task(pid_t tid) {
    for (size_t i = 0; i < n_tasks; i++) {
        if (tasks[i].tid == tid) {
            free(tasks[i].cwd_cache);
            free(tasks[i].pending_exec);
            free(tasks[i].root);
            if (tasks[i].await_exit) awaiting_exits--;
            tasks[i] = tasks[--n_tasks];
            return;
        }
    }
}

static size_t live_processes(void) {
    size_t n = 0;
    for (size_t i = 0; i < n_tasks; i++)
        if (tasks[i].tid == tasks[i].tgid) n++;
    return n;
}

/* ---------------------------------------------------------------- tracee memory */

/* Read a NUL-terminated string from the tracee, page by page so an unmapped page after the
 * string does not fail the whole read. Returns its length, or -1. */
static ssize_t read_string(pid_t tid, uint64_t addr, char *out, size_t cap) {
    size_t got = 0;
    while (got < cap - 1) {
        uint64_t a = addr + got;
        size_t chunk = 4096 - (size_t)(a & 4095);
        if (chunk > cap - 1 - got) chunk = cap - 1 - got;
        struct iovec local = {out + got, chunk};
        struct iovec remote = {(void *)(uintptr_t)a, chunk};
        ssize_t n = process_vm_readv(tid, &local, 1, &remote, 1, 0);
        if (n <= 0) {
            /* process_vm_readv can be refused where ptrace is not: fall back to PEEKDATA. */
            errno = 0;
            long word = ptrace(PTRACE_PEEKDATA, tid, (void *)(uintptr_t)(a & ~7UL), 0);
            if (errno) return got ? (ssize_t)got : -1;
            size_t off = (size_t)(a & 7);
            n = (ssize_t)(8 - off);
            if ((size_t)n > cap - 1 - got) n = (ssize_t)(cap - 1 - got);
            memcpy(out + got, (char *)&word + off, (size_t)n);
        }
        void *nul = memchr(out + got, 0, (size_t)n);
        if (nul) return (char *)nul - out;
        got += (size_t)n;
    }
    out[got] = 0;
    return (ssize_t)got;
}

static int read_mem(pid_t tid, uint64_t addr, void *out, size_t len) {
    struct iovec local = {out, len};
    struct iovec remote = {(void *)(uintptr_t)addr, len};
    return process_vm_readv(tid, &local, 1, &remote, 1, 0) == (ssize_t)len ? 0 : -1;
}

/* ---------------------------------------------------------------- paths */

static const char *task_cwd(struct task *t) {
    if (t->cwd_cache && t->cwd_gen == cwd_generation) return t->cwd_cache;
    char link[64], buf[PATH_MAX];
    snprintf(link, sizeof link, "/proc/%d/cwd", t->tid);
    ssize_t n = readlink(link, buf, sizeof buf - 1);
    if (n < 0) return NULL;
    buf[n] = 0;
    free(t->cwd_cache);
    t->cwd_cache = strdup(buf);
    t->cwd_gen = cwd_generation;
    return t->cwd_cache;
}

static int fd_path(pid_t tid, long fd, char *out, size_t cap) {
    char link[64];
    snprintf(link, sizeof link, "/proc/%d/fd/%ld", tid, fd);
    ssize_t n = readlink(link, out, cap - 1);
    if (n < 0) return -1;
    out[n] = 0;
    return 0;
}

static int resolve_named(struct task *t, long dirfd, uint64_t addr, int empty_ok, char *out,
                         size_t cap);

/* Does `p` have a ".." component? */
static int has_dotdot(const char *p) {
    for (const char *s = p; (s = strstr(s, "/..")) != NULL; s += 3)
        if (s[3] == '/' || s[3] == 0) return 1;
    return 0;
}

/* Open `path` (as we see it) with O_PATH, as a task with root `root` would walk it: from that
 * root, which ".." and absolute symlinks do not leave (RESOLVE_IN_ROOT, openat2, Linux 5.6),
 * for a chrooted task. Its real name into `real`; -1 if it cannot be walked. */
static int walk(const char *root, const char *path, int dir, char *real, size_t cap) {
    int fd, flags = O_PATH | O_CLOEXEC | (dir ? O_DIRECTORY : 0);
    size_t rlen = strlen(root);
    /* A path outside the root (relative to a cwd left outside by a chroot without chdir) is
     * walked from ours, as the kernel walks it. */
    int inside_root = strncmp(path, root, rlen) == 0 && (path[rlen] == '/' || !path[rlen]);
    if (strcmp(root, "/") == 0 || !inside_root) {
        fd = open(path, flags);
    } else {
        struct {
            uint64_t flags, mode, resolve;
        } how = {(uint64_t)flags, 0, 0x10 /* RESOLVE_IN_ROOT */};
        const char *inside = path + rlen;
        int rfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        fd = rfd < 0 ? -1
                     : (int)syscall(__NR_openat2, rfd, *inside ? inside : "/", &how, sizeof how);
        if (rfd >= 0) close(rfd);
    }
    if (fd < 0) return -1;
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, real, cap - 1);
    close(fd);
    if (n <= 0 || real[0] != '/') return -1;
    real[n] = 0;
    return 0;
}

/* The kernel takes ".." from where the path has got to, so after a symlinked folder it goes
 * up from the link's target: `datalink/../in.csv` is the `in.csv` beside the target, not the
 * one beside the link that lexical normalisation would give. So the folder part of a path
 * with a ".." is resolved against the file system (its last component, a symlink or not, is
 * left as named). For a chrooted task (`root` is not "/") every path is walked so, inside its
 * root, since its absolute symlinks point inside it too; with `follow`, the last component as
 * well where it exists (open and exec follow it). -1 where the folder cannot be walked: the
 * call itself then fails too. Not cached: a link may be re-pointed by any process of the run,
 * and few paths have a "..". */
static int resolve_dotdot(const char *root, char *path, size_t cap, int follow) {
    int chrooted = strcmp(root, "/") != 0;
    if (!chrooted && !has_dotdot(path)) return 0;
    char real[PATH_MAX];
    if (chrooted && follow && walk(root, path, 0, real, sizeof real) == 0) {
        if ((size_t)snprintf(path, cap, "%s", real) >= cap) return -1;
        return 0;
    }
    char *slash = strrchr(path, '/');
    const char *name = slash + 1;
    int whole = !*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0;
    char dir[PATH_MAX * 2];
    size_t dlen = whole ? strlen(path) : (size_t)(slash - path);
    if (dlen >= sizeof dir) return -1;
    memcpy(dir, path, dlen);
    dir[dlen] = 0;
    if (!dlen) strcpy(dir, "/");
    if (walk(root, dir, 1, real, sizeof real) != 0) return -1;
    char tail[PATH_MAX];
    snprintf(tail, sizeof tail, "%s", whole ? "" : name);
    int w = whole ? snprintf(path, cap, "%s", real)
                  : snprintf(path, cap, "%s%s%s", real, strcmp(real, "/") == 0 ? "" : "/", tail);
    return w < 0 || (size_t)w >= cap ? -1 : 0;
}

/* The name of a process, for warnings. */
static const char *comm_of(pid_t pid, char *buf, size_t cap) {
    char link[64];
    snprintf(link, sizeof link, "/proc/%d/comm", pid);
    int fd = open(link, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, cap - 1);
    if (fd >= 0) close(fd);
    if (n <= 0) n = 0;
    while (n > 0 && buf[n - 1] == '\n') n--;
    buf[n] = 0;
    if (!n) snprintf(buf, cap, "?");
    return buf;
}

/* The task's view (VIEW_*), checked again after any chroot, pivot_root, unshare or setns of
 * the run and once for each new task (a clone may have CLONE_NEWNS). */
static int task_view(struct task *t) {
    if (t->view_gen == view_generation) return t->view;
    t->view_gen = view_generation;
    char link[64], buf[PATH_MAX];
    snprintf(link, sizeof link, "/proc/%d/ns/mnt", t->tid);
    ssize_t n = readlink(link, buf, sizeof buf - 1);
    if (n > 0 && own_mnt_ns[0]) {
        buf[n] = 0;
        if (strcmp(buf, own_mnt_ns) != 0) return t->view = VIEW_OTHER;
    }
    snprintf(link, sizeof link, "/proc/%d/root", t->tid);
    n = readlink(link, buf, sizeof buf - 1);
    free(t->root);
    t->root = NULL;
    if (n <= 0 || buf[0] != '/') return t->view = VIEW_HOST; /* gone: its calls fail */
    buf[n] = 0;
    if (strcmp(buf, "/") == 0) return t->view = VIEW_HOST;
    t->root = strdup(buf);
    return t->view = t->root ? VIEW_CHROOT : VIEW_OTHER;
}

/* ---------------------------------------------------------------- other mount namespaces */

/* A task in another mount namespace (unshare -m, a container) names files by its own mount
 * table: `b/x` there may be our `a/x` (a bind mount). Its paths are mapped to ours through
 * the two tables (/proc/PID/mountinfo): the path is walked in its namespace (from
 * /proc/PID/root, RESOLVE_IN_ROOT), the mount it ends on gives the filesystem (MAJ:MIN) and
 * the path inside it, and a mount of ours of that filesystem gives our path, which is kept
 * only if it is the very file (same device and inode). A file that no mount of ours shows
 * (a container image) has no path here and is not recorded. */

struct mount_line {
    long id;
    unsigned major, minor;
    char *root, *point; /* unescaped */
};

struct mount_table {
    struct mount_line *m;
    size_t n;
    char key[64]; /* which namespace ("" for ours) */
    int loaded;
};

static struct mount_table own_mounts, other_mounts;

static void unescape_octal(char *s) { /* mountinfo writes ' ', '\t', '\n', '\\' as \ooo */
    char *w = s;
    for (char *r = s; *r; r++) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '7' && r[2] >= '0' && r[2] <= '7' &&
            r[3] >= '0' && r[3] <= '7') {
            *w++ = (char)((r[1] - '0') << 6 | (r[2] - '0') << 3 | (r[3] - '0'));
            r += 3;
        } else {
            *w++ = *r;
        }
    }
    *w = 0;
}

static void free_mounts(struct mount_table *mt) {
    for (size_t i = 0; i < mt->n; i++) free(mt->m[i].root), free(mt->m[i].point);
    free(mt->m);
    mt->m = NULL;
    mt->n = 0;
    mt->loaded = 0;
}

static int load_mounts(struct mount_table *mt, pid_t pid, const char *key) {
    char path[64], line[3 * PATH_MAX];
    free_mounts(mt);
    snprintf(path, sizeof path, "/proc/%d/mountinfo", pid);
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    size_t cap = 0;
    while (fgets(line, sizeof line, f)) {
        char *save, *id = strtok_r(line, " ", &save), *parent = strtok_r(NULL, " ", &save);
        char *dev = strtok_r(NULL, " ", &save), *root = strtok_r(NULL, " ", &save);
        char *point = strtok_r(NULL, " ", &save);
        struct mount_line ml;
        if (!id || !parent || !point || sscanf(dev, "%u:%u", &ml.major, &ml.minor) != 2) continue;
        if (mt->n == cap) {
            cap = cap ? 2 * cap : 64;
            struct mount_line *more = realloc(mt->m, cap * sizeof *more);
            if (!more) break;
            mt->m = more;
        }
        unescape_octal(root);
        unescape_octal(point);
        ml.id = atol(id);
        ml.root = strdup(root);
        ml.point = strdup(point);
        if (!ml.root || !ml.point) {
            free(ml.root), free(ml.point);
            break;
        }
        mt->m[mt->n++] = ml;
    }
    fclose(f);
    snprintf(mt->key, sizeof mt->key, "%s", key);
    mt->loaded = 1;
    return 0;
}

/* `path` with `prefix` (whole components) taken off its front: the rest, "" for the prefix
 * itself; NULL where it does not start so. */
static const char *under(const char *path, const char *prefix) {
    if (strcmp(prefix, "/") == 0) return strcmp(path, "/") == 0 ? "" : path;
    size_t n = strlen(prefix);
    if (strncmp(path, prefix, n) != 0 || (path[n] && path[n] != '/')) return NULL;
    return path + n;
}

/* Our path of the file that `fd` (an O_PATH fd opened in task t's namespace) is, into out. */
static int our_path_of(struct task *t, int fd, char *out, size_t cap) {
    char link[64], seen[PATH_MAX], info[512], ns[64];
    struct stat st;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, seen, sizeof seen - 1);
    if (n <= 0 || seen[0] != '/' || fstat(fd, &st) != 0) return -1;
    seen[n] = 0;
    /* The kernel's name for it, where that is the very file here too (most paths of a
     * namespace that only some mounts set apart; a chroot inside it): no tables needed. */
    struct stat here;
    if (lstat(seen, &here) == 0 && here.st_dev == st.st_dev && here.st_ino == st.st_ino &&
        (size_t)snprintf(out, cap, "%s", seen) < cap)
        return 0;
    snprintf(link, sizeof link, "/proc/self/fdinfo/%d", fd);
    int ifd = open(link, O_RDONLY | O_CLOEXEC);
    ssize_t got = ifd < 0 ? -1 : read(ifd, info, sizeof info - 1);
    if (ifd >= 0) close(ifd);
    if (got <= 0) return -1;
    info[got] = 0;
    const char *mid = strstr(info, "mnt_id:");
    if (!mid) return -1;
    long mnt_id = atol(mid + 7);
    snprintf(link, sizeof link, "/proc/%d/ns/mnt", t->tid);
    n = readlink(link, ns, sizeof ns - 1);
    ns[n > 0 ? n : 0] = 0;
    if (!other_mounts.loaded || strcmp(other_mounts.key, ns) != 0)
        load_mounts(&other_mounts, t->tid, ns);
    if (!own_mounts.loaded) load_mounts(&own_mounts, getpid(), "");
    const struct mount_line *theirs = NULL;
    for (size_t i = 0; i < other_mounts.n && !theirs; i++)
        if (other_mounts.m[i].id == mnt_id) theirs = &other_mounts.m[i];
    const char *rel = theirs ? under(seen, theirs->point) : NULL;
    if (!rel) return -1;
    char fs[PATH_MAX * 2]; /* the path inside the filesystem */
    snprintf(fs, sizeof fs, "%s%s", strcmp(theirs->root, "/") == 0 ? "" : theirs->root, rel);
    if (!fs[0]) strcpy(fs, "/");
    for (size_t i = 0; i < own_mounts.n; i++) {
        const struct mount_line *ours = &own_mounts.m[i];
        const char *rest = ours->major == theirs->major && ours->minor == theirs->minor
                               ? under(fs, ours->root)
                               : NULL;
        if (!rest) continue;
        struct stat here;
        int w = snprintf(out, cap, "%s%s", strcmp(ours->point, "/") == 0 && *rest ? "" : ours->point,
                         rest);
        if (w > 0 && (size_t)w < cap && lstat(out, &here) == 0 && here.st_dev == st.st_dev &&
            here.st_ino == st.st_ino)
            return 0;
    }
    return -1;
}

/* Map `path` (absolute, as task t names it in its namespace) to ours, in place. The file
 * itself where it exists (followed if `follow`), else its folder and the name. -1 where the
 * folder cannot be walked there (the call fails too) or has no path here (*unmapped set). */
static int map_other(struct task *t, char *path, size_t cap, int follow, int *unmapped) {
    char link[64];
    snprintf(link, sizeof link, "/proc/%d/root", t->tid);
    int rfd = open(link, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rfd < 0) return -1;
    struct {
        uint64_t flags, mode, resolve;
    } how = {(uint64_t)(O_PATH | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW)), 0, 0x10};
    char *slash = strrchr(path, '/');
    const char *name = slash + 1;
    int whole = !*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0;
    int fd = (int)syscall(__NR_openat2, rfd, path, &how, sizeof how), is_dir_part = 0;
    char dir[PATH_MAX * 2], tail[PATH_MAX];
    if (fd < 0 && !whole) {
        size_t dlen = (size_t)(slash - path);
        snprintf(dir, sizeof dir, "%.*s", (int)dlen, path);
        if (!dlen) strcpy(dir, "/");
        snprintf(tail, sizeof tail, "%s", name);
        how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
        fd = (int)syscall(__NR_openat2, rfd, dir, &how, sizeof how);
        is_dir_part = 1;
    }
    close(rfd);
    if (fd < 0) return -1;
    char ours[PATH_MAX];
    int r = our_path_of(t, fd, ours, sizeof ours);
    if (r != 0) { /* mounted since we read the tables? once more, afresh */
        free_mounts(&other_mounts);
        free_mounts(&own_mounts);
        r = our_path_of(t, fd, ours, sizeof ours);
    }
    close(fd);
    if (r != 0) {
        *unmapped = 1;
        return -1;
    }
    int w = is_dir_part ? snprintf(path, cap, "%s%s%s", ours, strcmp(ours, "/") == 0 ? "" : "/", tail)
                        : snprintf(path, cap, "%s", ours);
    return w > 0 && (size_t)w < cap ? 0 : -1;
}

/* A relative path of task t in another mount namespace, made absolute from its cwd or dirfd
 * as we name them (`path`), rewritten in place as the task names it: with the task's root (as
 * we name it) taken off the front, and only where that names the very folder its cwd or dirfd
 * is (checked by device and inode: our name for a folder of another namespace can be a name
 * of ours, or of nothing). */
static int other_view_path(struct task *t, long dirfd, char *path, size_t cap) {
    char link[64], base[PATH_MAX], root[PATH_MAX];
    if ((int)dirfd == AT_FDCWD) {
        const char *cwd = task_cwd(t);
        if (!cwd) return -1;
        snprintf(base, sizeof base, "%s", cwd);
        snprintf(link, sizeof link, "/proc/%d/cwd", t->tid);
    } else {
        if (fd_path(t->tid, dirfd, base, sizeof base) != 0) return -1;
        snprintf(link, sizeof link, "/proc/%d/fd/%ld", t->tid, dirfd);
    }
    size_t blen = strlen(base);
    if (strncmp(path, base, blen) != 0) return -1;
    char rest[PATH_MAX * 2];
    snprintf(rest, sizeof rest, "%s", path + blen);
    char rlink[64];
    snprintf(rlink, sizeof rlink, "/proc/%d/root", t->tid);
    ssize_t n = readlink(rlink, root, sizeof root - 1);
    if (n <= 0) return -1;
    root[n] = 0;
    const char *inside = under(base, root);
    if (!inside) return -1;
    struct stat want, got;
    int rfd = open(rlink, O_PATH | O_DIRECTORY | O_CLOEXEC);
    struct {
        uint64_t flags, mode, resolve;
    } how = {O_PATH | O_DIRECTORY | O_CLOEXEC, 0, 0x10 /* RESOLVE_IN_ROOT */};
    int fd = rfd < 0 ? -1 : (int)syscall(__NR_openat2, rfd, *inside ? inside : "/", &how, sizeof how);
    if (rfd >= 0) close(rfd);
    int same = fd >= 0 && fstat(fd, &got) == 0 && stat(link, &want) == 0 &&
               want.st_dev == got.st_dev && want.st_ino == got.st_ino;
    if (fd >= 0) close(fd);
    if (!same) return -1;
    int w = snprintf(path, cap, "%s%s", *inside ? inside : (*rest ? "" : "/"), rest);
    return w > 0 && (size_t)w < cap ? 0 : -1;
}

/* The first path of another mount namespace that has no path here: warned once a run. */
static void note_unmapped(struct task *t) {
    static int warned;
    if (warned) return;
    warned = 1;
    char comm[32];
    log_warn("process %d (%s) works in another mount namespace (unshare, setns or a container): "
             "files there that no mount of this machine shows (a container image, say) are not "
             "recorded",
             t->tgid, comm_of(t->tgid, comm, sizeof comm));
    log_raw("incomplete\n");
}

/* Resolve `path` (in the tracee) against dirfd and the task's cwd into out. The result is
 * absolute, in our view of the file system, and not normalised (the Python side normalises
 * lexically), except that a ".." is taken as the kernel takes it (resolve_dotdot). A chrooted
 * task's absolute paths get its root in front (its cwd and fds we read as we see them). */
static int resolve_view(struct task *t, long dirfd, uint64_t addr, int empty_ok, char *out,
                        size_t cap, int follow) {
    int absolute = resolve_named(t, dirfd, addr, empty_ok, out, cap);
    if (absolute < 0) return -1;
    int view = task_view(t);
    /* Walked by us, /proc/self would be ours: a chrooted task's /proc paths are no files of
     * its run anyway. */
    if (view != VIEW_HOST && absolute && (strncmp(out, "/proc/", 6) == 0 || !strcmp(out, "/proc")))
        return -1;
    if (view == VIEW_OTHER) {
        int unmapped = 0;
        if (!absolute && other_view_path(t, dirfd, out, cap) != 0) {
            note_unmapped(t);
            return -1;
        }
        if (map_other(t, out, cap, follow, &unmapped) == 0) return 0;
        if (unmapped) note_unmapped(t);
        return -1;
    }
    if (view == VIEW_CHROOT) {
        if (absolute) {
            char inside[PATH_MAX * 2];
            snprintf(inside, sizeof inside, "%s", out);
            if ((size_t)snprintf(out, cap, "%s%s", t->root, inside) >= cap) return -1;
        }
        return resolve_dotdot(t->root, out, cap, follow);
    }
    return resolve_dotdot("/", out, cap, 0);
}

static int resolve(struct task *t, long dirfd, uint64_t addr, int empty_ok, char *out, size_t cap) {
    return resolve_view(t, dirfd, addr, empty_ok, out, cap, 0);
}

/* The path as named, made absolute (not yet in our view): 1 if it was absolute, 0 if made so
 * from the cwd or dirfd (as we see them), -1 if it cannot be read. */
static int resolve_named(struct task *t, long dirfd, uint64_t addr, int empty_ok, char *out,
                         size_t cap) {
    char rel[PATH_MAX];
    ssize_t n = read_string(t->tid, addr, rel, sizeof rel);
    if (n < 0) return -1;
    if (n == 0 && !empty_ok) return -1; /* the call fails with ENOENT */
    if (rel[0] == '/') {
        memcpy(out, rel, (size_t)n + 1);
        return 1;
    }
    char base[PATH_MAX];
    if ((int)dirfd == AT_FDCWD) {
        const char *cwd = task_cwd(t);
        if (!cwd) return -1;
        snprintf(base, sizeof base, "%s", cwd);
    } else if (fd_path(t->tid, dirfd, base, sizeof base) != 0) {
        return -1;
    }
    if (n == 0)
        snprintf(out, cap, "%s", base);
    else
        snprintf(out, cap, "%s%s%s", base, strcmp(base, "/") == 0 ? "" : "/", rel);
    return 0;
}

static char exists_flag(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0 ? '1' : '0';
}

/* ---------------------------------------------------------------- syscall handling */

static void log_head(const char *kind, pid_t tgid) {
    if (logf_) fprintf(logf_, "%s %d", kind, tgid);
}

static void log_path_event(const char *kind, struct task *t, long dirfd, uint64_t addr,
                           int check_exists) {
    char p[PATH_MAX * 2];
    if (resolve(t, dirfd, addr, 0, p, sizeof p) != 0) return;
    log_head(kind, t->tgid);
    if (check_exists) {
        char e[3] = {' ', exists_flag(p), 0};
        log_raw(e);
    }
    log_str(p);
    log_end_line();
}

static char shim_path[PATH_MAX]; /* roar-shim.so, when in use: its own load is not an access */

static void log_open(struct task *t, long dirfd, uint64_t addr, uint64_t flags) {
    char p[PATH_MAX * 2];
    if (resolve_view(t, dirfd, addr, 0, p, sizeof p, !(flags & O_NOFOLLOW)) != 0) return;
    if (shim_path[0] && strcmp(p, shim_path) == 0) return;
    char existed = (flags & O_CREAT) ? exists_flag(p) : '-';
    if (logf_) fprintf(logf_, "open %d %llx %c", t->tgid, (unsigned long long)flags, existed);
    log_str(p);
    log_end_line();
}

/* first: FIRST_PATH, FIRST_LITERAL (a symlink's target: a string, not a path we resolve) or
 * FIRST_EMPTY_OK (linkat's AT_EMPTY_PATH: an empty path names the fd d1 itself). */
#define FIRST_PATH 0
#define FIRST_LITERAL 1
#define FIRST_EMPTY_OK 2
/* An `open` record for the file that fd `fd` of the task names (as we see it). */
static void log_fd_open(struct task *t, long fd, uint64_t flags) {
    char p[PATH_MAX];
    if (fd_path(t->tid, fd, p, sizeof p) != 0 || p[0] != '/') return;
    if (logf_) fprintf(logf_, "open %d %llx -", t->tgid, (unsigned long long)flags);
    log_str(p);
    log_end_line();
}

static void log_two(const char *kind, struct task *t, long d1, uint64_t a1, long d2, uint64_t a2,
                    int first) {
    char p1[PATH_MAX * 2], p2[PATH_MAX * 2];
    if (first == FIRST_LITERAL) {
        if (read_string(t->tid, a1, p1, sizeof p1) < 0) return;
    } else if (resolve(t, d1, a1, first == FIRST_EMPTY_OK, p1, sizeof p1) != 0) {
        return;
    }
    if (resolve(t, d2, a2, 0, p2, sizeof p2) != 0) return;
    log_head(kind, t->tgid);
    char e[3] = {' ', exists_flag(p2), 0};
    log_raw(e);
    log_str(p1);
    log_str(p2);
    log_end_line();
}

static long seize_opts;     /* the ptrace options every task has */
static dev_t log_dev;       /* the log, which a process with the shim holds open */
static ino_t log_ino;

/* A task that set up io_uring is exiting (PTRACE_EVENT_EXIT, before its files are closed):
 * each regular file it still has open is recorded as an open with that fd's access mode. */
static void on_exit_stop(pid_t tid) {
    struct task *t = find_task(tid);
    if (!t || !t->uring_warned || task_view(t) == VIEW_OTHER) return;
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/fd", tid);
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char link[384], p[PATH_MAX], info[256];
        struct stat st;
        if (e->d_name[0] == '.') continue;
        snprintf(link, sizeof link, "%s/%s", dir, e->d_name);
        ssize_t n = readlink(link, p, sizeof p - 1);
        if (n <= 0 || p[0] != '/') continue;
        p[n] = 0;
        if (stat(link, &st) != 0 || !S_ISREG(st.st_mode) ||
            (st.st_dev == log_dev && st.st_ino == log_ino))
            continue;
        snprintf(link, sizeof link, "/proc/%d/fdinfo/%s", tid, e->d_name);
        int fd = open(link, O_RDONLY | O_CLOEXEC);
        ssize_t got = fd < 0 ? -1 : read(fd, info, sizeof info - 1);
        if (fd >= 0) close(fd);
        info[got > 0 ? got : 0] = 0;
        const char *fl = strstr(info, "flags:");
        unsigned long long flags = fl ? strtoull(fl + 6, NULL, 8) & O_ACCMODE : 0;
        if (logf_) fprintf(logf_, "open %d %llx -", t->tgid, flags);
        log_str(p);
        log_end_line();
    }
    if (d) closedir(d);
}

/* Does the process have roar-shim.so mapped? */
static int has_shim(pid_t pid) {
    char path[64], line[PATH_MAX + 128];
    snprintf(path, sizeof path, "/proc/%d/maps", pid);
    FILE *f = fopen(path, "re");
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f)) found = strstr(line, "/roar-shim.so") != NULL;
    if (f) fclose(f);
    return found;
}

#ifndef CLONE_NEWNS
#define CLONE_NEWNS 0x00020000
#endif

/* chroot, pivot_root, unshare, setns: the call has not been made yet, so every task looks at
 * its view again at its next call (task_view). The shim marks the ones it makes: it records
 * nothing after them. One made another way (a raw system call) in a process with the shim
 * leaves the shim recording paths of the new view: we cannot stop it, so we say so. */
static void on_view_change(struct task *t, long nr, const uint64_t *a) {
    if (nr == __NR_unshare && !(a[0] & CLONE_NEWNS)) return;
    view_generation++;
    if (!use_shim || a[5] == ROAR_SHIM_MARKER || !has_shim(t->tgid)) return;
    char comm[32];
    log_warn("process %d (%s) changed its root or mount namespace by a raw system call: what it "
             "does after that may be recorded under the wrong paths",
             t->tgid, comm_of(t->tgid, comm, sizeof comm));
    log_raw("incomplete\n");
}

static void handle_file_call(struct task *t, long nr, const uint64_t *a) {
    switch (nr) {
#ifdef __NR_open
    case __NR_open:
        log_open(t, AT_FDCWD, a[0], a[1]);
        break;
#endif
#ifdef __NR_creat
    case __NR_creat:
        log_open(t, AT_FDCWD, a[0], O_CREAT | O_WRONLY | O_TRUNC);
        break;
#endif
    case __NR_openat:
        log_open(t, (long)(int)a[0], a[1], a[2]);
        break;
    case __NR_openat2: {
        uint64_t flags = 0; /* struct open_how starts with the u64 flags */
        if (read_mem(t->tid, a[2], &flags, sizeof flags) == 0)
            log_open(t, (long)(int)a[0], a[1], flags);
        break;
    }
#ifdef __NR_rename
    case __NR_rename:
        log_two("rename", t, AT_FDCWD, a[0], AT_FDCWD, a[1], 0);
        break;
#endif
#ifdef __NR_renameat
    case __NR_renameat:
        log_two("rename", t, (long)(int)a[0], a[1], (long)(int)a[2], a[3], 0);
        break;
#endif
    case __NR_renameat2:
        /* RENAME_EXCHANGE (2) swaps: record both directions. */
        log_two("rename", t, (long)(int)a[0], a[1], (long)(int)a[2], a[3], 0);
        if (a[4] & 2) log_two("rename", t, (long)(int)a[2], a[3], (long)(int)a[0], a[1], 0);
        break;
#ifdef __NR_unlink
    case __NR_unlink:
        log_path_event("unlink", t, AT_FDCWD, a[0], 1);
        break;
#endif
    case __NR_unlinkat:
        log_path_event((a[2] & AT_REMOVEDIR) ? "rmdir" : "unlink", t, (long)(int)a[0], a[1], 1);
        break;
#ifdef __NR_rmdir
    case __NR_rmdir:
        log_path_event("rmdir", t, AT_FDCWD, a[0], 1);
        break;
#endif
#ifdef __NR_mkdir
    case __NR_mkdir:
        log_path_event("mkdir", t, AT_FDCWD, a[0], 1);
        break;
#endif
    case __NR_mkdirat:
        log_path_event("mkdir", t, (long)(int)a[0], a[1], 1);
        break;
    case __NR_truncate:
        log_path_event("truncate", t, AT_FDCWD, a[0], 1);
        break;
#ifdef __NR_link
    case __NR_link:
        log_two("link", t, AT_FDCWD, a[0], AT_FDCWD, a[1], 0);
        break;
#endif
    case __NR_linkat:
        /* AT_EMPTY_PATH: the open file a[0] gets the new name (the O_TMPFILE pattern). */
        log_two("link", t, (long)(int)a[0], a[1], (long)(int)a[2], a[3],
                (a[4] & AT_EMPTY_PATH) ? FIRST_EMPTY_OK : FIRST_PATH);
        break;
#ifdef __NR_symlink
    case __NR_symlink:
        log_two("symlink", t, 0, a[0], AT_FDCWD, a[1], 1);
        break;
#endif
    case __NR_symlinkat:
        log_two("symlink", t, 0, a[0], (long)(int)a[1], a[2], 1);
        break;
    case __NR_chroot:
    case __NR_pivot_root:
    case __NR_unshare:
    case __NR_setns:
        on_view_change(t, nr, a);
        break;
    case __NR_connect: {
        unsigned char sa[sizeof(struct sockaddr_storage)];
        size_t len = a[2] > sizeof sa ? sizeof sa : (size_t)a[2];
        const char *family;
        char peer[PATH_MAX];
        if (len && read_mem(t->tid, a[1], sa, len) == 0 &&
            roar_local_peer(sa, len, &family, peer, sizeof peer)) {
            log_head("connect", t->tgid);
            log_str(family);
            log_str(peer);
            log_end_line();
        }
        break;
    }
    case __NR_open_by_handle_at:
        /* A handle names no path: the fd it gives does, so this one call is followed to its
         * exit (resume() restarts the task with PTRACE_SYSCALL while await_exit is set). */
        if (task_view(t) != VIEW_OTHER && !t->await_exit) {
            t->await_exit = 1;
            t->handle_flags = a[2] & ~(uint64_t)O_CREAT;
            awaiting_exits++;
        }
        break;
#ifdef __NR_io_uring_setup
    case __NR_io_uring_setup:
        if (!t->uring_warned) {
            char comm[32];
            t->uring_warned = 1;
            log_warn("process %d (%s) uses io_uring: the files it opens, reads or writes through "
                     "it are not recorded, but for those still open when it exits",
                     t->tgid, comm_of(t->tgid, comm, sizeof comm));
            log_raw("incomplete\n");
            /* Its exit stop comes before its files are closed: what is open then is found
             * there (on_exit_stop). */
            ptrace(PTRACE_SETOPTIONS, t->tid, 0, (void *)(seize_opts | PTRACE_O_TRACEEXIT));
        }
        break;
#endif
    case __NR_chdir:
    case __NR_fchdir:
        /* The cwd changes after this stop; every task's cached cwd may be stale (threads and
         * CLONE_FS children share it), so invalidate them all. */
        cwd_generation++;
        break;
    case __NR_execve:
    case __NR_execveat: {
        char p[PATH_MAX * 2];
        int r = nr == __NR_execve
                    ? resolve_view(t, AT_FDCWD, a[0], 0, p, sizeof p, 1)
                    : resolve_view(t, (long)(int)a[0], a[1], (a[4] & AT_EMPTY_PATH) != 0, p,
                                   sizeof p, 1);
        free(t->pending_exec);
        t->pending_exec = r == 0 ? strdup(p) : NULL;
        break;
    }
    default:
        break;
    }
}

static int get_syscall(pid_t tid, long *nr, uint64_t args[6], int *op) {
    struct roar_syscall_info info;
    memset(&info, 0, sizeof info);
    long r = ptrace((enum __ptrace_request)ROAR_GET_SYSCALL_INFO, tid, (void *)sizeof info, &info);
    if (r <= 0) return -1;
    *op = info.op;
    if (info.op == INFO_OP_SECCOMP) {
        *nr = (long)info.seccomp.nr;
        memcpy(args, info.seccomp.args, sizeof info.seccomp.args);
    } else if (info.op == INFO_OP_ENTRY) {
        *nr = (long)info.entry.nr;
        memcpy(args, info.entry.args, sizeof info.entry.args);
    } else if (info.op == INFO_OP_EXIT) {
        args[0] = (uint64_t)info.exit.rval;
        args[1] = info.exit.is_error;
    }
    return 0;
}

static void on_syscall_stop(pid_t tid, int seccomp_stop) {
    struct task *t = add_task(tid);
    long nr = -1;
    uint64_t args[6] = {0};
    int op = 0;
    if (get_syscall(tid, &nr, args, &op) != 0) {
        log_warn("cannot read the system call of task %d: %s", tid, strerror(errno));
        return;
    }
    if (t->await_exit && !seccomp_stop) {
        if (op != INFO_OP_EXIT) return; /* the entry stop after the seccomp one */
        t->await_exit = 0;
        awaiting_exits--;
        if (!args[1] && (int64_t)args[0] >= 0) log_fd_open(t, (long)args[0], t->handle_flags);
        return;
    }
    if (seccomp_stop) {
        unsigned long data = 0;
        ptrace(PTRACE_GETEVENTMSG, tid, 0, &data);
        if (data == DATA_FOREIGN) {
            if (!t->foreign_warned) {
                t->foreign_warned = 1;
                log_warn("process %d uses a foreign system-call ABI (32-bit or x32); its file "
                         "accesses are not recorded",
                         t->tgid);
                log_raw("incomplete\n");
            }
            return;
        }
    } else if (op != INFO_OP_ENTRY || !is_traced_call(nr)) {
        return; /* unfiltered mode: exits and non-file calls */
    }
    handle_file_call(t, nr, args);
}

static void on_exec(pid_t tid) {
    unsigned long old = 0;
    ptrace(PTRACE_GETEVENTMSG, tid, 0, &old);
    char *path = NULL;
    struct task *prev = find_task((pid_t)old);
    if (prev) {
        path = prev->pending_exec;
        prev->pending_exec = NULL;
    }
    if ((pid_t)old != tid) remove_task((pid_t)old); /* a non-leader thread exec'd */
    struct task *t = add_task(tid);
    t->tgid = tid;
    if (!path) {
        path = t->pending_exec;
        t->pending_exec = NULL;
    }
    char buf[PATH_MAX];
    if (!path && task_view(t) == VIEW_OTHER) path = strdup(""); /* its path is not ours */
    if (!path) { /* no entry seen (should not happen): fall back to the binary */
        char link[64];
        snprintf(link, sizeof link, "/proc/%d/exe", tid);
        ssize_t n = readlink(link, buf, sizeof buf - 1);
        buf[n < 0 ? 0 : n] = 0;
        path = strdup(buf);
    }
    const char *cwd = task_cwd(t);
    if (logf_) fprintf(logf_, "exec %d %lu", tid, old);
    log_str(path ? path : "");
    log_str(cwd ? cwd : "");
    free(path);
    /* argv from /proc/<pid>/cmdline: NUL-separated, read in the new image. */
    char link[64];
    snprintf(link, sizeof link, "/proc/%d/cmdline", tid);
    int fd = open(link, O_RDONLY | O_CLOEXEC);
    size_t len = 0, cap = 0;
    char *cmd = NULL;
    if (fd >= 0) {
        for (;;) {
            if (len == cap) {
                cap = cap ? cap * 2 : 4096;
                cmd = realloc(cmd, cap);
                if (!cmd) abort();
            }
            ssize_t n = read(fd, cmd + len, cap - len);
            if (n <= 0) break;
            len += (size_t)n;
        }
        close(fd);
    }
    for (size_t i = 0; i < len;) {
        size_t l = strnlen(cmd + i, len - i);
        log_bytes(cmd + i, l);
        i += l + 1;
    }
    free(cmd);
    log_end_line();
}

/* ---------------------------------------------------------------- the worker */

static volatile sig_atomic_t alarm_fired;
static volatile sig_atomic_t command_pid;
static void on_alarm(int sig) { (void)sig; alarm_fired = 1; }

/* SIGTERM/SIGHUP: the first is passed to the command; a second one, at least TERM_SETTLE_NS
 * later, kills every traced process (kill_requested, acted on in the main loop). One signal
 * sent to a process group reaches this process directly and again through the front (and
 * roar), all within a moment: those copies are the same request, not a second one. */
#define TERM_SETTLE_NS 500000000L
static volatile sig_atomic_t term_seen, kill_requested;
static struct timespec term_first;

static void relay(int sig) {
    if (sig == SIGTERM || sig == SIGHUP) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now); /* async-signal-safe (POSIX.1-2008) */
        if (term_seen) {
            long ns = (long)(now.tv_sec - term_first.tv_sec) * 1000000000L +
                      (now.tv_nsec - term_first.tv_nsec);
            if (ns >= TERM_SETTLE_NS) {
                kill_requested = 1;
                /* The root at once (kill is async-signal-safe; the task table is not): its
                 * exit wakes the main loop, which kills the rest. */
                if (command_pid > 0) kill(command_pid, SIGKILL);
            }
            return;
        }
        term_seen = 1;
        term_first = now;
    }
    if (command_pid > 0) kill(command_pid, sig);
}

static void resume(pid_t tid, int sig) {
    enum __ptrace_request how = no_filter ? PTRACE_SYSCALL : PTRACE_CONT;
    if (awaiting_exits) {
        struct task *t = find_task(tid);
        if (t && t->await_exit) how = PTRACE_SYSCALL;
    }
    ptrace(how, tid, 0, (void *)(long)sig);
}

static long spin_ns = 0;
static int pin_cpu = -1;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Stops come in bursts; a blocked tracer is woken by an IPI from the tracee's CPU, which
 * costs tens of microseconds. Polling briefly before blocking catches the next stop. */
static pid_t wait_spinning(int *status) {
    if (spin_ns > 0) {
        uint64_t until = now_ns() + (uint64_t)spin_ns;
        do {
            pid_t tid = waitpid(-1, status, __WALL | WNOHANG);
            if (tid != 0) return tid;
        } while (now_ns() < until);
    }
    return waitpid(-1, status, __WALL);
}

/* roar-shim.so next to this binary; not usable where LD_PRELOAD would split its path. */
static int find_shim(void) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return 0;
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash) return 0;
    *slash = 0;
    if ((size_t)snprintf(shim_path, sizeof shim_path, "%s/roar-shim.so", exe) >= sizeof shim_path ||
        strpbrk(shim_path, " :\t\n") || access(shim_path, R_OK) != 0) {
        shim_path[0] = 0;
        return 0;
    }
    return 1;
}

static int is_stop_signal(int sig) {
    return sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU;
}

/* Runs the command and traces it; writes the verdict (its wait status) to verdict_fd. */
/* ---------------------------------------------------------------- the summary */

/* With --summary, the finished log is also written in summary form (docs/trace-format.md,
 * "The summary"): every record but `open` is copied in order, and the `open` records, nearly
 * all of a big log, become one `file` record per path, with the access bits of all its opens
 * OR-ed and the path's state now. It is the Python side's per-line work that costs in a big
 * run (a few µs a line against well under one here), and an lstat is cheaper in C. */

#define BIT_READ 1
#define BIT_WRITTEN 2
#define BIT_CREATED 4

/* The access bits of one `open` record, as the Python rules (`_open_bits`) give them. */
static int open_bits(unsigned long long flags, char existed) {
    if (flags & (O_DIRECTORY | O_PATH)) return 0; /* O_TMPFILE includes O_DIRECTORY */
    if ((flags & O_CREAT) && existed == '0') return BIT_CREATED | BIT_WRITTEN;
    int mode = (int)(flags & O_ACCMODE), b = 0;
    if (mode != O_WRONLY) b |= BIT_READ;
    if (mode != O_RDONLY || (flags & O_TRUNC)) b |= BIT_WRITTEN;
    return b;
}

struct path_table {
    struct path_slot {
        const char *tok; /* the escaped path, inside the log buffer; NULL: an empty slot */
        size_t len;
        int bits;
    } *slots;
    size_t cap;    /* a power of two */
    size_t *order; /* used slots, in first-seen order */
    size_t n;
};

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

/* Fold one `open PID FLAGS EXISTED PATH` line (without its newline) into the table; -1 if the
 * line is not understood (it is then copied as it is). */
static int fold_open(struct path_table *t, const char *line, const char *eol) {
    const char *fl = memchr(line + 5, ' ', (size_t)(eol - line - 5));
    const char *x = fl ? memchr(fl + 1, ' ', (size_t)(eol - fl - 1)) : NULL;
    if (!x || eol - x < 4 || x[2] != ' ') return -1;
    int bits = open_bits(strtoull(fl + 1, NULL, 16), x[1]);
    if (!bits) return 0;
    const char *tok = x + 3;
    size_t len = (size_t)(eol - tok);
    size_t i = hash_bytes(tok, len) & (t->cap - 1);
    while (t->slots[i].tok && !(t->slots[i].len == len && memcmp(t->slots[i].tok, tok, len) == 0))
        i = (i + 1) & (t->cap - 1);
    if (!t->slots[i].tok) {
        t->slots[i].tok = tok;
        t->slots[i].len = len;
        t->order[t->n++] = i;
    }
    t->slots[i].bits |= bits;
    return 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Many paths in one directory: their states come from one listing of it (readdir, whose
 * d_type needs no stat per entry) instead of an lstat each, which costs ~2 µs a path in a
 * VM (32,000 paths: 70 ms against ~10). */
#define LIST_AT_LEAST 32

struct dir_info {
    const char *tok; /* the escaped directory part of a path token: NULL, an empty slot */
    size_t len;
    size_t wanted;    /* paths of the summary in it */
    int listed;       /* 1: `names` holds its entries; -1: lstat each path instead */
    char *arena;      /* the entries' escaped names, back to back */
    size_t *offsets;  /* name i is arena[offsets[i] .. offsets[i + 1]) */
    char *states;     /* and its state */
    size_t *set;      /* open addressing over the names: index + 1, 0 = empty */
    size_t n, set_cap;
};

struct dir_table {
    uint32_t *index; /* open addressing: position in `dirs` + 1, 0 = empty */
    size_t cap;      /* of `index`, a power of two */
    struct dir_info *dirs;
    size_t n, dirs_cap;
};

/* The summary's STATE letter of a file mode (trace-format.md, "The summary"). */
static char state_of_mode(mode_t mode) {
    return S_ISREG(mode) ? 'f' : S_ISDIR(mode) ? 'd' : 'o';
}

static size_t escape_into(char *out, const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (needs_escape(c))
            n += (size_t)sprintf(out + n, "%%%02X", c);
        else
            out[n++] = (char)c;
    }
    return n;
}

static void unescape_into(char *out, size_t cap, const char *tok, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < cap; i++) {
        int hi = i + 2 < len ? hexval(tok[i + 1]) : -1, lo = i + 2 < len ? hexval(tok[i + 2]) : -1;
        if (tok[i] == '%' && hi >= 0 && lo >= 0) {
            out[n++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[n++] = tok[i];
        }
    }
    out[n] = 0;
}

/* What is at an escaped path now: 'f' a regular file, 'd' a directory, 'o' anything else (a
 * symlink, a fifo), 'n' nothing. */
static char state_now(const char *tok, size_t len) {
    char p[PATH_MAX * 2];
    if (len == 3 && memcmp(tok, "%00", 3) == 0) return 'n'; /* the empty path */
    unescape_into(p, sizeof p, tok, len);
    struct stat st;
    if (lstat(p, &st) != 0) return 'n';
    return state_of_mode(st.st_mode);
}

/* The position in d->dirs of the directory part of a path token (everything before its last
 * '/'; "/" for "/x"), added if new; -1 if out of memory. */
static long dir_of(struct dir_table *d, const char *tok, size_t len) {
    const char *slash = memrchr(tok, '/', len);
    size_t dlen = slash ? (size_t)(slash - tok) : 0;
    if (dlen == 0) dlen = 1, tok = "/";
    size_t i = hash_bytes(tok, dlen) & (d->cap - 1);
    for (uint32_t at; (at = d->index[i]); i = (i + 1) & (d->cap - 1)) {
        const struct dir_info *di = &d->dirs[at - 1];
        if (di->len == dlen && memcmp(di->tok, tok, dlen) == 0) return at - 1;
    }
    if (d->n == d->dirs_cap) {
        size_t cap = d->dirs_cap ? 2 * d->dirs_cap : 64;
        struct dir_info *more = realloc(d->dirs, cap * sizeof *more);
        if (!more) return -1;
        d->dirs = more, d->dirs_cap = cap;
    }
    memset(&d->dirs[d->n], 0, sizeof d->dirs[d->n]);
    d->dirs[d->n].tok = tok;
    d->dirs[d->n].len = dlen;
    d->index[i] = (uint32_t)++d->n;
    return (long)d->n - 1;
}

static char state_of_entry(int dirfd, const struct dirent *e) {
    switch (e->d_type) {
    case DT_REG: return 'f';
    case DT_DIR: return 'd';
    case DT_UNKNOWN: break; /* some file systems do not say: ask */
    default: return 'o';
    }
    struct stat st;
    if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) return 'n';
    return state_of_mode(st.st_mode);
}

/* List `di` into its name set; -1 (lstat per path) where that fails or does not pay: a huge
 * directory of which few entries are wanted (its size grows with its entries on the common
 * file systems). */
static void list_dir(struct dir_info *di) {
    char path[PATH_MAX * 2];
    unescape_into(path, sizeof path, di->tok, di->len);
    di->listed = -1;
    struct stat st;
    DIR *dir = stat(path, &st) == 0 && (size_t)st.st_size <= di->wanted * 256 ? opendir(path)
                                                                               : NULL;
    if (!dir) return;
    size_t cap = 256, arena_cap = 4096, used = 0;
    di->offsets = malloc((cap + 1) * sizeof *di->offsets);
    di->states = malloc(cap);
    di->arena = malloc(arena_cap);
    struct dirent *e;
    while (di->offsets && di->states && di->arena && (e = readdir(dir))) {
        size_t len = strlen(e->d_name);
        if (di->n + 1 >= cap) {
            cap *= 2;
            size_t *o = realloc(di->offsets, (cap + 1) * sizeof *o);
            char *s = realloc(di->states, cap);
            if (o) di->offsets = o;
            if (s) di->states = s;
            if (!o || !s) break;
        }
        if (used + 3 * len + 1 > arena_cap) {
            while (used + 3 * len + 1 > arena_cap) arena_cap *= 2;
            char *a = realloc(di->arena, arena_cap);
            if (!a) break;
            di->arena = a;
        }
        di->offsets[di->n] = used;
        used += escape_into(di->arena + used, e->d_name, len);
        di->states[di->n++] = state_of_entry(dirfd(dir), e);
    }
    int complete = e == NULL && di->offsets && di->states && di->arena;
    closedir(dir);
    if (!complete) return;
    di->offsets[di->n] = used;
    di->set_cap = 64;
    while (di->set_cap < 2 * di->n) di->set_cap <<= 1;
    di->set = calloc(di->set_cap, sizeof *di->set);
    if (!di->set) return;
    for (size_t k = 0; k < di->n; k++) {
        const char *name = di->arena + di->offsets[k];
        size_t i = hash_bytes(name, di->offsets[k + 1] - di->offsets[k]) & (di->set_cap - 1);
        while (di->set[i]) i = (i + 1) & (di->set_cap - 1);
        di->set[i] = k + 1;
    }
    di->listed = 1;
}

/* The state of an escaped name in a listed directory: 'n' if it is not there. */
static char listed_state(const struct dir_info *di, const char *name, size_t len) {
    size_t i = hash_bytes(name, len) & (di->set_cap - 1);
    for (size_t k; (k = di->set[i]); i = (i + 1) & (di->set_cap - 1)) {
        size_t at = di->offsets[k - 1], n = di->offsets[k] - at;
        if (n == len && memcmp(di->arena + at, name, len) == 0) return di->states[k - 1];
    }
    return 'n';
}

/* The stat key of a regular file: its lstat data packed as Python's struct "<QQQqq" packs
 * (dev, ino, size, mtime ns, ctime ns), written as 80 hex digits (roargit.folders uses it). */
#define STAT_KEY_HEX 80

static void stat_key_hex(const struct stat *st, char *out) {
    uint64_t v[5] = {(uint64_t)st->st_dev, (uint64_t)st->st_ino, (uint64_t)st->st_size,
                     (uint64_t)st->st_mtim.tv_sec * 1000000000ULL + (uint64_t)st->st_mtim.tv_nsec,
                     (uint64_t)st->st_ctim.tv_sec * 1000000000ULL + (uint64_t)st->st_ctim.tv_nsec};
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 5; i++)
        for (int b = 0; b < 8; b++) { /* little-endian */
            unsigned char c = (unsigned char)(v[i] >> (8 * b));
            *out++ = hex[c >> 4];
            *out++ = hex[c & 15];
        }
}

/* lstat the escaped path `tok` through `dirfd` (its folder; -1: by the whole path). */
static int stat_token(int dirfd, const char *tok, size_t len, struct stat *st) {
    char p[PATH_MAX * 2];
    if (len == 3 && memcmp(tok, "%00", 3) == 0) return -1;
    if (dirfd < 0) {
        unescape_into(p, sizeof p, tok, len);
        return lstat(p, st);
    }
    const char *slash = memrchr(tok, '/', len);
    if (!slash || slash + 1 == tok + len) return -1;
    unescape_into(p, sizeof p, slash + 1, (size_t)(tok + len - slash - 1));
    return fstatat(dirfd, p, st, AT_SYMLINK_NOFOLLOW);
}

/* lstat paths `from` to `to` of the summary through their folders' descriptors: states[k]
 * from that stat, and a regular file's stat key at keys[k * STAT_KEY_HEX] (keys[k *
 * STAT_KEY_HEX] is 0 for the others). */
static void stat_paths(const struct path_table *t, const struct dir_table *d, const long *dir_at,
                       char *states, char *keys, size_t from, size_t to) {
    long fd_of = -1; /* the directory `fd` is open on */
    int fd = -1;
    for (size_t k = from; k < to; k++) {
        const struct path_slot *sl = &t->slots[t->order[k]];
        const struct dir_info *di = dir_at && dir_at[k] >= 0 ? &d->dirs[dir_at[k]] : NULL;
        if (di && dir_at[k] != fd_of) {
            char path[PATH_MAX * 2];
            if (fd >= 0) close(fd);
            unescape_into(path, sizeof path, di->tok, di->len);
            fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
            fd_of = dir_at[k];
        }
        struct stat st;
        keys[k * STAT_KEY_HEX] = 0;
        if (stat_token(di ? fd : -1, sl->tok, sl->len, &st) != 0) {
            states[k] = state_now(sl->tok, sl->len); /* gone, or a name too long */
            continue;
        }
        states[k] = state_of_mode(st.st_mode);
        if (states[k] == 'f') stat_key_hex(&st, keys + k * STAT_KEY_HEX);
    }
    if (fd >= 0) close(fd);
}

/* Paths from which a second process takes half of the lstat calls, as git's preload-index
 * spreads its lstat calls over threads: the command has ended and roar waits, so a second
 * CPU is usually idle. A process, not a thread: nothing more to link. */
#define SHARE_STATS_AT_LEAST 8192

/* Memory that a forked helper writes into and this process reads (MAP_SHARED); NULL if none. */
static void *shared_alloc(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* `stat_paths` for every path, the second half in a forked helper where there are many
 * (`states` and `keys` from shared_alloc); all in this process if the helper cannot be had or
 * fails. */
static void stat_all_paths(const struct path_table *t, const struct dir_table *d,
                           const long *dir_at, char *states, char *keys) {
    size_t half = t->n >= SHARE_STATS_AT_LEAST ? t->n / 2 : t->n;
    pid_t helper = half < t->n ? fork() : -1;
    if (helper == 0) {
        /* Not the tracer's handlers: they would pass signals to the run's (gone) processes. */
        signal(SIGTERM, SIG_DFL), signal(SIGHUP, SIG_DFL), signal(SIGALRM, SIG_DFL);
        signal(SIGUSR1, SIG_DFL), signal(SIGUSR2, SIG_DFL);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        stat_paths(t, d, dir_at, states, keys, half, t->n);
        _exit(0); /* no atexit, no stdio flush: the summary's buffer is the parent's */
    }
    stat_paths(t, d, dir_at, states, keys, 0, helper > 0 ? half : t->n);
    if (helper > 0) {
        int status = -1;
        while (waitpid(helper, &status, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            stat_paths(t, d, dir_at, states, keys, half, t->n);
    }
}

/* The state of every path of the summary, in `states[k]` for t->order[k]. With `keys`, each
 * path is lstat-ed instead (`stat_paths`; `states` and `keys` from shared_alloc); otherwise a
 * folder holding many of them is listed once. */
static void find_states(const struct path_table *t, char *states, char *keys, long *dir_at) {
    struct dir_table d = {0};
    d.cap = 64;
    while (d.cap < 2 * t->n) d.cap <<= 1;
    d.index = calloc(d.cap, sizeof *d.index);
    for (size_t k = 0; dir_at && k < t->n; k++) {
        const struct path_slot *sl = &t->slots[t->order[k]];
        dir_at[k] = d.index ? dir_of(&d, sl->tok, sl->len) : -1;
        if (dir_at[k] >= 0) d.dirs[dir_at[k]].wanted++;
    }
    if (keys) stat_all_paths(t, &d, dir_at, states, keys);
    for (size_t k = 0; !keys && k < t->n; k++) {
        const struct path_slot *sl = &t->slots[t->order[k]];
        struct dir_info *di = dir_at && dir_at[k] >= 0 ? &d.dirs[dir_at[k]] : NULL;
        if (di && di->wanted >= LIST_AT_LEAST && di->listed == 0) list_dir(di);
        const char *slash = memrchr(sl->tok, '/', sl->len);
        if (di && di->listed == 1 && slash && slash + 1 < sl->tok + sl->len)
            states[k] = listed_state(di, slash + 1, (size_t)(sl->tok + sl->len - slash - 1));
        else
            states[k] = state_now(sl->tok, sl->len);
    }
    for (size_t i = 0; i < d.n; i++) {
        free(d.dirs[i].arena), free(d.dirs[i].offsets), free(d.dirs[i].states);
        free(d.dirs[i].set);
    }
    free(d.index), free(d.dirs);
}

/* A `files` record (trace-format.md, "The summary") holds the paths of one folder that share
 * their BITS and STATE, by name in byte order: the reader makes one entry for the lot instead
 * of one a path, and a folder's stat digest (roargit.folders) is made from the record's names
 * and keys as they stand. Only plain paths go there (no escapes, nothing a reader would
 * normalise, a regular file or other non-directory with its key where keys are given); the
 * rest keep their `file` records. */
#define GROUP_AT_LEAST 8

/* A path of the summary that may go in a `files` record: its folder, BITS and STATE, and its
 * name (the token's last component), by which a group's members are sorted. Gathered into one
 * array so that the sort reads it in order. */
struct member {
    const char *name;
    uint32_t dir;
    uint32_t k; /* its position in the summary's path order */
    uint16_t name_len; /* a name is at most NAME_MAX bytes, escaped */
    uint8_t bits;
    char state;
};

/* The order of members of one folder: by BITS, STATE, then name (members_by_folder). */
static int member_order(const void *a, const void *b) {
    const struct member *x = a, *y = b;
    if (x->bits != y->bits) return x->bits < y->bits ? -1 : 1;
    if (x->state != y->state) return x->state < y->state ? -1 : 1;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n); /* byte order, as trace-format.md says */
    if (c) return c;
    return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

static int member_full_order(const void *a, const void *b) {
    const struct member *x = a, *y = b;
    if (x->dir != y->dir) return x->dir < y->dir ? -1 : 1;
    return member_order(a, b);
}

/* Sort `m` (n members) by folder, then by member_order: the folders are put in order by
 * counting (their numbers are dense), so that the comparison sort only sees one folder's
 * members at a time; `tmp` has room for n. Returns the sorted array (`m` or `tmp`). */
static struct member *members_by_folder(struct member *m, struct member *tmp, size_t n) {
    size_t dirs = 0;
    for (size_t i = 0; i < n; i++)
        if ((size_t)m[i].dir + 1 > dirs) dirs = (size_t)m[i].dir + 1;
    size_t *at = calloc(dirs + 1, sizeof *at);
    if (!at || !tmp) {
        free(at);
        qsort(m, n, sizeof *m, member_full_order);
        return m;
    }
    for (size_t i = 0; i < n; i++) at[m[i].dir + 1]++;
    for (size_t d = 0; d < dirs; d++) at[d + 1] += at[d];
    for (size_t i = 0; i < n; i++) tmp[at[m[i].dir]++] = m[i];
    for (size_t a = 0, b; a < n; a = b) {
        for (b = a + 1; b < n && tmp[b].dir == tmp[a].dir; b++)
            ;
        qsort(tmp + a, b - a, sizeof *tmp, member_order);
    }
    free(at);
    return tmp;
}

static int groupable(const struct path_slot *sl, char state, const char *key, long dir) {
    if (dir < 0 || (state != 'f' && state != 'o') || (key && state == 'f' && !*key)) return 0;
    const char *slash = memrchr(sl->tok, '/', sl->len);
    if (!slash || slash == sl->tok || slash + 1 == sl->tok + sl->len) return 0;
    if (sl->tok + sl->len - slash - 1 > UINT16_MAX) return 0; /* no name: see struct member */
    if (memchr(sl->tok, '%', sl->len)) return 0;
    for (size_t i = 0; i + 1 < sl->len; i++)
        if (sl->tok[i] == '/' && (sl->tok[i + 1] == '.' || sl->tok[i + 1] == '/')) return 0;
    return 1;
}

static char *read_whole(const char *path, size_t *size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0) close(fd);
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (buf && got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    *size = got;
    return buf;
}

/* Write the summary of the finished log at `log_path` to `summary_path` (atomically: a
 * reader finds a whole summary or none). */
static int write_summary(const char *log_path, const char *summary_path, int with_keys) {
    size_t size;
    char *buf = read_whole(log_path, &size);
    if (!buf) return -1;
    buf[size] = '\n'; /* a sentinel: every line ends in one */
    struct path_table t = {0};
    size_t lines = 0;
    for (const char *c = buf; (c = memchr(c, '\n', (size_t)(buf + size - c))); c++) lines++;
    t.cap = 1024;
    while (t.cap < 2 * lines) t.cap <<= 1; /* one path a line at most: load <= 0.5 */
    t.slots = calloc(t.cap, sizeof *t.slots);
    t.order = malloc(t.cap * sizeof *t.order);
    char tmp[PATH_MAX + 16];
    snprintf(tmp, sizeof tmp, "%s.tmp", summary_path);
    FILE *out = t.slots && t.order ? fopen(tmp, "we") : NULL;
    if (!out) {
        free(buf), free(t.slots), free(t.order);
        return -1;
    }
    static char outbuf[1 << 20];
    setvbuf(out, outbuf, _IOFBF, sizeof outbuf);
    const char *end_line = NULL;
    size_t end_len = 0;
    char *line = memchr(buf, '\n', size + 1) + 1; /* the header: the summary writes its own */
    fprintf(out, "roar-trace %d\n", LOG_VERSION);
    while (line < buf + size) {
        char *eol = memchr(line, '\n', (size_t)(buf + size + 1 - line));
        size_t len = (size_t)(eol - line);
        if (len > 4 && memcmp(line, "end ", 4) == 0) {
            end_line = line; /* what follows (a left-behind process's records) is not the run */
            end_len = len + 1;
            break;
        }
        if (!(len > 5 && memcmp(line, "open ", 5) == 0 && fold_open(&t, line, eol) == 0))
            fwrite(line, 1, len + 1, out);
        line = eol + 1;
    }
    /* The paths in first-seen order, in one array: every pass below reads them in order
     * instead of at their scattered places in the hash table. */
    struct path_slot *dense = malloc((t.n + 1) * sizeof *dense);
    if (dense) {
        for (size_t k = 0; k < t.n; k++) dense[k] = t.slots[t.order[k]], t.order[k] = k;
        free(t.slots);
        t.slots = dense;
    }
    size_t states_size = t.n + 1, keys_size = (t.n + 1) * STAT_KEY_HEX;
    char *states = with_keys ? shared_alloc(states_size) : malloc(states_size);
    char *keys = with_keys ? shared_alloc(keys_size) : NULL;
    if (with_keys && (!states || !keys)) { /* no shared memory: no keys, states as without */
        if (states) munmap(states, states_size);
        if (keys) munmap(keys, keys_size);
        keys = NULL, with_keys = 0;
        states = malloc(states_size);
    }
    long *dir_at = malloc((t.n + 1) * sizeof *dir_at); /* each path's folder, or -1 */
    struct member *grouped = malloc((t.n + 1) * sizeof *grouped);
    size_t n_grouped = 0;
    if (states && dir_at) find_states(&t, states, keys, dir_at);
    for (size_t k = 0; k < t.n; k++) {
        const struct path_slot *sl = &t.slots[t.order[k]];
        char state = states && dir_at ? states[k] : state_now(sl->tok, sl->len);
        const char *key = states && dir_at && keys ? keys + k * STAT_KEY_HEX : NULL;
        if (grouped && states && dir_at && groupable(sl, state, key, dir_at[k])) {
            /* written below, with its folder's others */
            const char *slash = memrchr(sl->tok, '/', sl->len);
            grouped[n_grouped++] = (struct member){slash + 1, (uint32_t)dir_at[k], (uint32_t)k,
                                                   (uint16_t)(sl->tok + sl->len - slash - 1),
                                                   (uint8_t)sl->bits, state};
            continue;
        }
        fprintf(out, "file %d %c ", sl->bits, state);
        fwrite(sl->tok, 1, sl->len, out);
        if (key && *key) {
            putc(' ', out);
            fwrite(key, 1, STAT_KEY_HEX, out);
        }
        putc('\n', out);
    }
    struct member *unsorted = grouped, *spare = n_grouped ? malloc(n_grouped * sizeof *spare) : NULL;
    if (n_grouped) grouped = members_by_folder(grouped, spare, n_grouped);
    for (size_t a = 0, b; a < n_grouped; a = b) {
        const struct member *m = &grouped[a];
        for (b = a + 1; b < n_grouped && grouped[b].dir == m->dir && grouped[b].bits == m->bits &&
                        grouped[b].state == m->state;
             b++)
            ;
        const struct path_slot *sl = &t.slots[t.order[m->k]];
        size_t dlen = (size_t)(m->name - 1 - sl->tok);
        if (b - a >= GROUP_AT_LEAST) {
            fprintf(out, "files %d %c ", m->bits, m->state);
            fwrite(sl->tok, 1, dlen, out);
            putc(' ', out);
            if (keys && m->state == 'f')
                for (size_t g = a; g < b; g++)
                    fwrite(keys + grouped[g].k * STAT_KEY_HEX, 1, STAT_KEY_HEX, out);
            else
                putc('-', out);
            for (size_t g = a; g < b; g++) {
                putc(' ', out);
                fwrite(grouped[g].name, 1, grouped[g].name_len, out);
            }
            putc('\n', out);
            continue;
        }
        for (size_t g = a; g < b; g++) {
            const struct path_slot *p = &t.slots[t.order[grouped[g].k]];
            fprintf(out, "file %d %c ", p->bits, grouped[g].state);
            fwrite(p->tok, 1, p->len, out);
            if (keys && grouped[g].state == 'f') {
                putc(' ', out);
                fwrite(keys + grouped[g].k * STAT_KEY_HEX, 1, STAT_KEY_HEX, out);
            }
            putc('\n', out);
        }
    }
    if (with_keys)
        munmap(states, states_size), munmap(keys, keys_size);
    else
        free(states);
    free(grouped == unsorted ? spare : unsorted);
    free(dir_at), free(grouped);
    if (end_line) fwrite(end_line, 1, end_len, out);
    int bad = ferror(out);
    bad |= fclose(out) != 0;
    free(buf), free(t.slots), free(t.order);
    if (bad || rename(tmp, summary_path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int stat_files; /* --stat-files: the summary gives regular files' stat keys */

static int worker(char **cmd, const char *log_path, const char *summary_path, double grace,
                  int sigint_ignored, int verdict_fd) {
    ssize_t ns_len = readlink("/proc/self/ns/mnt", own_mnt_ns, sizeof own_mnt_ns - 1);
    own_mnt_ns[ns_len > 0 ? ns_len : 0] = 0;
    /* O_APPEND: the shim appends whole lines to the same file from the traced processes. */
    int logfd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0) {
        fprintf(stderr, "roar-trace: cannot write %s: %s\n", log_path, strerror(errno));
        return 125;
    }
    logf_ = fdopen(logfd, "w");
    struct stat log_st;
    if (fstat(logfd, &log_st) == 0) log_dev = log_st.st_dev, log_ino = log_st.st_ino;
    /* Fully buffered, flushed only between records (see the main loop), so that the shim's
     * lines never land inside one of ours. */
    static char logbuf[1 << 20];
    setvbuf(logf_, logbuf, _IOFBF, sizeof logbuf);
    fprintf(logf_, "roar-trace %d\n", LOG_VERSION);
    fflush(logf_);
    char shim_log[PATH_MAX];
    if (use_shim && (!realpath(log_path, shim_log) || !find_shim())) use_shim = 0;

    if (pin_cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(pin_cpu, &set);
        sched_setaffinity(0, sizeof set, &set);
    }
    int go[2], err[2];
    if (pipe2(go, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) return 125;
    pid_t child = fork();
    if (child < 0) return 125;
    if (child == 0) {
        close(go[1]);
        close(err[0]);
        char c;
        if (read(go[0], &c, 1) != 1) _exit(125); /* the tracer is gone */
        signal(SIGINT, sigint_ignored ? SIG_IGN : SIG_DFL);
        signal(SIGQUIT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        if (use_shim) {
            /* Ours first, the user's LD_PRELOAD kept after it. */
            const char *prev = getenv("LD_PRELOAD");
            size_t need = strlen(shim_path) + (prev ? strlen(prev) : 0) + 2;
            char *pre = malloc(need);
            if (pre) {
                snprintf(pre, need, "%s%s%s", shim_path, prev && *prev ? ":" : "",
                         prev ? prev : "");
                setenv("LD_PRELOAD", pre, 1);
                setenv(ROAR_SHIM_LOG_ENV, shim_log, 1);
                /* Our view of the file system: a shim that finds itself in another (a chroot,
                 * a mount namespace) records nothing, its calls come to us. */
                struct stat rst;
                char view[160];
                if (stat("/", &rst) == 0) {
                    snprintf(view, sizeof view, "%s %lu:%lu", own_mnt_ns,
                             (unsigned long)rst.st_dev, (unsigned long)rst.st_ino);
                    setenv(ROAR_SHIM_VIEW_ENV, view, 1);
                }
            }
        }
        if (!no_filter && install_filter() != 0) {
            char msg[256];
            int m = snprintf(msg, sizeof msg, "seccomp refused: %s", strerror(errno));
            if (write(err[1], msg, (size_t)m) < 0) _exit(125);
            _exit(125);
        }
        execvp(cmd[0], cmd);
        char msg[PATH_MAX + 64];
        int e = errno;
        int m = snprintf(msg, sizeof msg, "exec %s", strerror(e));
        if (write(err[1], msg, (size_t)m) < 0) _exit(127);
        _exit(e == ENOENT ? 127 : 126);
    }
    close(go[0]);
    close(err[1]);
    long opts = PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK |
                PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL | PTRACE_O_TRACESECCOMP |
                PTRACE_O_TRACESYSGOOD;
    seize_opts = opts;
    /* ROAR_TRACE_SIMULATE_REFUSAL=1 acts as a container that refuses ptrace (for tests). */
    const char *refuse = getenv("ROAR_TRACE_SIMULATE_REFUSAL");
    int refused = refuse && *refuse && strcmp(refuse, "0") != 0;
    if (refused || ptrace(PTRACE_SEIZE, child, 0, (void *)opts) != 0) {
        int e = refused ? EPERM : errno;
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        fprintf(logf_, "unavailable");
        log_str("ptrace refused");
        log_str(strerror(e));
        log_end_line();
        fclose(logf_);
        return 125;
    }
    fprintf(logf_, "start %d %d %d\n", child, no_filter ? 0 : 1, use_shim);
    fflush(logf_);
    add_task(child)->tgid = child;
    if (write(go[1], "g", 1) != 1) return 125;
    close(go[1]);
    if (no_filter) {
        /* Without the filter nothing stops the child until we make it: interrupt it and
         * let the first stop switch it to PTRACE_SYSCALL mode. */
        ptrace(PTRACE_INTERRUPT, child, 0, 0);
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm; /* no SA_RESTART: waitpid returns EINTR at the deadline */
    sigaction(SIGALRM, &sa, NULL);
    /* SIGTERM and friends sent to roar-trace are meant for the command. */
    command_pid = child;
    sa.sa_handler = relay;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);

    int root_status = -1, root_exec_seen = 0, finished = 0;
    int killed_all = 0;
    for (;;) {
        if (n_tasks == 0) break;
        if (__fpending(logf_) > (1 << 16)) fflush(logf_); /* between records: whole lines */
        if (kill_requested && !killed_all) {
            /* A second SIGTERM/SIGHUP: end the whole tree now. The exits are still waited
             * for and logged, so the log is finished and the run recorded. */
            killed_all = 1;
            log_warn("a second termination signal: every process of the command was killed");
            for (size_t i = 0; i < n_tasks; i++)
                if (tasks[i].tid == tasks[i].tgid) kill(tasks[i].tid, SIGKILL);
        }
        if (root_status != -1 && !finished && alarm_fired) {
            /* Grace period over: finish the log, hand the verdict back, keep serving the
             * processes left behind (they stay under the filter, which without a tracer
             * would fail their file calls with ENOSYS, so detaching is no option). */
            for (size_t i = 0; i < n_tasks; i++)
                if (tasks[i].tid == tasks[i].tgid) fprintf(logf_, "leftover %d\n", tasks[i].tid);
            break;
        }
        int status;
        pid_t tid = wait_spinning(&status);
        if (tid < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (WIFEXITED(status) || WIFSIGNALED(status)) {
            struct task *t = find_task(tid);
            if (t && t->tid == t->tgid) {
                if (WIFEXITED(status))
                    fprintf(logf_, "exit %d code %d\n", tid, WEXITSTATUS(status));
                else
                    fprintf(logf_, "exit %d signal %d\n", tid, WTERMSIG(status));
            }
            remove_task(tid);
            if (tid == child) {
                root_status = status;
                if (n_tasks > 0 && live_processes() > 0) {
                    struct itimerval it;
                    memset(&it, 0, sizeof it);
                    it.it_value.tv_sec = (time_t)grace;
                    it.it_value.tv_usec = (suseconds_t)((grace - (double)(time_t)grace) * 1e6);
                    if (it.it_value.tv_sec == 0 && it.it_value.tv_usec == 0) it.it_value.tv_usec = 1;
                    setitimer(ITIMER_REAL, &it, NULL);
                }
            }
            continue;
        }
        if (!WIFSTOPPED(status)) continue;
        int sig = WSTOPSIG(status);
        int event = (unsigned)status >> 16;
        switch (event) {
        case PTRACE_EVENT_SECCOMP:
            on_syscall_stop(tid, 1);
            resume(tid, 0);
            break;
        case PTRACE_EVENT_FORK:
        case PTRACE_EVENT_VFORK:
        case PTRACE_EVENT_CLONE: {
            unsigned long nid = 0;
            ptrace(PTRACE_GETEVENTMSG, tid, 0, &nid);
            struct task *parent = add_task(tid);
            pid_t ptgid = parent->tgid;
            char *pcwd = parent->cwd_cache ? strdup(parent->cwd_cache) : NULL;
            int pgen = parent->cwd_gen;
            struct task *c = add_task((pid_t)nid); /* may realloc: parent is stale now */
            if (!c->cwd_cache && pcwd) {
                c->cwd_cache = pcwd;
                c->cwd_gen = pgen;
            } else {
                free(pcwd);
            }
            fprintf(logf_, "task %lu %d %d %s\n", nid, c->tgid, ptgid,
                    event == PTRACE_EVENT_FORK ? "fork"
                    : event == PTRACE_EVENT_VFORK ? "vfork"
                    : c->tgid == ptgid ? "thread" : "clone");
            resume(tid, 0);
            break;
        }
        case PTRACE_EVENT_EXEC:
            on_exec(tid);
            if (tid == child) root_exec_seen = 1;
            resume(tid, 0);
            break;
        case PTRACE_EVENT_EXIT:
            on_exit_stop(tid);
            resume(tid, 0);
            break;
        case PTRACE_EVENT_STOP:
            add_task(tid);
            if (is_stop_signal(sig))
                ptrace(PTRACE_LISTEN, tid, 0, 0); /* group-stop: stay stopped, like untraced */
            else
                resume(tid, 0);
            break;
        case 0:
            if (sig == (SIGTRAP | 0x80)) { /* syscall stop (unfiltered mode only) */
                on_syscall_stop(tid, 0);
                resume(tid, 0);
            } else {
                /* signal-delivery-stop: pass the signal on */
                struct task *t = add_task(tid);
                if (sig != SIGCHLD) fprintf(logf_, "signal %d %d\n", t->tgid, sig);
                resume(tid, sig);
            }
            break;
        default:
            resume(tid, 0);
            break;
        }
    }
    struct itimerval off;
    memset(&off, 0, sizeof off);
    setitimer(ITIMER_REAL, &off, NULL);

    if (!root_exec_seen) {
        char msg[PATH_MAX + 64];
        ssize_t n = read(err[0], msg, sizeof msg - 1);
        if (n > 0) {
            msg[n] = 0;
            if (strncmp(msg, "seccomp", 7) == 0) {
                fprintf(logf_, "unavailable");
                log_str(msg);
                log_end_line();
                fclose(logf_);
                logf_ = NULL;
                return 125;
            }
            log_warn("cannot run %s: %s", cmd[0], msg + 5);
            fprintf(stderr, "roar-trace: %s: %s\n", cmd[0], msg + 5);
        }
    }
    close(err[0]);
    if (root_status == -1) root_status = 125 << 8; /* lost the root: should not happen */
    if (WIFSIGNALED(root_status))
        fprintf(logf_, "end signal %d\n", WTERMSIG(root_status));
    else
        fprintf(logf_, "end code %d\n", WEXITSTATUS(root_status));
    fclose(logf_);
    logf_ = NULL;
    /* Stat keys only once every traced process has ended: a left-behind one may still write
     * (n_tasks counts those). */
    if (summary_path && write_summary(log_path, summary_path, stat_files && n_tasks == 0) != 0)
        unlink(summary_path); /* the reader falls back to the log */

    /* Left-behind processes: we must outlive the front, which exits as soon as it has the
     * verdict, so the parent-death signal goes before the verdict is written (after it, the
     * front could exit first and take us, and with EXITKILL the processes, along). */
    if (n_tasks > 0) prctl(PR_SET_PDEATHSIG, 0);
    int verdict[2] = {root_status, (int)n_tasks};
    if (write(verdict_fd, verdict, sizeof verdict) < 0) return 125;
    close(verdict_fd);

    if (n_tasks > 0) {
        /* Keep serving them, unrecorded, until they exit. */
        while (n_tasks > 0) {
            int status;
            pid_t tid = waitpid(-1, &status, __WALL);
            if (tid < 0) {
                if (errno == EINTR) continue;
                break;
            }
            if (WIFEXITED(status) || WIFSIGNALED(status)) {
                remove_task(tid);
                continue;
            }
            if (!WIFSTOPPED(status)) continue;
            int sig = WSTOPSIG(status), event = (unsigned)status >> 16;
            if (event == PTRACE_EVENT_FORK || event == PTRACE_EVENT_VFORK ||
                event == PTRACE_EVENT_CLONE) {
                unsigned long nid = 0;
                ptrace(PTRACE_GETEVENTMSG, tid, 0, &nid);
                add_task((pid_t)nid);
            }
            struct task *t = add_task(tid);
            if (event == 0 && sig == (SIGTRAP | 0x80) && t->await_exit) {
                t->await_exit = 0; /* nothing is recorded now: back to PTRACE_CONT */
                awaiting_exits--;
            }
            if (event == PTRACE_EVENT_STOP && is_stop_signal(sig))
                ptrace(PTRACE_LISTEN, tid, 0, 0);
            else
                resume(tid, event == 0 && sig != (SIGTRAP | 0x80) ? sig : 0);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- the front */

static volatile sig_atomic_t worker_pid;
static void forward(int sig) {
    if (worker_pid > 0) kill(worker_pid, sig);
}

static void usage(void) {
    fprintf(stderr, "usage: roar-trace --log FILE [--summary FILE [--stat-files]] [--cwd DIR] "
                    "[--no-filter] [--no-shim] [--grace SECONDS] [--sigint-ignored] "
                    "-- CMD [ARG...]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *log_path = NULL, *summary_path = NULL, *cwd = NULL;
    double grace = 2.0;
    int sigint_ignored = 0, i;
    const char *e = getenv("ROAR_TRACE_NO_FILTER");
    no_filter = e && *e && strcmp(e, "0") != 0;
    e = getenv("ROAR_TRACE_NO_SHIM");
    int no_shim = e && *e && strcmp(e, "0") != 0;
    if ((e = getenv("ROAR_TRACE_DAEMON_GRACE")) && *e) grace = atof(e);
    if ((e = getenv("ROAR_TRACE_SPIN_US")) && *e) spin_ns = atol(e) * 1000;
    if ((e = getenv("ROAR_TRACE_PIN")) && *e) pin_cpu = atoi(e);
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else if (strcmp(argv[i], "--log") == 0 && i + 1 < argc) {
            log_path = argv[++i];
        } else if (strcmp(argv[i], "--summary") == 0 && i + 1 < argc) {
            summary_path = argv[++i];
        } else if (strcmp(argv[i], "--stat-files") == 0) {
            stat_files = 1;
        } else if (strcmp(argv[i], "--cwd") == 0 && i + 1 < argc) {
            cwd = argv[++i];
        } else if (strcmp(argv[i], "--grace") == 0 && i + 1 < argc) {
            grace = atof(argv[++i]);
        } else if (strcmp(argv[i], "--no-filter") == 0) {
            no_filter = 1;
        } else if (strcmp(argv[i], "--no-shim") == 0) {
            no_shim = 1;
        } else if (strcmp(argv[i], "--sigint-ignored") == 0) {
            sigint_ignored = 1;
        } else {
            usage();
        }
    }
    if (!log_path || i >= argc) usage();
    use_shim = !no_filter && !no_shim; /* without the filter every call stops anyway */
    if (grace < 0) grace = 0;
    if (cwd && chdir(cwd) != 0) {
        fprintf(stderr, "roar-trace: cannot enter %s: %s\n", cwd, strerror(errno));
        return 125;
    }

    /* Ctrl-C and Ctrl-\ reach the command through its process group; we must survive them
     * to finish the log. */
    signal(SIGINT, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    pid_t parent = getppid();
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* roar killed -> we die -> EXITKILL kills the command */
    if (getppid() != parent) return 125;

    int verdict[2];
    if (pipe2(verdict, O_CLOEXEC) != 0) return 125;
    pid_t w = fork();
    if (w < 0) return 125;
    if (w == 0) {
        close(verdict[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1) _exit(125);
        int rc = worker(argv + i, log_path, summary_path, grace, sigint_ignored, verdict[1]);
        _exit(rc);
    }
    close(verdict[1]);
    worker_pid = w;
    (void)pin_cpu;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);

    int got[2] = {0, 0};
    ssize_t n;
    do {
        n = read(verdict[0], got, sizeof got);
    } while (n < 0 && errno == EINTR);
    int status = got[0];
    if (n == (ssize_t)sizeof got && got[1] == 0) {
        /* Nothing left behind: the worker is about to exit; reap it. */
        while (waitpid(w, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    if (n != (ssize_t)sizeof got) {
        /* The worker ended without a verdict (unavailable, bad usage, crash). */
        int ws = 0;
        while (waitpid(w, &ws, 0) < 0 && errno == EINTR) {
        }
        if (WIFEXITED(ws)) return WEXITSTATUS(ws) ? WEXITSTATUS(ws) : 125;
        return 125;
    }
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}
