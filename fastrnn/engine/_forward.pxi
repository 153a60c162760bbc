# The forward driver: input projection, one timestep of one work item, the time loop and the
# stacked (bi)directional forward; included by _compiled.pyx.


# ---------------------------------------------------------------------------------------------
# Input projection: xp[:, off:off+N] = X @ W^T  (one GEMM over all B*T rows, split by rows)
# ---------------------------------------------------------------------------------------------

cdef void _proj_part(const fr_kernels_t* kt, int tid, int nth,
                     Py_ssize_t R, Py_ssize_t K, Py_ssize_t N,
                     const floating* X, const floating* W, floating* Y, Py_ssize_t ldy,
                     floating* wpk, bint packed, fr_barrier_t* bar) noexcept nogil:
    """Thread ``tid`` of ``nth``: its share of packing W^T (unless ``packed``: ``wpk`` holds
    it already), a barrier, its rows of Y, the join."""
    cdef fr_member_t me
    cdef unsigned long csr = fr_ftz_enter()
    fr_member_init(&me)
    if not packed:
        _pack_panels(kt, W, K, 1, N, 0, N, wpk, tid, nth)
        fr_barrier_wait(bar, nth, &me)
    _gemm_rows(kt, tid, nth, R, N, K, X, K, False, wpk, Y, ldy)
    fr_team_leave(bar, nth, &me)
    fr_ftz_exit(csr)


cdef void _projection(const fr_kernels_t* kt, Py_ssize_t R, Py_ssize_t K, Py_ssize_t N,
                      const floating* X,            # IN  (R, K) layer input, rows b*T + t
                      const floating* W,            # IN  (N, K) weight_ih (PyTorch layout)
                      floating* Y, Py_ssize_t ldy,  # OUT (R, ldy): columns 0 .. N written
                      int nthreads,
                      floating* wpk,                # scratch (_packed_size(K, N)), or W^T
                      bint packed) noexcept nogil:  # ... packed already (IN)
    """``Y[:, :N] = X @ W.T`` as one GEMM with the engine's own kernel: W^T panel-packed once
    (the threads share the packing) unless ``packed``, then the rows split over ``nthreads``
    threads in blocks of 128."""
    cdef int tid, nth
    cdef Py_ssize_t r0
    cdef fr_barrier_t bar
    fr_barrier_init(&bar)
    if R == 0 or N == 0:
        return
    if K == 0:
        for r0 in range(R):
            memset(Y + r0 * ldy, 0, N * sizeof(floating))
        return
    if _threads(nthreads) <= 1 or R < 2 * 16:
        _proj_part(kt, 0, 1, R, K, N, X, W, Y, ldy, wpk, packed, &bar)
        return
    with parallel(num_threads=nthreads):
        tid = openmp.omp_get_thread_num()
        nth = openmp.omp_get_num_threads()
        _proj_part(kt, tid, nth, R, K, N, X, W, Y, ldy, wpk, packed, &bar)
    fr_team_done(&bar)


# ---------------------------------------------------------------------------------------------
# One timestep of one work item (batch block x unit block): prefill, recurrent GEMM, gate math
# ---------------------------------------------------------------------------------------------

cdef inline const floating* _xp_row(const floating* xp, Py_ssize_t LX, const int64_t* xrow,
                                    Py_ssize_t b, Py_ssize_t T, Py_ssize_t t) noexcept nogil:
    """Row (b, t) of the input projection: at b*T + t, or xrow[b] + t for compacted input."""
    return xp + ((xrow[b] if xrow != NULL else b * T) + t) * LX


