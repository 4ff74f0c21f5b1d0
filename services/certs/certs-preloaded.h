/* SPDX-License-Identifier: MIT */
#pragma once

/* The [preloaded_certs] table of certd's configuration (spec §3.6, §3.8): certificate ids that live
 * outside the store, either at a "file:///…" URI or as a bundle, a list of other ids whose
 * certificates are served concatenated. The store (certs-store.h) resolves ids through this set. */

#include <stddef.h>

#include "config.h"
#include "toml.h"

typedef struct CertsPreloaded {
        char *id;
        char *path;     /* a file:// certificate: its absolute path */
        char **members; /* a bundle: the member ids (NULL-terminated) */
        int error; /* a URI that cannot be used: what using the id returns (-EPROTONOSUPPORT) */
} CertsPreloaded;

typedef struct CertsPreloadedSet {
        CertsPreloaded *items;
        size_t n;
} CertsPreloadedSet;

void certs_preloaded_set_clear(CertsPreloadedSet *set);
const CertsPreloaded *certs_preloaded_find(const CertsPreloadedSet *set, const char *id);

/* Adds or replaces one entry. Ids are checked with certs_id_validate() (-EINVAL). A URI other than
 * file:///absolute/path (or file://localhost/…) is accepted, as upstream accepts it, and logged;
 * the entry then carries -EPROTONOSUPPORT. */
int certs_preloaded_add_uri(CertsPreloadedSet *set, const char *id, const char *uri);
int certs_preloaded_add_bundle(CertsPreloadedSet *set, const char *id, char *const *member_ids,
                               size_t n_members);

/* Parses the table (NULL = empty set) into *ret. A value that is neither a string nor an array of
 * valid ids, or an invalid id, is -EINVAL with *ret_error filled (ret_error may be NULL). */
int certs_preloaded_parse(const TomlValue *table, CertsPreloadedSet *ret, ConfigError *ret_error);

