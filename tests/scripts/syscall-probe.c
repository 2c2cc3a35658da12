/* A syscall probe for the e2e tests (tests/tests/seccomp.rs), compiled statically at test time
 * and put into a busybox image: for each numeric argument NR it makes syscall(NR, 0, 0, 0, 0,
 * 0, 0) and prints one line "nr=NR ret=R errno=E", E being 0, EPERM, ENOSYS, or the number.
 * The first line, "probe pid=P", shows the probe started (exec and libc start-up got through
 * the filter). Only pick numbers that are harmless with all-zero arguments. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *errname(int e) {
    static char buf[16];
    switch (e) {
    case 0: return "0";
    case EPERM: return "EPERM";
    case ENOSYS: return "ENOSYS";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EINVAL: return "EINVAL";
    case EBADF: return "EBADF";
    default: snprintf(buf, sizeof buf, "%d", e); return buf;
    }
}

int main(int argc, char **argv) {
    printf("probe pid=%ld\n", (long)syscall(SYS_getpid));
    for (int i = 1; i < argc; i++) {
        long nr = strtol(argv[i], NULL, 10);
        errno = 0;
        long r = syscall(nr, 0L, 0L, 0L, 0L, 0L, 0L);
        printf("nr=%ld ret=%ld errno=%s\n", nr, r, errname(r == -1 ? errno : 0));
    }
    fflush(stdout);
    return 0;
}
