/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "log.h"
#include "macro.h"
#include "openssl-util.h"
#include "x509-subject.h"

int x509_subject_new(const char *common_name, const SubjectField *fields, size_t n_fields,
                     X509_NAME **ret)
{
        _cleanup_(X509_NAME_freep) X509_NAME *name = X509_NAME_new();
        _cleanup_free_ size_t *order = NULL;

        if (!name)
                return -ENOMEM;
        if (!common_name == !fields || (fields && n_fields == 0))
                return -EINVAL;
        if (common_name) {
                SubjectField cn = {"CN", common_name};

                return x509_subject_new(NULL, &cn, 1, ret);
        }

        /* Sorted by name, byte-wise (upstream's BTreeMap), by an insertion sort of indexes. */
        order = calloc(n_fields, sizeof(size_t));
        if (!order)
                return -ENOMEM;
        for (size_t i = 0; i < n_fields; i++) {
                size_t j = i;

                if (!fields[i].name || !fields[i].value)
                        return -EINVAL;
                for (; j > 0 && strcmp(fields[order[j - 1]].name, fields[i].name) > 0; j--)
                        order[j] = order[j - 1];
                order[j] = i;
        }

        for (size_t k = 0; k < n_fields; k++) {
                const SubjectField *f = &fields[order[k]];
                size_t len = strlen(f->value);

                if (streq(f->name, "CN")) {
                        /* At most SUBJECT_CN_MAX characters: count UTF-8 lead bytes. */
                        size_t chars = 0, i;

                        for (i = 0; i < len; i++)
                                if (((unsigned char)f->value[i] & 0xc0) != 0x80 &&
                                    chars++ == SUBJECT_CN_MAX)
                                        break;
                        len = i;
                }
                if (len > INT_MAX ||
                    !X509_NAME_add_entry_by_txt(name, f->name, MBSTRING_UTF8,
                                                (const unsigned char *)f->value, (int)len, -1, 0)) {
                        ERR_clear_error();
                        return log_debug_errno(EINVAL, "Bad subject field %s.", f->name);
                }
        }
        *ret = TAKE_PTR(name);
        return 0;
}

int x509_subject_from_toml(const TomlValue *v, const char *what, X509_NAME **ret,
                           ConfigError *ret_error)
{
        SubjectField fields[SUBJECT_FIELDS_MAX];
        size_t n = 0;
        int r;

        if (v->type == TOML_STRING) {
                if (memchr(v->string.data, 0, v->string.len))
                        return config_error_at(ret_error, v, "%s must not contain NUL", what);
                r = x509_subject_new(v->string.data, NULL, 0, ret);
        } else if (v->type == TOML_TABLE) {
                toml_table_foreach(e, v)
                {
                        if (n == SUBJECT_FIELDS_MAX)
                                return config_error_at(ret_error, v, "%s: too many fields", what);
                        if (e->value->type != TOML_STRING ||
                            memchr(e->value->string.data, 0, e->value->string.len) ||
                            memchr(e->key, 0, e->key_len))
                                return config_error_at(ret_error, e->value,
                                                       "%s: subject fields must be strings",
                                                       what);
                        fields[n++] = (SubjectField){ e->key, e->value->string.data };
                }
                if (n == 0)
                        return config_error_at(ret_error, v, "%s: the subject is empty", what);
                r = x509_subject_new(NULL, fields, n, ret);
        } else
                return config_error_at(ret_error, v, "%s must be a string or a table", what);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return config_error_at(ret_error, v, "%s: invalid subject", what);
        return 0;
}
