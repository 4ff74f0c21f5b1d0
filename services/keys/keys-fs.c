/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <sys/stat.h>

#include "atomic-file.h"
#include "file-uri.h"
#include "keys-crypto.h"
#include "keys-fs.h"
#include "base64.h"
#include "utf8.h"
#include "log.h"
#include "macro.h"

/*
 * Internally every function returns 0 or a negative errno. At the ABI boundary the errors the
 * caller caused become AZIOT_KEYS_RC_ERR_INVALID_PARAMETER:
 *   -EINVAL        bad argument, malformed ciphertext, no location configured
 *   -ENOENT        the key does not exist
 *   -ENODATA       the key file is empty (a missing key when creating, an error when using)
 *   -EOPNOTSUPP    mechanism or parameter unsuitable for the key
 *   -ENOBUFS       output buffer too small
 *   -ENAMETOOLONG  the id is too long to be stored
 * and everything else (I/O, OpenSSL, -EBADMSG for an unparsable key-pair file, -EBADE for a
 * ciphertext that fails authentication) becomes AZIOT_KEYS_RC_ERR_EXTERNAL.
 */

#define KEY_ID_MAX 4096u
#define KEY_FILE_MAX (1024u * 1024u)
#define KEY_FILE_MODE 0600
#define KEYS_DIR_MODE 0700
#define SYMMETRIC_KEY_SIZE 32u
#define CACHE_BUCKETS 64u
#define CACHE_MAX_ENTRIES 1024u
#define SIGNATURE_MAX 256u

typedef struct Preloaded {
        struct Preloaded *next;
        char *id;
        char *path;
} Preloaded;

/* One key id: where its file is and, once used, what was read from it. */
typedef struct KeyEntry {
        struct KeyEntry *next;
        char *id;
        uint32_t hash;
        /* The file: a name inside the keys directory, or the absolute path of a preloaded key. */
        bool preloaded;
        char *name;

        /* The identity of the file the material below was read from. */
        bool stamped;
        dev_t dev;
        ino_t ino;
        off_t size;
        struct timespec mtim;

        uint8_t *secret; /* symmetric key bytes, wiped when dropped */
        size_t secret_len;
        EVP_MAC_CTX *mac; /* HMAC-SHA256 keyed with secret */
        EVP_PKEY *pkey;   /* key pair */
} KeyEntry;

static struct {
        char *homedir;
        int keys_dir_fd;
        Preloaded *preloaded;
        KeyEntry *buckets[CACHE_BUCKETS];
        size_t n_entries;
} store = {
        .keys_dir_fd = -EBADF,
};

#define ID(id) KEY_ID(id)

/* ---- the cache ---- */

static void entry_forget(KeyEntry *e)
{
        if (e->secret)
                erase_and_free(e->secret, e->secret_len);
        e->secret = NULL;
        e->secret_len = 0;
        EVP_MAC_CTX_free(e->mac);
        e->mac = NULL;
        EVP_PKEY_free(e->pkey);
        e->pkey = NULL;
        e->stamped = false;
}

static void entry_free(KeyEntry *e)
{
        entry_forget(e);
        free(e->id);
        free(e->name);
        free(e);
}

static void cache_flush(void)
{
        for (size_t i = 0; i < CACHE_BUCKETS; i++)
                while (store.buckets[i]) {
                        KeyEntry *e = store.buckets[i];

                        store.buckets[i] = e->next;
                        entry_free(e);
                }
        store.n_entries = 0;
}

/* Called at the start of each operation, never in the middle of one (entries stay valid for the
 * whole call). Entries only exist for ids that were looked up; the bound guards against a caller
 * probing many ids. */
static void cache_trim(void)
{
        if (store.n_entries >= CACHE_MAX_ENTRIES)
                cache_flush();
}

static uint32_t id_hash(const char *id)
{
        uint32_t h = 2166136261u;

        for (const uint8_t *p = (const uint8_t *)id; *p; p++)
                h = (h ^ *p) * 16777619u;
        return h;
}

static int id_validate(const char *id, const char *what)
{
        size_t len;

        if (!id) {
                log_debug("Key %s is NULL.", what);
                return -EINVAL;
        }
        len = strnlen(id, KEY_ID_MAX + 1);
        if (len == 0 || len > KEY_ID_MAX || !utf8_is_valid(id, len)) {
                log_warning("Key %s is empty, longer than %u bytes or not UTF-8.", what,
                            KEY_ID_MAX);
                return -EINVAL;
        }
        return 0;
}

/* "<the id's ASCII letters and digits>-<hex SHA-256 of the id>.key": never a path, whatever the
 * id holds. */