cdef void _step_item(
        const fr_kernels_t* kt,                  # IN  the kernels
        int cell, bint reverse, Py_ssize_t s, Py_ssize_t T, Py_ssize_t H,
        Py_ssize_t P,                            #     width of h: H, or the LSTM's proj_size
        Py_ssize_t G,
        Py_ssize_t p0, Py_ssize_t na,            # first sorted position of the block, active rows
        Py_ssize_t u0, Py_ssize_t nj,            # unit block
        const floating* xp, Py_ssize_t LX,       # IN  input projection (caller rows), dir offset applied
        const floating* bx,                      # IN  (G*H) bias added to xp (GRU n: b_in)
        const floating* bhn,                     # IN  (H)  GRU b_hn
        const floating* whh,                     # IN  recurrent weights: mode 0: W_hh^T block
                                                 #     (P, G*nj) of this unit block, panel-packed;
                                                 #     mode 1: weight_hh (G*H, P) as given;
                                                 #     NULL: h_prev is zero (no recurrent GEMM)
        int mode,                                #     GEMM: 0 panel kernel, 1 dot kernel
        const int64_t* order, const int64_t* lengths,  # IN
        const floating* cur,                     # IN  (na, P) previous h, rows of the block
        floating* nxt,                           # OUT (na, P) new h (only units u0..u0+nj)
        floating* cst,                           # INOUT (na, H) LSTM cell state (units of block)
        floating* y, Py_ssize_t LY,              # OUT y rows (caller rows), dir offset applied
        floating* hN, floating* cN,              # OUT (B, P), (B, H) final states, caller rows
        floating* rec,                           # scratch (na, ldr)
        Py_ssize_t ldr,
        bint store, floating* wg, floating* wc, floating* whn,  # OUT workspace (caller rows)
        const floating* xin=NULL, Py_ssize_t Kx=0,   # IN  streaming: raw input rows (na, Kx)
        const floating* wx1=NULL,                    # IN  its packed W_ih^T block (gates of the
        const floating* wx2=NULL,                    #     block; GRU: r,z in wx1, n in wx2)
        const int64_t* xrow=NULL,                    # IN  row of (b, t=0) in xp (compacted
                                                     #     variable-length input), else b*T
        const floating* hmask=NULL,                  # IN  (B, P) recurrent dropout mask, caller
        floating* hm=NULL,                           #     rows; scratch (na, P): h_prev * mask
        const floating* peep=NULL,                   # IN  (3H) peephole LSTM: p_i, p_f, p_o
        const floating* whr=NULL                     # IN  projected LSTM: W_hr^T (H, P) packed
        ) noexcept nogil:
    """One timestep of one work item: prefill, recurrent GEMM, gate math, outputs.

    Forward mode: ``xp`` holds the precomputed input projection; with the panel kernel the
    recurrent GEMM writes ``rec`` (no prefill) and the gate math adds each row's projection
    and bias as it reads the gates (the reset-before GRU, whose GEMMs read its reset gate, and
    the dot kernel prefill ``rec`` with them instead).  Streaming mode (``xp`` NULL):
    the prefill is the bias only and ``rec += xin @ W_ih^T[block]`` is done here with the panel
    kernel, before the recurrent GEMM.  With ``hmask`` (recurrent dropout) the recurrent GEMM
    reads ``h_prev * mask`` (the gate math still reads ``h_prev``).  With ``whr`` (an LSTM
    with a projection, all H units in one block) the gate math writes ``m = o * tanh(c)`` into
    the fifth slot of each ``rec`` row and ``h = m @ W_hr^T`` (P units) is one more GEMM.
    ``whh`` NULL (a first step from a zero initial state; not the reset-before GRU) skips the
    recurrent GEMM, whose products would all be zero.
    """
    cdef Py_ssize_t r, k, j, b, t, L, row, GH = G * H, N = G * nj
    cdef Py_ssize_t nw = P if whr != NULL else nj     # units of h this item writes
    cdef bint direct = xp != NULL and mode == 0 and cell != FR_GRU_RESET_BEFORE
    cdef floating* rr
    cdef const floating* xr
    cdef const floating* hp
    cdef const floating* hr
    cdef floating* hq
    cdef floating* cr
    # 1. prefill: rec[r] = xp[row] + bias (GRU: n slot <- b_hn, 4th slot <- x_n + b_in)
    if xp == NULL:
        for r in range(na):
            rr = rec + r * ldr
            for k in range(G):
                for j in range(nj):
                    rr[k * nj + j] = bx[k * H + u0 + j]
            if _is_gru(cell):
                for j in range(nj):
                    rr[2 * nj + j] = bhn[u0 + j]
                for j in range(nj):
                    rr[3 * nj + j] = bx[2 * H + u0 + j]
        if _is_gru(cell):
            _gemm_acc(kt, na, 2 * nj, Kx, xin, Kx, wx1, rec, ldr)
            _gemm_acc(kt, na, nj, Kx, xin, Kx, wx2, rec + 3 * nj, ldr)
        else:
            _gemm_acc(kt, na, N, Kx, xin, Kx, wx1, rec, ldr)
    for r in range(na if xp != NULL and not direct else 0):
        b = order[p0 + r]
        L = lengths[b]
        t = (L - 1 - s) if reverse else s
        xr = _xp_row(xp, LX, xrow, b, T, t)
        rr = rec + r * ldr
        if _is_gru(cell):
            for j in range(nj):
                rr[j] = xr[u0 + j] + bx[u0 + j]
            for j in range(nj):
                rr[nj + j] = xr[H + u0 + j] + bx[H + u0 + j]
            for j in range(nj):
                rr[2 * nj + j] = bhn[u0 + j]
            for j in range(nj):
                rr[3 * nj + j] = xr[2 * H + u0 + j] + bx[2 * H + u0 + j]
        else:
            for k in range(G):
                for j in range(nj):
                    rr[k * nj + j] = xr[k * H + u0 + j] + bx[k * H + u0 + j]
    # 2. recurrent GEMM: rec[:, :N] += cur @ W_hh[block]^T (direct: rec[:, :N] = ...)
    hr = cur
    if hmask != NULL and whh != NULL:
        for r in range(na):
            b = order[p0 + r]
            for j in range(P):
                hm[r * P + j] = cur[r * P + j] * hmask[b * P + j]
        hr = hm
    if whh == NULL:     # h_prev is zero, so is the product; direct mode's GEMM would write rec
        if direct:
            for r in range(na):
                memset(rec + r * ldr, 0, N * sizeof(floating))
    elif cell == FR_GRU_RESET_BEFORE:
        _reset_before_gemms(kt, na, H, hr, whh, mode, rec, ldr)
        if store:
            for r in range(na):
                b = order[p0 + r]
                t = (lengths[b] - 1 - s) if reverse else s
                memcpy(whn + (b * T + t) * H, rec + r * ldr + 4 * H, H * sizeof(floating))
    elif mode == 0:
        _gemm_acc(kt, na, N, P, hr, P, whh, rec, ldr, not direct)
    else:
        # per gate k: rows k*H + u0 .. k*H + u0 + nj of W_hh feed rec columns k*nj ..
        for k in range(G):
            _dot_gemm_acc(kt, na, nj, P, hr, P, whh + (k * H + u0) * P, P, rec + k * nj, ldr)
    # 3. gate math, state update (a projected LSTM: m into rec's fifth slot)
    for r in range(na):
        b = order[p0 + r]
        t = (lengths[b] - 1 - s) if reverse else s
        row = b * T + t
        rr = rec + r * ldr
        hp = cur + r * P + u0
        hq = nxt + r * P + u0 if whr == NULL else rr + G * H
        cr = cst + r * H + u0
        _gates(kt, cell, rr, nj,
               _xp_row(xp, LX, xrow, b, T, t) + u0 if direct else NULL,
               bx + u0, bhn + u0, H, hp, cr, hq,
               whn + row * H + u0 if store and cell == FR_GRU else NULL,
               peep + u0 if peep != NULL else NULL)
        if store and _has_c(cell):
            memcpy(wc + row * H + u0, cr, nj * sizeof(floating))
        if store and _has_gates(cell):
            if nj == H:     # all units: the gates are one contiguous row
                memcpy(wg + row * GH, rr, GH * sizeof(floating))
            else:
                for k in range(G):
                    memcpy(wg + row * GH + k * H + u0, rr + k * nj, nj * sizeof(floating))
    # 4. the projection: h = m @ W_hr^T
    if whr != NULL:
        _gemm_acc(kt, na, P, H, rec + G * H, ldr, whr, nxt, P, False)
    # 5. outputs
    for r in range(na):
        b = order[p0 + r]
        L = lengths[b]
        t = (L - 1 - s) if reverse else s
        row = b * T + t
        hq = nxt + r * P + u0
        memcpy(y + row * LY + u0, hq, nw * sizeof(floating))
        if xp != NULL and s + 1 < L:
            # this row's projection for the next step, while the next GEMMs run
            xr = _xp_row(xp, LX, xrow, b, T, (L - 2 - s) if reverse else s + 1)
            for k in range(G):
                fr_prefetch(xr + k * H + u0, nj * sizeof(floating))
        if s == L - 1:
            memcpy(hN + b * P + u0, hq, nw * sizeof(floating))
            if _has_c(cell):
                memcpy(cN + b * H + u0, cst + r * H + u0, nj * sizeof(floating))


cdef inline void _reset_before_gemms(const fr_kernels_t* kt, Py_ssize_t na, Py_ssize_t H,
                                     const floating* hr,   # IN  (na, H) W_hh's operand
                                     const floating* whh, int mode,
                                     floating* rec, Py_ssize_t ldr) noexcept nogil:
    """The recurrent GEMMs of the reset-before GRU (all H units in one block): its r and z
    columns from ``hr``, then ``r * hr`` (into the fifth slot of each ``rec`` row, which the
    training forward keeps) times W_hn into the n slot.  ``whh``: mode 0 the r, z panels
    then the n panels (:func:`_pack_unit_block`); mode 1 weight_hh as given."""
    cdef Py_ssize_t r, j
    cdef floating* rr
    if mode == 0:
        _gemm_acc(kt, na, 2 * H, H, hr, H, whh, rec, ldr)
    else:
        for j in range(2):
            _dot_gemm_acc(kt, na, H, H, hr, H, whh + j * H * H, H, rec + j * H, ldr)
    for r in range(na):
        rr = rec + r * ldr
        _sigmoid_arr(kt, rr, rr + 4 * H, H)
        for j in range(H):
            rr[4 * H + j] *= hr[r * H + j]
    if mode == 0:
        _gemm_acc(kt, na, H, H, rec + 4 * H, ldr, whh + _packed_size(kt, H, 2 * H,
                                                                       sizeof(floating)),
                  rec + 2 * H, ldr)
    else:
        _dot_gemm_acc(kt, na, H, H, rec + 4 * H, ldr, whh + 2 * H * H, H, rec + 2 * H, ldr)


cdef inline Py_ssize_t _active(Py_ssize_t na, Py_ssize_t s, Py_ssize_t p0,
                               const int64_t* order, const int64_t* lengths) noexcept nogil:
    """Shrink the active prefix of a length-sorted block to the rows with length > s."""
    while na > 0 and lengths[order[p0 + na - 1]] <= s:
        na -= 1
    return na


