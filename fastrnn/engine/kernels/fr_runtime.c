/* Run-time side of the kernels, compiled for the baseline of the platform: which of the
 * compiled targets this CPU can run (CPUID and the OS's saved register state on x86-64; NEON
 * is part of every aarch64), the denormal switch, the engine's barrier and the contention
 * detector built on it (fr_kernels.h).
 *
 * setup.py defines FR_HAVE_<TARGET> for each target compiled into the build.
 */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#  define _GNU_SOURCE 1         /* RUSAGE_THREAD */
#endif
#include <string.h>

#include "fr_kernels.h"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#  define FR_X86 1
#  include <xmmintrin.h>
#  if defined(_MSC_VER) && !defined(__clang__)
#    include <intrin.h>
#  else
#    include <cpuid.h>
#  endif
#else
#  define FR_X86 0
#endif

#if defined(_WIN32)
#  include <windows.h>
#  define fr_yield() SwitchToThread()
#else
#  include <sched.h>
#  include <time.h>
#  include <unistd.h>
#  define fr_yield() sched_yield()
#endif
#if defined(__linux__)
#  include <sys/resource.h>
#endif

#if defined(FR_HAVE_AVX512)
extern const fr_kernels_t fr_kernels_avx512;
#endif
#if defined(FR_HAVE_AVX2)
extern const fr_kernels_t fr_kernels_avx2;
#endif
#if defined(FR_HAVE_NEON)
extern const fr_kernels_t fr_kernels_neon;
#endif
#if defined(FR_HAVE_BASELINE)
extern const fr_kernels_t fr_kernels_baseline;
#endif

static const fr_kernels_t* const fr_tables[] = {
#if defined(FR_HAVE_AVX512)
    &fr_kernels_avx512,
#endif
#if defined(FR_HAVE_AVX2)
    &fr_kernels_avx2,
#endif
#if defined(FR_HAVE_NEON)
    &fr_kernels_neon,
#endif
#if defined(FR_HAVE_BASELINE)
    &fr_kernels_baseline,
#endif
    NULL,
};

const fr_kernels_t* const* fr_compiled_tables(void) { return fr_tables; }

#if FR_X86
static void fr_cpuid(unsigned leaf, unsigned sub, unsigned r[4]) {
#  if defined(_MSC_VER) && !defined(__clang__)
    int v[4];
    __cpuidex(v, (int)leaf, (int)sub);
    r[0] = (unsigned)v[0]; r[1] = (unsigned)v[1]; r[2] = (unsigned)v[2]; r[3] = (unsigned)v[3];
#  else
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
#  endif
}

static unsigned long long fr_xcr0(void) {
#  if defined(_MSC_VER) && !defined(__clang__)
    return _xgetbv(0);
#  else
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
#  endif
}

/* 2: AVX-512 (F, BW, DQ, VL), 1: AVX2 + FMA, 0: baseline -- each only if the OS saves the
   registers it needs (XCR0) */
static int fr_x86_level(void) {
    unsigned r[4], max_leaf, l1_ecx, l7_ebx;
    unsigned long long xcr0;
    fr_cpuid(0, 0, r);
    max_leaf = r[0];
    if (max_leaf < 7) return 0;
    fr_cpuid(1, 0, r);
    l1_ecx = r[2];
    if (!(l1_ecx & (1u << 27)) || !(l1_ecx & (1u << 28)) || !(l1_ecx & (1u << 12)))
        return 0;                                   /* OSXSAVE, AVX, FMA */
    xcr0 = fr_xcr0();
    if ((xcr0 & 0x6) != 0x6) return 0;              /* SSE and AVX state */
    fr_cpuid(7, 0, r);
    l7_ebx = r[1];
    if (!(l7_ebx & (1u << 5))) return 0;            /* AVX2 */
    if ((xcr0 & 0xe0) == 0xe0                       /* opmask, ZMM_Hi256, Hi16_ZMM state */
        && (l7_ebx & (1u << 16)) && (l7_ebx & (1u << 17))      /* AVX512F, DQ */
        && (l7_ebx & (1u << 30)) && (l7_ebx & (1u << 31)))     /* AVX512BW, VL */
        return 2;
    return 1;
}
#endif

