/* roar: the installed command's front end.
 *
 * `roar run …` and `roar build …` are handed to this user's resident recorder when one is
 * listening (roargit/recorder.py; docs/architecture.md, "The resident recorder"): a Python
 * process that has loaded roargit once and forks a child per run. This program starts the
 * command itself, so that it stays the shell's child, in the shell's process group, session,
 * cgroup and limits; the recorder's child does everything else. Every other command, and any
 * run the recorder cannot take, is given to the Python program unchanged (`git-roar`, the
 * pip-made script beside this one), so the front end only ever saves time.
 *
 * Protocol (one Unix stream socket per run; a message is a 4-byte little-endian length, a
 * type byte and NUL-separated fields):
 *   front end -> recorder  'R' version, cwd, umask, sigint-ignored, namespaces, credentials,
 *                          argc, argv…, environ… (with fds 0, 1 and 2 attached, SCM_RIGHTS)
 *   recorder -> front end  'H' pid (the child that records: signals are passed to it)
 *                          'X' path, argc, argv…, environ… (start the tracer so, on the
 *                          fds 0, 1 and 2 attached)
 *                          'E' exit status (done) | 'L' (take the slow way: nothing was done)
 *   front end -> recorder  'P' pid | 'F' errno (the tracer started | could not be)
 *                          'S' wait status (the tracer ended)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define PROTOCOL "1"
#define MAX_MESSAGE (64u << 20)
/* The variable that tells the Python program where to start a recorder (cli.main pops it). */
#define SOCKET_VAR "ROAR_RECORDER_SOCKET="

static volatile sig_atomic_t recorder_pid = 0;  /* the child that records, once it said so */
static volatile sig_atomic_t command_running = 0;
static volatile sig_atomic_t pending_signal = 0; /* came before recorder_pid was known */
static volatile sig_atomic_t forwarded = 0;      /* the last signal passed on */

static char self_dir[PATH_MAX];

/* ---------------------------------------------------------------------- the slow way */

/* Runs the Python program with the same arguments; `socket_path`, when given, asks it to
 * start a recorder there once the run is recorded. Never returns. */
static void slow_way(char **argv, const char *socket_path) {
    if (socket_path) {
        size_t n = strlen(SOCKET_VAR) + strlen(socket_path) + 1;
        char *var = malloc(n);
        if (var) {
            snprintf(var, n, "%s%s", SOCKET_VAR, socket_path);
            putenv(var);
        }
    }
    char script[PATH_MAX + 16];
    if (self_dir[0] && snprintf(script, sizeof script, "%s/git-roar", self_dir) < (int)sizeof script &&
        access(script, F_OK) == 0) {
        argv[0] = script;
        execv(script, argv);
        fprintf(stderr, "roar: cannot run %s: %s\n", script, strerror(errno));
        exit(126);
    }
    /* No script beside this one (a copied binary): the package, by the interpreter on PATH. */
    int argc = 0;
    while (argv[argc]) argc++;
    char **py = calloc((size_t)argc + 3, sizeof *py);
    if (py) {
        py[0] = "python3";
        py[1] = "-m";
        py[2] = "roargit";
        for (int i = 1; i < argc; i++) py[i + 2] = argv[i];
        execvp("python3", py);
    }
    fprintf(stderr, "roar: cannot start roargit's Python program (%s)\n", strerror(errno));
    exit(127);
}

/* ------------------------------------------------------------------------ where it listens */

/* A folder only this user may use: made if missing, refused if anyone else owns it or may
 * enter it. */
static int private_dir(const char *dir) {
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return -1;
    struct stat st;
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() ||
        (st.st_mode & 077))
        return -1;
    return 0;
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

/* One recorder per installation of roargit: the socket is named by this binary's path and
 * identity, so another venv, or a reinstall, never talks to a recorder of other code. */