static int file_name_for_id(const char *id, char **ret)
{
        static const char hex[] = "0123456789abcdef";
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int md_len = 0;
        size_t alnum = 0, len = strlen(id);
        char *name, *p;

        for (const char *s = id; *s; s++)
                alnum += ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                          (*s >= '0' && *s <= '9'));
        if (alnum + 1 + 64 + STRLEN(".key") > NAME_MAX) {
                log_warning("Key id of %zu bytes is too long for a file name.", len);
                return -ENAMETOOLONG;
        }
        if (!EVP_Digest(id, len, md, &md_len, EVP_sha256(), NULL) || md_len != 32)
                return log_openssl_error("SHA-256 of the key id");

        name = malloc(alnum + 1 + 64 + STRLEN(".key") + 1);
        if (!name)
                return -ENOMEM;
        p = name;
        for (const char *s = id; *s; s++)
                if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                    (*s >= '0' && *s <= '9'))
                        *p++ = *s;
        *p++ = '-';
        for (unsigned i = 0; i < md_len; i++) {
                *p++ = hex[md[i] >> 4];
                *p++ = hex[md[i] & 0xf];
        }
        strcpy(p, ".key");
        *ret = name;
        return 0;
}

static const Preloaded *preloaded_find(const char *id)
{
        for (const Preloaded *p = store.preloaded; p; p = p->next)
                if (streq(p->id, id))
                        return p;
        return NULL;
}

static int entry_new(const char *id, uint32_t hash, KeyEntry **ret)
{
        const Preloaded *p = preloaded_find(id);
        KeyEntry *e;
        int r;

        if (!p && !store.homedir) {
                log_error("Key %s: no way to create keys (neither homedir_path nor a preloaded "
                          "location is configured).",
                          ID(id));
                return -EINVAL;
        }
        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        e->hash = hash;
        e->id = strdup(id);
        e->preloaded = p;
        if (p)
                e->name = strdup(p->path);
        if (!e->id || (p && !e->name)) {
                entry_free(e);
                return -ENOMEM;
        }
        if (!p) {
                r = file_name_for_id(id, &e->name);
                if (r < 0) {
                        entry_free(e);
                        return r;
                }
        }
        *ret = e;
        return 0;
}

static int entry_get(const char *id, KeyEntry **ret)
{
        uint32_t hash;
        KeyEntry *e;
        int r;

        r = id_validate(id, "id");
        if (r < 0)
                return r;
        hash = id_hash(id);
        for (e = store.buckets[hash % CACHE_BUCKETS]; e; e = e->next)
                if (e->hash == hash && streq(e->id, id)) {
                        *ret = e;
                        return 0;
                }

        r = entry_new(id, hash, &e);
        if (r < 0)
                return r;
        e->next = store.buckets[hash % CACHE_BUCKETS];
        store.buckets[hash % CACHE_BUCKETS] = e;
        store.n_entries++;
        *ret = e;
        return 0;
}

/* ---- files ---- */

static int keys_dir_fd(void)
{
        _cleanup_free_ char *path = NULL;
        int r;

        if (store.keys_dir_fd >= 0)
                return store.keys_dir_fd;
        if (!store.homedir)
                return -EINVAL;
        if (asprintf(&path, "%s/keys", store.homedir) < 0)
                return -ENOMEM;
        r = mkdir_parents(path, KEYS_DIR_MODE);
        if (r < 0)
                return log_error_errno(r, "Failed to create %s: %m", path);
        store.keys_dir_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (store.keys_dir_fd < 0)
                return log_error_errno(errno, "Failed to open %s: %m", path);
        return store.keys_dir_fd;
}

/* The keys directory we hold open may have been removed or replaced since: then open the one
 * that is there now (creating it). Called where a file was not found and before writing. */
static void keys_dir_recheck(void)
{
        _cleanup_free_ char *path = NULL;
        struct stat held, now;

        if (store.keys_dir_fd < 0 || asprintf(&path, "%s/keys", store.homedir) < 0)
                return;
        if (fstat(store.keys_dir_fd, &held) < 0 || stat(path, &now) < 0 ||
            held.st_dev != now.st_dev || held.st_ino != now.st_ino)
                store.keys_dir_fd = safe_close(store.keys_dir_fd);
}

/* Where the entry's file is, for the *at() calls. */
static int entry_location(const KeyEntry *e, int *ret_dir_fd)
{
        int fd;

        if (e->preloaded) {
                *ret_dir_fd = AT_FDCWD;
                return 0;
        }
        fd = keys_dir_fd();
        if (fd < 0)
                return fd;
        *ret_dir_fd = fd;
        return 0;
}

static bool entry_stamp_matches(const KeyEntry *e, const struct stat *st)
{
        return e->stamped && e->dev == st->st_dev && e->ino == st->st_ino &&
               e->size == st->st_size && e->mtim.tv_sec == st->st_mtim.tv_sec &&
               e->mtim.tv_nsec == st->st_mtim.tv_nsec;
}

/* Cached material read from a file other than the one st describes is dropped, and the entry
 * remembers st's file. */
static void entry_restamp(KeyEntry *e, const struct stat *st)
{
        if (entry_stamp_matches(e, st))
                return;
        entry_forget(e);
        e->stamped = true;
        e->dev = st->st_dev;
        e->ino = st->st_ino;
        e->size = st->st_size;
        e->mtim = st->st_mtim;
}