int fr_cpu_can_run(const fr_kernels_t* k) {
#if FR_X86
    static int level = -1;          /* a benign race: every thread computes the same value */
    if (level < 0) level = fr_x86_level();
    if (strcmp(k->name, "avx512") == 0) return level >= 2;
    if (strcmp(k->name, "avx2") == 0) return level >= 1;
#endif
    (void)k;
    return 1;                       /* baseline, neon: the platform's minimum */
}

const fr_kernels_t* fr_best_table(void) {
    for (const fr_kernels_t* const* t = fr_tables; *t != NULL; ++t)
        if (fr_cpu_can_run(*t)) return *t;
    return NULL;
}

/* ---- denormals ---- */
unsigned long fr_ftz_enter(void) {
#if FR_X86
    unsigned int old = _mm_getcsr();
    _mm_setcsr(old | 0x8040u);          /* flush-to-zero + denormals-are-zero */
    return old;
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
    unsigned long old;
    __asm__ volatile("mrs %0, fpcr" : "=r"(old));
    __asm__ volatile("msr fpcr, %0" : : "r"(old | (1ul << 24)));    /* FZ */
    return old;
#else
    return 0;
#endif
}

void fr_ftz_exit(unsigned long old) {
#if FR_X86
    _mm_setcsr((unsigned int)old);
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
    __asm__ volatile("msr fpcr, %0" : : "r"(old));
#else
    (void)old;
#endif
}

/* ---- clock and contention ---- */
double fr_now(void) {
#if defined(_WIN32)
    LARGE_INTEGER f, c;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&c);
    return (double)c.QuadPart / (double)f.QuadPart;
#else
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
#endif
}

#if defined(_MSC_VER) && !defined(__clang__)
#  define fr_fetch_add(p, v) (_InterlockedExchangeAdd((volatile long*)(p), (v)) + (v))
#  define fr_store(p, v) _InterlockedExchange((volatile long*)(p), (v))
#  define fr_load(p) _InterlockedCompareExchange((volatile long*)(p), 0, 0)
#  define fr_store64(p, v) _InterlockedExchange64((volatile long long*)(p), (v))
#  define fr_load64(p) _InterlockedCompareExchange64((volatile long long*)(p), 0, 0)
#  define fr_pause() _mm_pause()
#else
#  define fr_fetch_add(p, v) __atomic_add_fetch((p), (v), __ATOMIC_ACQ_REL)
#  define fr_store(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#  define fr_load(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#  define fr_store64(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#  define fr_load64(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#  if FR_X86
#    define fr_pause() _mm_pause()
#  elif defined(__aarch64__)
#    define fr_pause() __asm__ volatile("yield")
#  else
#    define fr_pause() ((void)0)
#  endif
#endif

/* until when the engine runs on one thread, in microseconds of fr_now (0: not contended) */
static long long fr_contended_until_us = 0;
/* the contended regions of the current window (its first began at fr_window_start), the end of
   the last region, and until when the cores are still waking up from an idle pause (benign
   races between callers) */
static int fr_contended_regions = 0;
static double fr_window_start = 0, fr_last_region_end = 0, fr_waking_until = 0;
/* until when one contended region is enough (FR_RECONTENDED_FOR past the last hold's end) */
static double fr_recontended_until = 0;

/* no contended region counted: the next one opens a new window */
static void fr_forget_regions(void) { fr_contended_regions = 0; fr_window_start = 0; }

void fr_note_contention(double hold_seconds) {
    fr_store64(&fr_contended_until_us, (long long)((fr_now() + hold_seconds) * 1e6));
    if (hold_seconds <= 0) {
        fr_forget_regions();
        fr_recontended_until = 0;
    }
}

int fr_contended(void) {
    const long long until = fr_load64(&fr_contended_until_us);
    if (until == 0) return 0;
    const double now = fr_now();
    if ((long long)(now * 1e6) >= until) return 0;
    /* a part run on one thread instead of a region: the engine is busy, not idle, so the first
       region after the hold is no wake-up from an idle pause (whose window would keep the next
       regions from counting while the load is still there) */
    fr_last_region_end = now;
    return 1;
}

