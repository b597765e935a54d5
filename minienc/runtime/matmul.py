"""Matrix-multiply kernels for the encoder's linear layers, looked up by name, and row blocks that make a row's
result independent of the other rows.

Every kernel has one signature:

    fn(x, weight, bias, activation=None) -> activation(x @ weight.T + bias)

- x (..., in); weight (out, in); bias (out,) or None
- activation: a `hidden_act` name from minienc/model/activations.py, or None. The feed-forward up-projection passes its
  activation here, so that a kernel can apply it while the result is still in cache instead of in a second pass.

The linear layers are nearly all of an encoder's arithmetic, so the kernel decides most of its speed; it also
decides the last bits of every result, since kernels sum the products in different orders.

- "torch":  F.linear, then the activation: what transformers and sentence-transformers run (MKL on x86 CPUs).
- "onednn": oneDNN's inner product, which ships inside PyTorch, with GELU (erf form) fused into it. Its sums are
            float32 sums in another order. float32, and bfloat16 where oneDNN has it (AVX-512 and up), on the CPU,
            for inference: other dtypes, other devices and calls that autograd must differentiate go to the "torch"
            kernel (oneDNN's op has no backward). In bfloat16 the fused GELU reads the float32 sum before it is
            rounded to bfloat16: one rounding, not two.

`use_kernel(module, name)` (end of this file) sets one on every linear layer of a model or a pipeline:
`Encoder.from_pretrained(..., matmul=name)` and every head's `set_matmul` call it. The default "torch" keeps
transformers' bits; the text pipeline's packed execution on the CPU takes fastest_on_cpu(), in row blocks.

Row blocks (`RowBlocks`): a kernel chooses its blocking, threading and order of summation from the matrix shape, so
the same row can round differently in a matrix of 9 rows and in one of 900. Cut every matrix into whole blocks of
`rows` rows (the last one topped up with zeros) and each kernel call is a whole number of blocks (or, below one
block, a probed tail size: see the last point below); a matrix multiply has no data flow between rows, so a row's
result can then depend only on its own values, its place in the call and the call's shape. Those last two are
checked, not assumed, on the machine itself:
- the first call for each weight shape, dtype, device and thread count runs a probe (`rows_independent`): in a call
  of one block, does a row get the same bits wherever it sits and whatever the other rows hold? A kernel that fails
  is reported with a warning, and `check` returns False (the pipeline's `batch_invariant` reads it);
- calls of one block each are slow (a small matrix runs below the kernel's best rate, and every output is copied
  once more), so a matrix is multiplied in calls of up to BLOCKS_PER_CALL blocks: full calls of that many, then one
  for the rest. A call of k blocks is made only after a probe (`same_as_blocks`, once per k) showed that it gives
  every row the bits that calls of one block give it; where it does not, the k blocks go in calls of powers of two
  of blocks, the largest first (37: 32, 4 and 1), each size probed too, and halved where it fails, down to one. So a
  kernel that changes its code above some size still merges below it, with few sizes to probe.
- a lone short text would pay for a whole block, so rows that fill less than one block (a lone text, a small
  batch) go in one call of that many rows where it is a multiple of TAIL_ROWS and a probe (`tail_same_as_block`,
  once per size) showed that it gives each row the bits a one-block call gives it; elsewhere they are topped up to
  a block.
Every probe runs twice: on random rows, and on rows built so that a change in the order of summation shows in the
output's bits even through bfloat16 rounding (`probe_cases`).
"""

from __future__ import annotations

import functools
import math
import warnings

import torch
from torch import nn

from ..model.linear import Linear, MatmulFn, activate, plain_linear

# hidden_act -> oneDNN post-op (attr, algorithm) that computes it inside the multiply; "none" selects the erf form
ONEDNN_POST_OPS = {"gelu": ("gelu", "none")}


def onednn(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None = None
) -> torch.Tensor:
    """The same by oneDNN, for float32 and bfloat16 CPU inference; plain_linear for everything else."""
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    supported = x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and onednn_bfloat16())
    if x.device.type != "cpu" or not supported or needs_grad:
        return plain_linear(x, weight, bias, activation)
    if activation in ONEDNN_POST_OPS:
        attr, algorithm = ONEDNN_POST_OPS[activation]
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [], algorithm)
    return activate(torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], ""), activation)


MATMUL: dict[str, MatmulFn] = {"torch": plain_linear, "onednn": onednn}


