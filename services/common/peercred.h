/* SPDX-License-Identifier: MIT */
#pragma once

/* Who is on the other end of a Unix socket: SO_PEERCRED plus the process start time from /proc, the
 * pair polkit needs to name a process that cannot be replaced behind our back. */

#include <stdint.h>
#include <sys/types.h>

typedef struct PeerCred {
        pid_t pid;
        uid_t uid;
        gid_t gid;
        uint64_t start_time; /* field 22 of /proc/<pid>/stat, in clock ticks since boot */
} PeerCred;

/* Reads the peer credentials of a connected AF_UNIX socket. -ENOTSOCK for a non-socket, -ESRCH when
 * the peer process has already gone (pid 0 or no /proc entry). */
int peercred_from_fd(int fd, PeerCred *ret);

/* Reads the start time of a process from /proc/<pid>/stat. */
int process_start_time(pid_t pid, uint64_t *ret);
