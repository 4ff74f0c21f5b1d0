/* SPDX-License-Identifier: MIT */
#include <openssl/err.h>

#include "log.h"
#include "openssl-util.h"

int log_openssl_error(const char *what)
{
        unsigned long e = ERR_get_error();
        char buf[256];

        if (e == 0)
                log_error("%s failed.", what);
        else {
                ERR_error_string_n(e, buf, sizeof(buf));
                log_error("%s failed: %s", what, buf);
        }
        ERR_clear_error();
        return -EIO;
}
