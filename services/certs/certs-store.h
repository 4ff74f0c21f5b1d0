/* SPDX-License-Identifier: MIT */
#pragma once

/* The certificate store of aziot-certd, byte-compatible with upstream's (spec §3.6):
 *
 *   <homedir>/certs/<the id's ASCII letters and digits>-<hex SHA-256 of the id>.cer
 *
 * holding the PEM text exactly as imported or issued (mode 0644 in a 0755 directory created on
 * demand, as upstream's fs::write under umask 022; the home itself is 0700). Ids listed under
 * [preloaded_certs] are resolved first: a "file:///…" URI is that file, a list of ids is a
 * read-only bundle whose content is the concatenation of its members (recursively, missing members
 * skipped, all missing = not found).
 *
 * Deliberate differences from upstream:
 *   - Preloaded certificates are read-only here: import and delete of a preloaded id fail with
 *     -EROFS. Upstream overwrites or unlinks the operator's file:// file (which usually fails
 * anyway, since the file belongs to root), and fails with a 500 for a bundle.
 *   - Imports are checked to be one or more PEM "CERTIFICATE" blocks and nothing else (upstream
 * stores anything), so that no private key can ever be served by GET, which needs no authorization.
 *   - Files are written atomically (services/common/atomic-file.h).
 *   - Bundles that contain themselves fail with -ELOOP instead of overflowing the stack.
 *
 * Listing. A file name cannot be mapped back to its id, so the store keeps an index of the ids it
 * wrote in <homedir>/certs/index (a comment line, then one id per line; no ".cer" suffix, so it
 * never collides with a certificate, and upstream ignores it). The index may name more ids than
 * exist (an id is added before its file is written and dropped after the file is removed, so a
 * crash only ever leaves an extra name); certs_store_list() returns only ids whose certificate can
 * be read. Certificates written by another implementation (upstream) are not indexed until their
 * id is used through certs_store_adopt() (the daemon adopts every id its configuration names) or
 * written again.
 *
 * Ids: 1 to CERTS_ID_MAX bytes of UTF-8 without control characters (bytes below 0x20 and 0x7f);
 * anything else is -EINVAL. Such an id can never reach outside <homedir>/certs, since only its
 * letters and digits go into the file name. An id whose letters and digits do not fit in a file
 * name is -ENAMETOOLONG.
 *
 * Not thread-safe: certd serializes calls. Functions return 0 (or what is said) or a negative
 * errno: -EINVAL bad argument, -ENOENT no such certificate, -EROFS preloaded, -EBADMSG not PEM
 * certificates, -EFBIG over CERTS_PEM_MAX, -EPROTONOSUPPORT a preloaded URI that is not file://,
 * -ELOOP a bundle that contains itself, and I/O errors as they come. */

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "macro.h"
#include "toml.h"

#define CERTS_ID_MAX 1024u
#define CERTS_PEM_MAX (1024u * 1024u)
#define CERTS_BUNDLE_DEPTH_MAX 16u

typedef struct CertsStore CertsStore;

/* A store over <homedir>/certs (nothing is created until a certificate is written). Reads the
 * index if there is one. */
int certs_store_new(const char *homedir, CertsStore **ret);
CertsStore *certs_store_free(CertsStore *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(CertsStore *, certs_store_free);

/* 0 for a valid id, else -EINVAL (logged at debug level). */
int certs_id_validate(const char *id);

/* "<alnum>-<sha256>.cer" for id (validated). */
int certs_file_name(const char *id, char **ret);

/* Replaces the set of preloaded certificates by the [preloaded_certs] table of the configuration
 * (NULL = none): "id = "file:///path"" or "id = ["id1", "id2"]". A URI of another scheme is
 * accepted (as upstream does) and logged; using that id then fails with -EPROTONOSUPPORT. A
 * malformed table is -EINVAL with *ret_error filled, and the previous set is kept. */
int certs_store_set_preloaded(CertsStore *s, const TomlValue *table, ConfigError *ret_error);

/* One preloaded entry each (replacing an entry of the same id). */
int certs_store_add_preloaded_uri(CertsStore *s, const char *id, const char *uri);
int certs_store_add_preloaded_bundle(CertsStore *s, const char *id, char *const *member_ids,
                                     size_t n_members);

bool certs_store_is_preloaded(const CertsStore *s, const char *id);

/* The PEM of id: the file's bytes, or a bundle's concatenation. NUL-terminated (not counted in
 * *ret_len; ret_len may be NULL). -ENOENT when absent. */
int certs_store_get(CertsStore *s, const char *id, char **ret_pem, size_t *ret_len);

/* Stores pem (checked with certs_pem_check()) as id, atomically, replacing what was there. */
int certs_store_put(CertsStore *s, const char *id, const char *pem, size_t len);

/* Removes id. Returns 1 when a certificate was removed, 0 when there was none (not an error, as
 * upstream). */
int certs_store_delete(CertsStore *s, const char *id);

/* Adds id to the index when its certificate exists under the home but is not indexed (a
 * certificate written by upstream). Returns 1 when added, 0 when already indexed or absent. */
int certs_store_adopt(CertsStore *s, const char *id);

/* The ids that certs_store_get() would return a certificate for: indexed certificates that exist
 * and preloaded ids that resolve. Sorted (strcmp), NULL-terminated; *ret_n may be NULL. */
int certs_store_list(CertsStore *s, char ***ret_ids, size_t *ret_n);

/* Renewed certificates that are not committed yet, kept under <homedir>/renewal (same file
 * names, mode 0644 in a 0700 directory) so that a renewal interrupted between replacing the key
 * and replacing the certificate can be finished at the next start (certs-enroll.h). Not
 * listed, not served. get: -ENOENT when there is none; drop: 1 when one was removed, 0 when there
 * was none. */
#define CERTS_PENDING_DIR "renewal"
int certs_store_put_pending(CertsStore *s, const char *id, const char *pem, size_t len);
int certs_store_get_pending(CertsStore *s, const char *id, char **ret_pem, size_t *ret_len);
int certs_store_drop_pending(CertsStore *s, const char *id);

/* Checks that pem holds one or more PEM blocks, every one a CERTIFICATE that parses, and no NUL
 * byte. Text outside the blocks is allowed (as OpenSSL allows it: "Bag Attributes", "subject="
 * lines of openssl's output). Returns the number of certificates, or -EBADMSG. */
int certs_pem_check(const char *pem, size_t len);
