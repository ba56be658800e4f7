"""Block metadata: per query tile, the partial and full key tiles (and the transposed lists).

Built from `classify_blocks`' tile predicates evaluated over the grid of tiles only (O(tiles), never
the dense Lq x Lk mask), on the tensors' device, and cached per (variant, sizes, tile size,
captured-tensor versions). Dimensions the rule does not read (b, h) are stored once and broadcast.
"""
from __future__ import annotations

import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from ..ir.expr import Var, walk
from ..ir.program import Program
from ..reference import Evaluator

_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 64
# and at most this many bytes of metadata (derived tile sizes and orders included: `BlockMask.nbytes`),
# the most recently used entry always kept: at L = 131072 one entry with its 64-tile metadata is ~80 MB
_CACHE_BYTES = 1 << 30


@dataclass
class TileLists:
    """num [BB, HH, rows] and ind [BB, HH, rows, cols] (int32), ind listing tiles in ascending order."""

    num: torch.Tensor
    ind: torch.Tensor

    def to(self, device) -> TileLists:
        return TileLists(_upload(self.num, device), _upload(self.ind, device))


def bh_strides(t: torch.Tensor) -> list[int]:
    """Strides of `t`'s batch and head dimensions, 0 where one is broadcast (size 1)."""
    return [t.stride(d) if t.shape[d] > 1 else 0 for d in (0, 1)]


@dataclass
class BandLists:
    """Per diagonal band of tiles (query tile - key tile + key tiles - 1, i.e. 0 is the band of the
    last key tile and first query tile): num [BB, HH, bands] non-empty tiles, listed by query tile
    ascending in ind [BB, HH, bands, query tiles] (int32) with kind (int8: 1 partial, 2 full); order
    [bands] (int32) puts the bands with the most tiles (over batch and heads) first."""

    num: torch.Tensor
    ind: torch.Tensor
    kind: torch.Tensor
    order: torch.Tensor

    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self.num, self.ind, self.kind, self.order) if t.device.type != "meta")


def band_lists(cls: torch.Tensor) -> BandLists:
    """BandLists of a [BB, HH, query tiles, key tiles] classification (0 empty, 1 partial, 2 full)."""
    BB, HH, n_q, n_k = cls.shape
    bands = n_q + n_k - 1
    if cls.device.type == "meta":
        return BandLists(*(torch.empty(s, dtype=t, device="meta") for s, t in
                           (((BB, HH, bands), torch.int32), ((BB, HH, bands, n_q), torch.int32),
                            ((BB, HH, bands, n_q), torch.int8), ((bands,), torch.int32))))
    m = torch.arange(n_q, device=cls.device)
    n = m[None, :] - (torch.arange(bands, device=cls.device) - (n_k - 1))[:, None]  # [bands, n_q]
    inside = (n >= 0) & (n < n_k)
    kind = torch.where(inside, cls[:, :, m[None, :].expand_as(n), n.clamp(0, n_k - 1)], 0)
    # non-empty tiles first, each band's in query order (a stable sort)
    ind = torch.sort((kind == 0).to(torch.int8), dim=-1, stable=True).indices
    num = (kind != 0).sum(-1)
    order = torch.sort(num.sum((0, 1)), descending=True, stable=True).indices
    return BandLists(num.to(torch.int32), ind.to(torch.int32), torch.gather(kind, -1, ind).to(torch.int8),
                     order.to(torch.int32))


