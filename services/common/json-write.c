/* SPDX-License-Identifier: MIT */
#include <string.h>

#include "json-write.h"

void json_write_string_len(FILE *f, const char *s, size_t len)
{
        static const char short_escapes[] = {
                ['"'] = '"', ['\\'] = '\\', ['\b'] = 'b', ['\f'] = 'f',
                ['\n'] = 'n', ['\r'] = 'r', ['\t'] = 't',
        };

        fputc('"', f);
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)s[i];

                if (c < sizeof(short_escapes) && short_escapes[c])
                        fprintf(f, "\\%c", short_escapes[c]);
                else if (c < 0x20 || c == 0x7f)
                        fprintf(f, "\\u%04x", c);
                else
                        fputc(c, f);
        }
        fputc('"', f);
}

void json_write_string(FILE *f, const char *s)
{
        if (!s) {
                fputs("null", f);
                return;
        }
        json_write_string_len(f, s, strlen(s));
}
