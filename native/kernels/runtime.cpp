/* The shared thread pool, view coalescing and CPU feature reporting. */
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <stdlib.h>
#include <string.h>

#include "internal.h"

namespace kn {

/*
 * A tiny fork-join pool: the calling thread is worker 0, the pool owns threads 1 … T-1. A job is
 * published under a generation counter; workers spin briefly (ops come in quick succession) and
 * then sleep on a condition variable, so an idle process burns no CPU.
 *
 * A job's range is cut into `parts` fixed chunks, and every thread, the caller included, claims
 * the next unclaimed chunk until none is left. The chunks do not depend on who runs them, so
 * results stay the same bits; but a worker that wakes late (asleep on the condition variable, or
 * descheduled on a loaded machine) no longer makes the caller wait for it: the caller runs the
 * chunk itself. A ticket holds the job's id and its next chunk, so a worker that read a job's
 * fields just as that job ended cannot claim a chunk of the next one with them.
 */
class Pool {
 public:
  int threads() const { return threads_; }

  void resize(int n) {
    stop();
    threads_ = n < 1 ? 1 : n;
    quit_ = false;
    /* A worker's first "seen" generation is fixed here, not when its thread happens to start:
       otherwise a job published before the thread runs would be taken as already seen. */
    uint64_t start = generation_.load(std::memory_order_acquire);
    for (int t = 1; t < threads_; t++) workers_.emplace_back([this, start] { loop(start); });
  }