/* ---- barrier ---- */

/* involuntary context switches of the calling thread so far (-1: not known on this OS) */
long fr_thread_preemptions(void) {
#if defined(__linux__) && defined(RUSAGE_THREAD)
    struct rusage u;
    return getrusage(RUSAGE_THREAD, &u) == 0 ? (long)u.ru_nivcsw : -1;
#else
    return -1;
#endif
}

void fr_barrier_init(fr_barrier_t* b) {
    b->count = 0; b->sense = 0; b->stalled = 0; b->preempted = 0; b->late = 0;
    b->t_start = fr_now();
}

int fr_team_done(const fr_barrier_t* b) {
    const int preempted = fr_load(&b->preempted);
    /* stalled, with a team mate preempted (or not known: -1) or started late */
    int counts = fr_load(&b->stalled) && (preempted != 0 || fr_load(&b->late));
    const double now = fr_now();
    if (b->t_start - fr_last_region_end > FR_IDLE) fr_waking_until = b->t_start + FR_WAKING;
    if (b->t_start < fr_waking_until) counts = 0;
    fr_last_region_end = now;
    if (!counts) return 0;
    if (now - fr_window_start > FR_CONTENDED_WINDOW) {     /* the first of a new window */
        fr_forget_regions();
        fr_window_start = now;
    }
    if (++fr_contended_regions >= (now < fr_recontended_until ? 1 : FR_CONTENDED_REGIONS)) {
        fr_forget_regions();
        fr_note_contention(FR_CONTENDED_HOLD);
        fr_recontended_until = now + FR_CONTENDED_HOLD + FR_RECONTENDED_FOR;
    }
    return counts;
}

int fr_region_waking(const fr_barrier_t* b) { return b->t_start < fr_waking_until; }

int fr_claim(int* next) { return fr_fetch_add(next, 1) - 1; }

void fr_member_init(fr_member_t* m) {
    m->sense = 0;
    m->t_last = m->t_first = fr_now();
    m->preemptions = fr_thread_preemptions();
}

void fr_team_leave(fr_barrier_t* b, int n, fr_member_t* m) {
    if (n > 1) {
        /* a share that began long after the region did: a team mate that the OS did not
           schedule in time (it waited to run, which is no preemption of a running thread) */
        if (m->t_first - b->t_start > FR_CONTENDED_WAIT) fr_store(&b->late, 1);
        const long now = m->preemptions < 0 ? -1 : fr_thread_preemptions();
        if (now < 0) fr_store(&b->preempted, -1);          /* unknown */
        else if (now > m->preemptions) fr_store(&b->preempted, 1);
    }
    fr_barrier_wait(b, n, m);
}

/* the number of CPUs online (at least 1), read once */
static int fr_cpus(void) {
    static int n = 0;
    if (n == 0) {
#if defined(_WIN32)
        SYSTEM_INFO si;
        GetSystemInfo(&si);
        n = (int)si.dwNumberOfProcessors;
#else
        n = (int)sysconf(_SC_NPROCESSORS_ONLN);
#endif
        if (n < 1) n = 1;
    }
    return n;
}

void fr_barrier_wait(fr_barrier_t* b, int n, fr_member_t* m) {
    int s = !m->sense, spins = 0;
    double arrived, left;
    m->sense = s;
    if (n <= 1) return;
    arrived = fr_now();
    if (fr_fetch_add(&b->count, 1) == n) {
        fr_store(&b->count, 0);
        fr_store(&b->sense, s);
        m->t_last = arrived;
        return;
    }
    /* spin first: a team mate running on another core arrives soon, and a yield to another
       process's thread on this core would wait for that thread's time slice; but with more
       threads than CPUs the team mate may be waiting for this core */
    const double spin = n > fr_cpus() ? 0 : FR_SPIN_WAIT;
    while (fr_load(&b->sense) != s) {
        if (++spins >= 200 && fr_now() - arrived >= spin) { fr_yield(); spins = 0; }
        else fr_pause();
    }
    left = fr_now();
    if (left - arrived > FR_CONTENDED_WAIT && left - arrived > arrived - m->t_last)
        fr_store(&b->stalled, 1);
    m->t_last = left;
}