/* The cheap check done on each use: 0 when the cached material is still that of the file on
 * disk (or nothing is cached), -ENOENT when the file is gone. */
static int entry_revalidate(KeyEntry *e)
{
        struct stat st;
        int fd, r;

        r = entry_location(e, &fd);
        if (r < 0)
                return r;
        if (fstatat(fd, e->name, &st, 0) < 0) {
                r = -errno;
                entry_forget(e);
                if (r == -ENOENT) {
                        if (!e->preloaded)
                                keys_dir_recheck();
                        log_debug("Key %s does not exist.", ID(e->id));
                        return r;
                }
                return log_error_errno(r, "Failed to stat key file of %s: %m", ID(e->id));
        }
        entry_restamp(e, &st);
        return 0;
}

static int read_fd(int fd, uint8_t *buf, size_t size, size_t *ret_len)
{
        size_t n = 0;

        while (n < size) {
                ssize_t k = read(fd, buf + n, size - n);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                n += (size_t)k;
        }
        *ret_len = n;
        return 0;
}

/* Reads the entry's file and restamps the entry with what was read. The caller wipes and frees
 * *ret (which has one spare NUL byte). */
static int entry_read(KeyEntry *e, uint8_t **ret, size_t *ret_len)
{
        _cleanup_close_ int fd = -EBADF;
        struct stat st;
        uint8_t *buf;
        size_t len = 0;
        int dir_fd, r;

        r = entry_location(e, &dir_fd);
        if (r < 0)
                return r;
        fd = openat(dir_fd, e->name, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                if (errno == ENOENT)
                        return -ENOENT;
                return log_error_errno(errno, "Failed to open key file of %s: %m", ID(e->id));
        }
        if (fstat(fd, &st) < 0)
                return log_error_errno(errno, "Failed to stat key file of %s: %m", ID(e->id));
        if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > KEY_FILE_MAX) {
                log_error("Key file of %s is not a regular file of at most %u bytes.", ID(e->id),
                          KEY_FILE_MAX);
                return -EBADMSG;
        }

        buf = malloc((size_t)st.st_size + 1);
        if (!buf)
                return -ENOMEM;
        /* A file rewritten in place while we read shows up as a new stamp on the next use. */
        r = read_fd(fd, buf, (size_t)st.st_size, &len);
        if (r < 0) {
                erase_and_free(buf, (size_t)st.st_size + 1);
                return log_error_errno(r, "Failed to read key file of %s: %m", ID(e->id));
        }
        buf[len] = 0;
        entry_restamp(e, &st);
        *ret = buf;
        *ret_len = len;
        return 0;
}

/* The symmetric key bytes of the entry, from the cache when the file is unchanged. */
static int entry_secret(KeyEntry *e)
{
        uint8_t *buf;
        size_t len;
        int r;

        r = entry_revalidate(e);
        if (r < 0)
                return r;
        if (e->secret)
                return 0;
        r = entry_read(e, &buf, &len);
        if (r < 0)
                return r;
        if (len == 0) {
                free(buf);
                log_debug("Key file of %s is empty.", ID(e->id));
                return -ENODATA;
        }
        e->secret = buf;
        e->secret_len = len;
        return 0;
}

static int entry_mac(KeyEntry *e)
{
        int r;

        r = entry_secret(e);
        if (r < 0)
                return r;
        if (!e->mac)
                return keys_hmac_new(e->secret, e->secret_len, &e->mac);
        return 0;
}

/* The key pair of the entry, from the cache when the file is unchanged. -EBADMSG when the file
 * is not a private key. */
static int entry_pkey(KeyEntry *e)
{
        uint8_t *buf;
        size_t len;
        int r;

        r = entry_revalidate(e);
        if (r < 0)
                return r;
        if (e->pkey)
                return 0;
        r = entry_read(e, &buf, &len);
        if (r < 0)
                return r;
        r = keys_pkey_from_pem(buf, len, &e->pkey);
        erase_and_free(buf, len + 1);
        if (r < 0)
                log_debug("Key file of %s is not a private key.", ID(e->id));
        return r;
}

static int entry_write(KeyEntry *e, const void *data, size_t len)
{
        int dir_fd, r;

        entry_forget(e);
        if (e->preloaded)
                r = write_file_atomic(e->name, data, len, KEY_FILE_MODE);
        else {
                keys_dir_recheck();
                r = entry_location(e, &dir_fd);
                if (r >= 0)
                        r = write_file_atomic_at(dir_fd, e->name, data, len, KEY_FILE_MODE);
        }
        if (r < 0)
                return log_error_errno(r, "Failed to write key file of %s: %m", ID(e->id));
        return 0;
}