cdef inline void _pack_unit_block(const fr_kernels_t* kt, int cell, const floating* w_src,
                                  Py_ssize_t H, Py_ssize_t P, Py_ssize_t G, const int64_t* ublk,
                                  Py_ssize_t w, floating* whh,   # OUT its block of whh
                                  Py_ssize_t pfirst=0, Py_ssize_t pstep=1) noexcept nogil:
    """Pack unit block ``w`` of W_hh ((G*H, P): rows of its units in every gate) into its
    place in the array of separately packed blocks (only panels pfirst, pfirst + pstep, ...).
    The reset-before GRU (one block of all units) packs its r, z rows and its n rows apart: its
    step multiplies them by different operands."""
    cdef Py_ssize_t u0 = ublk[w], nj = ublk[w + 1] - ublk[w]
    cdef floating* out = whh + w * _hh_block_size(kt, cell, P, G, ublk[1], sizeof(floating))
    if cell == FR_GRU_RESET_BEFORE:
        _pack_panels(kt, w_src, H, 2, H, u0, nj, out, pfirst, pstep)
        _pack_panels(kt, w_src + 2 * H * H, H, 1, H, u0, nj,
                     out + _packed_size(kt, H, 2 * nj, sizeof(floating)), pfirst, pstep)
    else:
        _pack_panels(kt, w_src, P, G, H, u0, nj, out, pfirst, pstep)


cdef inline void _pack_projection(const fr_kernels_t* kt, const floating* w_hr, Py_ssize_t H,
                                  Py_ssize_t P,
                                  floating* out,      # OUT W_hr^T (H, P) panel-packed
                                  Py_ssize_t pfirst=0, Py_ssize_t pstep=1) noexcept nogil:
    """Pack a projected LSTM's W_hr ((P, H), PyTorch's layout) as the step's projection GEMM
    ``h = m @ W_hr^T`` reads it (only panels pfirst, pfirst + pstep, ...)."""
    _pack_panels(kt, w_hr, H, 1, P, 0, P, out, pfirst, pstep)


cdef struct _InStep:
    # The input projected inside each step (``x_t @ W_ih^T`` of a work item's rows, the panel
    # kernel on W_ih packed per unit block), instead of one projection GEMM before the time
    # loop: the projection never goes through memory and the call has one parallel region.
    const void* src         # IN  (B, T, K) layer input, row of (b, t) at b*T + t
    Py_ssize_t K
    const void* w_ih        # IN  (G*H, K) weight_ih to pack into wx1 / wx2 first, or NULL
    void* wx1               # packed W_ih^T unit blocks: every gate but GRU's n
    void* wx2               # ... GRU's n (else unused)
    void* xg                # scratch: one (rows, K) gather buffer per work item
    Py_ssize_t xg_stride


cdef struct _RecDropout:
    # Recurrent dropout of one layer-direction: W_hh reads h_prev * mask.
    const void* mask        # IN  (B, H) caller rows
    void* hm                # scratch: one (rows, H) buffer per work item
    Py_ssize_t hm_stride


cdef inline void _pack_input_block(const fr_kernels_t* kt, int cell, const floating* w_ih,
                                   Py_ssize_t K, Py_ssize_t H, Py_ssize_t G,
                                   const int64_t* ublk, Py_ssize_t w,
                                   floating* wx1, floating* wx2,   # OUT their block w
                                   Py_ssize_t pfirst, Py_ssize_t pstep) noexcept nogil:
    """Pack unit block ``w`` of W_ih as a step's input GEMM reads it: the gates in ``wx1``
    (GRU: r and z; its n in ``wx2``, added to its own slot), blocks packed separately;
    only panels pfirst, pfirst + pstep, ..."""
    cdef Py_ssize_t u0 = ublk[w], nj = ublk[w + 1] - ublk[w]
    cdef Py_ssize_t n1 = 2 if _is_gru(cell) else G
    _pack_panels(kt, w_ih, K, n1, H, u0, nj,
                 wx1 + _block_offset(kt, K, n1, u0, ublk[1], sizeof(floating)), pfirst, pstep)
    if _is_gru(cell):
        _pack_panels(kt, w_ih + 2 * H * K, K, 1, H, u0, nj,
                     wx2 + _block_offset(kt, K, 1, u0, ublk[1], sizeof(floating)), pfirst,
                     pstep)


cdef inline floating* _gather_inputs(const _InStep* xs, Py_ssize_t w, bint reverse,
                                     Py_ssize_t s, Py_ssize_t T, Py_ssize_t p0, Py_ssize_t na,
                                     const int64_t* order, const int64_t* lengths,
                                     floating* tag) noexcept nogil:
    """Copy the layer input of step ``s`` of the ``na`` active rows of the block at sorted
    position ``p0`` into work item ``w``'s gather buffer (rows of K); returns the buffer."""
    cdef floating* xg = <floating*>xs.xg + w * xs.xg_stride
    cdef const floating* src = <const floating*>xs.src
    cdef Py_ssize_t r, b, t
    for r in range(na):
        b = order[p0 + r]
        t = (lengths[b] - 1 - s) if reverse else s
        memcpy(xg + r * xs.K, src + (b * T + t) * xs.K, xs.K * sizeof(floating))
    return xg


