# The engine's thread team: thread count, contention detection, run_on_team; included by
# _compiled.pyx.

# ---------------------------------------------------------------------------------------------
# Threads under contention
# ---------------------------------------------------------------------------------------------
# Every thread's share of a parallel region ends with fr_team_leave (the join: a barrier of the
# engine's own, which notices a thread that waited long and a thread that the OS preempted),
# and fr_team_done follows the region (fr_kernels.h): after FR_CONTENDED_REGIONS contended
# regions within FR_CONTENDED_WINDOW seconds, entry points run on one thread for a while
# (_threads).

cdef inline int _threads(int n) noexcept nogil:
    """The number of threads to use for a parallel part asking for ``n``: one while another
    process keeps the engine's threads from running together."""
    return 1 if n > 1 and fr_contended() else n


def contended():
    """True while the engine runs on one thread because another process competes for the
    cores: in ``CONTENDED_REGIONS`` parallel regions within ``CONTENDED_WINDOW`` s a thread
    waited more than ``CONTENDED_WAIT`` s for a team mate that the OS had preempted (or that
    began late), less than ``CONTENDED_HOLD`` s ago; within ``RECONTENDED_FOR`` s after such a
    hold, one such region is enough."""
    return bool(fr_contended())


def note_contention(double hold_seconds):
    """Act as if contention had just been seen, for ``hold_seconds`` (0: forget it, and the
    contended regions counted so far); for tests and benchmarks."""
    fr_note_contention(hold_seconds)


CONTENDED_WAIT = FR_CONTENDED_WAIT
CONTENDED_REGIONS = FR_CONTENDED_REGIONS
CONTENDED_WINDOW = FR_CONTENDED_WINDOW
CONTENDED_HOLD = FR_CONTENDED_HOLD
#: for this many seconds after a hold, one contended region is enough to switch again
RECONTENDED_FOR = FR_RECONTENDED_FOR
#: regions starting less than WAKING s after IDLE s without one do not count
IDLE = FR_IDLE
WAKING = FR_WAKING


def preemptions_known():
    """True where the OS counts each thread's involuntary context switches (Linux), so that a
    stalled region is contended only if a thread was preempted."""
    return fr_thread_preemptions() >= 0


cdef void _probe_part(int tid, int nth, double delay, double start_late,
                      fr_barrier_t* bar) noexcept nogil:
    """Thread ``tid`` of ``_team_probe``: thread 1 begins its share ``start_late`` seconds
    after the region and arrives ``delay`` seconds late."""
    cdef fr_member_t me
    cdef double t0
    if tid == 1:
        t0 = fr_now()
        while fr_now() - t0 < start_late:
            pass
    fr_member_init(&me)
    if tid == 1:
        t0 = fr_now()
        while fr_now() - t0 < delay:
            pass
    fr_team_leave(bar, nth, &me)


def _team_probe(double delay, bint preempted=True, double start_late=0.0):
    """Run a two-thread region whose second thread arrives ``delay`` seconds late at the join,
    as if preempted by another process (``preempted``) or not (an idle core waking up): the
    contention detector's test (the preemption count of the region is set, not measured, so
    that a stray preemption on an idle machine cannot decide it).  ``start_late``: the second
    thread's share begins that many seconds after the region (as if it had waited for a
    core).  Returns (team size, whether the region counted as contended, whether it began
    in the waking window after an idle pause, where no region counts, whether a share began
    late: by ``start_late`` or because the OS ran a thread late)."""
    cdef int tid, nth
    cdef int team[1]
    cdef fr_barrier_t bar
    fr_barrier_init(&bar)
    team[0] = 1
    with nogil, parallel(num_threads=2):
        tid = openmp.omp_get_thread_num()
        nth = openmp.omp_get_num_threads()
        if tid == 0:
            team[0] = nth
        _probe_part(tid, nth, delay, start_late, &bar)
    bar.preempted = preempted       # what the OS would have counted, made deterministic
    counted = bool(fr_team_done(&bar))     # (first: it opens the waking window it reports)
    return team[0], counted, bool(fr_region_waking(&bar)), bool(bar.late)




def run_on_team(list calls):
    """Call ``calls[i]()`` on thread ``i`` of the engine's OpenMP team (``len(calls)`` threads),
    each holding the GIL only while it starts its call: meant for Numba ``nogil`` kernels, which
    release it at once.  Under contention (see ``contended``) the calls run on the caller.  The kernels then run on the threads that run every other part of the
    engine, instead of beside them (libgomp's idle workers spin for a while after each parallel
    region and would compete with a thread of another pool for the core).  Re-raises the first
    exception after every call returned.  Runs the calls one after the other if the team cannot
    have that many threads."""
    cdef int n = len(calls), tid, got
    cdef fr_barrier_t bar
    fr_barrier_init(&bar)
    errors = [None] * n
    if n == 0:
        return
    if _threads(n) == 1:
        _team_call(calls, errors, 0, 1)
    else:
        with nogil, parallel(num_threads=n):
            tid = openmp.omp_get_thread_num()
            got = openmp.omp_get_num_threads()
            _team_part(calls, errors, tid, got, &bar)
        fr_team_done(&bar)
    for e in errors:
        if e is not None:
            raise e


cdef void _team_part(list calls, list errors, int tid, int got,
                     fr_barrier_t* bar) noexcept nogil:
    """Thread ``tid`` of ``run_on_team``: its calls (holding the GIL to start each), the join."""
    cdef fr_member_t me
    fr_member_init(&me)
    with gil:
        _team_call(calls, errors, tid, got)
    fr_team_leave(bar, got, &me)


cdef void _team_call(list calls, list errors, int tid, int got):
    """Thread ``tid`` of a team of ``got``: its share of ``calls`` (all of them if alone)."""
    cdef int i
    for i in range(tid, len(calls), got):
        try:
            calls[i]()
        except BaseException as e:
            errors[i] = e



def max_threads():
    """Number of threads OpenMP would use by default."""
    return openmp.omp_get_max_threads()



cdef int g_num_threads = 1      # the engine's thread count (fastrnn.engine.set_num_threads)


def set_threads(int n):
    """Set the engine's thread count as seen by the streaming kernels."""
    global g_num_threads
    g_num_threads = max(1, n)
