/* SPDX-License-Identifier: MIT */
#include <dlfcn.h>

#include "keys-library.h"
#include "keys-store.h"
#include "log.h"
#include "macro.h"

typedef AZIOT_KEYS_RC (*GetFunctionListFn)(AZIOT_KEYS_VERSION version,
                                           const AZIOT_KEYS_FUNCTION_LIST **pfunction_list);

/* What 2.0.0.0 libraries cannot do: upstream keyd treats both as done. */
static AZIOT_KEYS_RC noop_move_key_pair(const char *from, const char *to)
{
        log_debug("The key library has no move_key_pair (function list 2.0.0.0); nothing done.");
        return AZIOT_KEYS_RC_OK;
}

static AZIOT_KEYS_RC noop_delete(const char *id)
{
        log_debug("The key library has no delete (function list 2.0.0.0); nothing done.");
        return AZIOT_KEYS_RC_OK;
}

static int list_from(const AZIOT_KEYS_FUNCTION_LIST *base, KeysLibrary *l)
{
        if (base->version == AZIOT_KEYS_VERSION_2_1_0_0) {
                l->list = *(const AZIOT_KEYS_FUNCTION_LIST_2_1_0_0 *)base;
        } else if (base->version == AZIOT_KEYS_VERSION_2_0_0_0) {
                const AZIOT_KEYS_FUNCTION_LIST_2_0_0_0 *o = (const void *)base;

                l->list = (AZIOT_KEYS_FUNCTION_LIST_2_1_0_0){
                        .base = o->base,
                        .set_parameter = o->set_parameter,
                        .create_key_pair_if_not_exists = o->create_key_pair_if_not_exists,
                        .move_key_pair = noop_move_key_pair,
                        .load_key_pair = o->load_key_pair,
                        .get_key_pair_parameter = o->get_key_pair_parameter,
                        .delete_key_pair = noop_delete,
                        .create_key_if_not_exists = o->create_key_if_not_exists,
                        .load_key = o->load_key,
                        .import_key = o->import_key,
                        .delete_key = noop_delete,
                        .derive_key = o->derive_key,
                        .sign = o->sign,
                        .verify = o->verify,
                        .encrypt = o->encrypt,
                        .decrypt = o->decrypt,
                };
        } else
                return -EPROTO;
        l->version = base->version;

        /* Every entry must be there: a NULL would crash keyd on first use. */
        const void *const fns[] = {
                l->list.set_parameter, l->list.create_key_pair_if_not_exists,
                l->list.move_key_pair, l->list.load_key_pair, l->list.get_key_pair_parameter,
                l->list.delete_key_pair, l->list.create_key_if_not_exists, l->list.load_key,
                l->list.import_key, l->list.delete_key, l->list.derive_key, l->list.sign,
                l->list.verify, l->list.encrypt, l->list.decrypt,
        };
        for (size_t i = 0; i < ELEMENTSOF(fns); i++)
                if (!fns[i])
                        return -EPROTO;
        return 0;
}

static void dlclosep(void **dl)
{
        if (*dl)
                dlclose(*dl);
}

int keys_library_open(const char *path, KeysLibrary *ret)
{
        _cleanup_(dlclosep) void *dl = NULL;
        const AZIOT_KEYS_FUNCTION_LIST *base = NULL;
        KeysLibrary l = {};
        GetFunctionListFn get;
        AZIOT_KEYS_RC rc;
        int r;

        if (!path) {
                rc = aziot_keys_get_function_list(AZIOT_KEYS_VERSION_2_1_0_0, &base);
                if (rc != AZIOT_KEYS_RC_OK || !base || list_from(base, &l) < 0)
                        return log_error_errno(EIO, "The built-in key store failed to start.");
                *ret = l;
                return 0;
        }

        dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (!dl) {
                log_error("Cannot load the key library %s: %s", path, dlerror());
                return -ENOENT;
        }
        get = (GetFunctionListFn)dlsym(dl, "aziot_keys_get_function_list");
        if (!get) {
                log_error("%s does not export aziot_keys_get_function_list().", path);
                return -EPROTO;
        }
        rc = get(AZIOT_KEYS_VERSION_2_1_0_0, &base);
        if (rc != AZIOT_KEYS_RC_OK || !base || base->version != AZIOT_KEYS_VERSION_2_1_0_0) {
                base = NULL;
                rc = get(AZIOT_KEYS_VERSION_2_0_0_0, &base);
                if (rc != AZIOT_KEYS_RC_OK || !base ||
                    base->version != AZIOT_KEYS_VERSION_2_0_0_0) {
                        log_error("The key library %s offers neither function list 2.1.0.0 nor "
                                  "2.0.0.0.",
                                  path);
                        return -EPROTO;
                }
        }
        r = list_from(base, &l);
        if (r < 0) {
                log_error("The key library %s returned an incomplete function list.", path);
                return r;
        }
        if (l.version == AZIOT_KEYS_VERSION_2_0_0_0)
                log_warning("The key library %s offers function list 2.0.0.0 only: keys cannot be "
                            "moved or deleted.",
                            path);
        log_info("Using the key library %s (function list %u.%u.%u.%u).", path,
                 l.version >> 24, (l.version >> 16) & 0xff, (l.version >> 8) & 0xff,
                 l.version & 0xff);
        l.dl = TAKE_PTR(dl);
        *ret = l;
        return 0;
}

void keys_library_close(KeysLibrary *l)
{
        if (l->dl)
                dlclose(l->dl);
        else if (l->list.base.version)
                keys_store_reset();
        *l = (KeysLibrary){};
}
