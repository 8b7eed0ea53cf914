"""A CPU-only stand-in for an accelerator that fails wherever tensors of two devices meet.

Real GPUs raise "Expected all tensors to be on the same device" when code mixes a tensor it created on the
CPU with one on the GPU; CPU-only test runs never see that. Inside :class:`StandInDevice` a tensor moved to
the stand-in device (``x.to(STANDIN)``, ``module.to(STANDIN)``, a factory call with ``device=STANDIN``) is
a :class:`StandInTensor`: its data stays on the CPU (so values, ``.item()`` and gradients work) but it
reports ``device == STANDIN`` (``cuda``), and every torch function that receives both stand-in tensors
and plain CPU tensors of one or more dimensions raises :class:`DeviceMixError`.

Rules mirror CUDA: plain CPU **0-dim** tensors may meet stand-in tensors (CUDA allows CPU scalars);
``copy_`` and indexing a stand-in tensor with CPU index tensors are allowed; ``.cpu()`` / ``.to("cpu")``
return plain tensors; a CPU ``torch.Generator`` may not draw a stand-in tensor (CUDA refuses that too).

Usage::

    from devicecheck import StandInDevice, STANDIN   # tests/ is on sys.path under pytest

    with StandInDevice():
        model.to(STANDIN)
        cams = cams.to(STANDIN)
        run_code_under_test()          # raises DeviceMixError at the first mixing op

It needs no GPU and no CUDA build; ``torch.autocast("cuda")`` merely warns and stays off.
"""
from __future__ import annotations

import warnings
import weakref

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

__all__ = ["STANDIN", "StandInTensor", "StandInDevice", "DeviceMixError", "is_standin"]

#: The device the stand-in pretends to be.
STANDIN = torch.device("cuda", 0)


class DeviceMixError(RuntimeError):
    """Tensors of two devices met in one op (what a real GPU would refuse)."""


def _is_standin_device(device) -> bool:
    if device is None:
        return False
    try:
        d = torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    except (RuntimeError, TypeError):
        return False
    return d.type == "cuda"


def _is_cpu_device(device) -> bool:
    try:
        return device is not None and not isinstance(device, int) and torch.device(device).type == "cpu"
    except (RuntimeError, TypeError):
        return False


#: Sparse tensors "on" the stand-in: a sparse tensor cannot be a tensor subclass (no storage), so the ones
#: made from stand-in tensors or moved there are remembered here and count as stand-in in the mixing check.
#: (Keyed by id with a weak reference: tensors compare element-wise, so they cannot go in a WeakSet.)
_SPARSE_ON_STANDIN: dict[int, weakref.ref] = {}


def _mark_sparse_standin(x: torch.Tensor) -> None:
    _SPARSE_ON_STANDIN[id(x)] = weakref.ref(x, lambda _ref, key=id(x): _SPARSE_ON_STANDIN.pop(key, None))


def is_standin(x) -> bool:
    if isinstance(x, StandInTensor):
        return True
    ref = _SPARSE_ON_STANDIN.get(id(x)) if isinstance(x, torch.Tensor) and x.is_sparse else None
    return ref is not None and ref() is x


def _plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_subclass(torch.Tensor) if isinstance(x, StandInTensor) else x


def _wrap(x):
    if isinstance(x, torch.Tensor) and not isinstance(x, StandInTensor):
        if isinstance(x, torch.nn.Parameter):
            p = x.detach().as_subclass(StandInTensor).requires_grad_(x.requires_grad)
            return torch.nn.Parameter(p, requires_grad=x.requires_grad)
        return x.as_subclass(StandInTensor)
    return x


def _cpu_args(args, kwargs):
    """``Tensor.to`` arguments with the device replaced by the CPU (a tensor argument by its dtype)."""
    rest = []
    for a in args[1:]:
        if isinstance(a, (str, torch.device)) or (isinstance(a, int) and not isinstance(a, bool)):
            rest.append(torch.device("cpu"))
        elif isinstance(a, torch.Tensor):
            rest.append(a.dtype)
        else:
            rest.append(a)
    kw = dict(kwargs)
    if "device" in kw:
        kw["device"] = torch.device("cpu")
    return tuple(rest), kw


def _to_target(args, kwargs):
    """The device a ``Tensor.to`` call asks for (None = keep)."""
    if "device" in kwargs:
        return kwargs["device"]
    for a in args[1:]:
        if isinstance(a, (str, torch.device, int)) and not isinstance(a, bool):
            return a
        if isinstance(a, torch.Tensor):
            return STANDIN if is_standin(a) else torch.device("cpu")
    return None


_FREE_MIX = {torch.Tensor.copy_, torch.Tensor.__getitem__, torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.cuda,
             torch.Tensor.__repr__, torch.Tensor.__format__, torch.Tensor.__reduce_ex__,
             torch._has_compatible_shallow_copy_type, torch.Tensor.requires_grad_, torch.Tensor.detach}