  void run(int64_t n, range_fn fn, void *ctx, int parts) {
    std::unique_lock<std::mutex> job_lock(job_mutex_);  // one job at a time (JS is single-threaded anyway)
    fn_.store(fn, std::memory_order_relaxed);
    ctx_.store(ctx, std::memory_order_relaxed);
    n_.store(n, std::memory_order_relaxed);
    parts_.store(parts, std::memory_order_relaxed);
    pending_.store(parts, std::memory_order_relaxed);
    uint64_t id = ++job_id_;
    ticket_.store(id << TICKET_BITS, std::memory_order_release);
    {
      std::lock_guard<std::mutex> lk(mutex_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    inside_ = true;
    for (;;) {  // the ticket's job cannot change under its own caller: a plain increment claims
      int64_t c = (int64_t)(ticket_.fetch_add(1, std::memory_order_acq_rel) & TICKET_MASK);
      if (c >= parts) break;
      fn(ctx, n * c / parts, n * (c + 1) / parts);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
    inside_ = false;
    while (pending_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
  }

  ~Pool() { stop(); }

  static thread_local bool inside_;

 private:
  static const int TICKET_BITS = 20;  // chunk counter bits (parts ≤ 256, plus the caller's one overshoot)
  static const uint64_t TICKET_MASK = (1u << TICKET_BITS) - 1;

  /* Claims and runs chunks of the current job until none is left. */
  void help() {
    for (;;) {
      uint64_t t = ticket_.load(std::memory_order_acquire);
      range_fn fn = fn_.load(std::memory_order_relaxed);
      void *ctx = ctx_.load(std::memory_order_relaxed);
      int64_t n = n_.load(std::memory_order_relaxed);
      int64_t parts = parts_.load(std::memory_order_relaxed);
      int64_t c = (int64_t)(t & TICKET_MASK);
      if (c >= parts) return;
      /* succeeds only while this job still has chunk c unclaimed, so the fields read above are its own */
      if (!ticket_.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel)) continue;
      fn(ctx, n * c / parts, n * (c + 1) / parts);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  void loop(uint64_t seen) {
    inside_ = true;
    for (;;) {
      uint64_t g;
      int spins = 0;
      while ((g = generation_.load(std::memory_order_acquire)) == seen && !quit_.load(std::memory_order_relaxed)) {
        if (++spins < 4000) {
#if defined(__x86_64__)
          __builtin_ia32_pause();
#endif
          continue;
        }
        std::unique_lock<std::mutex> lk(mutex_);
        cv_.wait(lk, [&] { return generation_.load(std::memory_order_acquire) != seen || quit_.load(); });
      }
      if (quit_.load()) return;
      seen = g;
      help();
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lk(mutex_);
      quit_ = true;
    }
    cv_.notify_all();
    for (auto &w : workers_) w.join();
    workers_.clear();
  }

  int threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex job_mutex_, mutex_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<uint64_t> ticket_{0};
  uint64_t job_id_ = 0;
  std::atomic<int> pending_{0};
  std::atomic<bool> quit_{false};
  std::atomic<range_fn> fn_{nullptr};
  std::atomic<void *> ctx_{nullptr};
  std::atomic<int64_t> n_{0};
  std::atomic<int64_t> parts_{1};
};

thread_local bool Pool::inside_ = false;

static Pool &pool() {
  static Pool *p = [] {
    Pool *q = new Pool();  // never destroyed: worker threads must not outlive a static destructor race
    unsigned hc = std::thread::hardware_concurrency();
    q->resize(hc == 0 ? 1 : (int)(hc > 256 ? 256 : hc));
    return q;
  }();
  return *p;
}

void parallel_range(int64_t n, int64_t grain, range_fn fn, void *ctx) {
  if (n <= 0) return;
  Pool &p = pool();
  int64_t parts = grain > 0 ? n / grain : n;
  if (parts > p.threads()) parts = p.threads();
  if (parts <= 1 || Pool::inside_) {
    fn(ctx, 0, n);
    return;
  }
  p.run(n, fn, ctx, (int)parts);
}

int64_t numel(const kn_view *v) {
  int64_t n = 1;
  for (int d = 0; d < v->ndim; d++) n *= v->shape[d];
  return n;
}

void coalesce(const kn_view *const *views, int count, Layout *out) {
  const kn_view *v0 = views[0];
  int nd = 0;
  for (int d = 0; d < v0->ndim; d++) {
    if (v0->shape[d] == 1) continue;
    /* merge dim d into the previous kept dim when every operand steps evenly across both */
    bool merge = nd > 0;
    for (int k = 0; k < count && merge; k++)
      merge = out->strides[k][nd - 1] == views[k]->strides[d] * v0->shape[d];
    if (merge) {
      out->shape[nd - 1] *= v0->shape[d];
      for (int k = 0; k < count; k++) out->strides[k][nd - 1] = views[k]->strides[d];
      continue;
    }
    out->shape[nd] = v0->shape[d];
    for (int k = 0; k < count; k++) out->strides[k][nd] = views[k]->strides[d];
    nd++;
  }
  if (nd == 0) { /* a scalar (or all-ones shape): one row of one element */
    out->shape[0] = 1;
    for (int k = 0; k < count; k++) out->strides[k][0] = 1;
    nd = 1;
  }
  out->ndim = nd;
}

}  // namespace kn

extern "C" {

int kn_set_threads(int n) {
  if (n < 1) n = 1;
  if (n > 256) n = 256;
  if (n != kn::pool().threads()) kn::pool().resize(n);
  return kn::pool().threads();
}

int kn_get_threads(void) { return kn::pool().threads(); }

int kn_tune_malloc(void) {
#if defined(__GLIBC__)
  const char *off = getenv("KNOBS_MALLOC_TUNE");
  if (off && strcmp(off, "0") == 0) return 0;
  const char *tunables = getenv("GLIBC_TUNABLES");
  if (tunables && strstr(tunables, "glibc.malloc.")) return 0;  // the user chose; keep their settings
  /* glibc maps blocks above a dynamic threshold (128 KiB at first) with mmap and unmaps them on free,
     and trims the heap top beyond 2× that; each reuse then faults every page in again. Page faults
     cost ~10 µs each on some VMs (an 8 MiB tensor: ~20 ms), far more than the kernels that fill
     them. 32 MiB is the largest threshold glibc accepts on 64-bit. */
  int ok = mallopt(M_MMAP_THRESHOLD, 32 << 20);
  ok &= mallopt(M_TRIM_THRESHOLD, 1 << 30);
  return ok ? 1 : 0;
#else
  return 0;
#endif
}

const char *kn_cpu_isa(void) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return "avx512f";
  if (__builtin_cpu_supports("x86-64-v3")) return "avx2";
  return "sse4.2";
#else
  return "generic";
#endif
}

}  // extern "C"

#if defined(__x86_64__) && defined(__GNUC__)
bool kn::have_avx2_fma() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0 && __builtin_cpu_supports("fma") != 0;
  }();
  return yes;
}
#endif