def onednn_available() -> bool:
    """Whether this PyTorch build has oneDNN and its fused linear op (x86 and Arm builds from PyPI do)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@functools.cache
def onednn_bfloat16() -> bool:
    """Whether oneDNN multiplies bfloat16 on this CPU: it needs AVX-512 at least (held to AVX2 by ONEDNN_MAX_CPU_ISA,
    or on an AVX2-only CPU, it has no bfloat16 inner product)."""
    return onednn_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def fastest_on_cpu() -> str:
    """The kernel to prefer on this CPU when the last bits are free: "onednn" on x86 CPUs with AVX2 or AVX-512,
    "torch" elsewhere (on SSE4.1 alone oneDNN is slower than MKL; docs/batch-invariance.md gives the measurements)."""
    fast = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    return "onednn" if fast and onednn_available() else "torch"


def get_matmul(name: str) -> MatmulFn:
    if name not in MATMUL:
        raise ValueError(f"unknown matmul {name!r}; choose one of {sorted(MATMUL)}")
    if name == "onednn" and not onednn_available():
        raise ValueError(f"matmul 'onednn' needs a PyTorch built with oneDNN; this one ({torch.__version__}) is not: "
                         f"use matmul='torch'")
    return MATMUL[name]


def random_rows(n: int, weight: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(n, in) random inputs for `weight`, in its dtype and on its device."""
    return torch.randn(n, weight.shape[1], generator=gen).to(weight.device, weight.dtype)


def cancelling_value(weight: torch.Tensor) -> float | None:
    """B for the cancelling probe rows (`probe_cases`): the power of two 2^20 to 2^21 times the weight's mean |value|,
    or less where the dtype's range ends; None where that probe does not apply (fewer than 3 inputs, a weight that is
    not floating point, or not finite)."""
    if weight.shape[1] < 3 or not weight.is_floating_point():
        return None
    typical = weight.detach().float().abs().mean().item()
    if not math.isfinite(typical) or typical == 0:
        return None
    limit = math.floor(math.log2(torch.finfo(weight.dtype).max)) - 3
    return 2.0 ** min(math.floor(math.log2(typical)) + 21, limit)


def probe_cases(weight: torch.Tensor) -> list[tuple[torch.Tensor, float | None]]:
    """The (weight, B) pairs that every probe runs with; a kernel passes only if it passes with each:
    - the weight itself, and random rows (B None);
    - a copy of the weight whose first and last input columns are 1, and rows whose first entry is +B and last -B
      (`probe_rows`). The products B and -B cancel exactly whatever the order of summation, while every partial
      sum made beside one of them rounds to B's spacing in float32, a sixteenth to a quarter of the mean |weight|.
      So a kernel that sums in another order changes most outputs by more than a bfloat16 step, where on random
      rows the difference can hide under the output's rounding (tests/test_packed.py shows a kernel that does).
      It can miss what random rows see (a change of order among the middle terms alone is absorbed at B's
      spacing), hence both. In float16, B stops at 2^12 and this case adds less.
    A kernel picks its code by shapes, dtype, threads and whether autograd records, never by values: the copy matches
    the weight in all of these."""
    cases: list[tuple[torch.Tensor, float | None]] = [(weight, None)]
    big = cancelling_value(weight)
    if big is not None:
        with torch.no_grad():
            copy = weight.detach().clone()
            copy[:, 0] = copy[:, -1] = 1
        cases.append((copy.requires_grad_(weight.requires_grad), big))
    return cases


def probe_rows(n: int, weight: torch.Tensor, gen: torch.Generator, big: float | None = None) -> torch.Tensor:
    """(n, in) random rows for `weight`, with a first entry +big and a last entry -big where big is given."""
    x = random_rows(n, weight, gen)
    if big is not None:
        x[:, 0], x[:, -1] = big, -big
    return x


