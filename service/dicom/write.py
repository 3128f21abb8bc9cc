"""DICOM datasets of one volume for the writers: Siemens mosaic (with CSA headers), enhanced multi-frame, slices."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from service.dicom.build import (
    ENHANCED_MR_IMAGE,
    MR_IMAGE,
    PHILIPS_CREATOR,
    PHILIPS_PRIVATE_SEQ_CREATOR,
    Labels,
    add_rescale,
    base_dataset,
    item,
    to_stored,
)
from service.dicom.csa import CSA_CREATOR, ascconv, write_csa
from service.dicom.geometry import Geometry, ds_text, mosaic_ipp

__all__ = ["mosaic_dataset", "enhanced_dataset", "slice_datasets"]


def image_type_or(image_type, default):
    return list(image_type) if image_type is not None else default


def mosaic_dataset(data, geom: Geometry, image_type, labels: Labels) -> Dataset:
    """A Siemens classic mosaic of the volume ``data`` [X, Y, Z], with its CSA image and series headers."""
    cols, rows, n = data.shape
    m = int(np.ceil(np.sqrt(n)))
    stored = to_stored(data, "siemens")
    mosaic = np.zeros((m * rows, m * cols), dtype=stored.values.dtype)
    for k in range(n):
        r0, c0 = (k // m) * rows, (k % m) * cols
        mosaic[r0 : r0 + rows, c0 : c0 + cols] = stored.values[:, :, k].T
    ds = base_dataset(
        labels,
        sop_class=MR_IMAGE,
        instance=labels.acquisition,
        instance_key="mosaic",
        image_type=image_type_or(image_type, ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]),
        stored=stored,
        rows=m * rows,
        cols=m * cols,
    )
    plane(ds, geom, mosaic_ipp(geom, rows, cols, m * rows, m * cols))
    ds.AcquisitionMatrix = [0, cols, rows, 0]
    ds.InPlanePhaseEncodingDirection = "COL"
    add_rescale(ds, stored)
    tr_ms = 1000.0 * labels.tr if labels.tr else 2000.0
    image_csa = write_csa(
        [
            ("NumberOfImagesInMosaic", "US", [n]),
            ("SliceNormalVector", "FD", [float(v) for v in geom.slice_step / geom.spacing]),
            ("AcquisitionMatrixText", "SH", [f"{rows}p*{cols}"]),
            ("MosaicRefAcqTimes", "FD", [float(t) for t in np.arange(n) * tr_ms / n]),
            ("ProtocolSliceNumber", "IS", [0]),
            ("PhaseEncodingDirectionPositive", "IS", [1]),
        ]
    )
    phoenix = ascconv({"sSliceArray.lSize": n, "sSliceArray.ucMode": "0x1", "alTR[0]": int(round(tr_ms * 1000))})
    series_csa = write_csa([("MrPhoenixProtocol", "UN", [phoenix])])
    block = ds.private_block(0x0029, CSA_CREATOR, create=True)
    block.add_new(0x08, "CS", "IMAGE NUM 4")
    block.add_new(0x10, "OB", image_csa)
    block.add_new(0x20, "OB", series_csa)
    ds.PixelData = np.ascontiguousarray(mosaic).tobytes()
    return ds


def plane(ds: Dataset, geom: Geometry, ipp: np.ndarray) -> None:
    ds.ImageOrientationPatient = [ds_text(v) for v in geom.iop]
    ds.ImagePositionPatient = [ds_text(v) for v in ipp]
    ds.PixelSpacing = [ds_text(v) for v in geom.pixel_spacing]
    ds.SliceThickness = ds_text(geom.spacing)
    ds.SpacingBetweenSlices = ds_text(geom.spacing)


def enhanced_dataset(data, geom: Geometry, image_type, labels: Labels) -> Dataset:
    """An enhanced multi-frame MR image of the volume ``data`` [X, Y, Z], one frame per slice, as XA or Philips
    write it (``labels.vendor``)."""
    cols, rows, n = data.shape
    vendor = labels.vendor
    stored = to_stored(data, vendor)
    ds = base_dataset(
        labels,
        sop_class=ENHANCED_MR_IMAGE,
        instance=labels.acquisition,
        instance_key="enhanced",
        image_type=image_type_or(image_type, ["ORIGINAL", "PRIMARY", "M", "NONE"]),
        stored=stored,
        rows=rows,
        cols=cols,
    )
    ds.NumberOfFrames = n
    rescale = item(RescaleIntercept=ds_text(stored.intercept), RescaleSlope=ds_text(stored.slope), RescaleType="US")
    shared = item(
        PixelMeasuresSequence=item(
            PixelSpacing=[ds_text(v) for v in geom.pixel_spacing],
            SliceThickness=ds_text(geom.spacing),
            SpacingBetweenSlices=ds_text(geom.spacing),
        ),
        PlaneOrientationSequence=item(ImageOrientationPatient=[ds_text(v) for v in geom.iop]),
        MRImageFrameTypeSequence=item(FrameType=list(ds.ImageType)),
    )
    if labels.tr is not None:
        shared[0].MRTimingAndRelatedParametersSequence = item(RepetitionTime=float(labels.tr) * 1000.0)
    frames = []
    for k in range(n):
        frame = item(
            FrameContentSequence=item(
                StackID="1",
                InStackPositionNumber=k + 1,
                TemporalPositionIndex=max(int(labels.acquisition), 1),  # the volume, as XA writes it
                FrameAcquisitionNumber=labels.acquisition,
                DimensionIndexValues=[1, k + 1],
            ),
            PlanePositionSequence=item(ImagePositionPatient=[ds_text(v) for v in geom.positions[k]]),
        )[0]
        frame.PixelValueTransformationSequence = rescale  # per frame, as XA and Philips write it
        if vendor == "philips":
            # Philips keeps the scale slope in a private per-frame sequence (2005,140F) of "DD 005"
            private = item()[0]
            private.private_block(0x2005, PHILIPS_CREATOR, create=True).add_new(0x0E, "FL", float(stored.philips_ss))
            frame.add_new((0x2005, 0x0014), "LO", PHILIPS_PRIVATE_SEQ_CREATOR)
            frame.add_new((0x2005, 0x140F), "SQ", [private])
        frames.append(frame)
    organisation = generate_uid(entropy_srcs=[labels.session, "dimensions"])
    ds.DimensionOrganizationSequence = item(DimensionOrganizationUID=organisation)
    ds.DimensionIndexSequence = [
        item(DimensionOrganizationUID=organisation, DimensionIndexPointer=tag, FunctionalGroupPointer=0x00209111)[0]
        for tag in (0x00209056, 0x00209057)  # StackID, InStackPositionNumber in FrameContentSequence
    ]
    ds.SharedFunctionalGroupsSequence = shared
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = np.ascontiguousarray(stored.values.transpose(2, 1, 0)).tobytes()
    return ds


#: Private creators of the vendor fields that say how many slices a volume has (read by service.dicom.formats.slices).
GE_RELA_CREATOR = "GEMS_RELA_01"
PHILIPS_IMAGING_CREATOR = "Philips Imaging DD 001"
XA_PROTOCOL_CREATOR = "SIEMENS MR SDS 01"


def slice_datasets(data, geom: Geometry, image_type, labels: Labels) -> list[Dataset]:
    """One classic MR Image per slice, laid out as each vendor's real-time export does.

    - ``siemens``: XA "Interoperability" (MFSPLIT): every volume its own series, numbered ``1000 * series +
      volume``, pointing at the run's source series (RelatedSeriesSequence); AcquisitionNumber is the volume,
      InstanceNumber restarts at 1; no ImagesInAcquisition, no CSA header; the slice count only in the protocol
      text (0021,1019), as XA writes it.
    - ``ge``: real-time EPI: AcquisitionNumber 1 throughout, InstanceNumber counts slices across the run,
      ImagesInAcquisition and GE's locations in acquisition (0021,104F) give the slices per volume.
    - ``philips``: classic: TemporalPositionIdentifier numbers the volumes, AcquisitionNumber stays 1, InstanceNumber
      counts across the run, the slice count is in ImagesInAcquisition and Philips' (2001,1018).
    """
    cols, rows, n = data.shape
    vendor, acq = labels.vendor, labels.acquisition
    stored = to_stored(data, vendor)
    if vendor == "siemens":
        series = labels.series_number
        split = replace(labels, series_number=1000 * series + acq)
        default_type = ["ORIGINAL", "PRIMARY", "M", "ND", "MFSPLIT"]
        source_uid = generate_uid(entropy_srcs=[str(labels.session), "series", str(series)])
    else:
        split, default_type = (
            labels,
            ["ORIGINAL", "PRIMARY", "EPI", "NONE"] if vendor == "ge" else ["ORIGINAL", "PRIMARY", "M", "FFE"],
        )
    out = []
    for k in range(n):
        across = (acq - 1) * n + k + 1 if acq >= 1 else k + 1
        ds = base_dataset(
            split,
            sop_class=MR_IMAGE,
            instance=k + 1 if vendor == "siemens" else across,
            instance_key=f"slice{k}",
            image_type=image_type_or(image_type, default_type),
            stored=stored,
            rows=rows,
            cols=cols,
        )
        if vendor == "siemens":
            ds.Manufacturer = "Siemens Healthineers"
            ds.SoftwareVersions = "syngo MR XA30"
            ds.RelatedSeriesSequence = item(StudyInstanceUID=ds.StudyInstanceUID, SeriesInstanceUID=source_uid)
            protocol = f"### ASCCONV BEGIN ###\nsSliceArray.lSize = {n}\n### ASCCONV END ###\n".encode()
            ds.private_block(0x0021, XA_PROTOCOL_CREATOR, create=True).add_new(0x19, "OB", protocol)
        elif vendor == "ge":
            ds.AcquisitionNumber = 1
            ds.ImagesInAcquisition = n
            ds.private_block(0x0021, GE_RELA_CREATOR, create=True).add_new(0x4F, "SS", n)
        else:
            ds.AcquisitionNumber = 1
            ds.TemporalPositionIdentifier = acq
            ds.ImagesInAcquisition = n
            ds.private_block(0x2001, PHILIPS_IMAGING_CREATOR, create=True).add_new(0x18, "SL", n)
        plane(ds, geom, geom.positions[k])
        ds.SliceLocation = ds_text(float(geom.positions[k] @ geom.normal))
        add_rescale(ds, stored)
        ds.PixelData = np.ascontiguousarray(stored.values[:, :, k].T).tobytes()
        out.append(ds)
    return out