/* Flushes the directory holding the entry's file, so that a rename or unlink is durable. */
static int entry_sync_dir(const KeyEntry *e)
{
        _cleanup_free_ char *dir = NULL;
        _cleanup_close_ int fd = -EBADF;
        const char *slash;

        if (!e->preloaded)
                return fsync(store.keys_dir_fd) < 0 ? -errno : 0;
        slash = strrchr(e->name, '/');
        dir = slash == e->name ? strdup("/") : strndup(e->name, (size_t)(slash - e->name));
        if (!dir)
                return -ENOMEM;
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) < 0)
                return -errno;
        return 0;
}

static int entry_unlink(KeyEntry *e)
{
        int dir_fd, r;

        entry_forget(e);
        r = entry_location(e, &dir_fd);
        if (r < 0)
                return r;
        if (unlinkat(dir_fd, e->name, 0) < 0) {
                if (errno == ENOENT)
                        return 0;
                return log_error_errno(errno, "Failed to delete key file of %s: %m", ID(e->id));
        }
        r = entry_sync_dir(e);
        if (r < 0)
                return log_error_errno(r, "Failed to flush the directory of %s: %m", ID(e->id));
        log_debug("Deleted key %s.", ID(e->id));
        return 0;
}

/* ---- set_parameter ---- */


/* file:///abs/path or file://localhost/abs/path, percent-decoded. */
static int set_preloaded_key(const char *id, const char *value)
{
        _cleanup_free_ char *path = NULL;
        Preloaded *p;
        int r;

        r = id_validate(id, "id of preloaded_key");
        if (r < 0)
                return r;
        if (!value)
                return -EINVAL;
        r = file_uri_to_path(value, &path);
        if (r < 0) {
                log_error("Preloaded key %s: location is not a file:///absolute/path URI.", ID(id));
                return r == -ENOMEM ? r : -EINVAL;
        }

        for (p = store.preloaded; p; p = p->next)
                if (streq(p->id, id))
                        break;
        if (!p) {
                p = calloc(1, sizeof(*p));
                if (!p)
                        return -ENOMEM;
                p->id = strdup(id);
                if (!p->id) {
                        free(p);
                        return -ENOMEM;
                }
                p->next = store.preloaded;
                store.preloaded = p;
        }
        free(p->path);
        p->path = TAKE_PTR(path);
        log_debug("Key %s is preloaded at %s.", ID(id), p->path);
        return 0;
}

static int set_homedir(const char *value)
{
        char *copy;

        if (isempty(value)) {
                log_error("homedir_path is empty.");
                return -EINVAL;
        }
        copy = strdup(value);
        if (!copy)
                return -ENOMEM;
        free(store.homedir);
        store.homedir = copy;
        store.keys_dir_fd = safe_close(store.keys_dir_fd);
        return 0;
}

static AZIOT_KEYS_RC fs_set_parameter(const char *name, const char *value)
{
        const char *id;
        int r;

        if (!name)
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        if (streq(name, "homedir_path"))
                r = set_homedir(value);
        else if ((id = startswith(name, "preloaded_key:")))
                r = set_preloaded_key(id, value);
        else {
                log_error("Unknown key store parameter %s.", name);
                r = -EINVAL;
        }
        /* Locations may have changed. */
        cache_flush();
        return keys_rc_from_errno(r);
}

/* ---- key pairs ---- */

static int create_key_pair(KeyEntry *e, KeysAlgorithm a)
{
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *pkey = NULL;
        char *pem = NULL;
        size_t len = 0;
        int r;

        r = keys_pkey_generate(a, &pkey);
        if (r < 0)
                return r;
        r = keys_pkey_to_pem(pkey, &pem, &len);
        if (r < 0)
                return r;
        r = entry_write(e, pem, len);
        erase_and_free(pem, len);
        if (r < 0)
                return r;
        log_info("Created %s key pair %s.", keys_algorithm_to_string(a), ID(e->id));
        return 0;
}

static AZIOT_KEYS_RC fs_create_key_pair_if_not_exists(const char *id,
                                                      const char *preferred_algorithms)
{
        KeysAlgorithm algs[_KEYS_ALGORITHM_MAX];
        KeyEntry *e;
        int r;

        cache_trim();
        r = entry_get(id, &e);
        if (r < 0)
                return keys_rc_from_errno(r);
        r = keys_preferred_algorithms_parse(preferred_algorithms, algs);
        if (r < 0) {
                log_warning("No supported algorithm in preferred algorithms \"%s\".",
                            strempty(preferred_algorithms));
                return keys_rc_from_errno(r);
        }

        r = entry_pkey(e);
        if (r == -EBADMSG)
                log_warning("Key file of %s does not hold a private key, replacing it.", ID(id));
        if (r == -ENOENT || r == -EBADMSG) {
                /* The filesystem store only ever tries the first preference. */
                r = create_key_pair(e, algs[0]);
                if (r >= 0)
                        r = entry_pkey(e);
        }
        return keys_rc_from_errno(r);
}

static AZIOT_KEYS_RC fs_load_key_pair(const char *id)
{
        KeyEntry *e;
        int r;

        cache_trim();
        r = entry_get(id, &e);
        if (r >= 0)
                r = entry_pkey(e);
        return keys_rc_from_errno(r);
}

