// parallel.c — see include/parallel.h.
//
// One job at a time: the caller that takes `busy` publishes (task, context, count, participants), bumps
// `generation`, wakes sleeping workers, then takes indices from `next` like every participating worker.
// A participant that finds `next` past the end leaves; the caller waits (spinning) until `active` — the
// participants still inside the job — is 0, so no worker touches the job's fields after the call returns.
#define _GNU_SOURCE
#include "parallel.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#define MAX_WORKERS 63
#define SPIN_CHECKS 2000   // each a check and a pause: some tens of µs before a worker sleeps

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static atomic_flag busy = ATOMIC_FLAG_INIT;
static _Atomic long generation;
static _Atomic long next;
static _Atomic long active;
static _Atomic int sleepers;
static long started;   // workers created (under `lock`)

static opal_parallel_task job_task;
static void *job_context;
static long job_count;
static _Atomic long job_participants;   // workers allowed into the current job (numbered 0 ..< participants)

static _Thread_local int inside_job;

static void take_indices(void) {
    for (;;) {
        long index = atomic_fetch_add_explicit(&next, 1, memory_order_relaxed);
        if (index >= job_count) return;
        job_task(job_context, index);
    }
}

static void *worker_main(void *argument) {
    const long number = (long)argument;
    long seen = 0;
    inside_job = 1;   // a task that starts a parallel loop runs it inline
    for (;;) {
        long current = atomic_load_explicit(&generation, memory_order_acquire);
        for (int check = 0; current == seen && check < SPIN_CHECKS; check++) {
#if defined(__x86_64__)
            __builtin_ia32_pause();
#else
            sched_yield();
#endif
            current = atomic_load_explicit(&generation, memory_order_acquire);
        }
        if (current == seen) {
            pthread_mutex_lock(&lock);
            atomic_fetch_add(&sleepers, 1);
            while ((current = atomic_load_explicit(&generation, memory_order_acquire)) == seen) {
                pthread_cond_wait(&wake, &lock);
            }
            atomic_fetch_sub(&sleepers, 1);
            pthread_mutex_unlock(&lock);
        }
        seen = current;
        // `active` was raised for this worker before the generation moved; it must leave through it.
        if (number < atomic_load_explicit(&job_participants, memory_order_acquire)) {
            take_indices();
            atomic_fetch_sub_explicit(&active, 1, memory_order_release);
        }
    }
    return 0;
}

static void start_workers(long wanted) {
    pthread_mutex_lock(&lock);
    while (started < wanted && started < MAX_WORKERS) {
        pthread_t thread;
        if (pthread_create(&thread, 0, worker_main, (void *)started) != 0) break;
        pthread_detach(thread);
        started++;
    }
    pthread_mutex_unlock(&lock);
}

void opal_parallel_run(long count, long threads, opal_parallel_task task, void *context) {
    if (count <= 0) return;
    if (threads <= 1 || count == 1 || inside_job || atomic_flag_test_and_set_explicit(&busy, memory_order_acquire)) {
        for (long i = 0; i < count; i++) task(context, i);
        return;
    }
    long workers = (threads - 1 < count - 1 ? threads - 1 : count - 1);
    if (workers > MAX_WORKERS) workers = MAX_WORKERS;
    start_workers(workers);
    pthread_mutex_lock(&lock);
    long available = started;
    pthread_mutex_unlock(&lock);
    if (workers > available) workers = available;

    job_task = task; job_context = context; job_count = count;
    atomic_store_explicit(&next, 0, memory_order_relaxed);
    atomic_store_explicit(&active, workers, memory_order_relaxed);
    atomic_store_explicit(&job_participants, workers, memory_order_relaxed);
    // Workers from 0 ..< workers enter; the others see the new generation and wait again.
    atomic_fetch_add_explicit(&generation, 1, memory_order_release);
    if (atomic_load(&sleepers) > 0) {
        pthread_mutex_lock(&lock);
        pthread_cond_broadcast(&wake);
        pthread_mutex_unlock(&lock);
    }
    inside_job = 1;
    take_indices();
    inside_job = 0;
    while (atomic_load_explicit(&active, memory_order_acquire) > 0) sched_yield();
    atomic_flag_clear_explicit(&busy, memory_order_release);
}