cdef void _worker(const fr_kernels_t* kt, int tid, int nth, int cell, bint reverse, Py_ssize_t T, Py_ssize_t tmax,
                  Py_ssize_t B, Py_ssize_t H, Py_ssize_t P, Py_ssize_t G,
                  const floating* xp, Py_ssize_t LX, const floating* bx, const floating* bhn,
                  const floating* whh, int mode,
                  const int64_t* ublk, Py_ssize_t nu, const int64_t* bblk, Py_ssize_t nb,
                  const int64_t* order, const int64_t* lengths,
                  floating* hbuf, floating* cbuf, floating* y, Py_ssize_t LY,
                  floating* hN, floating* cN, floating* scratch, Py_ssize_t scr_stride,
                  Py_ssize_t ldr, bint store, floating* wg, floating* wc, floating* whn,
                  fr_barrier_t* bar, const floating* w_src,
                  const int64_t* xrow, int* next_item, const _InStep* xs,
                  const _RecDropout* rd, const floating* peep,
                  const floating* whr, bint zero_h0) noexcept nogil:
    """Thread ``tid`` of ``nth``: (mode 0, ``w_src`` given) first pack W_hh into ``whh``
    (each thread its own unit blocks, or a share of the panels of the single block), then run
    work items over time: independent batch blocks (one unit block) claimed one at a time from
    ``next_item`` (0 at the start), so that a thread that another process holds up runs fewer;
    with several unit blocks, its share of every step's items.  With ``xs`` each step
    projects its rows' input itself (W_ih packed first when ``xs.w_ih`` is given).
    ``zero_h0``: the initial state is zero, so step 0 has no recurrent GEMM."""
    cdef Py_ssize_t w, s, bi, uj, p0, na, u0, nj, nitems = nb * nu
    cdef Py_ssize_t Kx = xs.K if xs != NULL else 0
    cdef Py_ssize_t n1 = 2 if _is_gru(cell) else G
    cdef floating* xin = NULL
    cdef const floating* hmask = <const floating*>rd.mask if rd != NULL else NULL
    cdef floating* hm = NULL
    cdef const floating* wx1 = NULL
    cdef const floating* wx2 = NULL
    cdef fr_member_t me
    cdef Py_ssize_t BP = B * P
    cdef const floating* wblk
    cdef floating* cur
    cdef floating* nxt
    cdef unsigned long csr = fr_ftz_enter()
    fr_member_init(&me)
    zero_h0 = zero_h0 and cell != FR_GRU_RESET_BEFORE   # (whose step GEMMs are not skipped)
    cdef Py_ssize_t na_local[64]          # per-item active counts (nitems <= 64 enforced by caller)
    for w in range(nitems):
        na_local[w] = bblk[w // nu + 1] - bblk[w // nu]
    if mode == 0 and w_src != NULL:
        if nu > 1:
            w = tid
            while w < nu:
                _pack_unit_block(kt, cell, w_src, H, P, G, ublk, w, <floating*>whh)
                w += nth
        else:
            _pack_unit_block(kt, cell, w_src, H, P, G, ublk, 0, <floating*>whh, tid, nth)
    if xs != NULL and xs.w_ih != NULL:
        w = tid if nu > 1 else 0
        while w < nu:
            _pack_input_block(kt, cell, <const floating*>xs.w_ih, Kx, H, G, ublk, w,
                              <floating*>xs.wx1, <floating*>xs.wx2,
                              0 if nu > 1 else tid, 1 if nu > 1 else nth)
            w += nth if nu > 1 else 1
    if (mode == 0 and w_src != NULL) or (xs != NULL and xs.w_ih != NULL):
        fr_barrier_wait(bar, nth, &me)
    if xs != NULL:
        wx1 = <const floating*>xs.wx1
        wx2 = <const floating*>xs.wx2 if _is_gru(cell) else NULL
    if nu == 1:
        # independent batch blocks: each runs its own time loop, no synchronisation
        w = fr_claim(next_item)
        while w < nitems:
            p0 = bblk[w]
            na = na_local[w]
            for s in range(tmax):
                na = _active(na, s, p0, order, lengths)
                if na == 0:
                    break
                cur = hbuf + (s & 1) * BP + p0 * P
                nxt = hbuf + ((s + 1) & 1) * BP + p0 * P
                if xs != NULL:
                    xin = _gather_inputs(xs, w, reverse, s, T, p0, na, order, lengths, cur)
                if rd != NULL:
                    hm = <floating*>rd.hm + w * rd.hm_stride
                wblk = NULL if zero_h0 and s == 0 else whh
                _step_item(kt, cell, reverse, s, T, H, P, G, p0, na, 0, H, xp, LX, bx, bhn,
                           wblk, mode, order, lengths, cur, nxt, cbuf + p0 * H, y, LY, hN, cN,
                           scratch + w * scr_stride, ldr, store, wg, wc, whn,
                           xin, Kx, wx1, wx2, xrow, hmask, hm, peep, whr)
            w = fr_claim(next_item)
    else:
        for s in range(tmax):
            w = tid
            while w < nitems:
                bi = w // nu
                uj = w - bi * nu
                p0 = bblk[bi]
                na = _active(na_local[w], s, p0, order, lengths)
                na_local[w] = na
                if na > 0:
                    u0 = ublk[uj]
                    nj = ublk[uj + 1] - u0
                    cur = hbuf + (s & 1) * BP + p0 * P
                    nxt = hbuf + ((s + 1) & 1) * BP + p0 * P
                    if zero_h0 and s == 0:
                        wblk = NULL
                    else:
                        wblk = (whh + uj * _hh_block_size(kt, cell, P, G, ublk[1],
                                                          sizeof(floating))
                                if mode == 0 else whh)
                    if xs != NULL:
                        xin = _gather_inputs(xs, w, reverse, s, T, p0, na, order, lengths, cur)
                    if rd != NULL:
                        hm = <floating*>rd.hm + w * rd.hm_stride
                    _step_item(kt, cell, reverse, s, T, H, P, G, p0, na, u0, nj, xp, LX, bx, bhn,
                               wblk, mode, order, lengths, cur, nxt, cbuf + p0 * H, y, LY,
                               hN, cN, scratch + w * scr_stride, ldr, store, wg, wc, whn,
                               xin, Kx,
                               wx1 + _block_offset(kt, Kx, n1, u0, ublk[1], sizeof(floating))
                               if xs != NULL else NULL,
                               wx2 + _block_offset(kt, Kx, 1, u0, ublk[1], sizeof(floating))
                               if wx2 != NULL else NULL, xrow, hmask, hm, peep, whr)
                w += nth
            fr_barrier_wait(bar, nth, &me)
    fr_team_leave(bar, nth, &me)        # the join (see _threads)
    fr_ftz_exit(csr)


cdef void _recurrence(const fr_kernels_t* kt, int cell, bint reverse, Py_ssize_t B, Py_ssize_t T, Py_ssize_t H,
                      Py_ssize_t P,                           # width of h (H, or proj_size)
                      Py_ssize_t G, Py_ssize_t tmax,
                      const floating* xp, Py_ssize_t LX,      # IN  input projection, dir offset applied
                      const floating* bx, const floating* bhn,  # IN biases (see _step_item)
                      const floating* whh, int mode,          # IN  recurrent weights (see _step_item)
                      const int64_t* ublk, Py_ssize_t nu,     # IN  unit blocks
                      const int64_t* bblk, Py_ssize_t nb,     # IN  batch blocks (sorted positions)
                      const int64_t* order, const int64_t* lengths,  # IN
                      floating* hbuf,                         # INOUT (2, B, P), hbuf[0] = h0 sorted
                      floating* cbuf,                         # INOUT (B, H) LSTM c0 sorted
                      floating* y, Py_ssize_t LY,             # OUT outputs, dir offset applied
                      floating* hN, floating* cN,             # OUT (B, P), (B, H) final states
                      floating* scratch, Py_ssize_t scr_stride, Py_ssize_t ldr,
                      bint store, floating* wg, floating* wc, floating* whn,  # OUT workspace
                      int nthreads,
                      const floating* w_src=NULL,   # IN mode 0: W_hh to pack into whh first
                      const int64_t* xrow=NULL,     # IN xp row of (b, 0)
                      const _InStep* xs=NULL,       # IN input projected in steps
                      const _RecDropout* rd=NULL,   # IN recurrent dropout
                      const floating* peep=NULL,    # IN (3H) peepholes
                      const floating* whr=NULL,     # IN packed W_hr^T (projection)
                      bint zero_h0=False) noexcept nogil:  # IN hbuf[0] (h0) is all zeros
    """Run one layer-direction over time, on min(nthreads, nb*nu) threads."""
    cdef int tid, nth
    cdef int next_item = 0
    cdef fr_barrier_t bar
    fr_barrier_init(&bar)
    if B == 0 or tmax == 0:
        return
    if nthreads > nb * nu:
        nthreads = <int>(nb * nu)
    nthreads = _threads(nthreads)
    if nthreads <= 1:
        _worker(kt, 0, 1, cell, reverse, T, tmax, B, H, P, G, xp, LX, bx, bhn, whh, mode, ublk,
                nu, bblk, nb, order, lengths, hbuf, cbuf, y, LY, hN, cN, scratch, scr_stride, ldr,
                store, wg, wc, whn, &bar, w_src, xrow, &next_item, xs, rd, peep, whr, zero_h0)
        return
    with parallel(num_threads=nthreads):
        tid = openmp.omp_get_thread_num()
        nth = openmp.omp_get_num_threads()
        _worker(kt, tid, nth, cell, reverse, T, tmax, B, H, P, G, xp, LX, bx, bhn, whh, mode,
                ublk, nu, bblk, nb, order, lengths, hbuf, cbuf, y, LY, hN, cN, scratch,
                scr_stride, ldr, store, wg, wc, whn, &bar, w_src, xrow, &next_item, xs, rd, peep,
                whr, zero_h0)
    fr_team_done(&bar)


# ---------------------------------------------------------------------------------------------
# The whole stacked (bi)directional forward in one call
# ---------------------------------------------------------------------------------------------

cdef int _check_arr(cnp.ndarray a, str name, int ndim, Py_ssize_t d0, Py_ssize_t d1,
                    Py_ssize_t d2, bint is_double) except -1:
    """Cheap guard against memory errors (the layers validate properly beforehand)."""
    cdef int want = cnp.NPY_FLOAT64 if is_double else cnp.NPY_FLOAT32
    if (cnp.PyArray_NDIM(a) != ndim or cnp.PyArray_TYPE(a) != want
            or not cnp.PyArray_IS_C_CONTIGUOUS(a) or cnp.PyArray_DIM(a, 0) != d0
            or (ndim >= 2 and cnp.PyArray_DIM(a, 1) != d1)
            or (ndim == 3 and cnp.PyArray_DIM(a, 2) != d2)):
        raise ValueError(f"{name} must be a C-contiguous "
                         f"{'float64' if is_double else 'float32'} array of shape "
                         f"{(d0, d1, d2)[:ndim]}, got {(<object>a).dtype} {(<object>a).shape}")
    return 0


cdef inline bint _all_zero(const floating* a, Py_ssize_t n) noexcept nogil:
    """Whether the n values at ``a`` are all zero (NaN is not)."""
    cdef Py_ssize_t i
    for i in range(n):
        if a[i] != 0:
            return False
    return True


cdef inline void* _ptr(object a):
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef object _new(int nd, Py_ssize_t d0, Py_ssize_t d1, Py_ssize_t d2, Py_ssize_t d3,
                 int typenum, bint zero):
    cdef cnp.npy_intp dims[4]
    dims[0] = d0
    dims[1] = d1
    dims[2] = d2
    dims[3] = d3
    if zero:
        return cnp.PyArray_ZEROS(nd, dims, typenum, 0)
    return cnp.PyArray_EMPTY(nd, dims, typenum, 0)


cdef int _check_index(cnp.ndarray a, str name, Py_ssize_t n, Py_ssize_t lo,
                      Py_ssize_t hi) except -1:
    """Cheap guard on a plan array: contiguous int64 of ``n`` entries in ``lo..hi``."""
    cdef const int64_t* v
    cdef Py_ssize_t i
    if (cnp.PyArray_TYPE(a) != cnp.NPY_INT64 or cnp.PyArray_NDIM(a) != 1
            or cnp.PyArray_DIM(a, 0) != n or not cnp.PyArray_IS_C_CONTIGUOUS(a)):
        raise ValueError(f"{name} must be a contiguous int64 array of shape ({n},)")
    v = <const int64_t*>cnp.PyArray_DATA(a)
    for i in range(n):
        if not lo <= v[i] <= hi:
            raise ValueError(f"{name} must be in {lo}..{hi}, got {v[i]} at index {i}")
    return 0


cdef Py_ssize_t _hh_packed_size(const fr_kernels_t* kt, int cell, Py_ssize_t K, Py_ssize_t G,
                                cnp.ndarray ublk_arr, Py_ssize_t elsize):
    """Elements of W_hh (rows of K: the width of h) packed as the unit blocks ``ublk_arr``
    (each block separately)."""
    cdef const int64_t* ublk = <const int64_t*>_ptr(ublk_arr)
    cdef Py_ssize_t nu = cnp.PyArray_DIM(ublk_arr, 0) - 1
    return nu * _hh_block_size(kt, cell, K, G, ublk[1] - ublk[0], elsize)


cdef Py_ssize_t _in_packed_size(const fr_kernels_t* kt, Py_ssize_t K, Py_ssize_t n,
                                cnp.ndarray ublk_arr, Py_ssize_t elsize):
    """Elements of W_ih's input blocks of ``n`` gates (K inputs) packed as the unit blocks
    ``ublk_arr`` (each block separately; see _pack_input_block)."""
    cdef const int64_t* ublk = <const int64_t*>_ptr(ublk_arr)
    cdef Py_ssize_t nu = cnp.PyArray_DIM(ublk_arr, 0) - 1
    return nu * _packed_size(kt, K, n * (ublk[1] - ublk[0]), elsize)


cdef object _forward_impl(floating tag, int cell, cnp.ndarray x, list w_ih, list w_hh,
                          list bx, list bhn, object h0, object c0,
                          cnp.ndarray lengths, cnp.ndarray order_arr, cnp.ndarray bblk_arr,
                          cnp.ndarray ublk_arr, bint partial,
                          Py_ssize_t L, Py_ssize_t D, bint training, int nthreads, int mode,
                          int proj_threads, object packed, bint in_step,
                          list layer_masks, object recurrent_masks, list peepholes,
                          list w_hr):
    cdef int typenum = cnp.NPY_FLOAT64 if floating is double else cnp.NPY_FLOAT32
    cdef Py_ssize_t B = cnp.PyArray_DIM(x, 0), T = cnp.PyArray_DIM(x, 1)
    cdef Py_ssize_t I = cnp.PyArray_DIM(x, 2)
    cdef Py_ssize_t G = 4 if _has_c(cell) else (3 if _is_gru(cell) else 1)
    # the width of h: W_hh's columns (a projected LSTM's proj_size, else H)
    cdef Py_ssize_t P = cnp.PyArray_DIM(<cnp.ndarray>w_hh[0], 1)
    cdef Py_ssize_t H = cnp.PyArray_DIM(<cnp.ndarray>w_hh[0], 0) // G
    cdef Py_ssize_t GH = G * H, BH = B * H, BP = B * P, BT = B * T
    cdef Py_ssize_t layer, d, idx, i, p, b, tmax, rows, max_nj, ldr, step, I_l
    cdef Py_ssize_t nitems, LX, GHp, whr_size = 0
    cdef Py_ssize_t nb = cnp.PyArray_DIM(bblk_arr, 0) - 1, nu = cnp.PyArray_DIM(ublk_arr, 0) - 1
    cdef bint store, zero_h0
    cdef int64_t* lens
    cdef int64_t* order
    cdef int64_t* bblk_p
    cdef int64_t* ublk_p
    cdef const floating* src
    cdef floating* bx_p
    cdef floating* bhn_p
    cdef floating* hb
    cdef floating* cb
    cdef floating* wpi_p
    cdef const floating* whh_p
    cdef floating* xp_p
    cdef floating* y_p
    cdef floating* inp_p
    cdef floating* wg_p
    cdef floating* wc_p
    cdef floating* whn_p
    cdef floating* cN_p
    cdef floating* hN_p
    cdef floating* scr_p
    cdef const floating* wih_p
    cdef const floating* wsrc_p
    cdef floating* xc_p = NULL
    cdef int64_t* xrow
    cdef Py_ssize_t R
    cdef const fr_kernels_t* kt = g_kt
    cdef _InStep xs
    cdef _InStep* xs_p = NULL
    cdef _RecDropout rdrop
    cdef _RecDropout* rd_p = NULL
    cdef const floating* peep_p = NULL
    cdef const floating* whr_p = NULL
    cdef Py_ssize_t Kmax = max(I, D * P), n1 = 2 if _is_gru(cell) else G

    # cheap guards against memory errors (the layers validate, the planner plans beforehand)
    if (w_hr is not None) != (P != H) or (w_hr is not None and not _has_c(cell)):
        raise ValueError(f"w_hh of {P} columns for {H} units: a projection (w_hr) is "
                         "given for an LSTM whose w_hh has proj_size columns, and only for it")
    for layer in range(L):
        for d in range(D):
            idx = layer * D + d
            _check_arr(w_ih[idx], f"w_ih[{idx}]", 2, GH, I if layer == 0 else D * P, 0,
                       floating is double)
            _check_arr(w_hh[idx], f"w_hh[{idx}]", 2, GH, P, 0, floating is double)
            _check_arr(bx[idx], f"bx[{idx}]", 1, GH, 0, 0, floating is double)
            _check_arr(bhn[idx], f"bhn[{idx}]", 1, H, 0, 0, floating is double)
            if w_hr is not None:
                _check_arr(w_hr[idx], f"w_hr[{idx}]", 2, P, H, 0, floating is double)
    if h0 is not None:
        _check_arr(h0, "h0", 3, L * D, B, P, floating is double)
    if c0 is not None and _has_c(cell):
        _check_arr(c0, "c0", 3, L * D, B, H, floating is double)
    if layer_masks is not None:
        if len(layer_masks) != L - 1:
            raise ValueError(f"one layer mask between each two layers expected ({L - 1}), got "
                             f"{len(layer_masks)}")
        for layer in range(L - 1):
            _check_arr(layer_masks[layer], f"layer_masks[{layer}]", 3, B, T, D * P,
                       floating is double)
    if recurrent_masks is not None:
        _check_arr(recurrent_masks, "recurrent_masks", 3, L * D, B, P, floating is double)
    if (peepholes is not None) != (cell == FR_LSTM_PEEPHOLE):
        raise ValueError("peepholes are given for the peephole LSTM, and only for it")
    for idx in range(L * D if peepholes is not None else 0):
        _check_arr(peepholes[idx], f"peepholes[{idx}]", 1, 3 * H, 0, 0, floating is double)
    _check_index(lengths, "lengths", B, 1, T)
    _check_index(order_arr, "order", B, 0, B - 1)
    _check_index(bblk_arr, "batch blocks", nb + 1, 0, B)
    _check_index(ublk_arr, "unit blocks", nu + 1, 0, H)
    if not 1 <= nb * nu <= 64:            # at most 64 work items (see _worker)
        raise ValueError(f"at most 64 work items, got {nb} x {nu}")
    if (cell == FR_GRU_RESET_BEFORE or w_hr is not None) and nu != 1:
        raise ValueError("the reset-before GRU and the projected LSTM run their units in one "
                         "block")
    cdef list packed_ih = None, packed_hh = None, packed_ihb = None
    cdef bint same_blocks
    # packed for the kernels in use (else ignored), W_hh and the input blocks of W_ih for
    # these unit blocks (else repacked)
    if packed is not None and packed[0] == kt.name.decode():
        same_blocks = packed[1] == tuple(ublk_arr.tolist())
        packed_ih = packed[2] if not in_step else None
        if mode == 0 and packed[3] is not None and same_blocks:
            packed_hh = packed[3]
        if in_step and len(packed) > 4 and packed[4] is not None and same_blocks:
            packed_ihb = packed[4]
        if (packed_ih is not None and len(packed_ih) != L * D) or \
                (packed_hh is not None and len(packed_hh) != L * D) or \
                (packed_ihb is not None and len(packed_ihb) != 2 * L * D):
            raise ValueError("one packed weight per layer and direction expected")
        for idx in range(L * D):
            I_l = I if idx < D else D * P
            if packed_ih is not None:
                _check_arr(packed_ih[idx], f"packed w_ih[{idx}]", 1,
                           _packed_size(kt, I_l, GH, sizeof(floating)), 0, 0, floating is double)
            if packed_hh is not None:
                _check_arr(packed_hh[idx], f"packed w_hh[{idx}]", 1,
                           _hh_packed_size(kt, cell, P, G, ublk_arr, sizeof(floating)), 0, 0,
                           floating is double)
            if packed_ihb is not None:
                _check_arr(packed_ihb[2 * idx], f"packed input blocks [{2 * idx}]", 1,
                           _in_packed_size(kt, I_l, n1, ublk_arr, sizeof(floating)), 0, 0,
                           floating is double)
                _check_arr(packed_ihb[2 * idx + 1], f"packed input blocks [{2 * idx + 1}]", 1,
                           _in_packed_size(kt, I_l, 1, ublk_arr, sizeof(floating))
                           if _is_gru(cell) else 1, 0, 0, floating is double)
    lens = <int64_t*>_ptr(lengths)
    order = <int64_t*>_ptr(order_arr)
    bblk_p = <int64_t*>_ptr(bblk_arr)
    ublk_p = <int64_t*>_ptr(ublk_arr)
    tmax = 0
    for b in range(B):
        tmax = max(tmax, lens[b])
    rows = 0
    for i in range(nb):
        rows = max(rows, bblk_p[i + 1] - bblk_p[i])
    step = ublk_p[1] - ublk_p[0]          # every unit block but the last is this wide
    max_nj = step
    # rec rows: the gates (GRUs: a fourth slot, x's part of n; the reset-before GRU: a fifth,
    # r * h_prev; the projected LSTM: a fifth, m = o * tanh(c))
    ldr = _rec_width(cell, G, max_nj, w_hr is not None)
    nitems = nb * nu
    h_n = _new(3, L * D, B, P, 0, typenum, False)
    c_n = _new(3, L * D, B, H, 0, typenum, False) if _has_c(cell) else None
    cN_dummy = _new(1, BH if BH > 0 else 1, 0, 0, 0, typenum, False)
    hbuf = _new(1, 2 * BP, 0, 0, 0, typenum, False)
    cbuf = _new(1, BH if BH > 0 else 1, 0, 0, 0, typenum, False)
    scratch = _new(1, nitems * rows * ldr, 0, 0, 0, typenum, False)
    wpk = (_new(1, _hh_packed_size(kt, cell, P, G, ublk_arr, sizeof(floating)), 0, 0, 0, typenum,
                False) if mode == 0 and packed_hh is None else None)
    whr_pk = None
    if w_hr is not None:      # W_hr^T of every layer and direction, packed once per call
        whr_size = _packed_size(kt, H, P, sizeof(floating))
        whr_pk = _new(1, L * D * whr_size, 0, 0, 0, typenum, False)
        for idx in range(L * D):
            src = <const floating*>_ptr(w_hr[idx])
            wpi_p = <floating*>_ptr(whr_pk) + idx * whr_size
            with nogil:
                _pack_projection(kt, src, H, P, wpi_p)
    wpi = (_new(1, _packed_size(kt, Kmax, GH, sizeof(floating)), 0, 0, 0, typenum,
                False) if packed_ih is None and not in_step else None)
    if recurrent_masks is not None:
        hm_buf = _new(1, nitems * rows * P, 0, 0, 0, typenum, False)
        rdrop.hm = _ptr(hm_buf)
        rdrop.hm_stride = rows * P
        rd_p = &rdrop
    if in_step:
        xg = _new(1, nitems * rows * Kmax, 0, 0, 0, typenum, False)
        xs.xg = _ptr(xg)
        xs.xg_stride = rows * Kmax
        if packed_ihb is None:
            wx1 = _new(1, _in_packed_size(kt, Kmax, n1, ublk_arr, sizeof(floating)), 0, 0, 0,
                       typenum, False)
            wx2 = _new(1, _in_packed_size(kt, Kmax, 1, ublk_arr, sizeof(floating))
                       if _is_gru(cell) else 1, 0, 0, 0, typenum, False)
        xs_p = &xs
    # variable lengths: the input projection only covers valid steps; sequence b's rows are
    # compacted to xc[xrow[b] : xrow[b] + lens[b]] (one copy of the layer input, then one GEMM)
    R = BT if not in_step else 0
    xrow_arr = None
    xrow = NULL
    if partial and not in_step:
        xrow_arr = _new(1, B, 0, 0, 0, cnp.NPY_INT64, False)
        xrow = <int64_t*>_ptr(xrow_arr)
        R = 0
        for b in range(B):
            xrow[b] = R
            R += lens[b]
        xc = _new(1, R * max(I, D * P), 0, 0, 0, typenum, False)
        xc_p = <floating*>_ptr(xc)
    # rows of the projection (and each direction's block) start on 64-byte lines: the GEMM's
    # vector stores then never straddle two lines
    GHp = ((GH + 15) // 16) * 16
    xp = _new(2, R, D * GHp, 0, 0, typenum, False)
    hb = <floating*>_ptr(hbuf)
    cb = <floating*>_ptr(cbuf)
    xp_p = <floating*>_ptr(xp)
    LX = D * GHp
    ws = None
    if training:
        ws = {"outputs": [], "gates": [] if _has_gates(cell) else None,
              "c": [] if _has_c(cell) else None, "hn": [] if _is_gru(cell) else None,
              "lengths": lengths, "layer_masks": layer_masks,
              "recurrent_masks": recurrent_masks}
    inp = x
    for layer in range(L):
        I_l = I if layer == 0 else D * P
        inp_p = <floating*>_ptr(inp)
        if partial and not in_step:
            for b in range(B):
                memcpy(xc_p + xrow[b] * I_l, inp_p + b * T * I_l, lens[b] * I_l * sizeof(floating))
            inp_p = xc_p
        y = _new(3, B, T, D * P, 0, typenum, partial)
        y_p = <floating*>_ptr(y)
        wg_p = wc_p = whn_p = NULL
        if training:
            ws["outputs"].append(y)
            if _has_gates(cell):
                a = _new(4, D, B, T, GH, typenum, partial)
                ws["gates"].append(a)
                wg_p = <floating*>_ptr(a)
            if _has_c(cell):
                a = _new(4, D, B, T, H, typenum, partial)
                ws["c"].append(a)
                wc_p = <floating*>_ptr(a)
            if _is_gru(cell):
                a = _new(4, D, B, T, H, typenum, partial)
                ws["hn"].append(a)
                whn_p = <floating*>_ptr(a)
        for d in range(D if not in_step else 0):
            wih_p = <const floating*>_ptr(w_ih[layer * D + d])
            wpi_p = <floating*>_ptr(wpi if packed_ih is None else packed_ih[layer * D + d])
            with nogil:
                _projection(kt, R, I_l, GH, inp_p, wih_p, xp_p + d * GHp, LX, proj_threads,
                            wpi_p, packed_ih is not None)
        for d in range(D):
            idx = layer * D + d
            bx_p = <floating*>_ptr(bx[idx])     # folded by the planner
            bhn_p = <floating*>_ptr(bhn[idx])
            # initial state, gathered into sorted order
            zero_h0 = h0 is None
            if zero_h0:
                memset(hb, 0, BP * sizeof(floating))
            else:
                src = <const floating*>_ptr(h0) + idx * BP
                for p in range(B):
                    memcpy(hb + p * P, src + order[p] * P, P * sizeof(floating))
                zero_h0 = _all_zero(hb, BP)     # (the layers pass zeros for "no state")
            if _has_c(cell):
                if c0 is None:
                    memset(cb, 0, BH * sizeof(floating))
                else:
                    src = <const floating*>_ptr(c0) + idx * BH
                    for p in range(B):
                        memcpy(cb + p * H, src + order[p] * H, H * sizeof(floating))
            whh_p = <const floating*>_ptr(w_hh[idx])
            wsrc_p = NULL
            if mode == 0 and packed_hh is not None:
                whh_p = <const floating*>_ptr(packed_hh[idx])
            elif mode == 0:
                # packed inside the parallel region, each thread its own share
                wsrc_p = whh_p
                whh_p = <floating*>_ptr(wpk)
            store = training and _has_gates(cell)
            cN_p = <floating*>_ptr(c_n) + idx * BH if _has_c(cell) else <floating*>_ptr(cN_dummy)
            hN_p = <floating*>_ptr(h_n) + idx * BP
            scr_p = <floating*>_ptr(scratch)
            if rd_p != NULL:
                rdrop.mask = <const floating*>_ptr(recurrent_masks) + idx * BP
            peep_p = <const floating*>_ptr(peepholes[idx]) if peepholes is not None else NULL
            if whr_pk is not None:
                whr_p = <const floating*>_ptr(whr_pk) + idx * whr_size
            if in_step:
                xs.src = inp_p
                xs.K = I_l
                if packed_ihb is None:
                    xs.w_ih = _ptr(w_ih[idx])
                    xs.wx1 = _ptr(wx1)
                    xs.wx2 = _ptr(wx2)
                else:
                    xs.w_ih = NULL
                    xs.wx1 = _ptr(packed_ihb[2 * idx])
                    xs.wx2 = _ptr(packed_ihb[2 * idx + 1])
            with nogil:
                _recurrence(kt, cell, d == 1, B, T, H, P, G, tmax,
                            xp_p + d * GHp if not in_step else NULL, LX, bx_p, bhn_p,
                            whh_p, mode, ublk_p, nu, bblk_p, nb, order, lens, hb, cb,
                            y_p + d * P, D * P, hN_p, cN_p, scr_p, rows * ldr, ldr, store,
                            wg_p + d * BT * GH if wg_p != NULL else NULL,
                            wc_p + d * BT * H if wc_p != NULL else NULL,
                            whn_p + d * BT * H if whn_p != NULL else NULL, nthreads, wsrc_p,
                            xrow, xs_p, rd_p, peep_p, whr_p, zero_h0)
        inp = y if layer_masks is None or layer == L - 1 else y * layer_masks[layer]
    return inp, h_n, c_n, ws


def forward_stack(int cell, cnp.ndarray x not None, list w_ih, list w_hh, list bx, list bhn,
                  object h0, object c0, cnp.ndarray lengths not None,
                  cnp.ndarray order not None, cnp.ndarray batch_blocks not None,
                  cnp.ndarray unit_blocks not None, bint partial, Py_ssize_t num_layers,
                  Py_ssize_t num_directions, bint training, int nthreads, int mode,
                  int proj_threads, object packed=None, bint input_in_step=False,
                  list layer_masks=None, object recurrent_masks=None, list peepholes=None,
                  list w_hr=None):
    """Stacked (bi)directional forward in one call, on a plan made by
    ``fastrnn.engine.plan`` (see ``fastrnn.engine.forward.forward``).

    Arrays must be validated C-contiguous arrays of x's dtype; the parameter lists are indexed
    by ``layer * num_directions + direction``: ``bx`` the folded bias added to the input
    projection (G*H), ``bhn`` GRU's b_hn (H; zeros for the other cells).  ``lengths`` (B,) every
    sequence's length (T when all are full: ``partial`` False), ``order`` the rows sorted by
    length (descending) in interleaved batch blocks whose bounds in ``order`` are
    ``batch_blocks``, ``unit_blocks`` the bounds of the hidden-unit blocks (all int64);
    ``mode``: recurrent GEMM 0 panel kernel (weights packed once per call), 1 dot kernel.
    ``packed``: None (pack the weights in this call), or what :func:`pack_forward_weights`
    returned for these weights, ``unit_blocks`` and ``mode`` (ignored if it was packed for
    other kernels than those in use).  ``input_in_step``: each step projects its rows' input
    (``x_t @ W_ih^T`` with the panel kernel, W_ih packed per unit block) instead of one
    projection GEMM over all rows before the time loop (``proj_threads`` then unused).
    Dropout, as fixed masks of x's dtype (zeros and 1 / (1 - p)): ``layer_masks`` (L - 1 arrays
    (B, T, D*H)) multiply each layer's output but the last before it feeds the next layer;
    ``recurrent_masks`` (L*D, B, H) multiply h_{t-1} where W_hh reads it.  ``peepholes``: the
    peephole LSTM's (3H,) weights (p_i, p_f, p_o) per layer and direction (None otherwise).
    ``w_hr``: a projected LSTM's (P, H) projections per layer and direction (None otherwise;
    then ``w_hh`` are (4H, P), h, y and the masks on h have P columns, one unit block).
    Returns (y, h_n, c_n, workspace-or-None).
    """
    if mode not in (0, 1):
        raise ValueError(f"mode must be 0 (panel kernel) or 1 (dot kernel), got {mode}")
    if (cnp.PyArray_NDIM(x) != 3 or not cnp.PyArray_IS_C_CONTIGUOUS(x)
            or cnp.PyArray_TYPE(x) not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64)):
        raise ValueError("x must be a C-contiguous float32 or float64 array of shape (B, T, I)")
    if len(w_ih) != num_layers * num_directions or len(w_hh) != len(w_ih) \
            or len(bx) != len(w_ih) or len(bhn) != len(w_ih):
        raise ValueError("one weight per layer and direction expected")
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT64:
        return _forward_impl(<double>0, cell, x, w_ih, w_hh, bx, bhn, h0, c0, lengths, order,
                             batch_blocks, unit_blocks, partial, num_layers, num_directions,
                             training, nthreads, mode, proj_threads, packed, input_in_step,
                             layer_masks, recurrent_masks, peepholes, w_hr)
    return _forward_impl(<float>0, cell, x, w_ih, w_hh, bx, bhn, h0, c0, lengths, order,
                         batch_blocks, unit_blocks, partial, num_layers, num_directions,
                         training, nthreads, mode, proj_threads, packed, input_in_step,
                         layer_masks, recurrent_masks, peepholes, w_hr)


# ---------------------------------------------------------------------------------------------
# Weights packed once for many forward calls
# ---------------------------------------------------------------------------------------------

cdef object _pack_weights_impl(floating tag, int cell, list w_ih, list w_hh, Py_ssize_t G,
                               cnp.ndarray ublk_arr, bint input_weights,
                               bint recurrent_weights, bint input_blocks):
    cdef const fr_kernels_t* kt = g_kt
    cdef int typenum = cnp.NPY_FLOAT64 if floating is double else cnp.NPY_FLOAT32
    cdef const int64_t* ublk = <const int64_t*>_ptr(ublk_arr)
    cdef Py_ssize_t nu = cnp.PyArray_DIM(ublk_arr, 0) - 1
    cdef Py_ssize_t idx, w, K, GH, H, P
    cdef const floating* src
    cdef floating* dst
    cdef Py_ssize_t n1 = 2 if _is_gru(cell) else G
    ih = [] if input_weights else None
    hh = [] if recurrent_weights else None
    ihb = [] if input_blocks else None
    for idx in range(len(w_ih) if input_weights else 0):
        GH = cnp.PyArray_DIM(<cnp.ndarray>w_ih[idx], 0)
        K = cnp.PyArray_DIM(<cnp.ndarray>w_ih[idx], 1)
        _check_arr(w_ih[idx], f"w_ih[{idx}]", 2, GH, K, 0, floating is double)
        out = _new(1, _packed_size(kt, K, GH, sizeof(floating)), 0, 0, 0, typenum, False)
        src = <const floating*>_ptr(w_ih[idx])
        dst = <floating*>_ptr(out)
        with nogil:
            _pack_panels(kt, src, K, 1, GH, 0, GH, dst)
        ih.append(out)
    if w_hh:    # (W_hh is (G*H, P): P the width of h, a projected LSTM's proj_size)
        H = cnp.PyArray_DIM(<cnp.ndarray>w_hh[0], 0) // G
        P = cnp.PyArray_DIM(<cnp.ndarray>w_hh[0], 1)
    if recurrent_weights and w_hh:
        _check_index(ublk_arr, "unit blocks", nu + 1, 0, H)
    for idx in range(len(w_hh) if recurrent_weights else 0):
        _check_arr(w_hh[idx], f"w_hh[{idx}]", 2, G * H, P, 0, floating is double)
        out = _new(1, _hh_packed_size(kt, cell, P, G, ublk_arr, sizeof(floating)), 0, 0, 0, typenum,
                   False)
        src = <const floating*>_ptr(w_hh[idx])
        dst = <floating*>_ptr(out)
        with nogil:
            for w in range(nu):
                _pack_unit_block(kt, cell, src, H, P, G, ublk, w, dst)
        hh.append(out)
    if input_blocks and w_hh:
        _check_index(ublk_arr, "unit blocks", nu + 1, 0, H)
    for idx in range(len(w_ih) if input_blocks else 0):
        K = cnp.PyArray_DIM(<cnp.ndarray>w_ih[idx], 1)
        _check_arr(w_ih[idx], f"w_ih[{idx}]", 2, G * H, K, 0, floating is double)
        out = _new(1, _in_packed_size(kt, K, n1, ublk_arr, sizeof(floating)), 0, 0, 0, typenum,
                   False)
        out2 = _new(1, _in_packed_size(kt, K, 1, ublk_arr, sizeof(floating))
                    if _is_gru(cell) else 1, 0, 0, 0, typenum, False)
        src = <const floating*>_ptr(w_ih[idx])
        dst = <floating*>_ptr(out)
        dst2 = <floating*>_ptr(out2)
        with nogil:
            for w in range(nu):
                _pack_input_block(kt, cell, src, K, H, G, ublk, w, dst, dst2, 0, 1)
        ihb.extend([out, out2])
    return kt.name.decode(), tuple(ublk_arr.tolist()), ih, hh, ihb


def pack_forward_weights(list w_ih, list w_hh, Py_ssize_t gates, cnp.ndarray unit_blocks not None,
                         bint input_weights=True, bint recurrent_weights=True,
                         bint input_blocks=False, int cell=-1):
    """Pack the weights of a stacked forward once, for many ``forward_stack`` calls.

    ``w_ih``, ``w_hh``: as for ``forward_stack`` (all of one dtype); W_hh is packed as the
    panel kernel (mode 0) of calls with these ``unit_blocks`` reads it; W_ih whole for the
    projection GEMM (``input_weights``) and in unit blocks for calls that project the input
    in each step (``input_blocks``: two arrays per layer and direction, GRU's n gate in the
    second).  Returns ``(isa, unit blocks, packed w_ih list, packed w_hh list, input blocks
    list)`` (None where not asked for), to be passed as ``forward_stack(..., packed=...)``: the
    kernels of ``isa`` are the ones it fits, and a call with other unit blocks or in mode 1
    packs what it lacks itself.  ``cell``: the cell's code (default: the plain cell of
    ``gates`` gates; the reset-before GRU packs W_hh differently).
    """
    if not w_ih or len(w_hh) != len(w_ih):
        raise ValueError("one weight per layer and direction expected")
    if cell < 0:                # the cell's packing follows from its gates but for one GRU
        cell = FR_GRU if gates == 3 else (FR_LSTM if gates == 4 else FR_RNN_TANH)
    if cnp.PyArray_TYPE(<cnp.ndarray>w_ih[0]) == cnp.NPY_FLOAT64:
        return _pack_weights_impl(<double>0, cell, w_ih, w_hh, gates, unit_blocks,
                                  input_weights, recurrent_weights, input_blocks)
    return _pack_weights_impl(<float>0, cell, w_ih, w_hh, gates, unit_blocks, input_weights,
                              recurrent_weights, input_blocks)


def pack_projection(cnp.ndarray w_hr not None):
    """A projected LSTM's W_hr ((P, H), C-contiguous float32 or float64) packed for the
    kernels in use as a step's projection GEMM reads it (W_hr^T panels), for
    :class:`StepKernel`."""
    if cnp.PyArray_TYPE(w_hr) == cnp.NPY_FLOAT64:
        return _pack_projection_impl(<double>0, w_hr)
    return _pack_projection_impl(<float>0, w_hr)


cdef object _pack_projection_impl(floating tag, cnp.ndarray w_hr):
    cdef const fr_kernels_t* kt = g_kt
    cdef int typenum = cnp.NPY_FLOAT64 if floating is double else cnp.NPY_FLOAT32
    cdef Py_ssize_t P = cnp.PyArray_DIM(w_hr, 0), H = cnp.PyArray_DIM(w_hr, 1)
    _check_arr(w_hr, "w_hr", 2, P, H, 0, floating is double)
    out = _new(1, _packed_size(kt, H, P, sizeof(floating)), 0, 0, 0, typenum, False)
    cdef const floating* src = <const floating*>_ptr(w_hr)
    cdef floating* dst = <floating*>_ptr(out)
    with nogil:
        _pack_projection(kt, src, H, P, dst)
    return out
