/* SPDX-License-Identifier: MIT */
#include <sys/inotify.h>

#include "config-watch.h"
#include "log.h"
#include "macro.h"

#define WATCH_MASK                                                                                 \
        (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_DELETE_SELF |   \
         IN_MOVE_SELF | IN_ATTRIB)

struct ConfigWatch {
        sd_event *event;
        char *parent, *main_name, *dir, *dir_name;
        sd_event_source *parent_source, *dir_source, *timer;
        uint64_t debounce_usec;
        config_watch_handler_t handler;
        void *userdata;
};

ConfigWatch *config_watch_free(ConfigWatch *w)
{
        if (!w)
                return NULL;
        sd_event_source_disable_unref(w->parent_source);
        sd_event_source_disable_unref(w->dir_source);
        sd_event_source_disable_unref(w->timer);
        sd_event_unref(w->event);
        free(w->parent);
        free(w->main_name);
        free(w->dir);
        free(w->dir_name);
        free(w);
        return NULL;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        ConfigWatch *w = userdata;

        w->handler(w->userdata);
        return 0;
}

static void schedule(ConfigWatch *w)
{
        int r;

        if (w->timer) {
                r = sd_event_source_set_time_relative(w->timer, w->debounce_usec);
                if (r >= 0)
                        r = sd_event_source_set_enabled(w->timer, SD_EVENT_ONESHOT);
        } else
                r = sd_event_add_time_relative(w->event, &w->timer, CLOCK_MONOTONIC,
                                               w->debounce_usec, 0, on_timer, w);
        if (r < 0)
                log_warning_errno(r, "Failed to schedule a configuration reload: %m");
}

static int watch_dir(ConfigWatch *w);

static int on_dir_event(sd_event_source *s, const struct inotify_event *ev, void *userdata)
{
        ConfigWatch *w = userdata;

        if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
                /* The directory went away; the parent watch notices when it comes back. */
                w->dir_source = sd_event_source_disable_unref(w->dir_source);
        }
        schedule(w);
        return 0;
}

static int on_parent_event(sd_event_source *s, const struct inotify_event *ev, void *userdata)
{
        ConfigWatch *w = userdata;

        if (ev->len == 0)
                return 0;
        if (streq(ev->name, w->main_name)) {
                schedule(w);
        } else if (w->dir_name && streq(ev->name, w->dir_name)) {
                if (!w->dir_source)
                        (void)watch_dir(w);
                schedule(w);
        }
        return 0;
}

static int watch_dir(ConfigWatch *w)
{
        int r;

        if (!w->dir)
                return 0;
        r = sd_event_add_inotify(w->event, &w->dir_source, w->dir, WATCH_MASK | IN_ONLYDIR,
                                 on_dir_event, w);
        if (r == -ENOENT || r == -ENOTDIR)
                return 0; /* may appear later */
        return r;
}

static int split_path(const char *path, char **ret_parent, char **ret_name)
{
        const char *slash = strrchr(path, '/');

        *ret_parent = slash ? (slash == path ? strdup("/") : strndup(path, slash - path))
                            : strdup(".");
        *ret_name = strdup(slash ? slash + 1 : path);
        return *ret_parent && *ret_name ? 0 : -ENOMEM;
}

int config_watch_new(sd_event *event, const char *main_path, const char *dir, uint64_t debounce_usec,
                     config_watch_handler_t handler, void *userdata, ConfigWatch **ret)
{
        _cleanup_(config_watch_freep) ConfigWatch *w = NULL;
        _cleanup_free_ char *dir_parent = NULL;
        int r;

        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->event = sd_event_ref(event);
        w->debounce_usec = debounce_usec;
        w->handler = handler;
        w->userdata = userdata;

        r = split_path(main_path, &w->parent, &w->main_name);
        if (r < 0)
                return r;
        if (dir) {
                w->dir = strdup(dir);
                if (!w->dir)
                        return -ENOMEM;
                r = split_path(dir, &dir_parent, &w->dir_name);
                if (r < 0)
                        return r;
                /* Creation of the directory is only seen when it sits beside the main file, as it
                 * does by default (config.toml, config.d). */
                if (!streq(dir_parent, w->parent))
                        w->dir_name = mfree_str(w->dir_name);
        }

        r = sd_event_add_inotify(event, &w->parent_source, w->parent, WATCH_MASK | IN_ONLYDIR,
                                 on_parent_event, w);
        if (r < 0)
                return log_warning_errno(r, "Failed to watch %s: %m", w->parent);
        r = watch_dir(w);
        if (r < 0)
                return log_warning_errno(r, "Failed to watch %s: %m", w->dir);

        *ret = TAKE_PTR(w);
        return 0;
}
