/* SPDX-License-Identifier: MIT */
#include "file-uri.h"
#include "macro.h"

int file_uri_to_path(const char *uri, char **ret)
{
        const char *s = startswith(uri, "file://");
        char *path, *o;

        if (!s)
                return -EPROTONOSUPPORT;
        if (startswith(s, "localhost/"))
                s += STRLEN("localhost");
        if (s[0] != '/' || strpbrk(s, "?#"))
                return -EPROTONOSUPPORT;

        path = malloc(strlen(s) + 1);
        if (!path)
                return -ENOMEM;
        for (o = path; *s; s++) {
                int hi, lo;

                if (*s != '%') {
                        *o++ = *s;
                        continue;
                }
                hi = unhexchar(s[1]);
                lo = hi < 0 ? -1 : unhexchar(s[2]);
                if (lo < 0 || (hi == 0 && lo == 0)) {
                        free(path);
                        return -EPROTONOSUPPORT;
                }
                *o++ = (char)(hi << 4 | lo);
                s += 2;
        }
        *o = 0;
        if (o[-1] == '/') {
                free(path);
                return -EPROTONOSUPPORT;
        }
        *ret = path;
        return 0;
}
