/* SPDX-License-Identifier: MIT */
#pragma once

/* Calls back when a service's configuration may have changed: the main file is written, replaced or
 * removed, or a file in the config directory is. Events are debounced, so an editor's burst of writes
 * (or `aziotctl config apply` writing several files) causes one reload. */

#include <systemd/sd-event.h>

typedef struct ConfigWatch ConfigWatch;
typedef void (*config_watch_handler_t)(void *userdata);

int config_watch_new(sd_event *event, const char *main_path, const char *dir, uint64_t debounce_usec,
                     config_watch_handler_t handler, void *userdata, ConfigWatch **ret);
ConfigWatch *config_watch_free(ConfigWatch *w);
static inline void config_watch_freep(ConfigWatch **w)
{
        config_watch_free(*w);
}