/* The two-call convention: sizes only without a buffer, -ENOBUFS (and the size needed) when the
 * buffer is too small. */
static AZIOT_KEYS_RC fs_get_key_pair_parameter(const char *id,
                                               AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE type,
                                               unsigned char *value, size_t *value_len)
{
        _cleanup_free_ uint8_t *data = NULL;
        size_t len = 0;
        KeyEntry *e;
        int r;

        cache_trim();
        if (!value_len)
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        r = entry_get(id, &e);
        if (r >= 0)
                r = entry_pkey(e);
        if (r >= 0)
                r = keys_pkey_parameter(e->pkey, type, &data, &len);
        if (r == -EOPNOTSUPP)
                log_debug("Key pair %s has no parameter of type %u.", ID(id), type);
        if (r >= 0)
                r = keys_output_bytes(value, value_len, data, len);
        return keys_rc_from_errno(r);
}

static AZIOT_KEYS_RC fs_move_key_pair(const char *from, const char *to)
{
        KeyEntry *src, *dst;
        int src_fd, dst_fd, r;

        cache_trim();
        r = entry_get(from, &src);
        if (r >= 0)
                r = entry_get(to, &dst);
        if (r < 0)
                return keys_rc_from_errno(r);
        if (src == dst)
                return AZIOT_KEYS_RC_OK;

        entry_forget(src);
        entry_forget(dst);
        if (!src->preloaded || !dst->preloaded)
                keys_dir_recheck();
        r = entry_location(src, &src_fd);
        if (r >= 0)
                r = entry_location(dst, &dst_fd);
        if (r < 0)
                return keys_rc_from_errno(r);
        if (renameat(src_fd, src->name, dst_fd, dst->name) < 0) {
                r = -errno;
                if (r == -ENOENT)
                        log_warning("Cannot move key pair %s: it does not exist.", ID(from));
                else
                        log_error_errno(r, "Failed to move key pair %s to %s: %m", ID(from),
                                        ID(to));
                return keys_rc_from_errno(r);
        }
        r = entry_sync_dir(dst);
        if (r >= 0 && src->preloaded != dst->preloaded)
                r = entry_sync_dir(src);
        if (r < 0)
                log_error_errno(r, "Failed to flush the directory after moving %s: %m", ID(from));
        else
                log_info("Moved key pair %s to %s.", ID(from), ID(to));
        return keys_rc_from_errno(r);
}

static AZIOT_KEYS_RC fs_delete(const char *id)
{
        KeyEntry *e;
        int r;

        cache_trim();
        r = entry_get(id, &e);
        if (r == -ENAMETOOLONG)
                return AZIOT_KEYS_RC_OK; /* no file can have that name: nothing to delete */
        if (r >= 0)
                r = entry_unlink(e);
        return keys_rc_from_errno(r);
}

/* ---- symmetric keys ---- */

static AZIOT_KEYS_RC fs_create_key_if_not_exists(const char *id, AZIOT_KEYS_KEY_USAGE usage)
{
        uint8_t bytes[SYMMETRIC_KEY_SIZE];
        KeyEntry *e;
        int r;

        /* The file format has no room for the usage; HSM backends are the ones that need it. */
        cache_trim();
        r = entry_get(id, &e);
        if (r >= 0)
                r = entry_secret(e);
        if (r != -ENOENT && r != -ENODATA)
                return keys_rc_from_errno(r);

        if (RAND_priv_bytes(bytes, sizeof(bytes)) != 1)
                return keys_rc_from_errno(log_openssl_error("Generating a key"));
        r = entry_write(e, bytes, sizeof(bytes));
        OPENSSL_cleanse(bytes, sizeof(bytes));
        if (r >= 0) {
                log_info("Created key %s.", ID(id));
                r = entry_secret(e);
        }
        return keys_rc_from_errno(r);
}

static AZIOT_KEYS_RC fs_load_key(const char *id)
{
        KeyEntry *e;
        int r;

        cache_trim();
        r = entry_get(id, &e);
        if (r >= 0)
                r = entry_secret(e);
        return keys_rc_from_errno(r);
}

static AZIOT_KEYS_RC fs_import_key(const char *id, const uint8_t *bytes, size_t bytes_len,
                                   AZIOT_KEYS_KEY_USAGE usage)
{
        KeyEntry *e;
        int r;

        cache_trim();
        if (!bytes && bytes_len > 0)
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        r = entry_get(id, &e);
        if (r >= 0)
                r = entry_write(e, bytes ? (const void *)bytes : "", bytes_len);
        if (r >= 0)
                log_info("Imported key %s.", ID(id));
        return keys_rc_from_errno(r);
}

/* HMAC-SHA256(key of e, data): the derivation of every derived key. */
static int derive(KeyEntry *e, const unsigned char *data, size_t len, uint8_t out[KEYS_HMAC_SIZE])
{
        int r;

        if (!data && len > 0)
                return -EINVAL;
        r = entry_mac(e);
        if (r < 0)
                return r;
        return keys_hmac_with_ctx(e->mac, e->secret, e->secret_len, data, len, out);
}