class StandInTensor(torch.Tensor):
    """CPU data that claims to live on :data:`STANDIN` and refuses to meet plain (non-scalar) CPU tensors."""

    @property
    def device(self):  # noqa: D401 - mimics Tensor.device
        return STANDIN

    @property
    def grad(self):
        g = torch.Tensor.grad.__get__(self)
        return None if g is None else _wrap(g)

    @grad.setter
    def grad(self, value):
        torch.Tensor.grad.__set__(self, value)

    @property
    def is_cuda(self):
        return True

    @property
    def is_cpu(self):
        return False

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.device.__get__:
            return STANDIN
        if func in (torch.Tensor.cpu,) or (func is torch.Tensor.to and _is_cpu_device(_to_target(args, kwargs))):
            rest, kw = _cpu_args(args, kwargs)
            with torch._C.DisableTorchFunctionSubclass():
                return _plain(args[0]).to(*rest, **kw) if func is torch.Tensor.to else _plain(args[0]).clone()
        if func not in _FREE_MIX:
            _check_mixing(func, args, kwargs)
        return super().__torch_function__(func, types, args, kwargs)


def _check_mixing(func, args, kwargs) -> None:
    flat, _ = tree_flatten((args, kwargs))
    tensors = [t for t in flat if isinstance(t, torch.Tensor)]
    if not any(is_standin(t) for t in tensors):
        return
    cpu = [t for t in tensors if not is_standin(t) and t.dim() > 0]
    if cpu:
        name = getattr(func, "__qualname__", getattr(func, "__name__", repr(func)))
        shapes = ", ".join(str(tuple(t.shape)) for t in cpu[:3])
        raise DeviceMixError(
            f"{name}: tensors on {STANDIN} (stand-in) and on cpu (shape {shapes}) met in one op; a GPU run "
            "fails here with 'Expected all tensors to be on the same device'. Create the tensor on the input's "
            "device (device=x.device) or move it."
        )


_FACTORIES = {
    torch.zeros, torch.ones, torch.empty, torch.full, torch.rand, torch.randn, torch.randint, torch.randperm,
    torch.arange, torch.linspace, torch.logspace, torch.eye, torch.tensor, torch.as_tensor, torch.zeros_like,
    torch.ones_like, torch.empty_like, torch.full_like, torch.rand_like, torch.randn_like, torch.randint_like,
    torch.normal, torch.scalar_tensor,
}


class StandInDevice(TorchFunctionMode):
    """Context manager: ``device=STANDIN`` factories and ``.to(STANDIN)`` make stand-in tensors; module
    ``.to(STANDIN)`` moves parameters and buffers. See the module docstring."""

    def __enter__(self):
        self._overwrite = torch.__future__.get_overwrite_module_params_on_conversion()
        torch.__future__.set_overwrite_module_params_on_conversion(True)
        self._warn = warnings.catch_warnings()
        self._warn.__enter__()
        warnings.filterwarnings("ignore", message=".*CUDA is not available.*")
        warnings.filterwarnings("ignore", message=".*device_type of 'cuda'.*")
        return super().__enter__()

    def __exit__(self, *exc):
        torch.__future__.set_overwrite_module_params_on_conversion(self._overwrite)
        self._warn.__exit__(*exc)
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _FACTORIES and _is_standin_device(kwargs.get("device")):
            gen = kwargs.get("generator")
            if gen is not None and gen.device.type == "cpu":
                raise DeviceMixError(f"{func.__name__}: a CPU generator cannot draw tensors on {STANDIN}; draw on "
                                     "the CPU and move the result.")
            kwargs["device"] = "cpu"
            return _wrap(func(*args, **kwargs))
        if func is torch.Tensor.to and args[0].is_sparse:
            return _sparse_to(args, kwargs)
        if func is torch.Tensor.to and _is_standin_device(_to_target(args, kwargs)):
            rest, kw = _cpu_args(args, kwargs)
            out = _plain(args[0]).to(*rest, **kw)
            return out.as_subclass(StandInTensor) if not is_standin(out) else out
        if func is torch.Tensor.cuda:
            return _wrap(_plain(args[0]))
        if func in (torch.as_tensor, torch.tensor) and args and is_standin(args[0]) \
                and not _is_cpu_device(kwargs.get("device")):
            return _wrap(func(*args, **kwargs))
        if func is torch.sparse_coo_tensor:
            return _sparse_coo(args, kwargs)
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.is_sparse and any(is_standin(a) for a in tree_flatten((args, kwargs))[0]):
            _mark_sparse_standin(out)  # e.g. coalesce() of a stand-in sparse tensor
        return out


def _sparse_to(args, kwargs) -> torch.Tensor:
    """``sparse.to(...)``: the data stays on the CPU; the result is remembered as stand-in when moved there
    (or when it was there and no device is named)."""
    target = _to_target(args, kwargs)
    standin = _is_standin_device(target) or (target is None and is_standin(args[0]))
    rest, kw = _cpu_args(args, kwargs)
    out = args[0].to(*rest, **kw)
    if standin:
        _mark_sparse_standin(out)
    return out


def _sparse_coo(args, kwargs) -> torch.Tensor:
    """``torch.sparse_coo_tensor`` from stand-in indices/values (or ``device=STANDIN``): built on the CPU
    and remembered as stand-in; mixing stand-in and CPU inputs is refused like any other op."""
    tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
    on_standin = _is_standin_device(kwargs.get("device")) or any(is_standin(t) for t in tensors)
    if on_standin:
        _check_mixing(torch.sparse_coo_tensor, args, kwargs)
    kw = dict(kwargs)
    if "device" in kw:
        kw["device"] = "cpu"
    plain = [_plain(a) if isinstance(a, torch.Tensor) else a for a in args]
    out = torch.sparse_coo_tensor(*plain, **kw)
    if on_standin:
        _mark_sparse_standin(out)
    return out
