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

#endif