static int socket_path(char *out, size_t size) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return -1;
    exe[n] = 0;
    struct stat st;
    if (stat(exe, &st) != 0) return -1;
    char *slash = strrchr(exe, '/');
    if (slash && (size_t)(slash - exe) < sizeof self_dir) {
        memcpy(self_dir, exe, (size_t)(slash - exe));
        self_dir[slash - exe] = 0;
    }
    uint64_t h = 14695981039346656037ULL;
    h = fnv1a(h, exe, (size_t)n);
    h = fnv1a(h, &st.st_dev, sizeof st.st_dev);
    h = fnv1a(h, &st.st_ino, sizeof st.st_ino);
    h = fnv1a(h, &st.st_mtim, sizeof st.st_mtim);
    /* $XDG_RUNTIME_DIR/roar, else $TMPDIR/roar-UID, else /tmp/roar-UID: the first whose
     * socket path fits a sockaddr_un (a deep $TMPDIR may not). */
    const char *xdg = getenv("XDG_RUNTIME_DIR"), *tmp = getenv("TMPDIR");
    char dirs[3][PATH_MAX];
    int k = 0;
    if (xdg && xdg[0] == '/') snprintf(dirs[k++], PATH_MAX, "%s/roar", xdg);
    if (tmp && tmp[0] == '/') snprintf(dirs[k++], PATH_MAX, "%s/roar-%u", tmp, (unsigned)geteuid());
    snprintf(dirs[k++], PATH_MAX, "/tmp/roar-%u", (unsigned)geteuid());
    for (int i = 0; i < k; i++) {
        int m = snprintf(out, size, "%s/recorder-%016llx.sock", dirs[i], (unsigned long long)h);
        if (m > 0 && (size_t)m < size && private_dir(dirs[i]) == 0) return 0;
    }
    return -1;
}

/* --------------------------------------------------------------------------- messages */

struct buf {
    char *data;
    size_t len, cap;
};

static int put(struct buf *b, const char *s, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) return -1;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    return 0;
}

static int put_field(struct buf *b, const char *s) { return put(b, s, strlen(s) + 1); }

static int put_number(struct buf *b, long long v) {
    char s[32];
    snprintf(s, sizeof s, "%lld", v);
    return put_field(b, s);
}

/* A message: length (type byte and body), type, body. */
static int start_message(struct buf *b, char type) {
    b->len = 0;
    char head[5] = {0, 0, 0, 0, type};
    return put(b, head, sizeof head);
}

static void seal(struct buf *b) {
    uint32_t n = (uint32_t)(b->len - 4);
    for (int i = 0; i < 4; i++) b->data[i] = (char)((n >> (8 * i)) & 0xff);
}

static int send_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int send_short(int fd, char type, long long value) {
    struct buf b = {0};
    int rc = start_message(&b, type) || put_number(&b, value) ? -1 : 0;
    if (rc == 0) {
        seal(&b);
        rc = send_all(fd, b.data, b.len);
    }
    free(b.data);
    return rc;
}

/* The standard streams the recorder's child passed with its last 'X': the tracer's. */
static int passed[3] = {-1, -1, -1};

/* Reads exactly `n` bytes; descriptors that come with them (SCM_RIGHTS) land in `passed`. */
static int recv_all(int fd, char *p, size_t n) {
    while (n > 0) {
        int fds[3];
        char control[CMSG_SPACE(sizeof fds)];
        struct iovec iov = {p, n};
        struct msghdr msg = {0};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        ssize_t r = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); r > 0 && c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            memcpy(fds, CMSG_DATA(c), (k < 3 ? k : 3) * sizeof(int));
            for (size_t i = 0; i < k && i < 3; i++) {
                if (passed[i] >= 0) close(passed[i]);
                passed[i] = fds[i];
            }
        }
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* The next message, its body NUL-terminated; NULL when the recorder has gone. */
static char *receive(int fd, char *type, size_t *len) {
    unsigned char head[4];
    if (recv_all(fd, (char *)head, 4) != 0) return NULL;
    uint32_t n = head[0] | (uint32_t)head[1] << 8 | (uint32_t)head[2] << 16 |
                 (uint32_t)head[3] << 24;
    if (n < 1 || n > MAX_MESSAGE) return NULL;
    char *body = malloc(n + 1);
    if (!body) return NULL;
    if (recv_all(fd, body, n) != 0) {
        free(body);
        return NULL;
    }
    body[n] = 0;
    *type = body[0];
    *len = n - 1;
    memmove(body, body + 1, n - 1);
    body[n - 1] = 0;
    return body;
}

/* Splits a body of NUL-terminated fields into a new array (freed by the caller); `*k` is
 * how many. */
static char **fields(char *body, size_t len, size_t *k) {
    size_t n = 1;
    for (size_t i = 0; i < len; i++) n += body[i] == 0;
    char **out = calloc(n, sizeof *out);
    *k = 0;
    for (size_t i = 0; out && i < len;) {
        out[(*k)++] = body + i;
        i += strlen(body + i) + 1;
    }
    return out;
}

/* ------------------------------------------------------------------------------ running */

static void on_signal(int sig) {
    if (sig == SIGINT && command_running) return; /* the command has it, by its group */
    forwarded = sig;
    if (recorder_pid > 0)
        kill((pid_t)recorder_pid, sig);
    else
        pending_signal = sig;
}

