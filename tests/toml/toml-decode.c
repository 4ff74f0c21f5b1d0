/* SPDX-License-Identifier: MIT */

/* toml-decode: the oracle of the TOML corpus (tests/toml/run-corpus.py).
 *
 * Reads a TOML document on stdin and prints its value tree as JSON on stdout: tables as objects
 * with their keys in document order, arrays as arrays, and every other value as
 * {"type": T, "value": V} with T the toml_type_to_string() name and V a JSON string:
 *   - integers in decimal;
 *   - floats with the fewest significant digits (1…17) that read back to the same double, in "%g"
 *     form; whole numbers print without a fraction ("1", "-0", "100"), and with an exponent only
 *     from 1e17 on ("1e+100"); infinities as "inf"/"-inf" and every NaN as "nan";
 *   - bools as "true"/"false";
 *   - dates and times as toml_datetime_format() writes them.
 *
 * Exit status: 0 on success; 1 for invalid TOML, with "line L, column C: message" on stderr and
 * nothing on stdout; 2 for any other failure (out of memory, I/O). */

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json-write.h"
#include "macro.h"
#include "toml.h"

static int read_stdin(char **ret, size_t *ret_len)
{
        _cleanup_free_ char *data = NULL;
        size_t len = 0, allocated = 0;

        for (;;) {
                size_t n;

                if (len == allocated) {
                        size_t want = allocated ? allocated * 2 : 65536;
                        char *q = realloc(data, want);

                        if (!q)
                                return -ENOMEM;
                        data = q;
                        allocated = want;
                }
                n = fread(data + len, 1, allocated - len, stdin);
                len += n;
                if (n == 0) {
                        if (ferror(stdin))
                                return -EIO;
                        break;
                }
        }
        *ret = TAKE_PTR(data);
        *ret_len = len;
        return 0;
}

static void format_float(double x, char *buf, size_t size)
{
        if (isnan(x)) {
                snprintf(buf, size, "nan");
                return;
        }
        if (isinf(x)) {
                snprintf(buf, size, x < 0 ? "-inf" : "inf");
                return;
        }
        /* The shortest precision that round-trips; 17 significant digits always do. */
        for (int precision = 1; precision <= 17; precision++) {
                int exponent;

                snprintf(buf, size, "%.*e", precision - 1, x);
                if (strtod(buf, NULL) != x)
                        continue;
                /* %g would switch to an exponent for whole numbers with fewer significant digits
                 * than integer digits (100 → "1e+02"): give it enough precision not to. */
                exponent = atoi(strchr(buf, 'e') + 1);
                if (exponent >= precision && exponent < 17)
                        precision = exponent + 1;
                snprintf(buf, size, "%.*g", precision, x);
                return;
        }
}

static void print_leaf(FILE *f, const TomlValue *v)
{
        char buf[TOML_DATETIME_MAX];

        fprintf(f, "{\"type\": \"%s\", \"value\": ", toml_type_to_string(v->type));
        switch (v->type) {
        case TOML_STRING:
                json_write_string_len(f, v->string.data, v->string.len);
                break;
        case TOML_INTEGER:
                fprintf(f, "\"%" PRId64 "\"", v->integer);
                break;
        case TOML_FLOAT:
                format_float(v->floating, buf, sizeof(buf));
                fprintf(f, "\"%s\"", buf);
                break;
        case TOML_BOOL:
                fprintf(f, "\"%s\"", v->boolean ? "true" : "false");
                break;
        default:
                fprintf(f, "\"%s\"", toml_datetime_format(v, buf));
                break;
        }
        fputc('}', f);
}

static void print_indent(FILE *f, unsigned level)
{
        for (unsigned i = 0; i < level; i++)
                fputs("  ", f);
}

/* Recursion is bounded: the parser rejects trees deeper than TOML_MAX_DEPTH. */
static void print_value(FILE *f, const TomlValue *v, unsigned level)
{
        bool first = true;

        if (v->type == TOML_TABLE) {
                if (v->table.n == 0) {
                        fputs("{}", f);
                        return;
                }
                fputs("{\n", f);
                toml_table_foreach (e, v) {
                        if (!first)
                                fputs(",\n", f);
                        first = false;
                        print_indent(f, level + 1);
                        json_write_string_len(f, e->key, e->key_len);
                        fputs(": ", f);
                        print_value(f, e->value, level + 1);
                }
                fputc('\n', f);
                print_indent(f, level);
                fputc('}', f);
        } else if (v->type == TOML_ARRAY) {
                if (v->array.n == 0) {
                        fputs("[]", f);
                        return;
                }
                fputs("[\n", f);
                toml_array_foreach (item, v) {
                        if (!first)
                                fputs(",\n", f);
                        first = false;
                        print_indent(f, level + 1);
                        print_value(f, *item, level + 1);
                }
                fputc('\n', f);
                print_indent(f, level);
                fputc(']', f);
        } else
                print_leaf(f, v);
}

int main(int argc, char *argv[])
{
        _cleanup_toml_ TomlValue *root = NULL;
        _cleanup_free_ char *text = NULL;
        TomlError error;
        size_t len;
        int r;

        if (argc > 1) {
                fprintf(stderr, "usage: %s < document.toml\n", argv[0]);
                return 2;
        }

        r = read_stdin(&text, &len);
        if (r < 0) {
                fprintf(stderr, "cannot read stdin: %s\n", strerror(-r));
                return 2;
        }

        r = toml_parse(text, len, &root, &error);
        if (r == -EINVAL) {
                fprintf(stderr, "line %u, column %u: %s\n", error.line, error.column,
                        error.message);
                return 1;
        }
        if (r < 0) {
                fprintf(stderr, "%s\n", strerror(-r));
                return 2;
        }

        print_value(stdout, root, 0);
        fputc('\n', stdout);
        if (fflush(stdout) != 0 || ferror(stdout)) {
                fprintf(stderr, "cannot write stdout\n");
                return 2;
        }
        return 0;
}
