"""Prototype: a Hopper forward in Gluon (TMA ring + async wgmma, softmax of one tile overlapping the
tensor cores' next QK^T and previous PV). Causal mask hard-coded; same arguments as attn_fwd."""
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma, warpgroup_mma_init,
                                                              warpgroup_mma_wait)

# Triton 3.6 names the TMA load async_copy_global_to_shared; later versions async_load
_tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
# a barrier across the program's warps: Triton 3.6 names it thread_barrier, later versions barrier
_cta_barrier = getattr(gl, "thread_barrier", None) or gl.barrier
LOG2E = gl.constexpr(1.4426950408889634)
LN2 = gl.constexpr(0.6931471805599453)


@gluon.jit
def _step_start(KV_IND, FULL_IND, p_ind, j, n_part, n_total, PER: gl.constexpr, SPARSE_N: gl.constexpr,
                BLOCK_N: gl.constexpr):
    # the flat step j walks the partial tiles, then the full ones; past the end it reads nothing
    if j < n_part:
        jj = j
        blk = gl.load(KV_IND + p_ind + jj // PER)
    else:
        jj = j - n_part
        blk = gl.load(FULL_IND + p_ind + jj // PER, mask=j < n_total, other=0)
    return blk * SPARSE_N + (jj % PER) * BLOCK_N


@gluon.jit
def _issue(d_k, d_v, k_smem, v_smem, kv_bar, slot, start):
    # one barrier per slot for both tiles: one expect instead of two
    mbarrier.expect(kv_bar.index(slot), d_k.block_type.nbytes + d_v.block_type.nbytes)
    _tma_load(d_k, [start, 0], kv_bar.index(slot), k_smem.index(slot))
    _tma_load(d_v, [start, 0], kv_bar.index(slot), v_smem.index(slot))


@gluon.jit(do_not_specialize=["Lq", "Lk", "s_lb", "s_lh", "s_nb", "s_nh", "s_ib", "s_ih", "N_SPARSE"])
def attn_fwd(Q, K, V, O, LSE,
             s_qb, s_qh, s_qm, s_qd, s_kb, s_kh, s_kn, s_kd, s_vb, s_vh, s_vn, s_vd,
             s_ob, s_oh, s_om, s_od, s_lb, s_lh,
             Lq, Lk, H, sm_scale,
             KV_NUM, KV_IND, FULL_NUM, FULL_IND, ORDER, s_nb, s_nh, s_ib, s_ih, N_SPARSE,
             GROUP: gl.constexpr, D: gl.constexpr, DV: gl.constexpr, BLOCK_M: gl.constexpr,
             BLOCK_N: gl.constexpr, BLOCK_D: gl.constexpr, BLOCK_DV: gl.constexpr,
             SPARSE_M: gl.constexpr, SPARSE_N: gl.constexpr, STAGES: gl.constexpr, CAUSAL: gl.constexpr,
             num_warps: gl.constexpr):
    # a step's loads are issued once the step two earlier has been read, and the next step's
    # QK^T is issued before that: three stages
    gl.static_assert(STAGES == 3)
    dt: gl.constexpr = Q.dtype.element_ty
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, BLOCK_DV, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    col_s: gl.constexpr = gl.SliceLayout(0, s_layout)
    q_sl: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_M, BLOCK_D], dt)
    k_sl: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, BLOCK_D], dt)
    v_sl: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, BLOCK_DV], dt)

    i_m = gl.load(ORDER + gl.program_id(0))
    i_bh = gl.program_id(1)
    i_b = i_bh // H
    i_h = i_bh % H
    i_hkv = i_h // GROUP
    p_q = Q + i_b.to(gl.int64) * s_qb + i_h.to(gl.int64) * s_qh
    p_k = K + i_b.to(gl.int64) * s_kb + i_hkv.to(gl.int64) * s_kh
    p_v = V + i_b.to(gl.int64) * s_vb + i_hkv.to(gl.int64) * s_vh
    d_q = tma.make_tensor_descriptor(p_q, [Lq, D], [s_qm, 1], [BLOCK_M, BLOCK_D], q_sl)
    d_k = tma.make_tensor_descriptor(p_k, [Lk, D], [s_kn, 1], [BLOCK_N, BLOCK_D], k_sl)
    d_v = tma.make_tensor_descriptor(p_v, [Lk, DV], [s_vn, 1], [BLOCK_N, BLOCK_DV], v_sl)

    q_smem = gl.allocate_shared_memory(dt, [BLOCK_M, BLOCK_D], q_sl)
    k_smem = gl.allocate_shared_memory(dt, [STAGES, BLOCK_N, BLOCK_D], k_sl)
    v_smem = gl.allocate_shared_memory(dt, [STAGES, BLOCK_N, BLOCK_DV], v_sl)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    kv_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for s in gl.static_range(STAGES):
        mbarrier.init(kv_bar.index(s), count=1)
    fence_async_shared()

    PER: gl.constexpr = SPARSE_N // BLOCK_N
    row = (i_m * BLOCK_M) // SPARSE_M
    p_num = i_b * s_nb + i_h * s_nh + row
    p_ind = i_b.to(gl.int64) * s_ib + i_h.to(gl.int64) * s_ih + row * N_SPARSE
    n_part = gl.load(KV_NUM + p_num) * PER
    n_total = n_part + gl.load(FULL_NUM + p_num) * PER

    mbarrier.expect(q_bar, d_q.block_type.nbytes)
    _tma_load(d_q, [i_m * BLOCK_M, 0], q_bar, q_smem)
    # first keys of steps j, j + 1, j + 2: tile indices are loaded a step before their use, so
    # their latency hides behind a step's work
    st0 = _step_start(KV_IND, FULL_IND, p_ind, 0, n_part, n_total, PER, SPARSE_N, BLOCK_N)
    st1 = _step_start(KV_IND, FULL_IND, p_ind, 1, n_part, n_total, PER, SPARSE_N, BLOCK_N)
    st2 = _step_start(KV_IND, FULL_IND, p_ind, 2, n_part, n_total, PER, SPARSE_N, BLOCK_N)
    if n_total > 0:
        _issue(d_k, d_v, k_smem, v_smem, kv_bar, 0, st0)
    if n_total > 1:
        _issue(d_k, d_v, k_smem, v_smem, kv_bar, 1, st1)

    o_m = i_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=row_s)
    qk_scale = sm_scale * LOG2E
    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=row_s)
    l_i = gl.zeros([BLOCK_M], gl.float32, layout=row_s)
    acc = gl.zeros([BLOCK_M, BLOCK_DV], gl.float32, layout=o_layout)
    s_zero = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=s_layout)
    acc = warpgroup_mma_init(acc)

    mbarrier.wait(q_bar, 0)
    # S of step 0
    mbarrier.wait(kv_bar.index(0), 0, pred=n_total > 0)
    s_cur = warpgroup_mma(q_smem, k_smem.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
    s_cur = warpgroup_mma_wait(0, deps=[s_cur])
    for j in range(n_total):
        slot = j % STAGES
        st3 = _step_start(KV_IND, FULL_IND, p_ind, j + 3, n_part, n_total, PER, SPARSE_N, BLOCK_N)
        # QK^T of the next step runs on the tensor cores while this step's softmax runs
        nxt = j + 1
        n_slot = nxt % STAGES
        mbarrier.wait(kv_bar.index(n_slot), (nxt // STAGES) & 1, pred=nxt < n_total)
        s_nxt = warpgroup_mma(q_smem, k_smem.index(n_slot).permute((1, 0)), s_zero, use_acc=False,
                              is_async=True)
        # softmax of this step
        z2 = s_cur * qk_scale
        if j < n_part:
            o_n = st0 + gl.arange(0, BLOCK_N, layout=col_s)
            if CAUSAL:
                keep = (o_m[:, None] >= o_n[None, :]) & (o_n[None, :] < Lk)
            else:
                keep = (o_m[:, None] >= 0) & (o_n[None, :] < Lk)
            z2 = gl.where(keep, z2, float("-inf"))
        m_new = gl.maximum(m_i, gl.max(z2, 1))
        m_safe = gl.where(m_new == float("-inf"), 0.0, m_new)
        b_p = gl.exp2(z2 - m_safe[:, None])
        alpha = gl.exp2(m_i - m_safe)
        l_i = l_i * alpha + gl.sum(b_p, 1)
        m_i = m_new
        p16 = gl.convert_layout(b_p.to(dt), p_layout)
        # the previous PV has finished (groups complete in order; the next QK^T may still run):
        # its slot takes the loads of step j + 2
        acc = warpgroup_mma_wait(1, deps=[acc])
        if num_warps > 4:  # every warp group has finished reading the slot
            _cta_barrier()
        if j + 2 < n_total:
            _issue(d_k, d_v, k_smem, v_smem, kv_bar, (j + 2) % STAGES, st2)
        acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
        acc = warpgroup_mma(p16, v_smem.index(slot), acc, is_async=True)
        s_cur = warpgroup_mma_wait(1, deps=[s_nxt])
        st0 = st1
        st1 = st2
        st2 = st3
    acc = warpgroup_mma_wait(0, deps=[acc])
    mbarrier.invalidate(q_bar)
    for s in gl.static_range(STAGES):
        mbarrier.invalidate(kv_bar.index(s))

    row_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    l_o = gl.convert_layout(l_i, row_o)
    l_safe = gl.where(l_o > 0, l_o, 1.0)
    b_o = acc / l_safe[:, None]
    o_mo = i_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=row_o)
    o_dv = gl.arange(0, BLOCK_DV, layout=gl.SliceLayout(0, o_layout))
    p_o = O + i_b.to(gl.int64) * s_ob + i_h.to(gl.int64) * s_oh
    gl.store(p_o + o_mo[:, None] * s_om + o_dv[None, :] * s_od, b_o.to(O.dtype.element_ty),
             mask=(o_mo[:, None] < Lq) & (o_dv[None, :] < DV))
    l_safe_s = gl.where(l_i > 0, l_i, 1.0)
    lse = gl.where(l_i > 0, (m_i + gl.log2(l_safe_s)) * LN2, float("-inf"))
    gl.store(LSE + i_b * s_lb + i_h * s_lh + o_m, lse, mask=o_m < Lq)


# ---- warp-specialized: a one-warp producer loads tile indices and issues the TMA copies ----

@gluon.jit
def _ws_producer(d_q, d_k, d_v, q_smem, k_smem, v_smem, q_bar, kv_bar, empty_bar, KV_IND, FULL_IND, p_ind,
                 n_part, n_total, q_row, PER: gl.constexpr, SPARSE_N: gl.constexpr, BLOCK_N: gl.constexpr,
                 STAGES: gl.constexpr):
    mbarrier.expect(q_bar, d_q.block_type.nbytes)
    _tma_load(d_q, [q_row, 0], q_bar, q_smem)
    for j in range(n_total):
        slot = j % STAGES
        start = _step_start(KV_IND, FULL_IND, p_ind, j, n_part, n_total, PER, SPARSE_N, BLOCK_N)
        # the slot's previous tiles have been read (a fresh barrier passes parity 1)
        mbarrier.wait(empty_bar.index(slot), ((j // STAGES) & 1) ^ 1)
        _issue(d_k, d_v, k_smem, v_smem, kv_bar, slot, start)


@gluon.jit
def _ws_consumer(q_smem, k_smem, v_smem, q_bar, kv_bar, empty_bar, KV_IND, FULL_IND, p_ind, n_part, n_total,
                 q_row, Lk, sm_scale, dt: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                 BLOCK_DV: gl.constexpr, PER: gl.constexpr, SPARSE_N: gl.constexpr, STAGES: gl.constexpr,
                 CAUSAL: gl.constexpr, num_warps: gl.constexpr):
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, BLOCK_DV, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    col_s: gl.constexpr = gl.SliceLayout(0, s_layout)
    o_m = q_row + gl.arange(0, BLOCK_M, layout=row_s)
    qk_scale = sm_scale * LOG2E
    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=row_s)
    l_i = gl.zeros([BLOCK_M], gl.float32, layout=row_s)
    acc = gl.zeros([BLOCK_M, BLOCK_DV], gl.float32, layout=o_layout)
    s_zero = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=s_layout)
    acc = warpgroup_mma_init(acc)
    st0 = _step_start(KV_IND, FULL_IND, p_ind, 0, n_part, n_total, PER, SPARSE_N, BLOCK_N)

    mbarrier.wait(q_bar, 0)
    mbarrier.wait(kv_bar.index(0), 0, pred=n_total > 0)
    s_cur = warpgroup_mma(q_smem, k_smem.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
    s_cur = warpgroup_mma_wait(0, deps=[s_cur])
    for j in range(n_total):
        slot = j % STAGES
        st1 = _step_start(KV_IND, FULL_IND, p_ind, j + 1, n_part, n_total, PER, SPARSE_N, BLOCK_N)
        nxt = j + 1
        n_slot = nxt % STAGES
        mbarrier.wait(kv_bar.index(n_slot), (nxt // STAGES) & 1, pred=nxt < n_total)
        s_nxt = warpgroup_mma(q_smem, k_smem.index(n_slot).permute((1, 0)), s_zero, use_acc=False,
                              is_async=True)
        z2 = s_cur * qk_scale
        if j < n_part:
            o_n = st0 + gl.arange(0, BLOCK_N, layout=col_s)
            if CAUSAL:
                keep = (o_m[:, None] >= o_n[None, :]) & (o_n[None, :] < Lk)
            else:
                keep = (o_m[:, None] >= 0) & (o_n[None, :] < Lk)
            z2 = gl.where(keep, z2, float("-inf"))
        m_new = gl.maximum(m_i, gl.max(z2, 1))
        m_safe = gl.where(m_new == float("-inf"), 0.0, m_new)
        b_p = gl.exp2(z2 - m_safe[:, None])
        alpha = gl.exp2(m_i - m_safe)
        l_i = l_i * alpha + gl.sum(b_p, 1)
        m_i = m_new
        p16 = gl.convert_layout(b_p.to(dt), p_layout)
        acc = warpgroup_mma_wait(1, deps=[acc])
        # the previous step's tiles have been read: the producer may refill its slot
        mbarrier.arrive(empty_bar.index((j + STAGES - 1) % STAGES), pred=j > 0)
        acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
        acc = warpgroup_mma(p16, v_smem.index(slot), acc, is_async=True)
        s_cur = warpgroup_mma_wait(1, deps=[s_nxt])
        st0 = st1
    acc = warpgroup_mma_wait(0, deps=[acc])
    return acc, m_i, l_i


@gluon.jit(do_not_specialize=["Lq", "Lk", "s_lb", "s_lh", "s_nb", "s_nh", "s_ib", "s_ih", "N_SPARSE"])
def attn_fwd_ws(Q, K, V, O, LSE,
                s_qb, s_qh, s_qm, s_qd, s_kb, s_kh, s_kn, s_kd, s_vb, s_vh, s_vn, s_vd,
                s_ob, s_oh, s_om, s_od, s_lb, s_lh,
                Lq, Lk, H, sm_scale,
                KV_NUM, KV_IND, FULL_NUM, FULL_IND, ORDER, s_nb, s_nh, s_ib, s_ih, N_SPARSE,
                GROUP: gl.constexpr, D: gl.constexpr, DV: gl.constexpr, BLOCK_M: gl.constexpr,
                BLOCK_N: gl.constexpr, BLOCK_D: gl.constexpr, BLOCK_DV: gl.constexpr,
                SPARSE_M: gl.constexpr, SPARSE_N: gl.constexpr, STAGES: gl.constexpr, CAUSAL: gl.constexpr,
                num_warps: gl.constexpr):
    gl.static_assert(STAGES >= 3)
    dt: gl.constexpr = Q.dtype.element_ty
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, BLOCK_DV, 16])
    q_sl: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_M, BLOCK_D], dt)
    k_sl: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, BLOCK_D], dt)
    v_sl: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, BLOCK_DV], dt)

    i_m = gl.load(ORDER + gl.program_id(0))
    i_bh = gl.program_id(1)
    i_b = i_bh // H
    i_h = i_bh % H
    i_hkv = i_h // GROUP
    p_q = Q + i_b.to(gl.int64) * s_qb + i_h.to(gl.int64) * s_qh
    p_k = K + i_b.to(gl.int64) * s_kb + i_hkv.to(gl.int64) * s_kh
    p_v = V + i_b.to(gl.int64) * s_vb + i_hkv.to(gl.int64) * s_vh
    d_q = tma.make_tensor_descriptor(p_q, [Lq, D], [s_qm, 1], [BLOCK_M, BLOCK_D], q_sl)
    d_k = tma.make_tensor_descriptor(p_k, [Lk, D], [s_kn, 1], [BLOCK_N, BLOCK_D], k_sl)
    d_v = tma.make_tensor_descriptor(p_v, [Lk, DV], [s_vn, 1], [BLOCK_N, BLOCK_DV], v_sl)
    q_smem = gl.allocate_shared_memory(dt, [BLOCK_M, BLOCK_D], q_sl)
    k_smem = gl.allocate_shared_memory(dt, [STAGES, BLOCK_N, BLOCK_D], k_sl)
    v_smem = gl.allocate_shared_memory(dt, [STAGES, BLOCK_N, BLOCK_DV], v_sl)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    kv_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for s in gl.static_range(STAGES):
        mbarrier.init(kv_bar.index(s), count=1)
        mbarrier.init(empty_bar.index(s), count=1)
    fence_async_shared()

    PER: gl.constexpr = SPARSE_N // BLOCK_N
    row = (i_m * BLOCK_M) // SPARSE_M
    p_num = i_b * s_nb + i_h * s_nh + row
    p_ind = i_b.to(gl.int64) * s_ib + i_h.to(gl.int64) * s_ih + row * N_SPARSE
    n_part = gl.load(KV_NUM + p_num) * PER
    n_total = n_part + gl.load(FULL_NUM + p_num) * PER
    q_row = i_m * BLOCK_M

    acc, m_i, l_i = gl.warp_specialize([
        (_ws_consumer, (q_smem, k_smem, v_smem, q_bar, kv_bar, empty_bar, KV_IND, FULL_IND, p_ind, n_part,
                        n_total, q_row, Lk, sm_scale, dt, BLOCK_M, BLOCK_N, BLOCK_DV, PER, SPARSE_N, STAGES,
                        CAUSAL, num_warps)),
        (_ws_producer, (d_q, d_k, d_v, q_smem, k_smem, v_smem, q_bar, kv_bar, empty_bar, KV_IND, FULL_IND,
                        p_ind, n_part, n_total, q_row, PER, SPARSE_N, BLOCK_N, STAGES)),
    ], [1], [40])

    row_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    l_o = gl.convert_layout(l_i, row_o)
    l_safe = gl.where(l_o > 0, l_o, 1.0)
    b_o = acc / l_safe[:, None]
    o_mo = q_row + gl.arange(0, BLOCK_M, layout=row_o)
    o_dv = gl.arange(0, BLOCK_DV, layout=gl.SliceLayout(0, o_layout))
    p_o = O + i_b.to(gl.int64) * s_ob + i_h.to(gl.int64) * s_oh
    gl.store(p_o + o_mo[:, None] * s_om + o_dv[None, :] * s_od, b_o.to(O.dtype.element_ty),
             mask=(o_mo[:, None] < Lq) & (o_dv[None, :] < DV))
    o_ml = q_row + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, o_layout))
    l_safe2 = gl.where(l_o > 0, l_o, 1.0)
    m_o = gl.convert_layout(m_i, row_o)
    lse = gl.where(l_o > 0, (m_o + gl.log2(l_safe2)) * LN2, float("-inf"))
    gl.store(LSE + i_b * s_lb + i_h * s_lh + o_ml, lse, mask=o_ml < Lq)