static void handle(int sig) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

/* Starts the tracer as the recorder asked: `f` holds path, argc, argv…, environ…; its
 * standard streams are those the recorder's child passed (its own, which `roar run @N`
 * may have pointed at a step's recorded files). The child's signals are as the Python
 * program would leave them for it (trace._spawn_tracer): SIGINT ignored, the terminating
 * ones and SIGPIPE/SIGXFSZ at their defaults. */
static pid_t start_tracer(char **f, size_t k, int *err) {
    if (k < 2) {
        *err = EINVAL;
        return -1;
    }
    long argc = strtol(f[1], NULL, 10);
    if (argc < 1 || (size_t)argc + 2 > k) {
        *err = EINVAL;
        return -1;
    }
    char **argv = calloc((size_t)argc + 1, sizeof *argv);
    char **envp = calloc(k - 2 - (size_t)argc + 1, sizeof *envp);
    if (!argv || !envp) {
        *err = ENOMEM;
        return -1;
    }
    for (long i = 0; i < argc; i++) argv[i] = f[2 + i];
    for (size_t i = 2 + (size_t)argc, j = 0; i < k; i++, j++) envp[j] = f[i];
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) {
        *err = errno;
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        struct sigaction dfl, ign;
        memset(&dfl, 0, sizeof dfl);
        memset(&ign, 0, sizeof ign);
        dfl.sa_handler = SIG_DFL;
        ign.sa_handler = SIG_IGN;
        int defaults[] = {SIGTERM, SIGHUP, SIGPIPE, SIGXFSZ};
        for (size_t i = 0; i < sizeof defaults / sizeof *defaults; i++)
            sigaction(defaults[i], &dfl, NULL);
        sigaction(SIGINT, &ign, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        for (int i = 0; i < 3; i++)
            if (passed[i] >= 0 && dup2(passed[i], i) < 0) _exit(127);
        execve(f[0], argv, envp);
        int e = errno;
        if (write(report[1], &e, sizeof e) < 0) _exit(127);
        _exit(127);
    }
    int e = pid < 0 ? errno : 0;
    close(report[1]);
    if (pid > 0) {
        ssize_t r;
        do r = read(report[0], &e, sizeof e);
        while (r < 0 && errno == EINTR);
        if (r == (ssize_t)sizeof e) { /* exec failed: the child has exited */
            waitpid(pid, NULL, 0);
            pid = -1;
        } else {
            e = 0;
        }
    }
    close(report[0]);
    for (int i = 0; i < 3; i++) {
        if (passed[i] >= 0) close(passed[i]);
        passed[i] = -1;
    }
    free(argv);
    free(envp);
    *err = e;
    return pid;
}

static int wait_for(pid_t pid) {
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    return status;
}

static int add_namespace(struct buf *b, const char *name) {
    char path[64], link[128];
    snprintf(path, sizeof path, "/proc/self/ns/%s", name);
    ssize_t n = readlink(path, link, sizeof link - 1);
    link[n > 0 ? n : 0] = 0;
    return put_field(b, link);
}

/* What decides which files this process may read and write, as /proc/self/status and the
 * security module say it (recorder._credentials reads the same): ids, groups,
 * capabilities, no_new_privs, seccomp, the LSM label. */
static int credentials(char *out, size_t size) {
    static const char *keys[] = {"Uid:", "Gid:", "Groups:", "CapInh:", "CapPrm:", "CapEff:",
                                 "CapBnd:", "CapAmb:", "NoNewPrivs:", "Seccomp:"};
    char status[16384];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, status, sizeof status - 1);
    close(fd);
    if (n <= 0) return -1;
    status[n] = 0;
    size_t used = 0;
    out[0] = 0;
    for (char *line = status; line && *line;) {
        char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
            if (strncmp(line, keys[i], strlen(keys[i])) == 0) {
                if (used + len + 2 >= size) return -1;
                memcpy(out + used, line, len);
                used += len;
                out[used++] = '\n';
                out[used] = 0;
            }
        }
        line = end ? end + 1 : NULL;
    }
    fd = open("/proc/self/attr/current", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        n = read(fd, out + used, size - used - 1);
        close(fd);
        if (n > 0) used += (size_t)n;
        out[used] = 0;
    }
    return 0;
}

