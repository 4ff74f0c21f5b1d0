/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "macro.h"
#include "peercred.h"

int process_start_time(pid_t pid, uint64_t *ret)
{
        char path[64], buf[1024];
        _cleanup_close_ int fd = -EBADF;
        ssize_t n;
        const char *p;
        unsigned long long st;

        if (pid <= 0)
                return -ESRCH;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? -ESRCH : negative_errno();
        n = read(fd, buf, sizeof(buf) - 1);
        if (n < 0)
                return errno == ESRCH ? -ESRCH : negative_errno();
        buf[n] = 0;

        /* The command name (field 2) may contain spaces and parentheses: skip to the last ')'. */
        p = strrchr(buf, ')');
        if (!p)
                return -EBADMSG;
        p++;
        /* Fields 3..21 precede the start time (field 22). */
        for (int field = 3; field <= 22; field++) {
                p += strspn(p, " ");
                if (!*p)
                        return -EBADMSG;
                if (field == 22)
                        break;
                p += strcspn(p, " ");
        }
        if (sscanf(p, "%llu", &st) != 1)
                return -EBADMSG;
        *ret = st;
        return 0;
}

int peercred_from_fd(int fd, PeerCred *ret)
{
        struct ucred uc = {};
        socklen_t len = sizeof(uc);
        struct stat st;
        int r;

        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISSOCK(st.st_mode))
                return -ENOTSOCK;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
                return negative_errno();
        if (len != sizeof(uc) || uc.pid <= 0)
                return -ESRCH;

        *ret = (PeerCred){ .pid = uc.pid, .uid = uc.uid, .gid = uc.gid };
        r = process_start_time(uc.pid, &ret->start_time);
        if (r < 0)
                return r;
        return 0;
}