static AZIOT_KEYS_RC fs_derive_key(const char *base_id, const unsigned char *derivation_data,
                                   size_t derivation_data_len, unsigned char *derived_key,
                                   size_t *derived_key_len)
{
        uint8_t derived[KEYS_HMAC_SIZE];
        KeyEntry *e;
        int r;

        cache_trim();
        if (!derived_key_len)
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        r = entry_get(base_id, &e);
        if (r >= 0)
                r = derive(e, derivation_data, derivation_data_len, derived);
        if (r >= 0)
                r = keys_output_bytes(derived_key, derived_key_len, derived, sizeof(derived));
        OPENSSL_cleanse(derived, sizeof(derived));
        return keys_rc_from_errno(r);
}

/* ---- sign / verify ---- */

static const AZIOT_KEYS_SIGN_DERIVED_PARAMETERS *sign_derived_parameters(const void *parameters)
{
        const AZIOT_KEYS_SIGN_DERIVED_PARAMETERS *p = parameters;

        if (!p || (!p->derivation_data && p->derivation_data_len > 0)) {
                log_debug("Invalid derived-key signing parameters.");
                return NULL;
        }
        if (p->mechanism != AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256) {
                log_debug("Derived keys sign with HMAC-SHA256 only, not mechanism %u.",
                          p->mechanism);
                return NULL;
        }
        return p;
}

/* The hot path of the Keys Service: no allocation, one stat(). */
static int sign_hmac(KeyEntry *e, const unsigned char *data, size_t len, unsigned char *sig,
                     size_t *sig_len)
{
        size_t capacity = *sig_len;
        int r;

        r = entry_mac(e);
        if (r < 0)
                return r;
        *sig_len = KEYS_HMAC_SIZE;
        if (!sig)
                return 0;
        if (capacity < KEYS_HMAC_SIZE)
                return -ENOBUFS;
        return keys_hmac_with_ctx(e->mac, e->secret, e->secret_len, data, len, sig);
}

static int sign_derived(KeyEntry *e, const void *parameters, const unsigned char *data, size_t len,
                        unsigned char *sig, size_t *sig_len)
{
        const AZIOT_KEYS_SIGN_DERIVED_PARAMETERS *p = sign_derived_parameters(parameters);
        uint8_t derived[KEYS_HMAC_SIZE], mac[KEYS_HMAC_SIZE];
        int r;

        if (!p)
                return -EINVAL;
        r = derive(e, p->derivation_data, p->derivation_data_len, derived);
        if (r >= 0)
                r = keys_hmac(derived, sizeof(derived), data, len, mac);
        OPENSSL_cleanse(derived, sizeof(derived));
        if (r >= 0)
                r = keys_output_bytes(sig, sig_len, mac, sizeof(mac));
        return r;
}

static int sign_ecdsa(KeyEntry *e, const unsigned char *digest, size_t len, unsigned char *sig,
                      size_t *sig_len)
{
        uint8_t buf[SIGNATURE_MAX];
        size_t max, n = sizeof(buf);
        int r;

        r = entry_pkey(e);
        if (r < 0)
                return r;
        if (keys_pkey_algorithm(e->pkey) != AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM_EC) {
                log_debug("Key pair %s is not an EC key, cannot sign with ECDSA.", ID(e->id));
                return -EOPNOTSUPP;
        }
        max = keys_pkey_max_output_size(e->pkey);
        if (max == 0 || max > sizeof(buf))
                return -EOPNOTSUPP;
        if (!sig) {
                /* DER signatures vary in length: report the upper bound. */
                *sig_len = max;
                return 0;
        }
        r = keys_ecdsa_sign(e->pkey, digest, len, buf, &n);
        if (r < 0)
                return r;
        return keys_output_bytes(sig, sig_len, buf, n);
}

static AZIOT_KEYS_RC fs_sign(const char *id, AZIOT_KEYS_SIGN_MECHANISM mechanism,
                             const void *parameters, const unsigned char *digest, size_t digest_len,
                             unsigned char *signature, size_t *signature_len)
{
        KeyEntry *e;
        int r;

        cache_trim();
        if (!signature_len || (!digest && digest_len > 0))
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        r = entry_get(id, &e);
        if (r < 0)
                return keys_rc_from_errno(r);

        switch (mechanism) {
        case AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256:
                r = sign_hmac(e, digest, digest_len, signature, signature_len);
                break;
        case AZIOT_KEYS_SIGN_MECHANISM_DERIVED:
                r = sign_derived(e, parameters, digest, digest_len, signature, signature_len);
                break;
        case AZIOT_KEYS_SIGN_MECHANISM_ECDSA:
                r = sign_ecdsa(e, digest, digest_len, signature, signature_len);
                break;
        default:
                log_debug("Unknown signing mechanism %u.", mechanism);
                r = -EINVAL;
        }
        return keys_rc_from_errno(r);
}

