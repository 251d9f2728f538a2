/* archon-diag: preloaded into gdb (LD_PRELOAD) on machines where gdb writes back a
 * shorter XSAVE area than the kernel wants.
 *
 * gdb 13 knows the x86 XSAVE layout only up to AVX-512 (2696 bytes). On CPUs with AMX
 * the kernel's area is larger (11008 bytes), and PTRACE_SETREGSET(NT_X86_XSTATE) with any
 * other size fails with EFAULT. gdb then cannot restore the registers of a process it
 * called into, and the system call it interrupted fails in the target (errno 514 leaks
 * out of nanosleep): memray attach would kill the process it attaches to.
 *
 * Here such a write is completed: the target's current full area is read, gdb's shorter
 * one laid over its start (the same layout: legacy area, header, then the components gdb
 * knows), and the whole written back. Nothing else is touched.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>

#define REQ_GETREGSET 0x4204
#define REQ_SETREGSET 0x4205
#define XSTATE_MAX (64 * 1024)

typedef long (*ptrace_fn)(int, pid_t, void *, void *);

long ptrace(int request, ...) {
    va_list ap;
    va_start(ap, request);
    pid_t pid = va_arg(ap, pid_t);
    void *addr = va_arg(ap, void *);
    void *data = va_arg(ap, void *);
    va_end(ap);
    static ptrace_fn real;
    if (!real) real = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
    if (request == REQ_SETREGSET && (long)addr == NT_X86_XSTATE && data != NULL) {
        struct iovec *given = data;
        unsigned char *buf = calloc(1, XSTATE_MAX);
        if (buf != NULL) {
            struct iovec full = {buf, XSTATE_MAX};
            if (real(REQ_GETREGSET, pid, addr, &full) == 0 && full.iov_len > given->iov_len) {
                memcpy(buf, given->iov_base, given->iov_len);
                long rc = real(REQ_SETREGSET, pid, addr, &full);
                int saved = errno;
                free(buf);
                errno = saved;
                return rc;
            }
            free(buf);
        }
    }
    return real(request, pid, addr, data);
}
