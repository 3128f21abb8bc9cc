"""Dense symmetric linear algebra that lets go of the GIL: LAPACK through ``ctypes`` from SciPy's own OpenBLAS.

SciPy's ``scipy.linalg.lapack`` wrappers of these routines hold the GIL while they run, so a progress line from
another thread (``fmriface fit`` writes one at least every 10 s) waits for a whole reduction, tens of seconds at
the paper's scale; ``ctypes`` calls release it. Where SciPy's library is not found, SciPy's wrappers (or NumPy)
do the same work.

- :func:`sytrd`, :func:`apply_q`, :func:`tridiagonal_solve`: ``G = Q T Q^T`` once, then ``(G + alpha I)^-1``
  for any penalty in ``O(n)`` per column (:class:`offline.decoding.mapping.PenaltyPath`);
- :func:`top_eigh`: the ``k`` largest eigenpairs of a symmetric matrix (``dsyevr`` on a subset: the
  tridiagonal reduction, then only the wanted eigenvectors).
"""

from __future__ import annotations

import numpy as np

__all__ = ["Lapack", "sytrd", "apply_q", "tridiagonal_solve", "top_eigh"]


class Lapack:
    """The four LAPACK routines of :class:`PenaltyPath` through ``ctypes`` from SciPy's own OpenBLAS, which let
    go of the GIL while they run (SciPy's ``scipy.linalg.lapack`` wrappers of these hold it, so a progress line
    from another thread would wait for the whole reduction); SciPy's wrappers where that library is not found."""

    _lib = None
    _tried = False

    @classmethod
    def lib(cls):
        """SciPy's OpenBLAS loaded with ctypes and its LAPACKE signatures set, or None (looked up once)."""
        if not cls._tried:
            cls._tried = True
            try:
                import ctypes
                import glob
                import os

                import scipy

                pattern = os.path.join(
                    os.path.dirname(scipy.__file__), os.pardir, "scipy.libs", "libscipy_openblas*.so"
                )
                found = [f for f in sorted(glob.glob(pattern)) if "64_" not in os.path.basename(f)]
                if found:
                    lib = ctypes.CDLL(found[0])
                    i, ptr, ch = ctypes.c_int32, ctypes.c_void_p, ctypes.c_char
                    sig = {
                        "scipy_LAPACKE_dsytrd": [ctypes.c_int, ch, i, ptr, i, ptr, ptr, ptr],
                        "scipy_LAPACKE_dormqr": [ctypes.c_int, ch, ch, i, i, i, ptr, i, ptr, ptr, i],
                        "scipy_LAPACKE_dpttrf": [i, ptr, ptr],
                        "scipy_LAPACKE_dpttrs": [ctypes.c_int, i, i, ptr, ptr, ptr, i],
                        "scipy_LAPACKE_dsyevr": [
                            ctypes.c_int,
                            ch,
                            ch,
                            ch,
                            i,
                            ptr,
                            i,
                            ctypes.c_double,
                            ctypes.c_double,
                            i,
                            i,
                            ctypes.c_double,
                            ptr,
                            ptr,
                            ptr,
                            i,
                            ptr,
                        ],
                    }
                    for name, args in sig.items():
                        fn = getattr(lib, name)
                        fn.restype, fn.argtypes = i, args
                    cls._lib = lib
            except (OSError, AttributeError, ImportError):  # pragma: no cover - another SciPy build
                cls._lib = None
        return cls._lib


_COL_MAJOR = 102


def sytrd(g: np.ndarray):
    """``G = Q T Q^T``: ``(reflectors as a Fortran array [n, n], diagonal d, off-diagonal e, tau)`` or None."""
    n = len(g)
    lib = Lapack.lib()
    if lib is None:
        from scipy.linalg import lapack

        lwork = int(lapack.dsytrd_lwork(n, lower=1)[0])
        c, d, e, tau, info = lapack.dsytrd(g, lower=1, lwork=max(lwork, 1))
        return None if info else (np.asfortranarray(c), d, e, tau)
    a = np.array(g, dtype=np.float64, order="F")
    d, e, tau = np.empty(n), np.empty(max(n - 1, 0)), np.empty(max(n - 1, 0))
    info = lib.scipy_LAPACKE_dsytrd(
        _COL_MAJOR, b"L", n, a.ctypes.data, n, d.ctypes.data, e.ctypes.data, tau.ctypes.data
    )
    return None if info else (a, d, e, tau)


