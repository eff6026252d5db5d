/* A fixed pool of worker threads running one parallel-for at a time.
 * The caller's thread takes part as worker 0, so a pool of n threads starts n-1. */
#include "sqz/core.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct sqz_pool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv_work;
    pthread_cond_t cv_done;
    /* the job in flight */
    sqz_task_fn fn;
    void *ctx;
    int64_t n, chunk, next; /* next unclaimed index */
    int generation;          /* bumped for every job */
    int busy;                /* workers still in the current job */
    int quit;
};

typedef struct {
    sqz_pool *p;
    int id;
} worker_arg;

/* Claims chunks until none are left. Called with the mutex not held. */
static void run_chunks(sqz_pool *p, int id) {
    for (;;) {
        pthread_mutex_lock(&p->mu);
        int64_t b = p->next;
        if (b >= p->n) {
            pthread_mutex_unlock(&p->mu);
            return;
        }
        int64_t e = b + p->chunk < p->n ? b + p->chunk : p->n;
        p->next = e;
        sqz_task_fn fn = p->fn;
        void *ctx = p->ctx;
        pthread_mutex_unlock(&p->mu);
        fn(ctx, b, e, id);
    }
}

static void *worker_main(void *arg) {
    worker_arg *wa = arg;
    sqz_pool *p = wa->p;
    int id = wa->id;
    free(wa);
    int seen = 0;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->quit && p->generation == seen) pthread_cond_wait(&p->cv_work, &p->mu);
        if (p->quit) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        run_chunks(p, id);
        pthread_mutex_lock(&p->mu);
        if (--p->busy == 0) pthread_cond_signal(&p->cv_done);
        pthread_mutex_unlock(&p->mu);
    }
}

sqz_pool *sqz_pool_create(int n_threads, sqz_err *err) {
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    if (n_threads > 1024) {
        sqz_fail(err, "thread pool: %d threads requested, at most 1024 allowed", n_threads);
        return NULL;
    }
    sqz_pool *p = calloc(1, sizeof *p);
    if (!p) {
        sqz_fail(err, "thread pool: out of memory");
        return NULL;
    }
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_work, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    if (!p->threads) {
        sqz_pool_free(p);
        sqz_fail(err, "thread pool: out of memory");
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa || pthread_create(&p->threads[i], NULL, worker_main, wa ? (wa->p = p, wa->id = i, wa) : NULL) != 0) {
            free(wa);
            p->n_threads = i; /* only threads 1..i-1 exist */
            sqz_pool_free(p);
            sqz_fail(err, "thread pool: cannot start thread %d of %d", i + 1, n_threads);
            return NULL;
        }
    }
    return p;
}

void sqz_pool_free(sqz_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    if (p->threads)
        for (int i = 1; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv_work);
    pthread_cond_destroy(&p->cv_done);
    free(p);
}

int sqz_pool_threads(const sqz_pool *p) { return p ? p->n_threads : 1; }

void sqz_pool_for(sqz_pool *p, int64_t n, int64_t grain, sqz_task_fn fn, void *ctx) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    if (!p || p->n_threads == 1 || n <= grain) {
        fn(ctx, 0, n, 0);
        return;
    }
    /* About four chunks per thread balances uneven work without much locking; a loop of
     * few items (a handful of heavy SGEMM pieces) is handed out grain by grain instead,
     * since there one item more or less on a thread is most of the imbalance. */
    int64_t nt = p->n_threads;
    int64_t chunk = n < 8 * nt * grain ? grain : (n + 4 * nt - 1) / (4 * nt);
    if (chunk < grain) chunk = grain;
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->chunk = chunk;
    p->next = 0;
    p->busy = p->n_threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    run_chunks(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->busy > 0) pthread_cond_wait(&p->cv_done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
