/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "atomic-file.h"
#include "config.h"
#include "identity-device.h"
#include "log.h"
#include "macro.h"
#include "toml.h"

#define DEVICE_INFO "device_info"
#define DEVICE_INFO_MAX (64u * 1024u)

void identity_device_done(IdentityDevice *d)
{
        free(d->hub_name);
        free(d->local_gateway_hostname);
        free(d->device_id);
        *d = (IdentityDevice){};
}

static int dup_or_null(const char *s, char **ret)
{
        *ret = s ? strdup(s) : NULL;
        return !s || *ret ? 0 : -ENOMEM;
}

int identity_device_copy(const IdentityDevice *d, IdentityDevice *ret)
{
        IdentityDevice c = {};

        if (dup_or_null(d->hub_name, &c.hub_name) < 0 ||
            dup_or_null(d->local_gateway_hostname, &c.local_gateway_hostname) < 0 ||
            dup_or_null(d->device_id, &c.device_id) < 0) {
                identity_device_done(&c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

static bool streq_null(const char *a, const char *b)
{
        return (!a && !b) || (a && b && streq(a, b));
}

bool identity_device_equal(const IdentityDevice *a, const IdentityDevice *b)
{
        return streq_null(a->hub_name, b->hub_name) &&
               streq_null(a->local_gateway_hostname, b->local_gateway_hostname) &&
               streq_null(a->device_id, b->device_id);
}

const char *identity_device_gateway(const IdentityDevice *d)
{
        return d->local_gateway_hostname ? d->local_gateway_hostname : d->hub_name;
}

static int path_of(const char *homedir, char **ret)
{
        return asprintf(ret, "%s/" DEVICE_INFO, homedir) < 0 ? -ENOMEM : 0;
}

int identity_device_load(const char *homedir, IdentityDevice *ret)
{
        _cleanup_free_ char *path = NULL, *text = NULL;
        _cleanup_toml_ TomlValue *root = NULL;
        IdentityDevice d = {};
        TomlError terr = {};
        const char *hub, *gateway = NULL, *device;
        size_t len = 0;
        int r;

        r = path_of(homedir, &path);
        if (r < 0)
                return r;
        r = read_file_full(path, DEVICE_INFO_MAX, &text, &len);
        if (r < 0)
                return r;
        if (streq(text, "unprovisioned") || streq(text, "unprovisioned\n"))
                return -ENOENT;
        r = toml_parse(text, len, &root, &terr);
        if (r < 0 || config_get_string(root, "hub_name", &hub, NULL) < 0 ||
            config_get_string(root, "device_id", &device, NULL) < 0) {
                log_warning("%s does not parse; ignoring it.", path);
                return -EBADMSG;
        }
        (void)config_get_string(root, "local_gateway_hostname", &gateway, NULL);
        if (identity_device_copy(&(IdentityDevice){ (char *)hub, (char *)gateway, (char *)device },
                                 &d) < 0)
                return -ENOMEM;
        *ret = d;
        return 0;
}

int identity_device_save(const char *homedir, const IdentityDevice *d)
{
        _cleanup_free_ char *path = NULL, *text = NULL;
        size_t len = 0;
        FILE *f;
        int r;

        r = path_of(homedir, &path);
        if (r < 0)
                return r;
        f = open_memstream(&text, &len);
        if (!f)
                return -ENOMEM;
        fputs("hub_name = ", f);
        toml_write_string(f, d->hub_name);
        if (d->local_gateway_hostname) {
                fputs("\nlocal_gateway_hostname = ", f);
                toml_write_string(f, d->local_gateway_hostname);
        }
        fputs("\ndevice_id = ", f);
        toml_write_string(f, d->device_id);
        fputc('\n', f);
        if (fclose(f) != 0)
                return -ENOMEM;
        r = write_file_atomic(path, text, len, 0600);
        if (r < 0)
                return log_error_errno(r, "Failed to write %s: %m", path);
        return 0;
}

int identity_device_forget(const char *homedir)
{
        _cleanup_free_ char *path = NULL;
        int r;

        r = path_of(homedir, &path);
        if (r < 0)
                return r;
        if (unlink(path) < 0)
                return errno == ENOENT ? 0 : log_error_errno(errno, "Failed to remove %s: %m", path);
        return 1;
}