# ---- two consumer warp groups, each its own partition (64 query rows each), one producer warp ----

@gluon.jit
def _ws2_producer(d_q, d_k, d_v, q_smem, k_smem, v_smem, q_bar, kv_bar, empty_bar, KV_IND, FULL_IND, p_ind,
                  n_part, n_total, q_row, PER: gl.constexpr, SPARSE_N: gl.constexpr, BLOCK_N: gl.constexpr,
                  STAGES: gl.constexpr, WG_M: gl.constexpr):
    mbarrier.expect(q_bar, 2 * d_q.block_type.nbytes)
    _tma_load(d_q, [q_row, 0], q_bar, q_smem.index(0))
    _tma_load(d_q, [q_row + WG_M, 0], q_bar, q_smem.index(1))
    for j in range(n_total):
        slot = j % STAGES
        start = _step_start(KV_IND, FULL_IND, p_ind, j, n_part, n_total, PER, SPARSE_N, BLOCK_N)
        mbarrier.wait(empty_bar.index(slot), ((j // STAGES) & 1) ^ 1)
        _issue(d_k, d_v, k_smem, v_smem, kv_bar, slot, start)


@gluon.jit
def _ws2_consumer(WG: gl.constexpr, q_smem, k_smem, v_smem, q_bar, kv_bar, empty_bar, KV_IND, FULL_IND, p_ind,
                  n_part, n_total, q_row0, Lq, Lk, sm_scale, O, LSE, p_o, s_om, s_od, p_lse,
                  dt: gl.constexpr, WG_M: gl.constexpr, BLOCK_N: gl.constexpr,
                  BLOCK_DV: gl.constexpr, DV: gl.constexpr, PER: gl.constexpr, SPARSE_N: gl.constexpr,
                  STAGES: gl.constexpr, CAUSAL: gl.constexpr):
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_DV, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    col_s: gl.constexpr = gl.SliceLayout(0, s_layout)
    q_row = q_row0 + WG * WG_M
    q_tile = q_smem.index(WG)
    o_m = q_row + gl.arange(0, WG_M, layout=row_s)
    qk_scale = sm_scale * LOG2E
    m_i = gl.full([WG_M], float("-inf"), gl.float32, layout=row_s)
    l_i = gl.zeros([WG_M], gl.float32, layout=row_s)
    acc = gl.zeros([WG_M, BLOCK_DV], gl.float32, layout=o_layout)
    s_zero = gl.zeros([WG_M, BLOCK_N], gl.float32, layout=s_layout)
    acc = warpgroup_mma_init(acc)
    st0 = _step_start(KV_IND, FULL_IND, p_ind, 0, n_part, n_total, PER, SPARSE_N, BLOCK_N)

    mbarrier.wait(q_bar, 0)
    mbarrier.wait(kv_bar.index(0), 0, pred=n_total > 0)
    s_cur = warpgroup_mma(q_tile, k_smem.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
    s_cur = warpgroup_mma_wait(0, deps=[s_cur])
    for j in range(n_total):
        slot = j % STAGES
        st1 = _step_start(KV_IND, FULL_IND, p_ind, j + 1, n_part, n_total, PER, SPARSE_N, BLOCK_N)
        nxt = j + 1
        n_slot = nxt % STAGES
        mbarrier.wait(kv_bar.index(n_slot), (nxt // STAGES) & 1, pred=nxt < n_total)
        s_nxt = warpgroup_mma(q_tile, k_smem.index(n_slot).permute((1, 0)), s_zero, use_acc=False,
                              is_async=True)
        z2 = s_cur * qk_scale
        if j < n_part:
            o_n = st0 + gl.arange(0, BLOCK_N, layout=col_s)
            if CAUSAL:
                keep = (o_m[:, None] >= o_n[None, :]) & (o_n[None, :] < Lk)
            else:
                keep = (o_m[:, None] >= 0) & (o_n[None, :] < Lk)
            z2 = gl.where(keep, z2, float("-inf"))
        m_new = gl.maximum(m_i, gl.max(z2, 1))
        m_safe = gl.where(m_new == float("-inf"), 0.0, m_new)
        b_p = gl.exp2(z2 - m_safe[:, None])
        alpha = gl.exp2(m_i - m_safe)
        l_i = l_i * alpha + gl.sum(b_p, 1)
        m_i = m_new
        p16 = gl.convert_layout(b_p.to(dt), p_layout)
        acc = warpgroup_mma_wait(1, deps=[acc])
        mbarrier.arrive(empty_bar.index((j + STAGES - 1) % STAGES), pred=j > 0)
        acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
        acc = warpgroup_mma(p16, v_smem.index(slot), acc, is_async=True)
        s_cur = warpgroup_mma_wait(1, deps=[s_nxt])
        st0 = st1
    acc = warpgroup_mma_wait(0, deps=[acc])

    row_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    l_o = gl.convert_layout(l_i, row_o)
    l_safe = gl.where(l_o > 0, l_o, 1.0)
    b_o = acc / l_safe[:, None]
    o_mo = q_row + gl.arange(0, WG_M, layout=row_o)
    o_dv = gl.arange(0, BLOCK_DV, layout=gl.SliceLayout(0, o_layout))
    gl.store(p_o + o_mo[:, None] * s_om + o_dv[None, :] * s_od, b_o.to(O.dtype.element_ty),
             mask=(o_mo[:, None] < Lq) & (o_dv[None, :] < DV))
    l_safe_s = gl.where(l_i > 0, l_i, 1.0)
    lse = gl.where(l_i > 0, (m_i + gl.log2(l_safe_s)) * LN2, float("-inf"))
    gl.store(p_lse + o_m, lse, mask=o_m < Lq)


@gluon.jit(do_not_specialize=["Lq", "Lk", "s_lb", "s_lh", "s_nb", "s_nh", "s_ib", "s_ih", "N_SPARSE"])
def attn_fwd_ws2(Q, K, V, O, LSE,
                 s_qb, s_qh, s_qm, s_qd, s_kb, s_kh, s_kn, s_kd, s_vb, s_vh, s_vn, s_vd,
                 s_ob, s_oh, s_om, s_od, s_lb, s_lh,
                 Lq, Lk, H, sm_scale,
                 KV_NUM, KV_IND, FULL_NUM, FULL_IND, ORDER, s_nb, s_nh, s_ib, s_ih, N_SPARSE,
                 GROUP: gl.constexpr, D: gl.constexpr, DV: gl.constexpr, BLOCK_M: gl.constexpr,
                 BLOCK_N: gl.constexpr, BLOCK_D: gl.constexpr, BLOCK_DV: gl.constexpr,
                 SPARSE_M: gl.constexpr, SPARSE_N: gl.constexpr, STAGES: gl.constexpr, CAUSAL: gl.constexpr,
                 CONSUMER_REGS: gl.constexpr, num_warps: gl.constexpr):
    gl.static_assert(STAGES >= 3)
    gl.static_assert(num_warps == 4)
    WG_M: gl.constexpr = BLOCK_M // 2
    dt: gl.constexpr = Q.dtype.element_ty
    q_sl: gl.constexpr = gl.NVMMASharedLayout.get_default_for([WG_M, BLOCK_D], dt)
    k_sl: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, BLOCK_D], dt)
    v_sl: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, BLOCK_DV], dt)

    i_m = gl.load(ORDER + gl.program_id(0))
    i_bh = gl.program_id(1)
    i_b = i_bh // H
    i_h = i_bh % H
    i_hkv = i_h // GROUP
    p_q = Q + i_b.to(gl.int64) * s_qb + i_h.to(gl.int64) * s_qh
    p_k = K + i_b.to(gl.int64) * s_kb + i_hkv.to(gl.int64) * s_kh
    p_v = V + i_b.to(gl.int64) * s_vb + i_hkv.to(gl.int64) * s_vh
    d_q = tma.make_tensor_descriptor(p_q, [Lq, D], [s_qm, 1], [WG_M, BLOCK_D], q_sl)
    d_k = tma.make_tensor_descriptor(p_k, [Lk, D], [s_kn, 1], [BLOCK_N, BLOCK_D], k_sl)
    d_v = tma.make_tensor_descriptor(p_v, [Lk, DV], [s_vn, 1], [BLOCK_N, BLOCK_DV], v_sl)
    q_smem = gl.allocate_shared_memory(dt, [2, WG_M, BLOCK_D], q_sl)
    k_smem = gl.allocate_shared_memory(dt, [STAGES, BLOCK_N, BLOCK_D], k_sl)
    v_smem = gl.allocate_shared_memory(dt, [STAGES, BLOCK_N, BLOCK_DV], v_sl)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    kv_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for s in gl.static_range(STAGES):
        mbarrier.init(kv_bar.index(s), count=1)
        mbarrier.init(empty_bar.index(s), count=2)  # both consumer warp groups release a stage
    fence_async_shared()

    PER: gl.constexpr = SPARSE_N // BLOCK_N
    row = (i_m * BLOCK_M) // SPARSE_M
    p_num = i_b * s_nb + i_h * s_nh + row
    p_ind = i_b.to(gl.int64) * s_ib + i_h.to(gl.int64) * s_ih + row * N_SPARSE
    n_part = gl.load(KV_NUM + p_num) * PER
    n_total = n_part + gl.load(FULL_NUM + p_num) * PER
    q_row = i_m * BLOCK_M
    p_o = O + i_b.to(gl.int64) * s_ob + i_h.to(gl.int64) * s_oh
    p_lse = LSE + i_b * s_lb + i_h * s_lh
    gl.warp_specialize([
        (_ws2_consumer, (0, q_smem, k_smem, v_smem, q_bar, kv_bar, empty_bar, KV_IND, FULL_IND, p_ind, n_part,
                         n_total, q_row, Lq, Lk, sm_scale, O, LSE, p_o, s_om, s_od, p_lse, dt, WG_M, BLOCK_N,
                         BLOCK_DV, DV, PER, SPARSE_N, STAGES, CAUSAL)),
        (_ws2_consumer, (1, q_smem, k_smem, v_smem, q_bar, kv_bar, empty_bar, KV_IND, FULL_IND, p_ind, n_part,
                         n_total, q_row, Lq, Lk, sm_scale, O, LSE, p_o, s_om, s_od, p_lse, dt, WG_M, BLOCK_N,
                         BLOCK_DV, DV, PER, SPARSE_N, STAGES, CAUSAL)),
        (_ws2_producer, (d_q, d_k, d_v, q_smem, k_smem, v_smem, q_bar, kv_bar, empty_bar, KV_IND, FULL_IND,
                         p_ind, n_part, n_total, q_row, PER, SPARSE_N, BLOCK_N, STAGES, WG_M)),
    ], [4, 1], [CONSUMER_REGS, 24])