def apply_q(tri, mat: np.ndarray, side: str) -> np.ndarray:
    """``Q^T mat`` (side ``L``) or ``mat Q`` (side ``R``), ``Q`` from :func:`sytrd` (``dormqr`` on rows or
    columns 1..n-1, as ``dormtr`` does)."""
    a, _, _, tau = tri
    n = a.shape[0]
    out = np.array(mat, dtype=np.float64, order="F", copy=True)
    if n < 2 or out.size == 0:
        return out
    lib = Lapack.lib()
    if lib is None:
        from scipy.linalg import lapack

        refl = a[1:, : n - 1]
        if side == "L":
            res, _, info = lapack.dormqr("L", "T", refl, tau, out[1:], lwork=max(1, out.shape[1]) * 64)
            out[1:] = res
        else:
            res, _, info = lapack.dormqr("R", "N", refl, tau, out[:, 1:], lwork=max(1, out.shape[0]) * 64)
            out[:, 1:] = res
    else:
        rows, cols = out.shape
        refl = a.ctypes.data + 8  # element (1, 0) of the Fortran array, leading dimension n
        if side == "L":  # rows 1.. of out: m = n - 1, columns cols
            info = lib.scipy_LAPACKE_dormqr(
                _COL_MAJOR, b"L", b"T", n - 1, cols, n - 1, refl, n, tau.ctypes.data, out.ctypes.data + 8, rows
            )
        else:  # columns 1.. of out: rows rows, n - 1 columns
            info = lib.scipy_LAPACKE_dormqr(
                _COL_MAJOR, b"R", b"N", rows, n - 1, n - 1, refl, n, tau.ctypes.data, out.ctypes.data + 8 * rows, rows
            )
    if info != 0:
        raise np.linalg.LinAlgError(f"dormqr failed (info {info})")
    return out


def tridiagonal_solve(d: np.ndarray, e: np.ndarray, rhs: np.ndarray) -> np.ndarray | None:
    """``T^-1 rhs`` for the symmetric positive definite tridiagonal ``T`` (diagonal d, off-diagonal e); None when
    ``T`` is not positive definite."""
    lib = Lapack.lib()
    if lib is None:
        from scipy.linalg import lapack

        dd, ee, info = lapack.dpttrf(d, e)
        if info != 0:
            return None
        w, _ = lapack.dpttrs(dd, ee, rhs)
        return w
    n = len(d)
    dd, ee = np.array(d, dtype=np.float64), np.array(e, dtype=np.float64)
    if lib.scipy_LAPACKE_dpttrf(n, dd.ctypes.data, ee.ctypes.data) != 0:
        return None
    w = np.array(rhs, dtype=np.float64, order="F", copy=True)
    nrhs = w.shape[1] if w.ndim == 2 else 1
    info = lib.scipy_LAPACKE_dpttrs(_COL_MAJOR, n, nrhs, dd.ctypes.data, ee.ctypes.data, w.ctypes.data, n)
    if info != 0:
        raise np.linalg.LinAlgError(f"dpttrs failed (info {info})")
    return w


def top_eigh(g: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest eigenvalues (descending) and their eigenvectors ``[n, k]`` of the symmetric ``g``.

    Up to half the spectrum through ``dsyevr`` on the wanted subset, else NumPy's full ``eigh`` (the same numbers
    as before: the eigenvectors of a near-null tail are determined by the algorithm, not by ``g``)."""
    n = len(g)
    k = int(min(max(k, 0), n))
    if k == 0:
        return np.zeros(0), np.zeros((n, 0))
    lib = Lapack.lib()
    if lib is None or n < 64 or k > n // 2:  # most of the spectrum: the full decomposition costs no more
        evals, evecs = np.linalg.eigh(g)
        order = np.argsort(evals)[::-1][:k]
        return evals[order], evecs[:, order]
    import ctypes

    a = np.array(g, dtype=np.float64, order="F")
    w = np.empty(n)
    z = np.empty((n, k), order="F")
    isuppz = np.empty(2 * k, dtype=np.int32)
    m = ctypes.c_int32(0)
    info = lib.scipy_LAPACKE_dsyevr(
        _COL_MAJOR,
        b"V",
        b"I",
        b"L",
        n,
        a.ctypes.data,
        n,
        0.0,
        0.0,
        n - k + 1,
        n,
        0.0,
        ctypes.addressof(m),
        w.ctypes.data,
        z.ctypes.data,
        n,
        isuppz.ctypes.data,
    )
    if info != 0 or m.value != k:
        raise np.linalg.LinAlgError(f"dsyevr failed (info {info}, {m.value} of {k} eigenpairs)")
    return w[:k][::-1].copy(), np.ascontiguousarray(z[:, ::-1])
