// parallel.h — the CPU backend's thread pool (Sources/OpalCPU/CPUBackend.swift `parallelRanges`, the batch split
// of Conv.swift). Its workers wait for the next parallel loop by spinning for a short while (some tens of
// µs of pause instructions) before they sleep, as OpenMP runtimes do: a training step runs hundreds of
// short parallel loops, and waking a sleeping thread for each (as DispatchQueue.concurrentPerform does) left a
// core idle for a good part of a DCGAN step on two cores.
#ifndef OPAL_PARALLEL_H
#define OPAL_PARALLEL_H
#ifdef __cplusplus
extern "C" {
#endif

/// A loop body: `task(context, index)`.
typedef void (*opal_parallel_task)(void *context, long index);

/// Runs task(context, i) for every i < count, spread over at most `threads` threads (the caller and up to
/// threads − 1 pool workers, started on first use), and returns when every call has returned. Indices are
/// handed out one at a time in increasing order. A call made while another is running (from a task, or
/// from another thread) runs its loop on the calling thread alone.
void opal_parallel_run(long count, long threads, opal_parallel_task task, void *context);

#ifdef __cplusplus
}
#endif
#endif
