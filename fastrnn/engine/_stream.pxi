# Streaming: one timestep of a stacked unidirectional network, weights prepared once;
# included by _compiled.pyx.
# ---------------------------------------------------------------------------------------------
# Streaming: one timestep of a stacked unidirectional network, weights prepared once
# ---------------------------------------------------------------------------------------------


def same_bytes(cnp.ndarray a, cnp.ndarray b):
    """True if the C-contiguous arrays ``a`` and ``b`` hold the same bytes (a NaN equals
    itself, 0.0 differs from -0.0): whether an array still holds what was copied from it."""
    cdef size_t n = <size_t>cnp.PyArray_NBYTES(a)
    cdef const void* p = cnp.PyArray_DATA(a)
    cdef const void* q = cnp.PyArray_DATA(b)
    cdef int r
    if not (cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_IS_C_CONTIGUOUS(b)):
        raise ValueError("same_bytes needs C-contiguous arrays")
    if n != <size_t>cnp.PyArray_NBYTES(b):
        return False
    with nogil:
        r = memcmp(p, q, n)
    return r == 0


cdef void _stack_step_worker(const fr_kernels_t* kt, int tid, int nth, int cell, Py_ssize_t L, Py_ssize_t B,
                             Py_ssize_t I, Py_ssize_t H, Py_ssize_t P, Py_ssize_t G,
                             const floating* x,        # IN  (B, I)
                             void** wih1, void** wih2, # IN  per layer packed W_ih^T blocks
                             void** whh,               # IN  per layer packed W_hh^T blocks
                             void** bx, void** bhn,    # IN  per layer biases
                             void** peep,              # IN  per layer peepholes (3H) or NULL
                             void** whr,               # IN  per layer packed W_hr^T or NULL
                             const int64_t* ublk, Py_ssize_t nu,
                             const int64_t* order, const int64_t* ones,  # IN identity, all 1
                             const floating* h,        # IN  (L, B, P)
                             floating* h_out,          # OUT (L, B, P)
                             floating* c_out,          # INOUT (L, B, H): c on entry, c' on exit
                             floating* hs, floating* cs,            # scratch (B, H) each
                             floating* rec, Py_ssize_t rec_stride, Py_ssize_t ldr,
                             fr_barrier_t* bar) noexcept nogil:
    """One timestep of a stacked unidirectional network; thread ``tid`` of ``nth`` handles unit
    blocks tid, tid+nth, ... of every layer, with a barrier between layers.  ``P`` is the
    width of h: ``H``, or a projected LSTM's proj_size (``whr`` given, one unit block)."""
    cdef Py_ssize_t l, w, u0, nj, I_l, n1
    cdef fr_member_t me
    cdef const floating* inp = x
    cdef unsigned long csr = fr_ftz_enter()
    fr_member_init(&me)
    n1 = 2 if _is_gru(cell) else G
    for l in range(L):
        I_l = I if l == 0 else P
        w = tid
        while w < nu:
            u0 = ublk[w]
            nj = ublk[w + 1] - u0
            _step_item(kt, cell, False, 0, 1, H, P, G, 0, B, u0, nj, NULL, 0,
                       <const floating*>bx[l], <const floating*>bhn[l],
                       <const floating*>whh[l] + w * _hh_block_size(kt, cell, P, G, ublk[1],
                                                                    sizeof(floating)),
                       0, order, ones,
                       h + l * B * P, hs, c_out + l * B * H, h_out + l * B * P, P,
                       h_out + l * B * P, cs, rec + w * rec_stride, ldr, False, NULL, NULL, NULL,
                       inp, I_l,
                       <const floating*>wih1[l] + _block_offset(kt, I_l, n1, u0, ublk[1],
                                                                sizeof(floating)),
                       <const floating*>wih2[l] + _block_offset(kt, I_l, 1, u0, ublk[1],
                                                                sizeof(floating))
                       if _is_gru(cell) else NULL, NULL, NULL, NULL,
                       <const floating*>peep[l], <const floating*>whr[l])
            w += nth
        if l == L - 1:
            fr_team_leave(bar, nth, &me)    # the join (see _threads)
        else:
            fr_barrier_wait(bar, nth, &me)
        inp = h_out + l * B * P
    fr_ftz_exit(csr)


