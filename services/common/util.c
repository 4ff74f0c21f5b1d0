/* SPDX-License-Identifier: MIT */
#include <openssl/crypto.h>

#include "macro.h"

void erase_and_free(void *p, size_t n)
{
        if (!p)
                return;
        OPENSSL_cleanse(p, n);
        free(p);
}
