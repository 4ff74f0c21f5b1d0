/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "tpm-worker.h"

typedef struct Job {
        struct Job *next;
        TpmJobRun run;
        TpmJobDone done;
        void *data;
} Job;

typedef struct Shared {
        pthread_mutex_t lock;
        pthread_cond_t wake;
        Job *queue, *queue_tail; /* to run */
        Job *finished, *finished_tail;
        bool stopping;
        unsigned refs;    /* the loop's and the thread's */
        int efd;
        TpmDevice *device;
} Shared;

struct TpmWorker {
        Shared *shared;
        sd_event_source *source;
        pthread_t thread;
        size_t pending;
};

static void push(Job **head, Job **tail, Job *j)
{
        j->next = NULL;
        if (*tail)
                (*tail)->next = j;
        else
                *head = j;
        *tail = j;
}

static Job *pop(Job **head, Job **tail)
{
        Job *j = *head;

        if (j) {
                *head = j->next;
                if (!*head)
                        *tail = NULL;
        }
        return j;
}

static void shared_unref(Shared *s)
{
        bool last;

        pthread_mutex_lock(&s->lock);
        last = --s->refs == 0;
        pthread_mutex_unlock(&s->lock);
        if (!last)
                return;
        for (Job *j; (j = pop(&s->queue, &s->queue_tail));)
                free(j);
        for (Job *j; (j = pop(&s->finished, &s->finished_tail));)
                free(j);
        tpm_device_free(s->device);
        safe_close(s->efd);
        pthread_cond_destroy(&s->wake);
        pthread_mutex_destroy(&s->lock);
        free(s);
}

static void *thread_main(void *arg)
{
        Shared *s = arg;

        pthread_mutex_lock(&s->lock);
        for (;;) {
                Job *j;

                while (!s->queue && !s->stopping)
                        pthread_cond_wait(&s->wake, &s->lock);
                if (s->stopping)
                        break;
                j = pop(&s->queue, &s->queue_tail);
                pthread_mutex_unlock(&s->lock);

                j->run(s->device, j->data);

                pthread_mutex_lock(&s->lock);
                push(&s->finished, &s->finished_tail, j);
                if (!s->stopping)
                        (void)eventfd_write(s->efd, 1);
        }
        pthread_mutex_unlock(&s->lock);
        shared_unref(s);
        return NULL;
}

static int on_finished(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
        TpmWorker *w = userdata;
        Shared *s = w->shared;
        eventfd_t ignored;
        Job *list, *tail;

        (void)eventfd_read(fd, &ignored);
        pthread_mutex_lock(&s->lock);
        list = s->finished;
        tail = s->finished_tail;
        s->finished = s->finished_tail = NULL;
        pthread_mutex_unlock(&s->lock);
        (void)tail;
        while (list) {
                Job *j = list;

                list = j->next;
                w->pending--;
                j->done(j->data, false);
                free(j);
        }
        return 0;
}

int tpm_worker_new(sd_event *event, TpmDevice *device, TpmWorker **ret)
{
        _cleanup_free_ TpmWorker *w = NULL;
        Shared *s;
        int r;

        w = calloc(1, sizeof(*w));
        s = calloc(1, sizeof(*s));
        if (!w || !s) {
                free(s);
                return -ENOMEM;
        }
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->wake, NULL);
        s->refs = 1;
        s->device = device;
        s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        w->shared = s;
        if (s->efd < 0) {
                r = -errno;
                s->device = NULL;
                shared_unref(s);
                return r;
        }
        r = sd_event_add_io(event, &w->source, s->efd, EPOLLIN, on_finished, w);
        if (r < 0) {
                s->device = NULL;
                shared_unref(s);
                return r;
        }
        s->refs++;
        r = -pthread_create(&w->thread, NULL, thread_main, s);
        if (r < 0) {
                s->refs--;
                s->device = NULL;
                sd_event_source_disable_unref(w->source);
                shared_unref(s);
                return r;
        }
        *ret = TAKE_PTR(w);
        return 0;
}

void tpm_worker_free(TpmWorker *w)
{
        Shared *s;
        Job *queued, *finished;
        struct timespec deadline;
        bool gone = true;

        if (!w)
                return;
        s = w->shared;
        pthread_mutex_lock(&s->lock);
        s->stopping = true;
        queued = s->queue;
        finished = s->finished;
        s->queue = s->queue_tail = s->finished = s->finished_tail = NULL;
        pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->lock);
        for (Job *j = finished, *next; j; j = next) {
                next = j->next;
                j->done(j->data, false);
                free(j);
        }
        for (Job *j = queued, *next; j; j = next) {
                next = j->next;
                j->done(j->data, true);
                free(j);
        }
        /* Wait a little for the job in progress; a TPM that hangs keeps its thread. */
        log_debug("Stopping the TPM thread.");
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += 2;
        if (pthread_timedjoin_np(w->thread, NULL, &deadline) != 0) {
                log_warning("The TPM does not answer; leaving its thread behind.");
                (void)pthread_detach(w->thread);
                gone = false;
        }
        /* The job that was running when the thread was told to stop. */
        if (gone) {
                for (Job *j; (j = pop(&s->finished, &s->finished_tail));) {
                        j->done(j->data, false);
                        free(j);
                }
        }
        sd_event_source_disable_unref(w->source);
        shared_unref(s);
        free(w);
        log_debug("The TPM thread is done.");
}

int tpm_worker_submit(TpmWorker *w, TpmJobRun run, TpmJobDone done, void *data)
{
        Shared *s = w->shared;
        Job *j = calloc(1, sizeof(*j));

        if (!j)
                return -ENOMEM;
        *j = (Job){ .run = run, .done = done, .data = data };
        pthread_mutex_lock(&s->lock);
        push(&s->queue, &s->queue_tail, j);
        pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->lock);
        w->pending++;
        return 0;
}

size_t tpm_worker_pending(const TpmWorker *w)
{
        return w ? w->pending : 0;
}
