"""The scanner's vendor, decided in one place.

Every vendor-dependent rule of the parsers (the Philips scale slope, the Siemens CSA header, where each vendor
writes the slice count, the export mode inspect reports) asks :func:`vendor_of`; nothing else reads the
Manufacturer to decide.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

__all__ = ["VENDOR_NAMES", "vendor_of", "export_mode"]

#: What :func:`vendor_of` answers.
VENDOR_NAMES = ("siemens", "ge", "philips", "other")


def vendor_of(source: Dataset | str) -> str:
    """``"siemens"``, ``"ge"``, ``"philips"`` or ``"other"``: the vendor of a dataset or of a Manufacturer text.

    Siemens: the Manufacturer holds SIEMENS ("SIEMENS", "Siemens Healthineers"); GE: one of its words is GE
    ("GE MEDICAL SYSTEMS", "GE HEALTHCARE"; not "GEMS" or "GENERIC"); Philips: it holds PHILIPS ("Philips
    Medical Systems", "Philips Healthcare"). Case is ignored; a name that would match two is the first of these.
    """
    manufacturer = source if isinstance(source, str) else str(source.get("Manufacturer", ""))
    name = manufacturer.upper()
    if "SIEMENS" in name:
        return "siemens"
    if "GE" in name.split():
        return "ge"
    if "PHILIPS" in name:
        return "philips"
    return "other"


def export_mode(vendor: str, fmt: str, mfsplit: bool, software: str) -> str:
    """The vendor's export mode of a parsed file, as inspect and the intake log name it.

    Parameters
    ----------
    vendor : str
        :func:`vendor_of`'s answer.
    fmt : {"mosaic", "enhanced", "slice"}
        The file's format.
    mfsplit : bool
        A Siemens XA MFSPLIT file (a series per volume, pointing at the run's source series).
    software : str
        SoftwareVersions: Siemens slice files from XA are its "interoperability" export.

    Returns
    -------
    str
        e.g. ``siemens-mosaic``, ``siemens-xa-interoperability``, ``siemens-xa-enhanced``, ``ge-slices``,
        ``philips-enhanced``, ``other-slices``.
    """
    if vendor == "siemens" and fmt == "slice":
        xa = "XA" in software.upper()
        return "siemens-xa-interoperability" if mfsplit or xa else "siemens-slices"
    if vendor == "siemens" and fmt == "enhanced":
        return "siemens-xa-enhanced"
    return f"{vendor}-{'slices' if fmt == 'slice' else fmt}"
