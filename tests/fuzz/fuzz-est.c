/* SPDX-License-Identifier: MIT */

/* libFuzzer target for what certd reads from an EST server: any response body, under each kind of
 * Content-Type, must be refused with a reason or give certificates that can be re-encoded. The
 * first input byte picks the Content-Type. Sanitizers do the rest. */

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include <openssl/x509.h>

#include "certs-est-wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static const char *const types[] = {
                "application/pkcs7-mime",
                "application/pkcs7-mime; smime-type=certs-only",
                "text/plain",
                NULL,
        };
        X509Stack *certs = NULL;
        const char *problem = NULL;
        int r;

        if (size == 0)
                return 0;
        r = certs_est_parse_response(types[data[0] % 4], data + 1, size - 1, &certs, &problem);
        if (r < 0) {
                if (r != -ENOMEM && !problem)
                        abort();
                if (certs)
                        abort();
                return 0;
        }
        if (!certs)
                abort();
        for (int i = 0; i < sk_X509_num(certs); i++) {
                unsigned char *der = NULL;

                if (i2d_X509(sk_X509_value(certs, i), &der) <= 0)
                        abort();
                OPENSSL_free(der);
        }
        sk_X509_pop_free(certs, X509_free);
        return 0;
}