@dataclass
class BlockMask:
    """Tile classification of a mask for one (B, H, Lq, Lk): partial and full tile lists per query
    tile (`kv`, `kv_full`) and per key tile (`q`, `q_full`). BB/HH are 1 where the mask does not
    depend on b/h."""

    Lq: int
    Lk: int
    block_m: int
    block_n: int
    kv: TileLists
    kv_full: TileLists
    q: TileLists
    q_full: TileLists
    host: BlockMask | None = field(default=None, repr=False, compare=False)  # its CPU twin, if built there
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def order(self, rows: str, block: int) -> torch.Tensor:
        """Program order for kernels with one program per `block`-sized tile of the `rows` axis
        ("q": forward and dQ; "kv": dK/dV): tiles whose sparse row lists the most tiles first
        (summed over batch and heads), so a causal grid ends on its light tiles instead of
        waiting on a long one. int32 [cdiv(L, block)], a permutation of the tiles."""
        if (rows, block) not in self._cache and self.host is not None:
            self._cache[rows, block] = _upload(self.host.order(rows, block), self.kv.ind.device)
        if (rows, block) not in self._cache:
            lists = (self.kv, self.kv_full) if rows == "q" else (self.q, self.q_full)
            sparse, length = (self.block_m, self.Lq) if rows == "q" else (self.block_n, self.Lk)
            per = sparse // block
            work = (lists[0].num + lists[1].num).sum((0, 1))
            t = torch.arange(work.numel() * per, device=work.device)
            n = -(-length // block)
            # sub-tiles past the end sort last, and only the first n are launched
            key = torch.where(t < n, work.repeat_interleave(per), -1)
            self._cache[rows, block] = torch.sort(key, descending=True, stable=True).indices[:n].to(torch.int32)
        return self._cache[rows, block]

    def in_tiles(self, prog: Program, B: int, H: int, tensors: dict, block_m: int, block_n: int,
                 device) -> BlockMask:
        """The same mask's metadata in `block_m` x `block_n` tiles, built once (this metadata is
        rebuilt, not updated, when a tensor the rules read changes); meta tensors where this has them."""
        key = ("tiles", block_m, block_n)
        if key not in self._cache:
            self._cache[key] = (meta_block_mask(self.Lq, self.Lk, block_m, block_n)
                                if self.kv.num.device.type == "meta" else
                                build_block_mask(prog, B, H, self.Lq, self.Lk, tensors, block_m, block_n, device))
        return self._cache[key]

    def bands(self, block: int) -> BandLists:
        """The tiles in `block`-square tiles (`block` divides the metadata's) along each diagonal band
        (query tile - key tile), built once."""
        key = ("bands", block)
        if key not in self._cache:
            per_m, per_n = self.block_m // block, self.block_n // block
            cls = self.dense().repeat_interleave(per_m, 2).repeat_interleave(per_n, 3)
            self._cache[key] = band_lists(cls[:, :, :-(-self.Lq // block), :-(-self.Lk // block)])
        return self._cache[key]

    def nbytes(self) -> int:
        """Bytes of its tile lists and of what it derived and keeps (orders, other tile sizes)."""
        lists = (self.kv, self.kv_full, self.q, self.q_full)
        own = sum(t.num.nbytes + t.ind.nbytes for t in lists if t.num.device.type != "meta")
        return own + sum(v.nbytes() if isinstance(v, (BlockMask, BandLists)) else
                         v.nbytes if isinstance(v, torch.Tensor) else 0 for v in self._cache.values())

    def row_tiles(self) -> float:
        """Mean number of key tiles (partial and full) per query tile: how long a forward program
        is (a host sync where the lists live on a GPU)."""
        if self.host is not None:
            return self.host.row_tiles()
        if "row_tiles" not in self._cache:
            count = self.kv.num.sum() + self.kv_full.num.sum()
            self._cache["row_tiles"] = float(count) / max(self.kv.num.numel(), 1)
        return self._cache["row_tiles"]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.kv.ind.shape)

    def dense(self) -> torch.Tensor:
        """`to_dense()`, computed once."""
        if "dense" not in self._cache:
            self._cache["dense"] = self.to_dense()
        return self._cache["dense"]

    def to_dense(self) -> torch.Tensor:
        """[BB, HH, q tiles, kv tiles] int8: 0 empty, 1 partial, 2 full."""
        out = torch.zeros(self.shape, dtype=torch.int8, device=self.kv.ind.device)
        for lists, value in ((self.kv, 1), (self.kv_full, 2)):
            cols = torch.arange(self.shape[-1], device=out.device)
            listed = cols < lists.num.unsqueeze(-1)
            out.scatter_add_(-1, lists.ind.long(), torch.where(listed, value, 0).to(torch.int8))
        return out

    def sparsity(self) -> float:
        """Percentage of tiles skipped entirely (as FlexAttention's BlockMask.sparsity)."""
        dense = self.to_dense()
        return 100.0 * float((dense == 0).sum()) / dense.numel()

    def __str__(self) -> str:
        dense = self.to_dense()[0, 0].cpu()
        rows = ["".join(" .#"[int(x)] for x in row) for row in dense]
        head = (f"BlockMask {self.Lq}x{self.Lk} in {self.block_m}x{self.block_n} tiles, "
                f"sparsity {self.sparsity():.1f}% ('#' full, '.' partial, ' ' empty; b=0, h=0)")
        return "\n".join([head] + [f"|{r}|" for r in rows])

    def show(self) -> str:
        """The tile grid of (b=0, h=0) as text; `save(path)` writes it as a PNG picture."""
        text = str(self)
        print(text)
        return text

    def save(self, path: str, scale: int = 8) -> None:
        dense = self.to_dense()[0, 0].cpu()
        colors = {0: (255, 255, 255), 1: (120, 160, 230), 2: (20, 50, 140)}
        rows = []
        for row in dense.tolist():
            line = b"".join(bytes(colors[v]) * scale for v in row)
            rows.extend([b"\x00" + line] * scale)
        _write_png(path, dense.shape[1] * scale, dense.shape[0] * scale, b"".join(rows))


def meta_block_mask(Lq: int, Lk: int, block_m: int, block_n: int) -> BlockMask:
    """A BlockMask of "meta" tensors with the shapes of the metadata for these sizes (b and h
    broadcast): what compiling for a GPU without one needs of it."""
    nm, nn = -(-Lq // block_m), -(-Lk // block_n)

    def lists(rows: int, cols: int) -> TileLists:
        return TileLists(torch.empty(1, 1, rows, dtype=torch.int32, device="meta"),
                         torch.empty(1, 1, rows, cols, dtype=torch.int32, device="meta"))
    return BlockMask(Lq, Lk, block_m, block_n, lists(nm, nn), lists(nm, nn), lists(nn, nm), lists(nn, nm))


def _write_png(path: str, width: int, height: int, raw: bytes) -> None:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                + chunk(b"IEND", b""))


def _lists(grid: torch.Tensor) -> TileLists:
    """Tiles where `grid` is true, first in ascending order, per row of the last two dims."""
    num = grid.sum(-1, dtype=torch.int32)
    ind = torch.sort((~grid).to(torch.int8), dim=-1, stable=True).indices.to(torch.int32)
    return TileLists(num.contiguous(), ind.contiguous())


def _reads(prog: Program, name: str) -> bool:
    return any(isinstance(n, Var) and n.name == name
               for r in prog.block_rules for e in (r.may_true, r.may_false) for n in walk(e))


# Grids of at most this many tiles whose rules read no captured tensor are classified on the host
# and uploaded from pinned memory (no wait on the GPU): cheaper than the dozen tiny GPU ops, and
# those ops' first use in a process loads each one's CUDA module (~0.15 s of a first call).
HOST_TILES = 1 << 14


def _upload(t: torch.Tensor, device) -> torch.Tensor:
    return t.pin_memory().to(device, non_blocking=True)


def build_block_mask(prog: Program, B: int, H: int, Lq: int, Lk: int, tensors: dict,
                     block_m: int, block_n: int, device, on_host: bool | None = None) -> BlockMask:
    """`on_host`: classify on the CPU and upload (default: for small grids of tensor-free rules on
    a GPU)."""
    device = torch.device(device)
    nm, nn = -(-Lq // block_m), -(-Lk // block_n)
    BB = B if _reads(prog, "b") else 1
    HH = H if _reads(prog, "h") else 1
    if on_host is None:
        on_host = device.type == "cuda" and BB * HH * nm * nn <= HOST_TILES and not rule_params(prog)
    if on_host and device.type != "cpu":
        host = build_block_mask(prog, B, H, Lq, Lk, tensors, block_m, block_n, "cpu", on_host=False)
        return BlockMask(Lq, Lk, block_m, block_n, host.kv.to(device), host.kv_full.to(device),
                         host.q.to(device), host.q_full.to(device), host=host)
    if not prog.block_rules:
        allowed = torch.ones(BB, HH, nm, nn, dtype=torch.bool, device=device)
        partial = torch.zeros_like(allowed)
    else:
        (rule,) = prog.block_rules
        q_lo = torch.arange(nm, device=device) * block_m
        kv_lo = torch.arange(nn, device=device) * block_n
        env = {"b": torch.arange(BB, device=device).view(BB, 1, 1, 1),
               "h": torch.arange(HH, device=device).view(1, HH, 1, 1),
               "q_lo": q_lo.view(1, 1, nm, 1), "q_hi": (q_lo + block_m - 1).clamp(max=Lq - 1).view(1, 1, nm, 1),
               "kv_lo": kv_lo.view(1, 1, 1, nn),
               "kv_hi": (kv_lo + block_n - 1).clamp(max=Lk - 1).view(1, 1, 1, nn)}
        ev = Evaluator(env, tensors, torch.float32, device)
        may_true = ev(rule.may_true).expand(BB, HH, nm, nn)
        may_false = ev(rule.may_false).expand(BB, HH, nm, nn)
        allowed, partial = may_true, may_true & may_false
    # a tile crossing the end of q or kv is never full: kernels skip every bound check on full tiles
    edge = torch.zeros(nm, nn, dtype=torch.bool, device=device)
    edge[nm - 1, :] = Lq % block_m != 0
    edge[:, nn - 1] |= Lk % block_n != 0
    partial = partial | (allowed & edge)
    full = allowed & ~partial
    return BlockMask(Lq, Lk, block_m, block_n, _lists(partial), _lists(full),
                     _lists(partial.transpose(-1, -2)), _lists(full.transpose(-1, -2)))


def rule_params(prog: Program) -> list[str]:
    """The captured tensors the block rules read (the metadata is rebuilt when one changes)."""
    return sorted({n.param for r in prog.block_rules for e in (r.may_true, r.may_false)
                   for n in walk(e) if hasattr(n, "param")})


def cached_block_mask(key_prog: str, prog: Program, B, H, Lq, Lk, tensors: dict, block_m, block_n,
                      device, used: list[str]) -> BlockMask:
    """`used`: rule_params(prog), worked out once by the caller (a walk of the rules per call would
    cost more than the look-up)."""
    versions = tuple((n, tensors[n].data_ptr(), tensors[n]._version) for n in used)
    key = (key_prog, B, H, Lq, Lk, block_m, block_n, str(device), versions)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    bm = build_block_mask(prog, B, H, Lq, Lk, tensors, block_m, block_n, device)
    _CACHE[key] = bm
    total = sum(m.nbytes() for m in _CACHE.values())
    while len(_CACHE) > 1 and (len(_CACHE) > _CACHE_SIZE or total > _CACHE_BYTES):
        total -= _CACHE.popitem(last=False)[1].nbytes()
    return bm
