/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include "atomic-file.h"
#include "certs-openssl.h"
#include "certs-preloaded.h"
#include "certs-store.h"
#include "log.h"
#include "utf8.h"

#define CERT_FILE_MODE 0644
#define CERTS_DIR_MODE 0755
#define INDEX_NAME "index"
#define INDEX_HEADER "# aziot-dbus certificate index: one id per line"
#define INDEX_MAX (16u * 1024u * 1024u)

struct CertsStore {
        char *certs_dir;
        char *pending_dir;
        CertsPreloadedSet preloaded;
        char **index; /* not NULL-terminated */
        size_t n_index;
};

/* ---- ids and names ---- */

static bool is_alnum(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

int certs_id_validate(const char *id)
{
        size_t len;

        if (!id)
                return -EINVAL;
        len = strnlen(id, CERTS_ID_MAX + 1);
        if (len == 0 || len > CERTS_ID_MAX || !utf8_is_valid(id, len)) {
                log_debug("Certificate id is empty, longer than %u bytes or not UTF-8.",
                          CERTS_ID_MAX);
                return -EINVAL;
        }
        for (const char *p = id; *p; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f) {
                        log_debug("Certificate id contains a control character.");
                        return -EINVAL;
                }
        return 0;
}

int certs_file_name(const char *id, char **ret)
{
        static const char hex[] = "0123456789abcdef";
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned md_len = 0;
        size_t alnum = 0;
        char *name, *p;
        int r;

        r = certs_id_validate(id);
        if (r < 0)
                return r;
        for (const char *s = id; *s; s++)
                alnum += is_alnum(*s);
        if (alnum + 1 + 64 + STRLEN(".cer") > NAME_MAX)
                return log_debug_errno(ENAMETOOLONG,
                                       "Certificate id %s is too long for a file name.", id);
        if (!EVP_Digest(id, strlen(id), md, &md_len, EVP_sha256(), NULL) || md_len != 32) {
                ERR_clear_error();
                return log_error_errno(EIO, "SHA-256 of certificate id %s failed.", id);
        }

        name = malloc(alnum + 1 + 64 + STRLEN(".cer") + 1);
        if (!name)
                return -ENOMEM;
        p = name;
        for (const char *s = id; *s; s++)
                if (is_alnum(*s))
                        *p++ = *s;
        *p++ = '-';
        for (unsigned i = 0; i < md_len; i++) {
                *p++ = hex[md[i] >> 4];
                *p++ = hex[md[i] & 0xf];
        }
        strcpy(p, ".cer");
        *ret = name;
        return 0;
}

static int stored_path(const CertsStore *s, const char *id, char **ret)
{
        _cleanup_free_ char *name = NULL;
        char *path;
        int r;

        r = certs_file_name(id, &name);
        if (r < 0)
                return r;
        if (asprintf(&path, "%s/%s", s->certs_dir, name) < 0)
                return -ENOMEM;
        *ret = path;
        return 0;
}

/* ---- PEM ---- */

int certs_pem_check(const char *pem, size_t len)
{
        _cleanup_(BIO_freep) BIO *bio = NULL;
        int n = 0;

        if (!pem || len == 0 || len > INT_MAX || memchr(pem, 0, len))
                return -EBADMSG;
        bio = BIO_new_mem_buf(pem, (int)len);
        if (!bio)
                return -ENOMEM;

        for (;;) {
                char *name = NULL, *header = NULL;
                unsigned char *data = NULL;
                const unsigned char *p;
                long data_len = 0;
                X509 *x;
                bool ok;

                if (!PEM_read_bio(bio, &name, &header, &data, &data_len)) {
                        unsigned long e = ERR_peek_last_error();

                        ERR_clear_error();
                        /* The end of the input: no further "-----BEGIN" line. */
                        if (ERR_GET_LIB(e) == ERR_LIB_PEM &&
                            ERR_GET_REASON(e) == PEM_R_NO_START_LINE && n > 0)
                                return n;
                        return -EBADMSG;
                }

                p = data;
                x = (streq(name, "CERTIFICATE") && isempty(header)) ? d2i_X509(NULL, &p, data_len)
                                                                    : NULL;
                ok = x && p == data + data_len;
                X509_free(x);
                OPENSSL_free(name);
                OPENSSL_free(header);
                OPENSSL_free(data);
                ERR_clear_error();
                if (!ok)
                        return -EBADMSG;
                if (n == INT_MAX)
                        return -EBADMSG;
                n++;
        }
}

/* ---- the index ---- */

static ssize_t index_find(const CertsStore *s, const char *id)
{
        for (size_t i = 0; i < s->n_index; i++)
                if (streq(s->index[i], id))
                        return (ssize_t)i;
        return -1;
}

static int index_append(CertsStore *s, const char *id)
{
        char **l, *copy;

        copy = strdup(id);
        if (!copy)
                return -ENOMEM;
        l = reallocarray(s->index, s->n_index + 1, sizeof(char *));
        if (!l) {
                free(copy);
                return -ENOMEM;
        }
        s->index = l;
        s->index[s->n_index++] = copy;
        return 0;
}

static void index_remove_at(CertsStore *s, size_t i)
{
        free(s->index[i]);
        memmove(s->index + i, s->index + i + 1, (s->n_index - i - 1) * sizeof(char *));
        s->n_index--;
}

static int index_load(CertsStore *s)
{
        _cleanup_free_ char *path = NULL, *text = NULL;
        char *line, *next;
        int r;

        if (asprintf(&path, "%s/" INDEX_NAME, s->certs_dir) < 0)
                return -ENOMEM;
        r = read_file_full(path, INDEX_MAX, &text, NULL);
        if (r == -ENOENT || r == -ENOTDIR)
                return 0;
        if (r < 0)
                return log_error_errno(r, "Failed to read %s: %m", path);

        for (line = text; line && *line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = 0;
                if (line == text && streq(line, INDEX_HEADER))
                        continue;
                if (certs_id_validate(line) < 0 || index_find(s, line) >= 0) {
                        log_warning("Ignoring a bad or repeated line of %s.", path);
                        continue;
                }
                r = index_append(s, line);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int index_save(const CertsStore *s)
{
        _cleanup_free_ char *path = NULL, *text = NULL;
        size_t size = STRLEN(INDEX_HEADER) + 2, len;
        char *p;

        for (size_t i = 0; i < s->n_index; i++)
                size += strlen(s->index[i]) + 1;
        text = malloc(size);
        if (!text)
                return -ENOMEM;
        p = stpcpy(text, INDEX_HEADER "\n");
        for (size_t i = 0; i < s->n_index; i++) {
                p = stpcpy(p, s->index[i]);
                *p++ = '\n';
        }
        len = (size_t)(p - text);

        if (asprintf(&path, "%s/" INDEX_NAME, s->certs_dir) < 0)
                return -ENOMEM;
        return write_file_atomic(path, text, len, CERT_FILE_MODE);
}

/* ---- preloaded certificates ---- */

static const CertsPreloaded *preloaded_find(const CertsStore *s, const char *id)
{
        return certs_preloaded_find(&s->preloaded, id);
}

bool certs_store_is_preloaded(const CertsStore *s, const char *id)
{
        return id && preloaded_find(s, id);
}

int certs_store_add_preloaded_uri(CertsStore *s, const char *id, const char *uri)
{
        return certs_preloaded_add_uri(&s->preloaded, id, uri);
}

int certs_store_add_preloaded_bundle(CertsStore *s, const char *id, char *const *member_ids,
                                     size_t n_members)
{
        return certs_preloaded_add_bundle(&s->preloaded, id, member_ids, n_members);
}

int certs_store_set_preloaded(CertsStore *s, const TomlValue *table, ConfigError *ret_error)
{
        CertsPreloadedSet set;
        int r;

        r = certs_preloaded_parse(table, &set, ret_error);
        if (r < 0)
                return r;
        certs_preloaded_set_clear(&s->preloaded);
        s->preloaded = set;
        return 0;
}

/* ---- the store ---- */

int certs_store_new(const char *homedir, CertsStore **ret)
{
        _cleanup_(certs_store_freep) CertsStore *s = NULL;
        int r;

        if (isempty(homedir) || homedir[0] != '/')
                return -EINVAL;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        if (asprintf(&s->certs_dir, "%s/certs", homedir) < 0) {
                s->certs_dir = NULL;
                return -ENOMEM;
        }
        if (asprintf(&s->pending_dir, "%s/" CERTS_PENDING_DIR, homedir) < 0) {
                s->pending_dir = NULL;
                return -ENOMEM;
        }
        r = index_load(s);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(s);
        return 0;
}

CertsStore *certs_store_free(CertsStore *s)
{
        if (!s)
                return NULL;
        certs_preloaded_set_clear(&s->preloaded);
        for (size_t i = 0; i < s->n_index; i++)
                free(s->index[i]);
        free(s->index);
        free(s->certs_dir);
        free(s->pending_dir);
        free(s);
        return NULL;
}

static int append_bytes(char **buf, size_t *len, const char *data, size_t n)
{
        char *nb;

        if (*len + n > CERTS_PEM_MAX)
                return -EFBIG;
        nb = realloc(*buf, *len + n + 1);
        if (!nb)
                return -ENOMEM;
        memcpy(nb + *len, data, n);
        *len += n;
        nb[*len] = 0;
        *buf = nb;
        return 0;
}

/* Appends the certificate(s) of id to *buf. -ENOENT when there are none. */
static int get_into(CertsStore *s, const char *id, unsigned depth, char **buf, size_t *len)
{
        const CertsPreloaded *p = preloaded_find(s, id);
        _cleanup_free_ char *path = NULL, *data = NULL;
        size_t data_len = 0, start = *len;
        int r;

        if (p && p->members) {
                if (depth >= CERTS_BUNDLE_DEPTH_MAX)
                        return log_error_errno(ELOOP, "Preloaded bundle %s nests too deep.", id);
                for (char **m = p->members; *m; m++) {
                        r = get_into(s, *m, depth + 1, buf, len);
                        if (r < 0 && r != -ENOENT)
                                return r;
                }
                /* As upstream: a bundle that adds up to nothing is not found. */
                return *len > start ? 0 : -ENOENT;
        }
        if (p && p->error < 0)
                return p->error;

        if (p)
                path = strdup(p->path);
        else {
                r = stored_path(s, id, &path);
                if (r < 0)
                        return r;
        }
        if (!path)
                return -ENOMEM;

        r = read_file_full(path, CERTS_PEM_MAX, &data, &data_len);
        if (r == -ENOENT || r == -ENOTDIR)
                return -ENOENT;
        if (r < 0)
                return log_error_errno(r, "Failed to read certificate %s from %s: %m", id, path);
        return append_bytes(buf, len, data, data_len);
}

int certs_store_get(CertsStore *s, const char *id, char **ret_pem, size_t *ret_len)
{
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        int r;

        r = certs_id_validate(id);
        if (r < 0)
                return r;
        r = get_into(s, id, 0, &buf, &len);
        if (r < 0)
                return r;
        if (!buf) { /* an empty file */
                buf = strdup("");
                if (!buf)
                        return -ENOMEM;
        }
        *ret_pem = TAKE_PTR(buf);
        if (ret_len)
                *ret_len = len;
        return 0;
}

int certs_store_put(CertsStore *s, const char *id, const char *pem, size_t len)
{
        _cleanup_free_ char *path = NULL;
        int r;

        r = certs_id_validate(id);
        if (r < 0)
                return r;
        if (preloaded_find(s, id))
                return log_debug_errno(EROFS, "Certificate %s is preloaded, not replacing it.", id);
        if (len > CERTS_PEM_MAX)
                return -EFBIG;
        r = certs_pem_check(pem, len);
        if (r < 0)
                return log_debug_errno(r, "Refusing to store %s: not PEM certificates.", id);
        r = stored_path(s, id, &path);
        if (r < 0)
                return r;

        r = mkdir_parents(s->certs_dir, CERTS_DIR_MODE);
        if (r < 0)
                return log_error_errno(r, "Failed to create %s: %m", s->certs_dir);

        /* Index first: a crash in between leaves a name without a file, which list skips. */
        if (index_find(s, id) < 0) {
                r = index_append(s, id);
                if (r < 0)
                        return r;
                r = index_save(s);
                if (r < 0) {
                        index_remove_at(s, s->n_index - 1);
                        return log_error_errno(r, "Failed to write the certificate index: %m");
                }
        }

        r = write_file_atomic(path, pem, len, CERT_FILE_MODE);
        if (r < 0)
                return log_error_errno(r, "Failed to write certificate %s to %s: %m", id, path);
        log_debug("Stored certificate %s.", id);
        return 0;
}

int certs_store_delete(CertsStore *s, const char *id)
{
        _cleanup_free_ char *name = NULL;
        _cleanup_close_ int dir_fd = -EBADF;
        ssize_t i;
        bool removed = false;
        int r;

        r = certs_id_validate(id);
        if (r < 0)
                return r;
        if (preloaded_find(s, id))
                return log_debug_errno(EROFS, "Certificate %s is preloaded, not deleting it.", id);
        r = certs_file_name(id, &name);
        if (r < 0)
                return r;

        dir_fd = open(s->certs_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir_fd < 0 && errno != ENOENT)
                return log_error_errno(errno, "Failed to open %s: %m", s->certs_dir);
        if (dir_fd >= 0) {
                if (unlinkat(dir_fd, name, 0) >= 0) {
                        removed = true;
                        if (fsync(dir_fd) < 0)
                                return log_error_errno(errno, "Failed to flush %s: %m",
                                                       s->certs_dir);
                } else if (errno != ENOENT)
                        return log_error_errno(errno, "Failed to delete certificate %s: %m", id);
        }

        i = index_find(s, id);
        if (i >= 0) {
                index_remove_at(s, (size_t)i);
                r = index_save(s);
                /* A stale name is harmless (list skips it); the deletion itself succeeded. */
                if (r < 0)
                        log_warning_errno(r, "Failed to update the certificate index: %m");
        }
        log_debug("Deleted certificate %s (%s).", id, removed ? "was there" : "was absent");
        return removed;
}

static int stored_exists(const CertsStore *s, const char *id)
{
        _cleanup_free_ char *path = NULL;
        struct stat st;
        int r;

        r = stored_path(s, id, &path);
        if (r < 0)
                return r;
        if (stat(path, &st) < 0)
                return errno == ENOENT || errno == ENOTDIR ? 0 : negative_errno();
        return S_ISREG(st.st_mode);
}

int certs_store_adopt(CertsStore *s, const char *id)
{
        int r;

        r = certs_id_validate(id);
        if (r < 0)
                return r;
        if (preloaded_find(s, id) || index_find(s, id) >= 0)
                return 0;
        r = stored_exists(s, id);
        if (r <= 0)
                return r;
        r = index_append(s, id);
        if (r < 0)
                return r;
        r = index_save(s);
        if (r < 0) {
                index_remove_at(s, s->n_index - 1);
                return log_error_errno(r, "Failed to write the certificate index: %m");
        }
        log_debug("Adopted certificate %s into the index.", id);
        return 1;
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

int certs_store_list(CertsStore *s, char ***ret_ids, size_t *ret_n)
{
        _cleanup_strv_free_ char **l = NULL;
        size_t n = 0;
        int r;

        l = calloc(s->n_index + s->preloaded.n + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;

        for (size_t i = 0; i < s->preloaded.n; i++) {
                _cleanup_free_ char *pem = NULL;

                r = certs_store_get(s, s->preloaded.items[i].id, &pem, NULL);
                if (r < 0)
                        continue;
                l[n] = strdup(s->preloaded.items[i].id);
                if (!l[n++])
                        return -ENOMEM;
        }
        for (size_t i = 0; i < s->n_index; i++) {
                if (preloaded_find(s, s->index[i]))
                        continue;
                r = stored_exists(s, s->index[i]);
                if (r < 0)
                        return r;
                if (r == 0)
                        continue;
                l[n] = strdup(s->index[i]);
                if (!l[n++])
                        return -ENOMEM;
        }
        qsort(l, n, sizeof(char *), cmp_str);

        *ret_ids = TAKE_PTR(l);
        if (ret_n)
                *ret_n = n;
        return 0;
}

/* ---- renewed certificates not committed yet ---- */

static int pending_path(CertsStore *s, const char *id, char **ret)
{
        _cleanup_free_ char *name = NULL;
        int r;

        r = certs_file_name(id, &name);
        if (r < 0)
                return r;
        if (asprintf(ret, "%s/%s", s->pending_dir, name) < 0)
                return -ENOMEM;
        return 0;
}

int certs_store_put_pending(CertsStore *s, const char *id, const char *pem, size_t len)
{
        _cleanup_free_ char *path = NULL;
        int r;

        if (len > CERTS_PEM_MAX)
                return -EFBIG;
        r = certs_pem_check(pem, len);
        if (r < 0)
                return r;
        r = pending_path(s, id, &path);
        if (r < 0)
                return r;
        r = mkdir_parents(s->pending_dir, 0700);
        if (r < 0)
                return log_error_errno(r, "Failed to create %s: %m", s->pending_dir);
        r = write_file_atomic(path, pem, len, CERT_FILE_MODE);
        if (r < 0)
                return log_error_errno(r, "Failed to write %s: %m", path);
        return 0;
}

int certs_store_get_pending(CertsStore *s, const char *id, char **ret_pem, size_t *ret_len)
{
        _cleanup_free_ char *path = NULL;
        int r;

        r = pending_path(s, id, &path);
        if (r < 0)
                return r;
        return read_file_full(path, CERTS_PEM_MAX, ret_pem, ret_len);
}

int certs_store_drop_pending(CertsStore *s, const char *id)
{
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int dir_fd = -EBADF;
        int r;

        r = pending_path(s, id, &path);
        if (r < 0)
                return r;
        if (unlink(path) < 0)
                return errno == ENOENT ? 0 : log_error_errno(errno, "Failed to remove %s: %m", path);
        dir_fd = open(s->pending_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir_fd >= 0 && fsync(dir_fd) < 0)
                return log_error_errno(errno, "Failed to flush %s: %m", s->pending_dir);
        return 1;
}