static int verify_hmac(KeyEntry *e, const void *parameters, bool derived, const unsigned char *data,
                       size_t len, const unsigned char *sig, size_t sig_len, int *ok)
{
        uint8_t mac[KEYS_HMAC_SIZE];
        size_t mac_len = sizeof(mac);
        int r;

        if (derived)
                r = sign_derived(e, parameters, data, len, mac, &mac_len);
        else
                r = sign_hmac(e, data, len, mac, &mac_len);
        if (r >= 0)
                *ok = sig_len == sizeof(mac) && CRYPTO_memcmp(mac, sig, sizeof(mac)) == 0;
        OPENSSL_cleanse(mac, sizeof(mac));
        return r;
}

static AZIOT_KEYS_RC fs_verify(const char *id, AZIOT_KEYS_SIGN_MECHANISM mechanism,
                               const void *parameters, const unsigned char *digest,
                               size_t digest_len, const unsigned char *signature,
                               size_t signature_len, int *ok)
{
        KeyEntry *e;
        int r;

        cache_trim();
        if (!ok || (!digest && digest_len > 0) || (!signature && signature_len > 0))
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        r = entry_get(id, &e);
        if (r < 0)
                return keys_rc_from_errno(r);

        switch (mechanism) {
        case AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256:
        case AZIOT_KEYS_SIGN_MECHANISM_DERIVED:
                r = verify_hmac(e, parameters, mechanism == AZIOT_KEYS_SIGN_MECHANISM_DERIVED,
                                digest, digest_len, signature, signature_len, ok);
                break;
        case AZIOT_KEYS_SIGN_MECHANISM_ECDSA:
                r = entry_pkey(e);
                if (r >= 0)
                        r = keys_ecdsa_verify(e->pkey, digest, digest_len, signature,
                                              signature_len);
                if (r >= 0)
                        *ok = r;
                break;
        default:
                log_debug("Unknown signing mechanism %u.", mechanism);
                r = -EINVAL;
        }
        return keys_rc_from_errno(r < 0 ? r : 0);
}

/* ---- encrypt / decrypt ---- */

/* The AEAD parameters and the key to use: the entry's own, or one derived from it into
 * derived. */
static int aead_key(KeyEntry *e, AZIOT_KEYS_ENCRYPT_MECHANISM mechanism, const void *parameters,
                    uint8_t derived[KEYS_HMAC_SIZE], const uint8_t **ret_key, size_t *ret_key_len,
                    const AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS **ret_params)
{
        const AZIOT_KEYS_ENCRYPT_DERIVED_PARAMETERS *d = parameters;
        int r;

        if (mechanism == AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD) {
                r = entry_secret(e);
                if (r < 0)
                        return r;
                *ret_key = e->secret;
                *ret_key_len = e->secret_len;
                *ret_params = parameters;
                return 0;
        }
        if (!d || d->mechanism != AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD) {
                log_debug("Derived keys encrypt with AEAD only.");
                return -EINVAL;
        }
        r = derive(e, d->derivation_data, d->derivation_data_len, derived);
        if (r < 0)
                return r;
        *ret_key = derived;
        *ret_key_len = KEYS_HMAC_SIZE;
        *ret_params = d->parameters;
        return 0;
}

static int encrypt_aead(KeyEntry *e, AZIOT_KEYS_ENCRYPT_MECHANISM mechanism, const void *parameters,
                        const unsigned char *in, size_t len, unsigned char *out, size_t *out_len)
{
        const AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS *p = NULL;
        uint8_t derived[KEYS_HMAC_SIZE];
        const uint8_t *key = NULL;
        size_t key_len = 0, capacity = *out_len;
        int r;

        r = aead_key(e, mechanism, parameters, derived, &key, &key_len, &p);
        if (r >= 0 && !p)
                r = -EINVAL;
        if (r >= 0) {
                *out_len = keys_aead_ciphertext_size(len);
                if (out && capacity < *out_len)
                        r = -ENOBUFS;
                else if (out)
                        r = keys_aead_encrypt(key, key_len, p, in, len, out);
        }
        OPENSSL_cleanse(derived, sizeof(derived));
        return r;
}

static int encrypt_rsa(KeyEntry *e, int padding, const unsigned char *in, size_t len,
                       unsigned char *out, size_t *out_len)
{
        size_t capacity = *out_len, max;
        int r;

        r = entry_pkey(e);
        if (r < 0)
                return r;
        if (keys_pkey_algorithm(e->pkey) != AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM_RSA) {
                log_debug("Key pair %s is not an RSA key.", ID(e->id));
                return -EOPNOTSUPP;
        }
        max = keys_pkey_max_output_size(e->pkey);
        *out_len = max;
        if (!out)
                return 0;
        if (capacity < max)
                return -ENOBUFS;
        return keys_rsa_private(e->pkey, padding, in, len, out, out_len);
}

