/* SPDX-License-Identifier: MIT */
/*
 * hmac-floor: what keyd's /sign costs without any transport — the in-process floor. In a scratch
 * key store it times, for a few seconds each:
 *   "sign":               HMAC-SHA256 of a 32-byte message through the key store's function list
 *                         (cached key);
 *   "verify_handle_sign": the same after verifying the key handle, as keyd does per call.
 * Prints one JSON object with operations per second.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keys-fs.h"
#include "keys-handle.h"
#include "macro.h"

static double now_s(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char *argv[])
{
        static const unsigned char message[32] = "the message the benchmark signs";
        const AZIOT_KEYS_FUNCTION_LIST_2_1_0_0 *fl = keys_fs_function_list();
        KeysHandleAziotKeys ak = { fl->create_key_if_not_exists, fl->sign };
        KeysHandleSigner signer;
        char home[] = "/tmp/hmac-floor-XXXXXX", cmd[64];
        _cleanup_free_ char *handle = NULL;
        double seconds = argc > 1 ? atof(argv[1]) : 3, t0, sign_rate, full_rate;
        unsigned long n;

        if (!mkdtemp(home) || fl->set_parameter("homedir_path", home) != AZIOT_KEYS_RC_OK ||
            fl->create_key_if_not_exists("bench-hmac", AZIOT_KEYS_KEY_USAGE_SIGN) != AZIOT_KEYS_RC_OK)
                return EXIT_FAILURE;
        keys_handle_signer_from_aziot_keys(&signer, &ak);
        if (keys_handle_mint_key(&signer, "bench-hmac", &handle) != 0)
                return EXIT_FAILURE;

        for (n = 0, t0 = now_s(); now_s() - t0 < seconds; n++) {
                unsigned char sig[32];
                size_t len = sizeof(sig);

                if (fl->sign("bench-hmac", AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256, NULL, message,
                             sizeof(message), sig, &len) != AZIOT_KEYS_RC_OK)
                        return EXIT_FAILURE;
        }
        sign_rate = (double)n / (now_s() - t0);

        for (n = 0, t0 = now_s(); now_s() - t0 < seconds; n++) {
                _cleanup_(keys_handle_freep) KeysHandle *h = NULL;
                unsigned char sig[32];
                size_t len = sizeof(sig);

                if (keys_handle_parse(&signer, handle, &h) != 0 ||
                    fl->sign(h->id, AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256, NULL, message,
                             sizeof(message), sig, &len) != AZIOT_KEYS_RC_OK)
                        return EXIT_FAILURE;
        }
        full_rate = (double)n / (now_s() - t0);

        printf("{\"sign_per_second\": %.0f, \"verify_handle_sign_per_second\": %.0f}\n", sign_rate,
               full_rate);
        keys_fs_reset();
        snprintf(cmd, sizeof(cmd), "rm -rf %s", home);
        return system(cmd) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