/* The request: everything the recorder's child needs to act as this process would. */
static int request(int fd, int argc, char **argv) {
    struct buf b = {0};
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) return -1;
    mode_t mask = umask(0);
    umask(mask);
    struct sigaction old;
    sigaction(SIGINT, NULL, &old);
    int rc = start_message(&b, 'R') || put_field(&b, PROTOCOL) || put_field(&b, cwd) ||
             put_number(&b, (long long)mask) || put_number(&b, old.sa_handler == SIG_IGN) ||
             add_namespace(&b, "mnt") || add_namespace(&b, "pid") || add_namespace(&b, "user");
    char creds[8192];
    rc = rc || credentials(creds, sizeof creds) != 0 || put_field(&b, creds) ||
         put_number(&b, argc - 1);
    for (int i = 1; i < argc && !rc; i++) rc = put_field(&b, argv[i]);
    for (char **e = environ; *e && !rc; e++)
        if (strncmp(*e, SOCKET_VAR, strlen(SOCKET_VAR)) != 0) rc = put_field(&b, *e);
    if (rc) {
        free(b.data);
        return -1;
    }
    seal(&b);
    /* The standard streams travel with the first bytes. */
    int fds[3] = {0, 1, 2};
    char control[CMSG_SPACE(sizeof fds)];
    memset(control, 0, sizeof control);
    struct iovec iov = {b.data, b.len};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(c), fds, sizeof fds);
    ssize_t w;
    do w = sendmsg(fd, &msg, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    rc = w < 0 ? -1 : send_all(fd, b.data + w, b.len - (size_t)w);
    free(b.data);
    return rc;
}

static int wants_recorder(int argc, char **argv) {
    if (argc < 3 || (strcmp(argv[1], "run") != 0 && strcmp(argv[1], "build") != 0)) return 0;
    const char *off = getenv("ROAR_RECORDER");
    if (off && (!strcmp(off, "off") || !strcmp(off, "0") || !strcmp(off, "false"))) return 0;
    for (int fd = 0; fd < 3; fd++)
        if (fcntl(fd, F_GETFD) < 0) return 0; /* a closed stream: the slow way handles it */
    return 1;
}

int main(int argc, char **argv) {
    char path[sizeof ((struct sockaddr_un *)0)->sun_path];
    int have_path = socket_path(path, sizeof path) == 0;
    if (!wants_recorder(argc, argv) || !have_path) slow_way(argv, NULL);

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path, strlen(path) + 1);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        slow_way(argv, path); /* none listening: the slow way, which starts one */
    handle(SIGTERM);
    handle(SIGHUP);
    struct sigaction old_int;
    sigaction(SIGINT, NULL, &old_int);
    if (old_int.sa_handler != SIG_IGN) handle(SIGINT);
    if (request(fd, argc, argv) != 0) slow_way(argv, NULL);
    /* A recorder that does not answer at all within this is stuck: the slow way. (Nothing
     * can have started: the command is only ever started here, after its 'H' and 'X'.) */
    struct timeval patience = {10, 0}, forever = {0, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof patience);

    int started = 0, status = -1;
    for (;;) {
        char type;
        size_t len;
        char *body = receive(fd, &type, &len);
        if (!body) break;
        size_t k;
        char **f = fields(body, len, &k);
        if (!f) break;
        if (type == 'H' && k == 1) {
            recorder_pid = (sig_atomic_t)strtol(f[0], NULL, 10);
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &forever, sizeof forever);
            if (pending_signal) kill((pid_t)recorder_pid, pending_signal);
        } else if (type == 'L') { /* the command never ran (a refused ptrace included) */
            close(fd);
            slow_way(argv, NULL);
        } else if (type == 'E' && k == 1) {
            exit((int)strtol(f[0], NULL, 10));
        } else if (type == 'X') {
            int err = 0;
            command_running = 1;
            pid_t pid = start_tracer(f, k, &err);
            started = 1;
            if (pid < 0) {
                command_running = 0;
                send_short(fd, 'F', err);
            } else {
                send_short(fd, 'P', pid);
                status = wait_for(pid);
                command_running = 0;
                send_short(fd, 'S', status);
            }
        }
        free(f);
        free(body);
    }
    /* The recorder's child ended without a word. Before the command ran, nothing was done:
     * the slow way does it all. After, the run is lost, as it would be if roar had died. */
    close(fd);
    if (forwarded == SIGTERM || forwarded == SIGHUP || forwarded == SIGINT)
        return 128 + forwarded;
    if (!started) slow_way(argv, path);
    fprintf(stderr, "roar: the resident recorder stopped before the run was recorded; "
                    "set ROAR_RECORDER=off to record without it\n");
    if (status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) != 0) return WEXITSTATUS(status);
    return 1;
}
