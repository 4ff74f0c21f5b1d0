/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "aziotctl-paths.h"
#include "macro.h"

char *aziotctl_path(const char *path)
{
        const char *root = getenv("AZIOTCTL_ROOT");
        char *s = NULL;

        if (isempty(root))
                return strdup(path);
        if (asprintf(&s, "%s%s", root, path) < 0)
                return NULL;
        return s;
}

bool aziotctl_systemd_running(void)
{
        struct stat st;
        return lstat("/run/systemd/system", &st) == 0 && S_ISDIR(st.st_mode);
}
