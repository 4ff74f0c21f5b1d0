/* SPDX-License-Identifier: MIT */
#include "utf8.h"

/* Unicode Table 3-7: the well-formed byte sequences. */
size_t utf8_decode(const uint8_t *s, size_t n, uint32_t *ret_cp, size_t *ret_bad)
{
        uint8_t c = s[0], lo = 0x80, hi = 0xbf;
        size_t len;
        uint32_t cp;

        if (c < 0x80) {
                *ret_cp = c;
                return 1;
        }
        if (c >= 0xc2 && c <= 0xdf) {
                len = 2;
                cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
                len = 3;
                cp = c & 0x0f;
                lo = c == 0xe0 ? 0xa0 : 0x80;
                hi = c == 0xed ? 0x9f : 0xbf;
        } else if (c >= 0xf0 && c <= 0xf4) {
                len = 4;
                cp = c & 0x07;
                lo = c == 0xf0 ? 0x90 : 0x80;
                hi = c == 0xf4 ? 0x8f : 0xbf;
        } else {
                *ret_bad = 1;
                return 0;
        }

        for (size_t i = 1; i < len; i++) {
                uint8_t min = i == 1 ? lo : 0x80, max = i == 1 ? hi : 0xbf;

                if (i >= n || s[i] < min || s[i] > max) {
                        *ret_bad = i;
                        return 0;
                }
                cp = cp << 6 | (s[i] & 0x3f);
        }
        *ret_cp = cp;
        return len;
}

bool utf8_is_valid(const char *s, size_t n)
{
        const uint8_t *p = (const uint8_t *)s;
        size_t i = 0, bad;
        uint32_t cp;

        while (i < n) {
                size_t l;

                if (p[i] < 0x80) {
                        i++;
                        continue;
                }
                l = utf8_decode(p + i, n - i, &cp, &bad);
                if (l == 0)
                        return false;
                i += l;
        }
        return true;
}