static AZIOT_KEYS_RC fs_encrypt(const char *id, AZIOT_KEYS_ENCRYPT_MECHANISM mechanism,
                                const void *parameters, const unsigned char *plaintext,
                                size_t plaintext_len, unsigned char *ciphertext,
                                size_t *ciphertext_len)
{
        KeyEntry *e;
        int r;

        cache_trim();
        if (!ciphertext_len || (!plaintext && plaintext_len > 0))
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        r = entry_get(id, &e);
        if (r < 0)
                return keys_rc_from_errno(r);

        switch (mechanism) {
        case AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD:
        case AZIOT_KEYS_ENCRYPT_MECHANISM_DERIVED:
                r = encrypt_aead(e, mechanism, parameters, plaintext, plaintext_len, ciphertext,
                                 ciphertext_len);
                break;
        case AZIOT_KEYS_ENCRYPT_MECHANISM_RSA_PKCS1:
                r = encrypt_rsa(e, RSA_PKCS1_PADDING, plaintext, plaintext_len, ciphertext,
                                ciphertext_len);
                break;
        case AZIOT_KEYS_ENCRYPT_MECHANISM_RSA_NO_PADDING:
                r = encrypt_rsa(e, RSA_NO_PADDING, plaintext, plaintext_len, ciphertext,
                                ciphertext_len);
                break;
        default:
                log_debug("Unknown encryption mechanism %u.", mechanism);
                r = -EINVAL;
        }
        return keys_rc_from_errno(r);
}

static int decrypt_aead(KeyEntry *e, AZIOT_KEYS_ENCRYPT_MECHANISM mechanism, const void *parameters,
                        const unsigned char *in, size_t len, unsigned char *out, size_t *out_len)
{
        const AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS *p = NULL;
        uint8_t derived[KEYS_HMAC_SIZE];
        const uint8_t *key = NULL;
        size_t key_len = 0, capacity = *out_len, plain_len = 0;
        int r;

        r = aead_key(e, mechanism, parameters, derived, &key, &key_len, &p);
        if (r >= 0 && !p)
                r = -EINVAL;
        if (r >= 0)
                r = keys_aead_plaintext_size(in, len, &plain_len);
        if (r >= 0) {
                *out_len = plain_len;
                if (out && capacity < plain_len)
                        r = -ENOBUFS;
                else if (out)
                        r = keys_aead_decrypt(key, key_len, p, in, len, out, out_len);
        }
        OPENSSL_cleanse(derived, sizeof(derived));
        return r;
}

static AZIOT_KEYS_RC fs_decrypt(const char *id, AZIOT_KEYS_ENCRYPT_MECHANISM mechanism,
                                const void *parameters, const unsigned char *ciphertext,
                                size_t ciphertext_len, unsigned char *plaintext,
                                size_t *plaintext_len)
{
        KeyEntry *e;
        int r;

        cache_trim();
        if (!plaintext_len || (!ciphertext && ciphertext_len > 0))
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        r = entry_get(id, &e);
        if (r < 0)
                return keys_rc_from_errno(r);

        if (mechanism == AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD ||
            mechanism == AZIOT_KEYS_ENCRYPT_MECHANISM_DERIVED)
                r = decrypt_aead(e, mechanism, parameters, ciphertext, ciphertext_len, plaintext,
                                 plaintext_len);
        else {
                log_debug("Decryption mechanism %u is not supported.", mechanism);
                r = -EINVAL;
        }
        return keys_rc_from_errno(r);
}

/* ---- the function lists ---- */

static const AZIOT_KEYS_FUNCTION_LIST_2_1_0_0 function_list_2_1 = {
        .base = {.version = AZIOT_KEYS_VERSION_2_1_0_0},
        .set_parameter = fs_set_parameter,
        .create_key_pair_if_not_exists = fs_create_key_pair_if_not_exists,
        .move_key_pair = fs_move_key_pair,
        .load_key_pair = fs_load_key_pair,
        .get_key_pair_parameter = fs_get_key_pair_parameter,
        .delete_key_pair = fs_delete,
        .create_key_if_not_exists = fs_create_key_if_not_exists,
        .load_key = fs_load_key,
        .import_key = fs_import_key,
        .delete_key = fs_delete,
        .derive_key = fs_derive_key,
        .sign = fs_sign,
        .verify = fs_verify,
        .encrypt = fs_encrypt,
        .decrypt = fs_decrypt,
};

const AZIOT_KEYS_FUNCTION_LIST_2_1_0_0 *keys_fs_function_list(void)
{
        return &function_list_2_1;
}

void keys_fs_reset(void)
{
        cache_flush();
        while (store.preloaded) {
                Preloaded *p = store.preloaded;

                store.preloaded = p->next;
                free(p->id);
                free(p->path);
                free(p);
        }
        free(store.homedir);
        store.homedir = NULL;
        store.keys_dir_fd = safe_close(store.keys_dir_fd);
        keys_crypto_done();
}