cdef class _StepScratch:
    """The work buffers of one ``StepKernel.step`` call, for batches of up to ``capacity`` rows.

    A call takes a scratch set that no other call is using (``StepKernel._take``), so steps
    from several threads on one kernel never share a buffer."""
    cdef Py_ssize_t capacity
    cdef object order, ones, hs, cs, rec, hzero

    def __init__(self, Py_ssize_t B, Py_ssize_t L, Py_ssize_t H, Py_ssize_t P,
                 Py_ssize_t rec_row, dtype):
        self.order = np.arange(B, dtype=np.int64)
        self.ones = np.ones(B, dtype=np.int64)
        self.hs = np.empty(B * H, dtype=dtype)
        self.cs = np.empty(B * H, dtype=dtype)
        self.rec = np.empty(B * rec_row, dtype=dtype)
        self.hzero = np.zeros((L, B, P), dtype=dtype)
        self.capacity = B


cdef class StepKernel:
    """Prepared weights of a stacked unidirectional cell, advanced one timestep per call.

    Built by ``fastrnn.engine.stream.Stepper``; the weights are *copied* (packed) at
    construction, so later changes to the caller's arrays are not seen (rebuild instead).
    The packing is that of the kernels in use at construction (``isa``), which every step uses.
    Hidden units are split into ``unit_blocks`` blocks (2 for large layers); a call runs on
    min(engine threads, unit_blocks) threads when the step is big enough to pay for it.

    Steps from several threads at once are safe: the packed weights are only read, and each
    call works in a scratch set of its own (a pool of them grows to the number of calls that
    ever ran at once).
    """
    cdef readonly int cell
    cdef readonly Py_ssize_t num_layers, input_size, hidden_size, state_size, gates, unit_blocks
    cdef readonly object dtype
    cdef readonly str isa
    cdef const fr_kernels_t* _kt
    cdef bint is_double
    cdef Py_ssize_t par_work
    cdef list _keep
    cdef void* _wih1[64]
    cdef void* _wih2[64]
    cdef void* _whh[64]
    cdef void* _bx[64]
    cdef void* _bhn[64]
    cdef void* _peep[64]
    cdef void* _whr[64]
    cdef Py_ssize_t _ldr
    cdef object _ublk
    cdef list _free             # scratch sets no call is using

    def __init__(self, int cell, list w_ih, list w_hh, list bx, list bhn,
                 unit_blocks, Py_ssize_t parallel_min_work, list peepholes=None,
                 list w_hr=None):
        """w_ih / w_hh: per layer weights in PyTorch layout; bx, bhn: per layer biases folded
        by ``fastrnn.engine.plan.fold_biases``; unit_blocks: bounds of the hidden-unit blocks
        (``fastrnn.engine.plan.unit_blocks``); peepholes: the peephole LSTM's (3H,) weights per
        layer; w_hr: a projected LSTM's (P, H) projections per layer (W_hh then (4H, P), h of
        P units, one unit block)."""
        cdef Py_ssize_t l, j, H, G, nb
        self._kt = g_kt           # the weights are packed for these kernels
        self.isa = isa()
        self.cell = cell
        G = self.gates = 4 if _has_c(cell) else (3 if _is_gru(cell) else 1)
        self.num_layers = len(w_ih)
        if not 1 <= self.num_layers <= 64:
            raise ValueError("num_layers must be in 1..64")
        P = self.state_size = w_hh[0].shape[1]
        H = self.hidden_size = w_hh[0].shape[0] // G
        if (w_hr is not None) != (P != H) or (w_hr is not None and not _has_c(cell)):
            raise ValueError(f"w_hh of {P} columns for {H} units: a projection (w_hr) is "
                             "given for an LSTM whose w_hh has proj_size columns, and only for "
                             "it")
        self.input_size = w_ih[0].shape[1]
        self.dtype = np.dtype(w_hh[0].dtype)
        self.is_double = self.dtype == np.float64
        self.par_work = parallel_min_work
        bounds = [int(u) for u in unit_blocks]
        nb = len(bounds) - 1
        if nb < 1 or bounds[0] != 0 or bounds[nb] != H or not 0 < bounds[nb] - bounds[nb - 1] \
                <= bounds[1] or any(bounds[j + 1] - bounds[j] != bounds[1] for j in range(nb - 1)):
            raise ValueError(f"unit blocks {bounds} do not split {H} units into equal blocks")
        self._ublk = np.array(bounds, dtype=np.int64)
        self.unit_blocks = len(bounds) - 1
        self._ldr = _rec_width(cell, G, bounds[1] - bounds[0], w_hr is not None)
        if (cell == FR_GRU_RESET_BEFORE or w_hr is not None) and nb != 1:
            raise ValueError("the reset-before GRU and the projected LSTM run their units in "
                             "one block")
        wi = [np.ascontiguousarray(w, dtype=self.dtype) for w in w_ih]
        wh = [np.ascontiguousarray(w, dtype=self.dtype) for w in w_hh]
        # W_hh and W_ih in unit blocks, as the forward's steps read them
        _, _, _, p_hh, p_ih = pack_forward_weights(wi, wh, G, self._ublk, False, True, True,
                                                   cell)
        self._keep = p_hh + p_ih
        for l in range(self.num_layers):
            b1 = np.ascontiguousarray(bx[l], dtype=self.dtype)
            b2 = np.ascontiguousarray(bhn[l], dtype=self.dtype)
            self._keep.extend([b1, b2])
            self._wih1[l] = cnp.PyArray_DATA(<cnp.ndarray>p_ih[2 * l])
            self._wih2[l] = cnp.PyArray_DATA(<cnp.ndarray>p_ih[2 * l + 1])
            self._whh[l] = cnp.PyArray_DATA(<cnp.ndarray>p_hh[l])
            self._bx[l] = cnp.PyArray_DATA(<cnp.ndarray>b1)
            self._bhn[l] = cnp.PyArray_DATA(<cnp.ndarray>b2)
            self._peep[l] = NULL
            self._whr[l] = NULL
            if w_hr is not None:
                wr = np.ascontiguousarray(w_hr[l], dtype=self.dtype)
                if wr.shape != (P, H):
                    raise ValueError(f"w_hr[{l}] must have shape ({P}, {H}), got {wr.shape}")
                pr = pack_projection(wr)
                self._keep.append(pr)
                self._whr[l] = cnp.PyArray_DATA(<cnp.ndarray>pr)
            if peepholes is not None:
                pp = np.ascontiguousarray(peepholes[l], dtype=self.dtype)
                if pp.shape != (3 * H,):
                    raise ValueError(f"peepholes[{l}] must have shape ({3 * H},), got {pp.shape}")
                self._keep.append(pp)
                self._peep[l] = cnp.PyArray_DATA(<cnp.ndarray>pp)
        self._free = []

    cdef _StepScratch _take(self, Py_ssize_t B):
        """A scratch set for ``B`` rows that no other call holds (list.pop is atomic)."""
        cdef _StepScratch s
        try:
            s = self._free.pop()
            if s.capacity >= B:
                return s
        except IndexError:
            pass
        return _StepScratch(B, self.num_layers, self.hidden_size, self.state_size,
                            self.unit_blocks * self._ldr, self.dtype)

    def step(self, cnp.ndarray x_t, cnp.ndarray h=None, cnp.ndarray c=None):
        """Advance one timestep: ``(y_t, h_new, c_new) = step(x_t, h=None, c=None)``.

        ``x_t`` (B, I), ``h`` (num_layers, B, P) / ``c`` (num_layers, B, H) C-contiguous of the
        stepper's dtype (P = H but for a projected LSTM), or None for zeros.  Returns *new*
        arrays: ``y_t`` (B, P) (a copy of ``h_new[-1]``, so that
        editing it leaves the state alone), ``h_new`` and ``c_new`` (None unless LSTM).  Inputs
        are not modified.
        """
        cdef Py_ssize_t B = cnp.PyArray_DIM(x_t, 0), H = self.hidden_size, G = self.gates
        cdef Py_ssize_t P = self.state_size
        cdef Py_ssize_t L = self.num_layers, nu = self.unit_blocks
        cdef cnp.ndarray h_out, y_t, c_out = None
        cdef cnp.npy_intp dims[3]
        cdef void* cptr = NULL
        cdef int typenum = cnp.NPY_FLOAT64 if self.is_double else cnp.NPY_FLOAT32
        cdef int nt = g_num_threads, tid, nth
        cdef void* xq
        cdef void* hq
        cdef void* ho
        cdef void* hsq
        cdef void* csq
        cdef void* recq
        cdef const int64_t* ordq
        cdef const int64_t* oneq
        cdef const int64_t* ubq
        cdef Py_ssize_t I = self.input_size, ldr = self._ldr
        cdef fr_barrier_t bar
        cdef _StepScratch scratch
        fr_barrier_init(&bar)
        _check_arr(x_t, "x_t", 2, B, self.input_size, 0, self.is_double)
        if h is not None:
            _check_arr(h, "h", 3, L, B, P, self.is_double)
        if c is not None and _has_c(self.cell):
            _check_arr(c, "c", 3, L, B, H, self.is_double)
        scratch = self._take(B)
        if h is None:
            h = <cnp.ndarray>scratch.hzero
        dims[0] = L
        dims[1] = B
        dims[2] = P
        h_out = cnp.PyArray_EMPTY(3, dims, typenum, 0)
        dims[2] = H
        if _has_c(self.cell):
            if c is None:
                c_out = cnp.PyArray_ZEROS(3, dims, typenum, 0)
            else:
                c_out = cnp.PyArray_NewCopy(c, cnp.NPY_CORDER)
            cptr = cnp.PyArray_DATA(c_out)
        else:
            cptr = cnp.PyArray_DATA(<cnp.ndarray>scratch.cs)
        xq = cnp.PyArray_DATA(x_t)
        hq = cnp.PyArray_DATA(h)
        ho = cnp.PyArray_DATA(h_out)
        hsq = cnp.PyArray_DATA(<cnp.ndarray>scratch.hs)
        csq = cnp.PyArray_DATA(<cnp.ndarray>scratch.cs)
        recq = cnp.PyArray_DATA(<cnp.ndarray>scratch.rec)
        ordq = <const int64_t*>cnp.PyArray_DATA(<cnp.ndarray>scratch.order)
        oneq = <const int64_t*>cnp.PyArray_DATA(<cnp.ndarray>scratch.ones)
        ubq = <const int64_t*>cnp.PyArray_DATA(<cnp.ndarray>self._ublk)
        if nt > nu:
            nt = <int>nu
        if B * G * H * (I + H) < self.par_work:
            nt = 1
        nt = _threads(nt)
        with nogil:
            if nt <= 1:
                if self.is_double:
                    _stack_step_worker(self._kt, 0, 1, self.cell, L, B, I, H, P, G, <const double*>xq,
                                       self._wih1, self._wih2, self._whh, self._bx, self._bhn, self._peep, self._whr,
                                       ubq, nu, ordq, oneq, <const double*>hq, <double*>ho,
                                       <double*>cptr, <double*>hsq, <double*>csq,
                                       <double*>recq, B * ldr, ldr, &bar)
                else:
                    _stack_step_worker(self._kt, 0, 1, self.cell, L, B, I, H, P, G, <const float*>xq,
                                       self._wih1, self._wih2, self._whh, self._bx, self._bhn, self._peep, self._whr,
                                       ubq, nu, ordq, oneq, <const float*>hq, <float*>ho,
                                       <float*>cptr, <float*>hsq, <float*>csq,
                                       <float*>recq, B * ldr, ldr, &bar)
            else:
                with parallel(num_threads=nt):
                    tid = openmp.omp_get_thread_num()
                    nth = openmp.omp_get_num_threads()
                    if self.is_double:
                        _stack_step_worker(self._kt, tid, nth, self.cell, L, B, I, H, P, G, <const double*>xq,
                                           self._wih1, self._wih2, self._whh, self._bx,
                                           self._bhn, self._peep, self._whr, ubq, nu, ordq, oneq, <const double*>hq,
                                           <double*>ho, <double*>cptr, <double*>hsq,
                                           <double*>csq, <double*>recq, B * ldr, ldr, &bar)
                    else:
                        _stack_step_worker(self._kt, tid, nth, self.cell, L, B, I, H, P, G, <const float*>xq,
                                           self._wih1, self._wih2, self._whh, self._bx,
                                           self._bhn, self._peep, self._whr, ubq, nu, ordq, oneq, <const float*>hq,
                                           <float*>ho, <float*>cptr, <float*>hsq,
                                           <float*>csq, <float*>recq, B * ldr, ldr, &bar)
                fr_team_done(&bar)
        self._free.append(scratch)
        dims[2] = P
        y_t = cnp.PyArray_EMPTY(2, &dims[1], typenum, 0)
        memcpy(cnp.PyArray_DATA(y_t), cnp.PyArray_BYTES(h_out) + (L - 1) * cnp.PyArray_NBYTES(y_t),
               cnp.PyArray_NBYTES(y_t))
        return y_t, h_out, c_out