def rows_independent(kernel: MatmulFn, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None,
                     rows: int) -> bool:
    """Whether kernel, on blocks of `rows` rows with this weight, gives each row the same bits wherever it sits in the
    block, whatever the other rows hold, and wherever the block lies in memory: a block of probe rows against its
    rolled copies, a copy whose other rows are new probe rows or zeros, and a view into a larger buffer; for each of
    `probe_cases`."""
    for case, big in probe_cases(weight):
        gen = torch.Generator().manual_seed(0)
        x = probe_rows(rows, case, gen, big)
        y = kernel(x, case, bias, activation).detach()

        def same(block: torch.Tensor, keep: slice) -> bool:  # used within this iteration only
            return torch.equal(kernel(block, case, bias, activation).detach()[keep], y[keep])

        for shift in sorted({1, rows // 2 + 1, rows - 1} - {0, rows}):
            if not torch.equal(kernel(x.roll(shift, 0), case, bias, activation).detach(), y.roll(shift, 0)):
                return False
        middle = slice(rows // 4, rows // 4 + max(1, rows // 2))  # kept rows; those around them change
        others = probe_rows(rows, case, gen, big)
        others[middle] = x[middle]
        zeros = torch.zeros_like(x)
        zeros[middle] = x[middle]
        in_buffer = torch.cat([probe_rows(rows + 1, case, gen, big), x])[rows + 1 :]  # same values, another address
        if not (same(others, middle) and same(zeros, middle) and same(in_buffer, slice(None))):
            return False
    return True


def tail_same_as_block(kernel: MatmulFn, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None,
                       tail: int, rows: int) -> bool:
    """Whether a call of `tail` rows gives each of them the bits it gets in a call of `rows` rows (one block) at the
    same place, for each of `probe_cases` (that place does not matter in a block: `rows_independent`)."""
    for case, big in probe_cases(weight):
        x = probe_rows(rows, case, torch.Generator().manual_seed(tail), big)
        if not torch.equal(kernel(x[:tail], case, bias, activation).detach(), kernel(x, case, bias, activation)[:tail]):
            return False
    return True


def same_as_blocks(kernel: MatmulFn, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None,
                   rows: int, size: int) -> bool:
    """Whether one call of `size` rows gives every row the bits it gets in calls of `rows` rows, for each of
    `probe_cases`."""
    for case, big in probe_cases(weight):
        x = probe_rows(size, case, torch.Generator().manual_seed(size), big)
        blocks = torch.cat([kernel(block, case, bias, activation).detach() for block in x.split(rows)])
        if not torch.equal(kernel(x, case, bias, activation).detach(), blocks):
            return False
    return True


BLOCKS_PER_CALL = 64  # RowBlocks' largest call, in blocks
TAIL_ROWS = 16  # rows under one block go in calls of a multiple of this many, where the probe allows


class RowBlocks:
    """A kernel run on whole blocks of `rows` rows (see the module docstring): the same signature as a kernel.

    A matrix goes in parts of `blocks_per_call` blocks, the last one topped up with zero rows to whole blocks, each
    part in one call or, where the probe refuses that, in calls of powers of two of blocks (`plan`); rows under one
    block in a call of their own where `tail_fits`. Each new weight shape, activation, dtype, device or thread count
    is probed on its first call (`check`): a kernel that fails is reported with a warning, once. A call of several
    blocks is probed before its first use (`merges`) and, where it would round a row otherwise than one block does,
    is not made."""

    def __init__(self, kernel: MatmulFn, rows: int, name: str = "kernel", blocks_per_call: int = BLOCKS_PER_CALL):
        if rows < 1 or blocks_per_call < 1:
            raise ValueError(f"row blocks need at least 1 row and 1 block per call, got {rows} and {blocks_per_call}")
        self.kernel, self.rows, self.name, self.blocks_per_call = kernel, rows, name, blocks_per_call
        self.probed: dict[tuple, bool] = {}  # key -> rows independent in one block
        self.merged: dict[tuple, bool] = {}  # (key, blocks) -> a call of that many blocks rounds as one block does
        self.tails: dict[tuple, bool] = {}  # (key, rows) -> a call of fewer rows than a block rounds as one block does

    @staticmethod
    def key(weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None) -> tuple:
        """What a kernel may choose its code by, besides the number of rows."""
        return (tuple(weight.shape), bias is not None, activation, weight.dtype, weight.device, torch.get_num_threads(),
                torch.is_grad_enabled())

    def check(self, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None) -> bool:
        """Whether a row's result is independent of its block for this weight's shape (probed once, then cached)."""
        key = self.key(weight, bias, activation)
        if key in self.probed:
            return self.probed[key]
        self.probed[key] = ok = rows_independent(self.kernel, weight, bias, activation, self.rows)
        if not ok:
            warnings.warn(f"matmul {self.name!r} rounds a row by its place in a {self.rows}-row block on this machine "
                          f"({weight.shape[1]} -> {weight.shape[0]}, {weight.dtype}, {torch.get_num_threads()} "
                          f"threads): a text's vector may depend on its batch here", RuntimeWarning, stacklevel=3)
        return ok

    def merges(self, blocks: int, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None) -> bool:
        """Whether a call of `blocks` blocks gives every row the bits a call of one block gives it (probed once)."""
        key = (self.key(weight, bias, activation), blocks)
        if key not in self.merged:
            self.merged[key] = blocks == 1 or same_as_blocks(self.kernel, weight, bias, activation, self.rows,
                                                             blocks * self.rows)
        return self.merged[key]

    def tail_fits(self, rows: int, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None) -> bool:
        """Whether `rows` rows, fewer than a block, may go in a call of their own: a multiple of TAIL_ROWS that a
        one-block call rounds as calls of that many rows do (probed once)."""
        if not 0 < rows < self.rows or rows % TAIL_ROWS or self.rows % TAIL_ROWS:
            return False
        key = (self.key(weight, bias, activation), rows)
        if key not in self.tails:
            self.tails[key] = tail_same_as_block(self.kernel, weight, bias, activation, rows, self.rows)
        return self.tails[key]

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 activation: str | None = None) -> torch.Tensor:
        self.check(weight, bias, activation)
        flat = x.reshape(-1, x.shape[-1])  # (n, in)
        if flat.shape[0] == 0:
            return self.kernel(x, weight, bias, activation)
        out = [self.call(part, weight, bias, activation) for part in flat.split(self.rows * self.blocks_per_call)]
        y = out[0] if len(out) == 1 else torch.cat(out)  # (n, out)
        return y.reshape(*x.shape[:-1], y.shape[-1])

    def plan(self, blocks: int, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None) -> list[int]:
        """blocks -> the sizes of the calls that multiply them, in blocks, each one a size the probe accepted: all of
        them in one call where it may, else powers of two, largest first (37 blocks where 32 merges: [32, 4, 1];
        where nothing merges: 37 times [1])."""
        if self.merges(blocks, weight, bias, activation):
            return [blocks]
        sizes = []
        while blocks:
            size = 1 << (blocks.bit_length() - 1)  # the largest power of two <= blocks
            while not self.merges(size, weight, bias, activation):
                size //= 2  # merges(1) is True
            sizes.append(size)
            blocks -= size
        return sizes

    def call(self, part: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
             activation: str | None) -> torch.Tensor:
        """(m, in) rows, m at most a part's worth -> (m, out): rows under one block in a call of their own where
        `tail_fits`, else topped up to whole blocks and multiplied in the calls that `plan` gives."""
        m = part.shape[0]
        if self.tail_fits(m, weight, bias, activation):
            return self.kernel(part, weight, bias, activation)
        blocks = -(-m // self.rows)
        if blocks * self.rows > m:
            part = torch.cat([part, part.new_zeros(blocks * self.rows - m, part.shape[1])])
        out, start = [], 0
        for size in self.plan(blocks, weight, bias, activation):
            out.append(self.kernel(part[start : start + size * self.rows], weight, bias, activation))
            start += size * self.rows
        return (out[0] if len(out) == 1 else torch.cat(out))[:m]


def use_kernel(module: nn.Module, name: str, row_block: int | None = None) -> MatmulFn:
    """Every Linear inside `module` (an encoder, or a pipeline with its encoder and head) runs the kernel registered
    as `name`; with row_block, on blocks of that many rows (RowBlocks), so that a row's result does not depend on the
    matrix it is in. The one place where kernels are set. Returns the kernel."""
    kernel = get_matmul(name) if row_block is None else RowBlocks(get_matmul(name), row_block, name)
    for layer in module.modules():
        if isinstance(layer, Linear):
            layer.matmul = kernel
    return kernel


@torch.inference_mode()  # the mode encode() runs in: kernels may choose their code by it
def rows_independent_everywhere(module: nn.Module) -> bool:
    """Whether every Linear inside `module` runs in row blocks that passed their probe on this machine, at this thread
    count: then a packed text's results do not depend on the other texts of its batch."""
    return all(isinstance(layer.matmul, RowBlocks) and layer.matmul.check(layer.weight, layer.bias, layer.activation)
               for layer in module.modules() if isinstance(layer, Linear))
